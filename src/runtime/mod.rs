//! The runtime side: running a GGUF model — the forward pass (CPU and its WGSL twin), the
//! tokenizers that turn text into token ids from a GGUF vocabulary, and small random models
//! built in memory for demos, self-checks and tests.

pub mod error;
pub mod forward;
pub mod gpu_forward;
pub mod synthetic;
pub mod tokenize_bpe;
pub mod tokenize_spm;

pub use error::{RuntimeError, TokenizeError};
