//! Importance-matrix collection with llama-imatrix's semantics (`IMatrixCollector::
//! collect_imatrix` and `compute_imatrix` in tools/imatrix/imatrix.cpp): for every matmul whose
//! weight is a `blk.*` tensor (and `output.weight` on request), Σ x_j² of the activations
//! entering each input column j, plus the number of tokens seen. Chunks are cut and
//! BOS-substituted exactly as for perplexity, and the perplexity of the same run comes free.
//! The result is `formats::imatrix::ImatrixStats`, written with its `write_gguf` /
//! `write_legacy`.

use std::time::Instant;

use crate::eval::error::EvalError;

/// What the evaluation functions return.
type Result<T, E = EvalError> = std::result::Result<T, E>;

use super::perplexity::{
    chunk_bos, chunk_count, eval_chunk, ChunkProgress, NllAccumulator, PplOptions, PplReport,
};
use crate::formats::imatrix::ImatrixStats;
use crate::runtime::forward::{CausalLm, MatmulObserver};

/// llama-imatrix options that change the statistics.
#[derive(Clone, Debug, Default)]
pub struct ImatrixOptions {
    /// Chunking (`-c`, `--chunks`, `-ub`); chunk_size in the file is n_ctx.
    pub chunks: PplOptions,
    /// Also collect `output.weight` (`--process-output`).
    pub process_output: bool,
    /// Dataset name recorded in the file (llama-imatrix stores the prompt file path).
    pub dataset: Option<String>,
}

/// Statistics plus the perplexity llama-imatrix prints alongside them.
#[derive(Clone, Debug)]
pub struct ImatrixRun {
    /// The collected statistics, ready to write.
    pub stats: ImatrixStats,
    /// Perplexity over the same chunks.
    pub perplexity: PplReport,
}

/// llama-imatrix skips matmuls over fewer tokens than this ("why are small batches
/// ignored?" — it does, so we do).
const MIN_TOKENS: usize = 16;

struct Collector {
    stats: ImatrixStats,
    process_output: bool,
    error: Option<String>,
}

impl MatmulObserver for Collector {
    fn observe(&mut self, name: &str, input: &[f32], n_tokens: usize, n_in: usize) {
        if n_tokens < MIN_TOKENS || self.error.is_some() {
            return;
        }
        if !(name.starts_with("blk.") || (self.process_output && name == "output.weight")) {
            return;
        }
        let e = self.stats.entries.entry(name.to_string()).or_default();
        if e.values.is_empty() {
            e.values = vec![0.0; n_in];
            e.counts = vec![0];
        } else if e.values.len() != n_in {
            self.error = Some(format!(
                "inconsistent size for {name} ({} vs {n_in})",
                e.values.len()
            ));
            return;
        }
        // Token by token, column by column, in f32: the order llama-imatrix adds in.
        for x in input.chunks(n_in) {
            for (acc, &v) in e.values.iter_mut().zip(x) {
                *acc += v * v;
            }
        }
        if e.values.iter().any(|v| !v.is_finite()) {
            self.error = Some(format!("non-finite values detected in {name}"));
            return;
        }
        e.counts[0] += n_tokens as i64;
        let chunk = (e.counts[0] / self.stats.chunk_size as i64) as i32;
        self.stats.chunk_count = self.stats.chunk_count.max(chunk);
    }
}

/// Run `model` over `tokens` and collect the importance matrix.
pub fn collect_imatrix(
    model: &dyn CausalLm,
    tokens: &[u32],
    opts: &ImatrixOptions,
) -> Result<ImatrixRun> {
    collect_imatrix_with_progress(model, tokens, opts, &mut |_| {})
}

/// `collect_imatrix`, calling `progress` after every chunk (with the running perplexity).
pub fn collect_imatrix_with_progress(
    model: &dyn CausalLm,
    tokens: &[u32],
    opts: &ImatrixOptions,
    progress: &mut dyn FnMut(ChunkProgress),
) -> Result<ImatrixRun> {
    let c = &opts.chunks;
    let n_chunks = chunk_count(tokens.len(), c)?;
    let bos = chunk_bos(model.metadata())?;
    let nv = model.config().n_vocab;
    let first = c.n_ctx / 2;
    let mut collector = Collector {
        stats: ImatrixStats::new(c.n_ctx as i32),
        process_output: opts.process_output,
        error: None,
    };
    collector.stats.datasets = opts.dataset.iter().cloned().collect();
    let mut acc = NllAccumulator::default();
    let t0 = Instant::now();
    for i in 0..n_chunks {
        let logits = eval_chunk(model, tokens, i, c, bos, Some(&mut collector))?;
        if let Some(e) = collector.error.take() {
            return Err(EvalError::Collect { what: e });
        }
        let start = i * c.n_ctx;
        acc.add_chunk(
            &logits[first * nv..(c.n_ctx - 1) * nv],
            &tokens[start + first + 1..start + c.n_ctx],
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
    Ok(ImatrixRun {
        stats: collector.stats,
        perplexity: acc.finish(c.n_ctx, n_chunks * c.n_ctx, t0.elapsed().as_secs_f64()),
    })
}
