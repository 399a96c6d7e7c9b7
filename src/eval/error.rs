//! What can go wrong measuring models (perplexity, KL divergence, imatrix collection, tensor
//! errors, sweeps). Causes from the layers below pass through unchanged; eval's own refusals
//! name the file, tensor or type at fault, one line each.

use std::path::PathBuf;

use crate::convert::checkpoint::HfError;
use crate::formats::gguf::GgufError;
use crate::formats::imatrix::ImatrixError;
use crate::formats::tensor_source::SourceError;
use crate::gpu::GpuError;
use crate::pipeline::PipelineError;
use crate::quant::QuantError;
use crate::runtime::{RuntimeError, TokenizeError};

/// Errors of the evaluation jobs.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Loading or running the model failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The evaluation text could not be tokenized.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// Quantizing (a sweep step) or placing a model on a device failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The Hugging Face checkpoint to sweep could not be opened.
    #[error(transparent)]
    Checkpoint(#[from] HfError),
    /// A GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// No GPU adapter matched `--device`.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A tensor source could not produce a tensor's bytes.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The `--imatrix` file could not be read or does not fit.
    #[error(transparent)]
    Imatrix(#[from] ImatrixError),
    /// A GGUF model file could not be opened as a quantization source.
    #[error("opening {}", path.display())]
    Open {
        /// The GGUF file.
        path: PathBuf,
        /// Why.
        #[source]
        source: GgufError,
    },
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// `reading`, `writing`, `creating` or `renaming to`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The vocabulary adds BOS to each chunk without naming its id.
    #[error("the vocabulary adds BOS but names no tokenizer.ggml.bos_token_id")]
    NoBosId,
    /// `--chunks 0`: nothing to evaluate.
    #[error("--chunks 0: nothing to evaluate (give at least 1, or leave it out for all)")]
    NoChunks,
    /// A chunk's scores are not finite: every number after it would be meaningless.
    #[error("chunk {chunk}: the model's output is not finite (perplexity {ppl}); check its hyper-parameters (rms_norm_eps, rope_theta) and weights")]
    NonFinite {
        /// The 1-based chunk just scored.
        chunk: usize,
        /// The running perplexity.
        ppl: f64,
    },
    /// A signal (or the embedding program) asked the job to stop.
    #[error(transparent)]
    Cancelled(#[from] crate::formats::cancel::Cancelled),
    /// A context too small to have positions to score.
    #[error("a context of {n_ctx} tokens is too small to score")]
    ContextTooSmall {
        /// `--ctx-size`.
        n_ctx: usize,
    },
    /// Fewer tokens than two contexts, which llama-perplexity refuses too.
    #[error(
        "you need at least {} tokens for a context of {n_ctx} tokens; the data has only {n_tokens}",
        2 * n_ctx
    )]
    TooFewTokens {
        /// `--ctx-size`.
        n_ctx: usize,
        /// Tokens in the data.
        n_tokens: usize,
    },
    /// The imatrix collector refused a matmul input (inconsistent width, non-finite sums);
    /// the message names the tensor.
    #[error("{what}")]
    Collect {
        /// What the collector saw.
        what: String,
    },
    /// KL divergence between runs that scored different tokens or vocabularies.
    #[error("the two runs did not score the same tokens with the same vocabulary")]
    RunsDiffer,
    /// KL divergence over runs that scored nothing.
    #[error("no scored positions")]
    NoScoredPositions,
    /// A file that is not (or no longer) a logits file qforge wrote.
    #[error("{}: {what}", path.display())]
    BadLogitsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A tensor of the quantized file that the source does not have.
    #[error("tensor '{tensor}' is not in {source_name}")]
    TensorNotInSource {
        /// The GGUF tensor name.
        tensor: String,
        /// The source (its description, usually a path).
        source_name: String,
    },
    /// A tensor whose source or quantized bytes cannot be dequantized.
    #[error("comparing tensor '{tensor}'")]
    CompareTensor {
        /// The GGUF tensor name.
        tensor: String,
        /// Why.
        #[source]
        source: QuantError,
    },
    /// A sweep with no types.
    #[error("no quantization types to sweep")]
    NoTypes,
    /// A sweep type that is not a llama-quantize ftype name.
    #[error("unknown quantization type '{name}'")]
    UnknownType {
        /// The name as given.
        name: String,
    },
    /// The sweep report could not be serialized.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A report text could not be formatted.
    #[error(transparent)]
    Format(#[from] std::fmt::Error),
    /// The sweep plot could not be drawn.
    #[error("drawing {}: {what}", path.display())]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// The plotting library's words.
        what: String,
    },
}

impl EvalError {
    /// [`EvalError::Io`]: `action` on `path` failed with `source`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> EvalError {
        EvalError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
