//! Measuring models: perplexity, KL divergence between two models, importance-matrix
//! collection (llama-perplexity / llama-imatrix semantics), per-tensor quantization error and
//! quantization sweeps, over any [`CausalLm`](crate::runtime::forward::CausalLm): the CPU forward
//! pass in `model::forward` or its GPU twin in `gpu::forward`.

pub mod error;
pub mod imatrix;
pub mod kld;
pub mod perplexity;
pub mod sweep;
pub mod tensor_error;

pub use error::EvalError;
pub use imatrix::{collect_imatrix, collect_imatrix_with_progress, ImatrixOptions, ImatrixRun};
pub use kld::{kl_divergence, KldReport};
pub use perplexity::{
    perplexity, perplexity_with_progress, score_logits, score_logits_with_progress, ChunkProgress,
    PplOptions, PplReport, ScoredLogits,
};
pub use sweep::{sweep, sweep_with_progress, SweepOptions, SweepReport, SweepRow, SweepStep};
pub use tensor_error::{tensor_errors, TensorError, TensorErrorSummary};

use crate::formats::gguf::Metadata;
use crate::runtime::tokenize_bpe::BpeTokenizer;
use crate::runtime::tokenize_spm::SpmTokenizer;
use crate::runtime::TokenizeError;

/// Tokenize an evaluation text the way llama-perplexity and llama-imatrix do
/// (`common_tokenize(ctx, text, add_special = true, parse_special)`; perplexity passes false).
/// SentencePiece ("llama") and byte-level BPE ("gpt2") vocabularies are supported.
pub fn tokenize_eval_text(
    md: &Metadata,
    text: &[u8],
    parse_special: bool,
) -> Result<Vec<u32>, TokenizeError> {
    match md.get_str("tokenizer.ggml.model") {
        Some("gpt2") => BpeTokenizer::from_metadata(md)?.encode(text, true, parse_special),
        _ => SpmTokenizer::from_metadata(md)?.encode(text, true, parse_special),
    }
}
