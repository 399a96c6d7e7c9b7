//! Fuzz the importance-matrix readers (legacy `.dat` and GGUF, chosen by the magic as
//! llama-quantize does) and the weights computed from them: Ok or Err, never a panic.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run imatrix_file` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::formats::imatrix::{ImatrixFile, ImportanceWeights};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("qforge-fuzz-{}.imatrix", std::process::id()));
    let _ = ImatrixFile::parse_legacy(&path, data);
    std::fs::write(&path, data).unwrap();
    if let Ok(f) = ImatrixFile::open(&path) {
        let _ = ImportanceWeights::from_file(&f);
    }
});
