//! Model architectures and tokenizers: how a Hugging Face checkpoint becomes GGUF metadata and
//! tensors; the llama-family forward pass; synthetic models for demos and tests.

pub mod arch;
pub mod card;
pub mod encode;
pub mod forward;
pub mod hf;
pub mod kv;
pub mod synthetic;
pub mod synthetic_hf;
pub mod tensor_names;
pub mod tokenizer;
pub mod tokenizer_bpe;
pub mod tokenizer_spm;
pub mod yaml;
