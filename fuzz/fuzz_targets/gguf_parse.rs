//! Fuzz the GGUF parser: any bytes must give Ok (with every tensor inside the file) or an Err,
//! never a panic, hang or huge allocation. Run: `cargo +nightly fuzz run gguf_parse` (or, on
//! stable, `RUSTC_BOOTSTRAP=1 cargo fuzz run gguf_parse`) in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::formats::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("qforge-fuzz-{}.gguf", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(f) = GgufFile::open(&path) {
        for t in &f.tensors {
            assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes().unwrap());
        }
    }
});
