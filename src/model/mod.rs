//! Model architectures and tokenizers: how a Hugging Face checkpoint becomes GGUF metadata and
//! tensors; synthetic models for demos and tests; later the forward pass.

pub mod arch;
pub mod card;
pub mod encode;
pub mod hf;
pub mod kv;
pub mod synthetic;
pub mod tensor_names;
pub mod tokenizer;
pub mod yaml;
