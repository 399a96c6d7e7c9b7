//! KL divergence between a base model's and a test model's token distributions over the same
//! scored positions — the statistics llama-perplexity's `--kl-divergence` prints.
//!
//! One deliberate difference: llama.cpp stores the base log-probabilities as 16-bit codes
//! (a per-row scale and offset) and drops base probabilities below e⁻¹⁶; here both
//! distributions are exact f32 logits and every vocabulary entry is summed in f64.

use std::path::Path;

use crate::eval::error::EvalError;

/// What the evaluation functions return.
type Result<T, E = EvalError> = std::result::Result<T, E>;
use serde::Serialize;

use super::perplexity::ScoredLogits;

/// Distribution statistics.
#[derive(Clone, Debug, Serialize)]
pub struct KldReport {
    /// Positions compared.
    pub count: usize,
    /// Perplexity of the base run.
    pub ppl_base: f64,
    /// Perplexity of the test run.
    pub ppl: f64,
    /// Mean ln(PPL(test)/PPL(base)).
    pub ln_ppl_ratio: f64,
    /// Mean KL divergence, base ‖ test.
    pub mean_kld: f64,
    /// ± of the mean (llama.cpp's `mean_and_uncertainty`: 0 for ≤ 10 samples).
    pub kld_uncertainty: f64,
    /// Median KL divergence.
    pub median_kld: f64,
    /// Largest KL divergence.
    pub max_kld: f64,
    /// Smallest KL divergence.
    pub min_kld: f64,
    /// (fraction, value) for 99.9, 99, 95, 90, 10, 5, 1 and 0.1 %.
    pub kld_percentiles: Vec<(f64, f64)>,
    /// Mean of p_test(target) − p_base(target).
    pub mean_delta_p: f64,
    /// RMS of that difference.
    pub rms_delta_p: f64,
    /// Percentage of positions where both models rank the same token first.
    pub same_top_pct: f64,
}

/// Log-softmax of one row in f64 (max and sum of exponentials as llama-perplexity computes
/// them, the result kept in double).
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| (l - max).exp() as f64).sum();
    let lse = max as f64 + sum.ln();
    row.iter().map(|&l| l as f64 - lse).collect()
}

/// First index of the largest value (ties keep the lower index, as llama.cpp's scan does).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Linear interpolation between order statistics (llama-perplexity's `percentile`).
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let ip = p as usize;
    let frac = p - ip as f64;
    (1.0 - frac) * sorted[ip] + frac * sorted[(ip + 1).min(sorted.len() - 1)]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2] + sorted[n / 2 - 1])
    } else {
        sorted[n / 2]
    }
}

fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count == 0 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    let u = if df > 0.0 && count > 10 {
        (df / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    (f, u)
}

/// Compare `test` with `base`; both must come from the same tokens and options.
pub fn kl_divergence(base: &ScoredLogits, test: &ScoredLogits) -> Result<KldReport> {
    if base.n_vocab != test.n_vocab || base.targets != test.targets || base.n_ctx != test.n_ctx {
        return Err(EvalError::RunsDiffer);
    }
    let nv = base.n_vocab;
    let count = base.targets.len();
    if count == 0 {
        return Err(EvalError::NoScoredPositions);
    }
    let mut klds = Vec::with_capacity(count);
    let (mut nll, mut nll_base, mut dp_sum, mut dp2_sum) = (0f64, 0f64, 0f64, 0f64);
    let mut same_top = 0usize;
    for (i, &t) in base.targets.iter().enumerate() {
        let rb = &base.logits[i * nv..(i + 1) * nv];
        let rt = &test.logits[i * nv..(i + 1) * nv];
        let (lb, lt) = (log_softmax(rb), log_softmax(rt));
        let kl: f64 = lb.iter().zip(&lt).map(|(&b, &q)| b.exp() * (b - q)).sum();
        klds.push(kl.max(0.0));
        nll -= lt[t as usize];
        nll_base -= lb[t as usize];
        let dp = lt[t as usize].exp() - lb[t as usize].exp();
        dp_sum += dp;
        dp2_sum += dp * dp;
        if argmax(rb) == argmax(rt) {
            same_top += 1;
        }
    }
    let sum: f64 = klds.iter().sum();
    let sum2: f64 = klds.iter().map(|k| k * k).sum();
    let (mean_kld, kld_uncertainty) = mean_and_uncertainty(sum, sum2, count);
    klds.sort_by(|a, b| a.total_cmp(b));
    let fractions = [0.999, 0.99, 0.95, 0.90, 0.10, 0.05, 0.01, 0.001];
    Ok(KldReport {
        count,
        ppl_base: (nll_base / count as f64).exp(),
        ppl: (nll / count as f64).exp(),
        ln_ppl_ratio: (nll - nll_base) / count as f64,
        mean_kld,
        kld_uncertainty,
        median_kld: median(&klds),
        max_kld: klds[count - 1],
        min_kld: klds[0],
        kld_percentiles: fractions
            .iter()
            .map(|&f| (f, percentile(&klds, f)))
            .collect(),
        mean_delta_p: dp_sum / count as f64,
        rms_delta_p: (dp2_sum / count as f64).sqrt(),
        same_top_pct: 100.0 * same_top as f64 / count as f64,
    })
}

/// First bytes of a saved-logits file (`qforge perplexity --kl-divergence-base`).
const LOGITS_MAGIC: &[u8; 8] = b"QFLOGIT1";

/// Save the scored logits of a base model, for a later `--kl-divergence` run.
///
/// Format (little-endian): the 8 bytes `QFLOGIT1`; u32 n_ctx, n_vocab, n_chunks, n_rows; n_rows
/// u32 target token ids; n_rows × n_vocab f32 logits (row after row, the positions
/// llama-perplexity scores: n_ctx/2 .. n_ctx−2 of each chunk). Exact logits rather than
/// llama.cpp's 16-bit log-probability codes, so the statistics are those of [`kl_divergence`].
/// The file is written under a temporary name and renamed, so a failed run leaves none.
pub fn write_scored_logits(s: &ScoredLogits, path: &Path) -> Result<()> {
    let mut bytes = Vec::with_capacity(24 + 4 * (s.targets.len() + s.logits.len()));
    bytes.extend_from_slice(LOGITS_MAGIC);
    for v in [s.n_ctx, s.n_vocab, s.n_chunks, s.targets.len()] {
        bytes.extend_from_slice(&(v as u32).to_le_bytes());
    }
    for t in &s.targets {
        bytes.extend_from_slice(&t.to_le_bytes());
    }
    for l in &s.logits {
        bytes.extend_from_slice(&l.to_le_bytes());
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, &bytes).map_err(|e| EvalError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EvalError::io("renaming to", path, e))?;
    Ok(())
}

/// Read a file written by [`write_scored_logits`].
pub fn read_scored_logits(path: &Path) -> Result<ScoredLogits> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io("reading", path, e))?;
    let bad = |what: &'static str| EvalError::BadLogitsFile {
        path: path.to_path_buf(),
        what,
    };
    if bytes.len() < 24 || &bytes[..8] != LOGITS_MAGIC {
        if bytes.starts_with(b"_logits_") {
            return Err(bad(
                "a llama-perplexity logits file; reading llama.cpp's format is not supported yet",
            ));
        }
        return Err(bad(
            "not a qforge logits file (written by --kl-divergence-base)",
        ));
    }
    let word = |i: usize| u32::from_le_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().unwrap());
    let (n_ctx, n_vocab, n_chunks, n_rows) = (
        word(0) as usize,
        word(1) as usize,
        word(2) as usize,
        word(3) as usize,
    );
    let want = 24 + 4 * n_rows + 4 * n_rows * n_vocab;
    if bytes.len() != want || n_ctx < 2 || n_rows != n_chunks * (n_ctx - 1 - n_ctx / 2) {
        return Err(bad("truncated or inconsistent logits file"));
    }
    let u32s = |b: &[u8]| -> Vec<u32> {
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let targets = u32s(&bytes[24..24 + 4 * n_rows]);
    let logits = bytes[24 + 4 * n_rows..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Ok(ScoredLogits {
        n_ctx,
        n_vocab,
        n_chunks,
        logits,
        targets,
        seconds: 0.0,
        tokens_evaluated: n_chunks * n_ctx,
    })
}
