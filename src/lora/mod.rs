//! LoRA adapters: merging them into a base model, and converting them to llama.cpp's GGUF
//! adapter format (llama.cpp 0c1e57098).
//!
//! Three jobs, each a library entry point the CLI wires:
//! - [`merge_lora_hf`]: PEFT adapters + a Hugging Face safetensors checkpoint → a merged
//!   checkpoint with the base's dtypes, shards, index and side files (`qforge merge-lora`).
//!   Its arithmetic is the exact contract documented in [`merge`].
//! - [`lora_to_gguf`]: a PEFT adapter → the GGUF adapter `convert_lora_to_gguf.py` writes.
//! - [`merge_lora_gguf`]: GGUF adapters + a GGUF base → what `llama-export-lora` writes.
//!
//! A fourth, `convert --lora` (the merge done inside the conversion and quantization pass,
//! byte-equal to `merge-lora` followed by `convert`), lives a layer up in
//! `pipeline::convert_lora` (`convert_with_lora`, `LoraMergedModel`) and uses these kernels.
//!
//! Every input is validated before the first output byte is written, and outputs appear whole
//! (temporary names renamed at the end) or not at all.

pub mod gguf_adapter;
pub mod gguf_merge;
pub mod gpu_merge;
pub mod hf;
pub mod merge;

use std::path::PathBuf;

use crate::formats::gguf::GgufError;
use crate::formats::peft::PeftError;
use crate::formats::safetensors::SafetensorsError;
use crate::quant::QuantError;

pub use gguf_adapter::{lora_to_gguf, LoraOutType};
pub use gguf_merge::{merge_lora_gguf, GgufAdapterSpec, GgufMergeReport};
pub use hf::{merge_lora_hf, AdapterSpec, MergeOptions, MergeReport};
pub use merge::MergeDevice;

/// Errors of the LoRA layer; each names the file, and the tensor when there is one.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// The PEFT adapter is unreadable, inconsistent, or does not fit the base model.
    #[error(transparent)]
    Peft(Box<PeftError>),
    /// A safetensors file of the base model is unreadable or corrupt.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// A GGUF file is unreadable, corrupt, or could not be written.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A file or directory could not be read, created or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The output directory exists and is not empty (qforge never writes into a used one).
    #[error("{path}: the output directory exists and is not empty")]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },
    /// An `ADAPTER_DIR[:SCALE]` argument whose scale is not a finite number.
    #[error("'{spec}': {what}")]
    BadAdapterSpec {
        /// The argument as given.
        spec: String,
        /// What is wrong with its scale.
        what: String,
    },
    /// A tensor to merge into is not F32, F16 or BF16 (or, in GGUF, has no dequantizer).
    #[error("{path}: tensor '{tensor}' is {dtype}, which cannot be merged into")]
    UnsupportedDtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its element type.
        dtype: String,
    },
    /// The merge produced a NaN or a value too large for the output type.
    #[error("{path}: merging tensor '{tensor}' gives a non-finite value (NaN, or too large for {dtype}) at element {index}")]
    NonFiniteResult {
        /// The base model file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its output type.
        dtype: String,
        /// Element index of the first bad value.
        index: usize,
    },
    /// The base model's `config.json` is missing or lacks what is needed.
    #[error("{path}: {what}")]
    BaseConfig {
        /// The config file (or where it was expected).
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
    /// A GGUF adapter that is not a LoRA adapter, or whose tensors are inconsistent.
    #[error("{path}: {what}")]
    BadGgufAdapter {
        /// The adapter file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// An adapter tensor that matches no tensor of the base model, or does not fit it.
    #[error("{path}: tensor '{tensor}': {what} (is this adapter for another base model?)")]
    AdapterMismatch {
        /// The adapter file.
        path: PathBuf,
        /// The adapter tensor.
        tensor: String,
        /// What does not match.
        what: String,
    },
    /// The GPU merge kernel failed while merging a tensor.
    #[error("merging tensor '{tensor}' on the GPU: {source}")]
    Gpu {
        /// The tensor being merged.
        tensor: String,
        /// The GPU error.
        source: crate::gpu::GpuError,
    },
    /// The base model's config.json (through the architecture registry) is unusable.
    #[error(transparent)]
    Arch(#[from] crate::arch::ArchError),
    /// The adapter directory's model card or generation_config.json is unreadable.
    #[error(transparent)]
    Card(#[from] crate::convert::card::CardError),
    /// The worker pool could not be sized or started.
    #[error("{0}")]
    Threads(String),
    /// Something understood but not supported yet.
    #[error("{path}: {what} is not supported yet")]
    NotSupported {
        /// The file.
        path: PathBuf,
        /// The unsupported feature.
        what: String,
    },
    /// A quantizer or dequantizer is missing or rejected a row.
    #[error("{path}: tensor '{tensor}': {source}")]
    Quant {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The quantizer's error.
        source: QuantError,
    },
}

impl From<PeftError> for LoraError {
    fn from(e: PeftError) -> LoraError {
        LoraError::Peft(Box::new(e))
    }
}

impl LoraError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LoraError {
        let path = path.into();
        move |source| LoraError::Io { path, source }
    }
}

/// A rayon pool of `threads` workers (0 = every core).
pub(crate) fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, LoraError> {
    crate::threads::pool(threads).map_err(|e| LoraError::Threads(e.to_string()))
}
