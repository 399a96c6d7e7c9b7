//! Measuring models: perplexity, KL divergence between two models, importance-matrix
//! collection (llama-perplexity / llama-imatrix semantics) and quantization sweeps, all on the
//! CPU forward pass in `model::forward`.

pub mod imatrix;
pub mod kld;
pub mod perplexity;
pub mod sweep;

pub use imatrix::{collect_imatrix, ImatrixOptions, ImatrixRun};
pub use kld::{kl_divergence, KldReport};
pub use perplexity::{perplexity, score_logits, PplOptions, PplReport, ScoredLogits};
pub use sweep::{sweep, SweepOptions, SweepReport, SweepRow};
