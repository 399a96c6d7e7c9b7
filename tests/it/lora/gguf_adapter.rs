//! lora_to_gguf against convert_lora_to_gguf.py's output for the golden adapter.

use crate::support;

use qforge::lora::{lora_to_gguf, LoraOutType};

#[test]
fn golden_adapter_converts_byte_for_byte_to_f32() {
    let tmp = support::temp_dir("lora-gguf-f32");
    let out = tmp.join("lora.f32.gguf");
    lora_to_gguf(
        &support::golden("lora/adapter"),
        &support::golden("tiny-llama"),
        &out,
        LoraOutType::F32,
    )
    .unwrap();
    support::assert_matches_manifest(&out, &support::Manifest::load("lora/lora.json"));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(support::golden("lora/lora.f32.gguf")).unwrap()
    );
}
