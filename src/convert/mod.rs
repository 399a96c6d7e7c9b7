//! The converter side: a Hugging Face checkpoint directory (config.json, safetensors, tokenizer
//! files, model card) → the GGUF metadata and tensors llama.cpp's `convert_hf_to_gguf.py` writes
//! (llama.cpp 0c1e57098). What differs between families lives in [`crate::arch`]; this module is
//! the machinery they share.

pub mod card;
pub mod checkpoint;
pub mod encode;
pub mod synthetic_dense;
pub mod synthetic_hf;
pub mod vocab;
pub mod yaml;
