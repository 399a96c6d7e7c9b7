//! The streaming read → plan → quantize → write path.

pub mod convert;
pub mod source;

pub use source::{GgufSource, SourceTensor, TensorSource};
