//! qforge: LLM checkpoints → GGUF, byte-identical with llama.cpp's tools.
//!
//! Data flows one way: `formats` (bytes on disk) → `pipeline` (plan, stream) → `quant` / `gpu`
//! (numbers) → `formats::gguf::GgufWriter`. Formats know nothing of GPUs; kernels know nothing of
//! files.

pub mod eval;
pub mod export;
pub mod formats;
pub mod gpu;
pub mod lora;
pub mod model;
pub mod pipeline;
pub mod quant;
