//! A CPU forward pass for llama-family GGUF models, in f32.
//!
//! It reproduces the graph llama.cpp builds for `LLM_ARCH_LLAMA` (`src/models/llama.cpp`):
//! token embedding → per layer [RMSNorm → Q/K/V → RoPE ("NORM" mode) → grouped-query causal
//! attention → output projection → residual → RMSNorm → SwiGLU FFN → residual] → RMSNorm →
//! output matrix. The aim is a reference runtime for measuring quantized models (perplexity,
//! KL divergence, importance matrices), not speed.
//!
//! Memory trade-off: by default every weight is dequantized to f32 once, at load time, so each
//! matmul is a plain f32 dot product — fast, at 4 bytes per parameter (a 1B model needs ~4 GiB).
//! `LoadOptions::keep_quantized` instead leaves matrices in the memory-mapped file and
//! dequantizes each weight row when a matmul reaches it (once per row per call, shared by all
//! tokens of the call): the file's size in memory, for more work per forward call. Both give
//! bit-identical logits, since the same row dequantizer produces the same f32 values.
//!
//! Determinism: every output element is one dot product computed by one thread in a fixed
//! order, so results do not depend on the number of rayon threads.

use std::path::Path;
use std::sync::Arc;

use crate::runtime::error::RuntimeError;

/// What the runtime's functions return.
type Result<T, E = RuntimeError> = std::result::Result<T, E>;
use rayon::prelude::*;

use crate::arch::llama::LLAMA;
use crate::arch::{Architecture, ARCHITECTURES};
use crate::formats::gguf::{GgufFile, Metadata, TensorInfo};
use crate::formats::tensor_source::TensorSource;
use crate::quant::{dequantizer, GgmlType, RowDequantizer};

/// Hyper-parameters of a llama model, read from GGUF metadata the way llama.cpp's loader does.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// `general.architecture`.
    pub arch: String,
    /// Transformer blocks (`block_count`).
    pub n_layer: usize,
    /// Hidden width (`embedding_length`).
    pub n_embd: usize,
    /// Feed-forward width (`feed_forward_length`).
    pub n_ff: usize,
    /// Query heads (`attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`attention.head_count_kv`, default n_head).
    pub n_head_kv: usize,
    /// Per-head width of Q and K (`attention.key_length`, default n_embd / n_head).
    pub head_dim: usize,
    /// Per-head width of V (`attention.value_length`).
    pub head_dim_v: usize,
    /// Vocabulary size (`vocab_size`, else the token list's length).
    pub n_vocab: usize,
    /// Leading dimensions of each head that RoPE rotates (`rope.dimension_count`).
    pub n_rot: usize,
    /// RMS norm epsilon (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// RoPE base frequency (`rope.freq_base`, default 10000).
    pub rope_freq_base: f32,
    /// Linear position scaling (1 / `rope.scaling.factor`), 1 when unscaled.
    pub rope_freq_scale: f32,
    /// Factor applied to Q·K (`attention.scale`, default 1/√head_dim).
    pub attn_scale: f32,
}

/// The GGUF architectures whose registered block this runtime executes.
pub fn supported_architectures() -> Vec<&'static str> {
    ARCHITECTURES
        .iter()
        .filter(|a| a.block.is_some() && a.block == LLAMA.block)
        .map(|a| a.gguf_arch)
        .collect()
}

impl LlamaConfig {
    /// Read the hyper-parameters. Architectures and features this runtime does not implement
    /// (MoE, YaRN/LongRoPE scaling, other graph shapes) are refused rather than run wrongly.
    pub fn from_metadata(md: &Metadata) -> Result<LlamaConfig> {
        let arch = md
            .get_str("general.architecture")
            .ok_or_else(|| RuntimeError::MissingKey {
                key: "general.architecture".into(),
            })?
            .to_string();
        // The registry describes each family's block; this runtime executes llama's.
        let block = Architecture::for_gguf_arch(&arch).and_then(|a| a.block);
        if block.is_none() || block != LLAMA.block {
            return Err(RuntimeError::unsupported(format!(
                "architecture '{arch}' is not supported yet by the CPU runtime (it runs {})",
                supported_architectures().join(", ")
            )));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let req = |k: &str| -> Result<usize> {
            md.get_u64(&key(k))
                .map(|v| v as usize)
                .ok_or_else(|| RuntimeError::MissingInteger { key: key(k) })
        };
        let opt_usize = |k: &str| md.get_u64(&key(k)).map(|v| v as usize);
        let opt_f32 = |k: &str| -> Option<f32> {
            match md.get(&key(k))? {
                crate::formats::gguf::Value::F32(v) => Some(*v),
                crate::formats::gguf::Value::F64(v) => Some(*v as f32),
                _ => None,
            }
        };
        if opt_usize("expert_count").unwrap_or(0) > 0 {
            return Err(RuntimeError::unsupported(
                "mixture-of-experts llama models are not supported yet by the CPU runtime",
            ));
        }
        let n_layer = req("block_count")?;
        let n_embd = req("embedding_length")?;
        let n_ff = req("feed_forward_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = opt_usize("attention.head_count_kv").unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(RuntimeError::BadHparams {
                what: format!(
                    "head counts {n_head}/{n_head_kv}: query heads must be a multiple of KV heads"
                ),
            });
        }
        let head_dim = opt_usize("attention.key_length").unwrap_or(n_embd / n_head);
        let head_dim_v = opt_usize("attention.value_length").unwrap_or(n_embd / n_head);
        let n_rot = opt_usize("rope.dimension_count").unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(RuntimeError::BadHparams {
                what: format!("rope.dimension_count {n_rot} does not fit head width {head_dim}"),
            });
        }
        let n_vocab = match opt_usize("vocab_size") {
            Some(v) => v,
            None => match md.get("tokenizer.ggml.tokens") {
                Some(crate::formats::gguf::Value::Array(_, items)) => items.len(),
                _ => {
                    return Err(RuntimeError::NoVocabSize { arch: arch.clone() });
                }
            },
        };
        let rms_eps = opt_f32("attention.layer_norm_rms_epsilon").ok_or_else(|| {
            RuntimeError::MissingFloat {
                key: key("attention.layer_norm_rms_epsilon"),
            }
        })?;
        let rope_freq_base = opt_f32("rope.freq_base").unwrap_or(10000.0);
        // Values that make every activation NaN: refused here, naming the key, rather than
        // reported later as a NaN perplexity or blamed on the first weight that sees them.
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(RuntimeError::BadHparams {
                what: format!(
                    "{} is {rms_eps}, expected a finite number ≥ 0",
                    key("attention.layer_norm_rms_epsilon")
                ),
            });
        }
        if !(rope_freq_base.is_finite() && rope_freq_base > 0.0) {
            return Err(RuntimeError::BadHparams {
                what: format!(
                    "{} is {rope_freq_base}, expected a finite number > 0",
                    key("rope.freq_base")
                ),
            });
        }
        let scaling = md.get_str(&key("rope.scaling.type")).unwrap_or("linear");
        let factor = opt_f32("rope.scaling.factor")
            .or_else(|| opt_f32("rope.scale_linear"))
            .unwrap_or(0.0);
        let rope_freq_scale = match scaling {
            "none" => 1.0,
            "linear" => {
                if factor == 0.0 {
                    1.0
                } else {
                    1.0 / factor
                }
            }
            other => {
                return Err(RuntimeError::unsupported(format!(
                    "rope scaling '{other}' is not supported yet by the CPU runtime"
                )))
            }
        };
        let attn_scale = match opt_f32("attention.scale") {
            Some(s) if s != 0.0 => s,
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        Ok(LlamaConfig {
            arch,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_vocab,
            n_rot,
            rms_eps,
            rope_freq_base,
            rope_freq_scale,
            attn_scale,
        })
    }
}

/// Where a matrix's values live.
#[derive(Clone)]
pub enum Weights {
    /// Dequantized once: rows × cols values, row-major.
    F32(Vec<f32>),
    /// Still in the GGUF file's encoding, dequantized a row at a time.
    Packed(PackedRows),
}

/// Rows of a tensor in the memory-mapped file.
#[derive(Clone)]
pub struct PackedRows {
    file: Arc<GgufFile>,
    tensor: TensorInfo,
    row_bytes: usize,
    dequantize: RowDequantizer,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weights::F32(v) => write!(f, "F32({} values)", v.len()),
            Weights::Packed(p) => write!(f, "Packed({}, {})", p.tensor.name, p.tensor.ty.name()),
        }
    }
}

/// A weight matrix: `rows` outputs × `cols` inputs (ggml ne = [cols, rows]).
#[derive(Clone, Debug)]
pub struct Matrix {
    /// GGUF tensor name.
    pub name: String,
    /// Outputs.
    pub rows: usize,
    /// Inputs (ggml ne[0]).
    pub cols: usize,
    /// The values, as f32 or as the file's packed rows.
    pub weights: Weights,
}

impl Matrix {
    /// Row `r` as f32: borrowed when dequantized, else decoded into `buf`.
    pub fn row<'a>(&'a self, r: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        match &self.weights {
            Weights::F32(v) => &v[r * self.cols..(r + 1) * self.cols],
            Weights::Packed(p) => {
                let bytes = &p.file.tensor_data(&p.tensor)[r * p.row_bytes..(r + 1) * p.row_bytes];
                buf.resize(self.cols, 0.0);
                (p.dequantize)(bytes, buf);
                buf
            }
        }
    }

    /// The dequantized values, when the matrix holds them.
    pub fn f32_values_mut(&mut self) -> Option<&mut Vec<f32>> {
        match &mut self.weights {
            Weights::F32(v) => Some(v),
            Weights::Packed(_) => None,
        }
    }

    /// Bytes this matrix holds in memory (packed rows live in the shared file mapping).
    pub fn resident_bytes(&self) -> usize {
        match &self.weights {
            Weights::F32(v) => v.len() * 4,
            Weights::Packed(p) => p.row_bytes * self.rows,
        }
    }

    /// `y[t] = W · x[t]` for `n_tokens` inputs of `cols` values; returns n_tokens × rows.
    ///
    /// Each rayon task owns a block of output rows; inside it, tiles of weight rows × tokens
    /// are computed together so every loaded weight and activation vector feeds several dot
    /// products (see [`dot_tile`]). Every output element is still [`dot`]'s exact sum, so the
    /// result does not depend on tiling or thread count.
    pub fn matmul(&self, x: &[f32], n_tokens: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), n_tokens * self.cols);
        if n_tokens == 0 {
            return Vec::new();
        }
        // Results land transposed (row-major by weight row) and are transposed back after.
        let mut by_row = vec![0f32; self.rows * n_tokens];
        let cols = self.cols;
        by_row
            .par_chunks_mut(ROWS_PER_TASK * n_tokens)
            .enumerate()
            .for_each(|(block, out)| {
                let first = block * ROWS_PER_TASK;
                let n_rows = out.len() / n_tokens;
                let decoded: Vec<f32>;
                let rows: Vec<&[f32]> = match &self.weights {
                    Weights::F32(v) => (0..n_rows)
                        .map(|r| &v[(first + r) * cols..(first + r + 1) * cols])
                        .collect(),
                    Weights::Packed(_) => {
                        let mut buf = Vec::new();
                        let mut all = Vec::with_capacity(n_rows * cols);
                        for r in 0..n_rows {
                            all.extend_from_slice(self.row(first + r, &mut buf));
                        }
                        decoded = all;
                        decoded.chunks(cols).collect()
                    }
                };
                dot_tile(&rows, x, cols, n_tokens, out);
            });
        if n_tokens == 1 {
            return by_row;
        }
        let mut y = vec![0f32; n_tokens * self.rows];
        for r in 0..self.rows {
            for t in 0..n_tokens {
                y[t * self.rows + r] = by_row[r * n_tokens + t];
            }
        }
        y
    }
}

/// Weight rows per rayon task: enough work per task, and the block's rows stay in L2 while
/// every token passes over them.
const ROWS_PER_TASK: usize = 16;
/// Tile shape: weight rows × tokens computed together (8 accumulators of 8 lanes).
const TILE_ROWS: usize = 2;
const TILE_TOKENS: usize = 4;

/// `out[r·n_tokens + t] = dot(rows[r], x[t])` for every row and token, tile by tile.
fn dot_tile(rows: &[&[f32]], x: &[f32], cols: usize, n_tokens: usize, out: &mut [f32]) {
    let token = |t: usize| &x[t * cols..(t + 1) * cols];
    let mut t0 = 0;
    while t0 < n_tokens {
        let nt = TILE_TOKENS.min(n_tokens - t0);
        let mut r0 = 0;
        while r0 < rows.len() {
            let nr = TILE_ROWS.min(rows.len() - r0);
            if nr == TILE_ROWS && nt == TILE_TOKENS {
                let w: [&[f32]; TILE_ROWS] = std::array::from_fn(|i| rows[r0 + i]);
                let xs: [&[f32]; TILE_TOKENS] = std::array::from_fn(|j| token(t0 + j));
                let sums = dot_block(w, xs);
                for (i, row) in sums.iter().enumerate() {
                    out[(r0 + i) * n_tokens + t0..(r0 + i) * n_tokens + t0 + TILE_TOKENS]
                        .copy_from_slice(row);
                }
            } else {
                for i in 0..nr {
                    for j in 0..nt {
                        out[(r0 + i) * n_tokens + t0 + j] = dot(rows[r0 + i], token(t0 + j));
                    }
                }
            }
            r0 += nr;
        }
        t0 += nt;
    }
}

/// 2×4 dot products at once, each equal to [`dot`] bit for bit.
fn dot_block(w: [&[f32]; TILE_ROWS], x: [&[f32]; TILE_TOKENS]) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX is present (checked just above).
            return unsafe { dot_block_avx(w, x) };
        }
    }
    std::array::from_fn(|r| std::array::from_fn(|t| dot(w[r], x[t])))
}

/// AVX version of [`dot_block`]: lane l of each 8-wide accumulator is [`dot`]'s partial sum l
/// (a rounded product, then a rounded add — no FMA), and the lanes and tail combine in
/// `dot`'s order. Written out by hand (raw pointers, eight named accumulators) so that
/// everything stays in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot_block_avx(
    w: [&[f32]; TILE_ROWS],
    x: [&[f32]; TILE_TOKENS],
) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
    use std::arch::x86_64::*;
    let n = w[0].len();
    assert!(w.iter().chain(x.iter()).all(|v| v.len() == n));
    let chunks = n / 8;
    let (w0, w1) = (w[0].as_ptr(), w[1].as_ptr());
    let (x0, x1, x2, x3) = (x[0].as_ptr(), x[1].as_ptr(), x[2].as_ptr(), x[3].as_ptr());
    let z = _mm256_setzero_ps();
    let (mut a00, mut a01, mut a02, mut a03) = (z, z, z, z);
    let (mut a10, mut a11, mut a12, mut a13) = (z, z, z, z);
    for c in 0..chunks {
        let o = c * 8;
        // SAFETY: all six vectors have n values (asserted) and o + 8 ≤ n.
        unsafe {
            let v0 = _mm256_loadu_ps(w0.add(o));
            let v1 = _mm256_loadu_ps(w1.add(o));
            let t = _mm256_loadu_ps(x0.add(o));
            a00 = _mm256_add_ps(a00, _mm256_mul_ps(v0, t));
            a10 = _mm256_add_ps(a10, _mm256_mul_ps(v1, t));
            let t = _mm256_loadu_ps(x1.add(o));
            a01 = _mm256_add_ps(a01, _mm256_mul_ps(v0, t));
            a11 = _mm256_add_ps(a11, _mm256_mul_ps(v1, t));
            let t = _mm256_loadu_ps(x2.add(o));
            a02 = _mm256_add_ps(a02, _mm256_mul_ps(v0, t));
            a12 = _mm256_add_ps(a12, _mm256_mul_ps(v1, t));
            let t = _mm256_loadu_ps(x3.add(o));
            a03 = _mm256_add_ps(a03, _mm256_mul_ps(v0, t));
            a13 = _mm256_add_ps(a13, _mm256_mul_ps(v1, t));
        }
    }
    let acc = [[a00, a01, a02, a03], [a10, a11, a12, a13]];
    let mut out = [[0f32; TILE_TOKENS]; TILE_ROWS];
    for r in 0..TILE_ROWS {
        for t in 0..TILE_TOKENS {
            let mut lanes = [0f32; 8];
            // SAFETY: lanes holds 8 f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][t]) };
            let mut tail = 0f32;
            for i in chunks * 8..n {
                tail += w[r][i] * x[t][i];
            }
            out[r][t] = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
                + tail;
        }
    }
    out
}

/// How to hold the weights.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Leave matrices in the file's encoding and dequantize rows on use (see the module doc).
    pub keep_quantized: bool,
}

/// f32 dot product with eight fixed partial sums (vectorizes; order fixed, so deterministic).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (pa, pb) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            acc[l] += pa[l] * pb[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// A matmul weight with its optional bias.
#[derive(Clone, Debug)]
pub struct Linear {
    /// The weight matrix.
    pub weight: Matrix,
    /// One bias per output row, when the model has one.
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    fn apply(&self, x: &[f32], n_tokens: usize, observer: &mut Observer<'_>) -> Vec<f32> {
        if let Some(o) = observer.as_deref_mut() {
            o.observe(&self.weight.name, x, n_tokens, self.weight.cols);
        }
        let mut y = self.weight.matmul(x, n_tokens);
        if let Some(b) = &self.bias {
            for row in y.chunks_mut(self.weight.rows) {
                for (v, bv) in row.iter_mut().zip(b) {
                    *v += bv;
                }
            }
        }
        y
    }
}

/// One transformer block.
#[derive(Clone, Debug)]
pub struct LlamaLayer {
    /// RMS norm weights before attention.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: Linear,
    /// Key projection.
    pub wk: Linear,
    /// Value projection.
    pub wv: Linear,
    /// Attention output projection.
    pub wo: Linear,
    /// RMS norm weights before the feed-forward block.
    pub ffn_norm: Vec<f32>,
    /// SwiGLU gate projection.
    pub ffn_gate: Linear,
    /// SwiGLU up projection.
    pub ffn_up: Linear,
    /// Feed-forward down projection.
    pub ffn_down: Linear,
}

/// Sees the input activations of every matmul (llama-imatrix's eval callback on `MUL_MAT`).
pub trait MatmulObserver {
    /// `input` holds `n_tokens` rows of `n_in` values, the right-hand side of `weight_name`'s
    /// matmul.
    fn observe(&mut self, weight_name: &str, input: &[f32], n_tokens: usize, n_in: usize);
}

type Observer<'a> = Option<&'a mut dyn MatmulObserver>;

/// What evaluation (perplexity, KL divergence, importance matrices) needs of a model. The CPU
/// [`LlamaModel`] and the GPU twin (`gpu::forward`) both provide it, so every eval command runs
/// on either device.
pub trait CausalLm {
    /// Hyper-parameters of the model.
    fn config(&self) -> &LlamaConfig;
    /// Metadata of the model file (tokenizer, BOS rules).
    fn metadata(&self) -> &Metadata;
    /// Logits (tokens.len() × n_vocab) of `tokens` at positions 0.. from an empty context, fed
    /// `n_ubatch` tokens per forward call (llama.cpp's micro-batch); `observer` sees every matmul
    /// input of every call.
    fn eval_sequence(
        &self,
        tokens: &[u32],
        n_ubatch: usize,
        observer: Observer<'_>,
    ) -> Result<Vec<f32>>;

    /// Logits of positions `first..tokens.len()` only, ((len − first) × n_vocab): what perplexity
    /// and KL divergence score. llama.cpp computes only the logits a batch requests, so skipping
    /// the others is part of matching its speed. The default computes all and drops the rest.
    fn eval_sequence_from(
        &self,
        tokens: &[u32],
        n_ubatch: usize,
        first: usize,
    ) -> Result<Vec<f32>> {
        let mut all = self.eval_sequence(tokens, n_ubatch, None)?;
        all.drain(..first.min(tokens.len()) * self.config().n_vocab);
        Ok(all)
    }
}

impl CausalLm for LlamaModel {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn eval_sequence(
        &self,
        tokens: &[u32],
        n_ubatch: usize,
        mut observer: Observer<'_>,
    ) -> Result<Vec<f32>> {
        let mut cache = KvCache::default();
        let mut logits = Vec::with_capacity(tokens.len() * self.config.n_vocab);
        for piece in tokens.chunks(n_ubatch.max(1)) {
            let obs = observer
                .as_mut()
                .map(|o| &mut **o as &mut dyn MatmulObserver);
            logits.extend(self.forward_cached(piece, &mut cache, obs)?);
        }
        Ok(logits)
    }

    fn eval_sequence_from(
        &self,
        tokens: &[u32],
        n_ubatch: usize,
        first: usize,
    ) -> Result<Vec<f32>> {
        let first = first.min(tokens.len());
        let mut cache = KvCache::default();
        let mut logits = Vec::with_capacity((tokens.len() - first) * self.config.n_vocab);
        for piece in tokens.chunks(n_ubatch.max(1)) {
            let skip = first.saturating_sub(cache.len()).min(piece.len());
            logits.extend(self.forward_cached_from(piece, &mut cache, None, skip)?);
        }
        Ok(logits)
    }
}

/// Keys and values of the positions evaluated so far (f32, one buffer per layer).
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    n_pos: usize,
}

impl KvCache {
    /// Positions held (the position the next token gets).
    pub fn len(&self) -> usize {
        self.n_pos
    }

    /// Whether no position is held yet.
    pub fn is_empty(&self) -> bool {
        self.n_pos == 0
    }

    /// Forget every position (the next token is at position 0).
    pub fn clear(&mut self) {
        *self = KvCache::default();
    }
}

/// A llama model loaded for inference.
#[derive(Clone, Debug)]
pub struct LlamaModel {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    /// Token embedding (`token_embd.weight`), one row per token.
    pub tok_embd: Matrix,
    /// The transformer blocks, in order.
    pub layers: Vec<LlamaLayer>,
    /// Final RMS norm weights (`output_norm.weight`).
    pub output_norm: Vec<f32>,
    /// `None` when the file has no `output.weight`: the token embedding is reused (tied).
    pub output: Option<Linear>,
    /// llama3-style per-frequency divisors (`rope_freqs.weight`), n_rot/2 values.
    pub rope_freqs: Option<Vec<f32>>,
    /// Metadata of the file, for the tokenizer.
    pub metadata: Metadata,
}

fn dequantize_tensor(file: &GgufFile, t: &TensorInfo) -> Result<Vec<f32>> {
    dequantize_bytes(&t.name, t.ty, &t.ne, file.tensor_data(t))
}

/// Every row of a tensor's bytes (type `ty`, ggml shape `ne`) as f32.
fn dequantize_bytes(name: &str, ty: GgmlType, ne: &[u64], bytes: &[u8]) -> Result<Vec<f32>> {
    let dq = dequantizer(ty)
        .ok_or_else(|| RuntimeError::tensor(name, format!("no dequantizer for {}", ty.name())))?;
    let n_per_row = ne.first().copied().unwrap_or(1) as usize;
    let n_rows = ne.iter().skip(1).product::<u64>() as usize;
    let row_bytes = ty.row_size(n_per_row as u64).ok_or_else(|| {
        RuntimeError::tensor(
            name,
            format!("rows of {n_per_row} do not fit {}", ty.name()),
        )
    })? as usize;
    if bytes.len() < row_bytes * n_rows {
        return Err(RuntimeError::tensor(name, "tensor data truncated"));
    }
    let mut out = vec![0f32; n_rows * n_per_row];
    out.par_chunks_mut(n_per_row.max(1))
        .zip(bytes.par_chunks(row_bytes.max(1)))
        .for_each(|(o, b)| dq(b, o));
    Ok(out)
}

/// Where the loader reads tensors from: a memory-mapped GGUF file or any [`TensorSource`].
trait WeightSource {
    fn metadata(&self) -> &Metadata;
    /// ggml ne of a tensor, None when absent.
    fn shape(&self, name: &str) -> Option<Vec<u64>>;
    /// All values as f32.
    fn values(&self, name: &str) -> Result<Vec<f32>>;
    /// A matrix's weights, dequantized or left packed as the source prefers.
    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Weights>;
}

struct GgufTensors {
    file: Arc<GgufFile>,
    opts: LoadOptions,
}

impl GgufTensors {
    fn find(&self, name: &str) -> Result<&TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| RuntimeError::missing_tensor(name))
    }
}

impl WeightSource for GgufTensors {
    fn metadata(&self) -> &Metadata {
        &self.file.metadata
    }

    fn shape(&self, name: &str) -> Option<Vec<u64>> {
        self.file.tensor(name).map(|t| t.ne.clone())
    }

    fn values(&self, name: &str) -> Result<Vec<f32>> {
        dequantize_tensor(&self.file, self.find(name)?)
    }

    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Weights> {
        let t = self.find(name)?;
        if !self.opts.keep_quantized {
            return Ok(Weights::F32(dequantize_tensor(&self.file, t)?));
        }
        let dq = dequantizer(t.ty).ok_or_else(|| {
            RuntimeError::tensor(name, format!("no dequantizer for {}", t.ty.name()))
        })?;
        let row_bytes = t.ty.row_size(cols as u64).ok_or_else(|| {
            RuntimeError::tensor(name, format!("rows of {cols} do not fit {}", t.ty.name()))
        })? as usize;
        if self.file.tensor_data(t).len() < row_bytes * rows {
            return Err(RuntimeError::tensor(name, "tensor data truncated"));
        }
        Ok(Weights::Packed(PackedRows {
            file: Arc::clone(&self.file),
            tensor: t.clone(),
            row_bytes,
            dequantize: dq,
        }))
    }
}

struct SourceTensors<'a> {
    source: &'a dyn TensorSource,
    index: std::collections::HashMap<String, usize>,
}

impl WeightSource for SourceTensors<'_> {
    fn metadata(&self) -> &Metadata {
        self.source.metadata()
    }

    fn shape(&self, name: &str) -> Option<Vec<u64>> {
        self.index
            .get(name)
            .map(|&i| self.source.tensors()[i].ne.clone())
    }

    fn values(&self, name: &str) -> Result<Vec<f32>> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| RuntimeError::missing_tensor(name))?;
        let t = &self.source.tensors()[i];
        let bytes = self.source.tensor_bytes(i)?;
        dequantize_bytes(name, t.ty, &t.ne, &bytes)
    }

    fn matrix(&self, name: &str, _cols: usize, _rows: usize) -> Result<Weights> {
        Ok(Weights::F32(self.values(name)?))
    }
}

impl LlamaModel {
    /// Load with every weight dequantized to f32.
    pub fn load(path: impl AsRef<Path>) -> Result<LlamaModel> {
        LlamaModel::load_with(path, &LoadOptions::default())
    }

    /// Load the GGUF file at `path`, holding the weights as `opts` says.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<LlamaModel> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|source| RuntimeError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        LlamaModel::from_gguf(Arc::new(file), opts).map_err(|e| RuntimeError::Load {
            what: path.display().to_string(),
            source: Box::new(e),
        })
    }

    /// Build from a GGUF file already open (packed weights keep a handle on it).
    pub fn from_gguf(file: Arc<GgufFile>, opts: &LoadOptions) -> Result<LlamaModel> {
        LlamaModel::build(&GgufTensors { file, opts: *opts })
    }

    /// Load from any tensor source (a Hugging Face checkpoint converted on the fly, …): every
    /// tensor is read once, in its declared type, and dequantized to f32 — no temporary file.
    pub fn from_source(source: &dyn TensorSource) -> Result<LlamaModel> {
        LlamaModel::build(&SourceTensors {
            source,
            index: source
                .tensors()
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
        })
        .map_err(|e| RuntimeError::Load {
            what: source.describe(),
            source: Box::new(e),
        })
    }

    fn build(src: &dyn WeightSource) -> Result<LlamaModel> {
        let md = src.metadata();
        let c = LlamaConfig::from_metadata(md)?;
        let has = |name: &str| src.shape(name).is_some();
        let vector = |name: &str, n: usize| -> Result<Vec<f32>> {
            let ne = src
                .shape(name)
                .ok_or_else(|| RuntimeError::missing_tensor(name))?;
            if ne.iter().product::<u64>() as usize != n {
                return Err(RuntimeError::tensor(
                    name,
                    format!("{} values, expected {n}", ne.iter().product::<u64>()),
                ));
            }
            src.values(name)
        };
        let matrix = |name: &str, cols: usize, rows: usize| -> Result<Matrix> {
            let ne = src
                .shape(name)
                .ok_or_else(|| RuntimeError::missing_tensor(name))?;
            let dims_ok = ne.len() >= 2
                && ne[0] as usize == cols
                && ne[1] as usize == rows
                && ne[2..].iter().all(|&d| d == 1);
            if !dims_ok {
                return Err(RuntimeError::tensor(
                    name,
                    format!("shape {ne:?}, expected [{cols}, {rows}]"),
                ));
            }
            Ok(Matrix {
                name: name.to_string(),
                rows,
                cols,
                weights: src.matrix(name, cols, rows)?,
            })
        };
        let bias = |name: &str, n: usize| -> Result<Option<Vec<f32>>> {
            if has(name) {
                vector(name, n).map(Some)
            } else {
                Ok(None)
            }
        };
        let linear = |base: &str, cols: usize, rows: usize| -> Result<Linear> {
            Ok(Linear {
                weight: matrix(&format!("{base}.weight"), cols, rows)?,
                bias: bias(&format!("{base}.bias"), rows)?,
            })
        };

        let q_width = c.head_dim * c.n_head;
        let k_width = c.head_dim * c.n_head_kv;
        let v_width = c.head_dim_v * c.n_head_kv;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            if has(&b("attn_qkv.weight")) {
                return Err(RuntimeError::unsupported(
                    "fused attn_qkv tensors are not supported yet by the CPU runtime",
                ));
            }
            layers.push(LlamaLayer {
                attn_norm: vector(&b("attn_norm.weight"), c.n_embd)?,
                wq: linear(&b("attn_q"), c.n_embd, q_width)?,
                wk: linear(&b("attn_k"), c.n_embd, k_width)?,
                wv: linear(&b("attn_v"), c.n_embd, v_width)?,
                wo: linear(&b("attn_output"), c.head_dim_v * c.n_head, c.n_embd)?,
                ffn_norm: vector(&b("ffn_norm.weight"), c.n_embd)?,
                ffn_gate: linear(&b("ffn_gate"), c.n_embd, c.n_ff)?,
                ffn_up: linear(&b("ffn_up"), c.n_embd, c.n_ff)?,
                ffn_down: linear(&b("ffn_down"), c.n_ff, c.n_embd)?,
            });
        }
        let output = if has("output.weight") {
            Some(linear("output", c.n_embd, c.n_vocab)?)
        } else {
            None
        };
        // llama.cpp loads one rope_freqs tensor (llama3 scaling) and shares it by every layer.
        let rope_freqs = if has("rope_freqs.weight") {
            Some(vector("rope_freqs.weight", c.n_rot / 2)?)
        } else {
            None
        };
        Ok(LlamaModel {
            tok_embd: matrix("token_embd.weight", c.n_embd, c.n_vocab)?,
            output_norm: vector("output_norm.weight", c.n_embd)?,
            layers,
            output,
            rope_freqs,
            metadata: md.clone(),
            config: c,
        })
    }

    /// Bytes of weights held in memory (for packed matrices: their share of the file mapping).
    pub fn weight_bytes(&self) -> usize {
        let lin = |l: &Linear| l.weight.resident_bytes() + 4 * l.bias.as_ref().map_or(0, Vec::len);
        let mut n = self.tok_embd.resident_bytes() + 4 * self.output_norm.len();
        n += self.output.as_ref().map_or(0, lin);
        for l in &self.layers {
            n += 4 * (l.attn_norm.len() + l.ffn_norm.len());
            n += [
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.ffn_gate,
                &l.ffn_up,
                &l.ffn_down,
            ]
            .into_iter()
            .map(lin)
            .sum::<usize>();
        }
        n
    }

    /// Logits (n_tokens × n_vocab) of `tokens` at positions 0.., evaluated from an empty cache.
    pub fn forward(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut cache = KvCache::default();
        self.forward_cached(tokens, &mut cache, None)
    }

    /// Evaluate `tokens` at the positions following those in `cache`, appending their keys and
    /// values, and return their logits (n_tokens × n_vocab). `observer` sees every matmul input.
    pub fn forward_cached(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        observer: Observer<'_>,
    ) -> Result<Vec<f32>> {
        self.forward_cached_from(tokens, cache, observer, 0)
    }

    /// [`LlamaModel::forward_cached`] returning the logits of the tokens after the first `skip`
    /// only ((n_tokens − skip) × n_vocab); the output matmul runs on those rows alone.
    pub fn forward_cached_from(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        mut observer: Observer<'_>,
        skip: usize,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = tokens.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(RuntimeError::TokenOutOfRange {
                token: bad,
                n_vocab: c.n_vocab,
            });
        }
        if cache.keys.is_empty() {
            cache.keys = vec![Vec::new(); c.n_layer];
            cache.values = vec![Vec::new(); c.n_layer];
        }
        let pos0 = cache.n_pos;

        let mut hidden = Vec::with_capacity(n * c.n_embd);
        let mut buf = Vec::new();
        for &t in tokens {
            hidden.extend_from_slice(self.tok_embd.row(t as usize, &mut buf));
        }

        for (il, layer) in self.layers.iter().enumerate() {
            let x = rms_norm(&hidden, &layer.attn_norm, c.rms_eps);
            let mut q = layer.wq.apply(&x, n, &mut observer);
            let mut k = layer.wk.apply(&x, n, &mut observer);
            let v = layer.wv.apply(&x, n, &mut observer);
            self.rope(&mut q, c.n_head, pos0);
            self.rope(&mut k, c.n_head_kv, pos0);
            cache.keys[il].extend_from_slice(&k);
            cache.values[il].extend_from_slice(&v);
            let attn = self.attention(&q, &cache.keys[il], &cache.values[il], pos0, n);
            let o = layer.wo.apply(&attn, n, &mut observer);
            for (h, d) in hidden.iter_mut().zip(&o) {
                *h += d;
            }

            let x = rms_norm(&hidden, &layer.ffn_norm, c.rms_eps);
            let gate = layer.ffn_gate.apply(&x, n, &mut observer);
            let mut up = layer.ffn_up.apply(&x, n, &mut observer);
            for (u, g) in up.iter_mut().zip(&gate) {
                *u *= silu(*g);
            }
            let down = layer.ffn_down.apply(&up, n, &mut observer);
            for (h, d) in hidden.iter_mut().zip(&down) {
                *h += d;
            }
        }
        cache.n_pos += n;

        let skip = skip.min(n);
        let x = rms_norm(&hidden[skip * c.n_embd..], &self.output_norm, c.rms_eps);
        let m = n - skip;
        Ok(match &self.output {
            Some(out) => out.apply(&x, m, &mut observer),
            None => {
                if let Some(o) = observer {
                    o.observe(&self.tok_embd.name, &x, m, c.n_embd);
                }
                self.tok_embd.matmul(&x, m)
            }
        })
    }

    /// Rotate each head's leading n_rot values in place, pairs (2i, 2i+1) by angle
    /// pos·base^(−2i/n_rot)·freq_scale / freq_factor[i] — ggml's `GGML_ROPE_TYPE_NORMAL`
    /// (`ggml_rope_cache_init` + `rotate_pairs`, no YaRN). Adjacent pairs are right for GGUF
    /// llama files because convert_hf_to_gguf.py permutes Q/K rows so that Hugging Face's
    /// (i, i + d/2) rotate-half pairs land at (2i, 2i+1).
    fn rope(&self, x: &mut [f32], n_heads: usize, pos0: usize) {
        let c = &self.config;
        let half = c.n_rot / 2;
        let theta_scale = c.rope_freq_base.powf(-2.0 / c.n_rot as f32);
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let f = theta_scale.powi(i as i32);
                match &self.rope_freqs {
                    Some(ff) => f / ff[i],
                    None => f,
                }
            })
            .collect();
        let row = n_heads * c.head_dim;
        for (t, tok) in x.chunks_mut(row).enumerate() {
            let pos = (pos0 + t) as f32;
            for head in tok.chunks_mut(c.head_dim) {
                for (i, &f) in inv_freq.iter().enumerate() {
                    let theta = c.rope_freq_scale * (pos * f);
                    let (sin, cos) = theta.sin_cos();
                    let (a, b) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = a * cos - b * sin;
                    head[2 * i + 1] = a * sin + b * cos;
                }
            }
        }
    }

    /// Causal grouped-query attention of `n` new queries (positions pos0..pos0+n) over all
    /// cached keys/values; query head h reads KV head h / (n_head / n_head_kv), as ggml's
    /// broadcast does. Returns n × (n_head·head_dim_v).
    fn attention(
        &self,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        pos0: usize,
        n: usize,
    ) -> Vec<f32> {
        let c = &self.config;
        let (hd, hdv) = (c.head_dim, c.head_dim_v);
        let group = c.n_head / c.n_head_kv;
        let (q_row, k_row, v_row) = (c.n_head * hd, c.n_head_kv * hd, c.n_head_kv * hdv);
        let out_row = c.n_head * hdv;
        let mut out = vec![0f32; n * out_row];
        out.par_chunks_mut(out_row)
            .enumerate()
            .for_each(|(t, out_tok)| {
                let n_ctx = pos0 + t + 1;
                let mut scores = vec![0f32; n_ctx];
                for h in 0..c.n_head {
                    let kvh = h / group;
                    let qh = &q[t * q_row + h * hd..t * q_row + (h + 1) * hd];
                    let mut max = f32::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate() {
                        let kj = &keys[j * k_row + kvh * hd..j * k_row + (kvh + 1) * hd];
                        *s = dot(qh, kj) * c.attn_scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0f64;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s as f64;
                    }
                    let inv = (1.0 / sum) as f32;
                    let oh = &mut out_tok[h * hdv..(h + 1) * hdv];
                    for (j, &p) in scores.iter().enumerate() {
                        let vj = &values[j * v_row + kvh * hdv..j * v_row + (kvh + 1) * hdv];
                        let w = p * inv;
                        for (o, &vv) in oh.iter_mut().zip(vj) {
                            *o += w * vv;
                        }
                    }
                }
            });
        out
    }
}

/// RMS normalization of each row, then the learned scale (`ggml_rms_norm` sums squares in
/// double, then `ggml_mul` by the weight).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let n = weight.len();
    let mut out = vec![0f32; x.len()];
    for (xr, or) in x.chunks(n).zip(out.chunks_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    }
    out
}

/// SiLU, x·σ(x), as ggml computes it in f32.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}
