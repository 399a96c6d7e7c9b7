//! Fuzz the byte-level BPE `tokenizer.json` reader (the vocabulary the converter writes):
//! Ok or Err, never a panic.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run tokenizer_json` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::convert::vocab::bpe::vocab_base;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("qforge-fuzz-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), data).unwrap();
    let _ = vocab_base(&dir, None);
});
