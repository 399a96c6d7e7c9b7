//! Perplexity the way llama-perplexity measures it (`perplexity()` in
//! tools/perplexity/perplexity.cpp): the token stream is cut into chunks of n_ctx tokens, each
//! evaluated from an empty cache with its first token replaced by BOS when the vocabulary adds
//! one; only the second half of each chunk is scored (tokens first+1 .. n_ctx−1 predicted from
//! positions first .. n_ctx−2, first = n_ctx/2), and PPL = exp(mean NLL).

use std::time::Instant;

use crate::eval::error::EvalError;

/// What the evaluation functions return.
type Result<T, E = EvalError> = std::result::Result<T, E>;
use serde::Serialize;

use crate::formats::gguf::{Metadata, Value};
use crate::runtime::forward::{CausalLm, MatmulObserver};

/// How to cut and evaluate the token stream.
#[derive(Clone, Debug)]
pub struct PplOptions {
    /// Tokens per chunk (llama-perplexity `-c`, default 512).
    pub n_ctx: usize,
    /// Chunks to evaluate at most (`--chunks`); None = all whole chunks.
    pub n_chunks: Option<usize>,
    /// Tokens per forward call (llama.cpp's micro-batch, `-ub`, default 512). Only the
    /// importance-matrix collector sees a difference: it ignores calls of fewer than 16 tokens.
    pub n_ubatch: usize,
}

impl Default for PplOptions {
    fn default() -> Self {
        PplOptions {
            n_ctx: 512,
            n_chunks: None,
            n_ubatch: 512,
        }
    }
}

/// The BOS token llama.cpp puts at the start of every chunk, or None when the vocabulary does
/// not add BOS (`llama_vocab_get_add_bos`): `tokenizer.ggml.add_bos_token` when present, else
/// llama.cpp's default for the tokenizer — true for SentencePiece ("llama") and WordPiece
/// ("bert") and for the BPE pre-tokenizers that force it (llama3 family, tekken, chameleon),
/// false otherwise. The id defaults to 1 for SentencePiece; other vocabularies must name it.
pub fn chunk_bos(md: &Metadata) -> Result<Option<u32>> {
    let model = md.get_str("tokenizer.ggml.model").unwrap_or("");
    let pre = md.get_str("tokenizer.ggml.pre").unwrap_or("");
    let default_add = match model {
        "llama" | "bert" => true,
        "gpt2" => matches!(
            pre,
            "llama3"
                | "llama-v3"
                | "llama-bpe"
                | "falcon3"
                | "falcon-h1"
                | "pixtral"
                | "midm-2.0"
                | "lfm2"
                | "jina-v5-nano"
                | "tekken"
                | "chameleon"
        ),
        _ => false,
    };
    let add = match md.get("tokenizer.ggml.add_bos_token") {
        Some(Value::Bool(b)) => *b,
        _ => default_add,
    };
    if !add {
        return Ok(None);
    }
    match md.get_u64("tokenizer.ggml.bos_token_id") {
        Some(id) => Ok(Some(id as u32)),
        None if model == "llama" => Ok(Some(1)),
        None => Err(EvalError::NoBosId),
    }
}

/// Number of chunks llama-perplexity evaluates, refusing streams shorter than 2·n_ctx as it does.
pub fn chunk_count(n_tokens: usize, opts: &PplOptions) -> Result<usize> {
    if opts.n_ctx < 2 {
        return Err(EvalError::ContextTooSmall { n_ctx: opts.n_ctx });
    }
    if opts.n_chunks == Some(0) {
        return Err(EvalError::NoChunks);
    }
    if n_tokens < 2 * opts.n_ctx {
        return Err(EvalError::TooFewTokens {
            n_ctx: opts.n_ctx,
            n_tokens,
        });
    }
    let max = n_tokens / opts.n_ctx;
    Ok(opts.n_chunks.map_or(max, |c| c.min(max)))
}

/// Evaluate chunk `index` (BOS-substituted, micro-batched through a fresh KV cache) and return
/// its logits, n_ctx × n_vocab.
pub(crate) fn eval_chunk(
    model: &dyn CausalLm,
    tokens: &[u32],
    index: usize,
    opts: &PplOptions,
    bos: Option<u32>,
    observer: Option<&mut dyn MatmulObserver>,
) -> Result<Vec<f32>> {
    // A signal (or the embedding program) asked to stop: checked before each chunk's work.
    crate::formats::cancel::check()?;
    let start = index * opts.n_ctx;
    let mut chunk = tokens[start..start + opts.n_ctx].to_vec();
    if let Some(b) = bos {
        chunk[0] = b;
    }
    Ok(model.eval_sequence(&chunk, opts.n_ubatch, observer)?)
}

/// The scored logits of chunk `index`: positions n_ctx/2 .. n_ctx (n_ctx − n_ctx/2 rows).
fn eval_chunk_scored(
    model: &dyn CausalLm,
    tokens: &[u32],
    index: usize,
    opts: &PplOptions,
    bos: Option<u32>,
) -> Result<Vec<f32>> {
    // A signal (or the embedding program) asked to stop: checked before each chunk's work.
    crate::formats::cancel::check()?;
    let start = index * opts.n_ctx;
    let mut chunk = tokens[start..start + opts.n_ctx].to_vec();
    if let Some(b) = bos {
        chunk[0] = b;
    }
    Ok(model.eval_sequence_from(&chunk, opts.n_ubatch, opts.n_ctx / 2)?)
}

/// log p(target) from one row of logits, as llama-perplexity's `log_softmax`: f32 max, f64 sum
/// of f32 exponentials.
pub fn log_prob(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    (logits[target as usize] - max) as f64 - sum.ln()
}

/// The scored logits of every chunk, kept so that two models can be compared (KL divergence)
/// without running either twice. Holds n_chunks·(n_ctx−1−n_ctx/2)·n_vocab f32 values.
#[derive(Clone, Debug)]
pub struct ScoredLogits {
    /// Context length of each chunk.
    pub n_ctx: usize,
    /// Logits per row.
    pub n_vocab: usize,
    /// Chunks scored.
    pub n_chunks: usize,
    /// Rows of n_vocab logits, chunk after chunk, for positions n_ctx/2 .. n_ctx−2.
    pub logits: Vec<f32>,
    /// The token each row predicts.
    pub targets: Vec<u32>,
    /// Wall time of the forward passes.
    pub seconds: f64,
    /// Tokens that went through the model.
    pub tokens_evaluated: usize,
}

/// Run the chunks and keep the logits that are scored.
pub fn score_logits(
    model: &dyn CausalLm,
    tokens: &[u32],
    opts: &PplOptions,
) -> Result<ScoredLogits> {
    score_logits_with_progress(model, tokens, opts, &mut |_| {})
}

/// `score_logits`, calling `progress` after every chunk.
pub fn score_logits_with_progress(
    model: &dyn CausalLm,
    tokens: &[u32],
    opts: &PplOptions,
    progress: &mut dyn FnMut(ChunkProgress),
) -> Result<ScoredLogits> {
    let n_chunks = chunk_count(tokens.len(), opts)?;
    let bos = chunk_bos(model.metadata())?;
    let nv = model.config().n_vocab;
    let first = opts.n_ctx / 2;
    let per_chunk = opts.n_ctx - 1 - first;
    let mut out = ScoredLogits {
        n_ctx: opts.n_ctx,
        n_vocab: nv,
        n_chunks,
        logits: Vec::with_capacity(n_chunks * per_chunk * nv),
        targets: Vec::with_capacity(n_chunks * per_chunk),
        seconds: 0.0,
        tokens_evaluated: 0,
    };
    let mut acc = NllAccumulator::default();
    let t0 = Instant::now();
    for i in 0..n_chunks {
        let logits = eval_chunk_scored(model, tokens, i, opts, bos)?;
        out.logits.extend_from_slice(&logits[..per_chunk * nv]);
        let start = i * opts.n_ctx;
        out.targets
            .extend_from_slice(&tokens[start + first + 1..start + opts.n_ctx]);
        out.tokens_evaluated += opts.n_ctx;
        acc.add_chunk(
            &logits[..per_chunk * nv],
            &tokens[start + first + 1..start + opts.n_ctx],
            nv,
        );
        acc.check_finite(i + 1)?;
        progress(ChunkProgress {
            done: i + 1,
            total: n_chunks,
            ppl: acc.running_ppl(),
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// What llama-perplexity prints.
#[derive(Clone, Debug, Serialize)]
pub struct PplReport {
    /// Perplexity, exp(mean NLL).
    pub ppl: f64,
    /// ± estimate: ppl·sqrt(var(NLL)/(count−1)).
    pub ppl_uncertainty: f64,
    /// Mean negative log-likelihood of the scored predictions.
    pub mean_nll: f64,
    /// Running PPL after each chunk (llama-perplexity's `[i]ppl,` line).
    pub chunk_ppl: Vec<f64>,
    /// Chunks scored.
    pub n_chunks: usize,
    /// Context length of each chunk.
    pub n_ctx: usize,
    /// Predictions scored.
    pub count: usize,
    /// Tokens run through the model (n_chunks · n_ctx).
    pub tokens_evaluated: usize,
    /// Wall time of the evaluation.
    pub seconds: f64,
}

/// Accumulates NLL the way llama-perplexity does.
#[derive(Default)]
pub(crate) struct NllAccumulator {
    nll: f64,
    nll2: f64,
    count: usize,
    chunk_ppl: Vec<f64>,
}

impl NllAccumulator {
    pub(crate) fn add_chunk(&mut self, rows: &[f32], targets: &[u32], n_vocab: usize) {
        for (row, &t) in rows.chunks(n_vocab).zip(targets) {
            let v = -log_prob(row, t);
            self.nll += v;
            self.nll2 += v * v;
        }
        self.count += targets.len();
        self.chunk_ppl.push((self.nll / self.count as f64).exp());
    }

    pub(crate) fn running_ppl(&self) -> f64 {
        self.chunk_ppl.last().copied().unwrap_or(f64::NAN)
    }

    /// Refuse a chunk whose scores are not finite: the model's output is NaN or inf (a NaN
    /// norm epsilon, a zero rope base, overflowing weights), and every number after it would
    /// be meaningless. `chunk` is the 1-based chunk just added.
    pub(crate) fn check_finite(&self, chunk: usize) -> Result<()> {
        let ppl = self.running_ppl();
        if ppl.is_nan() || ppl == f64::NEG_INFINITY {
            return Err(EvalError::NonFinite { chunk, ppl });
        }
        Ok(())
    }

    pub(crate) fn finish(self, n_ctx: usize, tokens_evaluated: usize, seconds: f64) -> PplReport {
        let mean = self.nll / self.count as f64;
        let var = self.nll2 / self.count as f64 - mean * mean;
        let ppl = mean.exp();
        let unc = if var > 0.0 && self.count > 1 {
            (var / (self.count - 1) as f64).sqrt() * ppl
        } else {
            0.0
        };
        PplReport {
            ppl,
            ppl_uncertainty: unc,
            mean_nll: mean,
            n_chunks: self.chunk_ppl.len(),
            chunk_ppl: self.chunk_ppl,
            n_ctx,
            count: self.count,
            tokens_evaluated,
            seconds,
        }
    }
}

impl ScoredLogits {
    /// The perplexity report of these logits, as if scored just now.
    pub fn perplexity(&self) -> PplReport {
        let per_chunk = self.n_ctx - 1 - self.n_ctx / 2;
        let mut acc = NllAccumulator::default();
        for c in 0..self.n_chunks {
            let rows =
                &self.logits[c * per_chunk * self.n_vocab..(c + 1) * per_chunk * self.n_vocab];
            acc.add_chunk(
                rows,
                &self.targets[c * per_chunk..(c + 1) * per_chunk],
                self.n_vocab,
            );
        }
        acc.finish(self.n_ctx, self.tokens_evaluated, self.seconds)
    }
}

/// Progress after each chunk, for printing llama-perplexity's `[i]ppl,` line.
#[derive(Clone, Copy, Debug)]
pub struct ChunkProgress {
    /// Chunks done (1-based index of the chunk just finished).
    pub done: usize,
    /// Chunks in the run.
    pub total: usize,
    /// Running perplexity over the chunks done.
    pub ppl: f64,
    /// Seconds since the start.
    pub seconds: f64,
}

/// Perplexity of `model` over `tokens` (llama-perplexity's default mode, no stride), holding
/// only one chunk's logits at a time.
pub fn perplexity(model: &dyn CausalLm, tokens: &[u32], opts: &PplOptions) -> Result<PplReport> {
    perplexity_with_progress(model, tokens, opts, &mut |_| {})
}

/// `perplexity`, calling `progress` after every chunk.
pub fn perplexity_with_progress(
    model: &dyn CausalLm,
    tokens: &[u32],
    opts: &PplOptions,
    progress: &mut dyn FnMut(ChunkProgress),
) -> Result<PplReport> {
    let n_chunks = chunk_count(tokens.len(), opts)?;
    let bos = chunk_bos(model.metadata())?;
    let nv = model.config().n_vocab;
    let first = opts.n_ctx / 2;
    let mut acc = NllAccumulator::default();
    let t0 = Instant::now();
    for i in 0..n_chunks {
        let logits = eval_chunk_scored(model, tokens, i, opts, bos)?;
        let start = i * opts.n_ctx;
        acc.add_chunk(
            &logits[..(opts.n_ctx - 1 - first) * nv],
            &tokens[start + first + 1..start + opts.n_ctx],
            nv,
        );
        acc.check_finite(i + 1)?;
        progress(ChunkProgress {
            done: i + 1,
            total: n_chunks,
            ppl: acc.running_ppl(),
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(acc.finish(
        opts.n_ctx,
        n_chunks * opts.n_ctx,
        t0.elapsed().as_secs_f64(),
    ))
}
