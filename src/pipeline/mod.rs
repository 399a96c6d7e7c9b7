//! The streaming read → plan → quantize → write path.

pub mod backend;
pub mod convert;
pub mod override_check;
pub mod quantize;
pub mod source;

pub use backend::Backend;
pub use source::{GgufSource, SourceTensor, TensorSource};
