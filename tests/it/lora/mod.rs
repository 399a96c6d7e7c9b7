//! LoRA adapters: the merge contract, merging into HF checkpoints and GGUF files against
//! llama.cpp's goldens, adapter GGUF conversion, one-pass `convert --lora`, and bad inputs.

mod bad_inputs;
mod convert_one_pass;
mod gguf_adapter;
mod gguf_merge_golden;
mod gguf_roundtrip;
mod hf_golden;
mod merge_contract;
