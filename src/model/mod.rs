//! Model architectures and tokenizers: how a Hugging Face checkpoint becomes GGUF metadata and
//! tensors (later also the forward pass).

pub mod arch;
pub mod card;
pub mod encode;
pub mod hf;
pub mod kv;
pub mod tensor_names;
pub mod tokenizer;
pub mod yaml;
