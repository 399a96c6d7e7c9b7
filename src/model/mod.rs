//! Model architectures, tokenizers and (later) the forward pass.

pub mod forward;
pub mod synthetic;
pub mod tokenizer_spm;
