//! Fuzz the PEFT `adapter_config.json` parser: any text gives Ok or Err, never a panic; an
//! accepted config has a positive rank and a finite alpha that fits f32.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run peft_config` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::formats::peft::PeftConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = PeftConfig::parse(text, std::path::Path::new("adapter_config.json")) {
        assert!(c.r > 0);
        assert!((c.lora_alpha as f32).is_finite());
    }
});
