//! lora_to_gguf against convert_lora_to_gguf.py's output for the golden adapter.

mod common;

use qforge::lora::{lora_to_gguf, LoraOutType};

#[test]
fn golden_adapter_converts_byte_for_byte_to_f32() {
    let tmp = common::temp_dir("lora-gguf-f32");
    let out = tmp.join("lora.f32.gguf");
    lora_to_gguf(
        &common::golden("lora/adapter"),
        &common::golden("tiny-llama"),
        &out,
        LoraOutType::F32,
    )
    .unwrap();
    common::assert_matches_manifest(&out, &common::Manifest::load("lora/lora.json"));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(common::golden("lora/lora.f32.gguf")).unwrap()
    );
}
