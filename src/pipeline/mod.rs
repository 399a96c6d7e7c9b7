//! The streaming read → plan → quantize → write path.

pub mod source;

pub use source::{GgufSource, SourceTensor, TensorSource};
