//! Byte formats only, no policy. Every parser validates each length and offset against the file
//! before trusting it.

pub mod atomic;
pub mod cancel;
pub mod gguf;
pub mod imatrix;
pub mod peft;
pub mod safetensors;
pub mod same_file;
