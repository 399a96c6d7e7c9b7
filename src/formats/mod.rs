//! Byte formats only, no policy. Every parser validates each length and offset against the file
//! before trusting it.

pub mod atomic;
pub mod cancel;
pub mod gguf;
pub mod gguf_kv;
pub mod imatrix;
pub mod peft;
pub mod pickle;
pub mod safetensors;
pub mod same_file;
pub mod tensor_source;
pub mod torch_zip;

pub use tensor_source::{GgufSource, SourceError, SourceTensor, TensorSource};
