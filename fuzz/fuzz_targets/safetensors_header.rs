//! Fuzz the safetensors reader: any bytes must give Ok (every tensor's data inside the file and
//! of its dtype × shape size) or an Err, never a panic, hang or huge allocation.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run safetensors_header` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::formats::safetensors::SafetensorsFile;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("qforge-fuzz-{}.safetensors", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(f) = SafetensorsFile::open(&path) {
        for t in f.tensors() {
            assert_eq!(f.data(t).len(), t.n_bytes());
        }
    }
});
