//! The LoRA merge kernel, and the exact arithmetic it promises.
//!
//! # The contract
//!
//! For a targeted weight W [out, in] with factors A [r, in] and B [out, r], every merged element
//! is computed in f32 in exactly this order, with no fused multiply-add anywhere:
//!
//! ```text
//! acc = +0.0
//! for k in 0, 1, …, r-1:                 // ascending, one element at a time
//!     acc = acc + (B[o,k] · A[k,i])      // the product rounded to f32, then the sum rounded
//! merged = f32(W[o,i])                   // exact: W is F32, F16 or BF16
//! merged = merged + (scale · acc)        // the product rounded, then the sum rounded
//! W'[o,i] = round(merged)                // once, to W's dtype, round-to-nearest-even
//! ```
//!
//! - `scale` is one f32 per (adapter, module): `SCALE · alpha / r`, or `SCALE · alpha / √r` with
//!   rsLoRA, evaluated in f64 and rounded once to f32 (see `PeftAdapter::scale`). For GGUF
//!   adapters it is llama-export-lora's f32 `SCALE · alpha / r` (`SCALE` when alpha is 0).
//! - Several adapters fold in the order given, each with its own `acc` and `scale`:
//!   `merged = (f32(W) + s₁·acc₁) + s₂·acc₂ …`, still rounded to W's dtype only once at the end.
//! - `fan_in_fan_out` (and embeddings, whose update is (B·A)ᵀ) store W as [in, out]: the element
//!   at stored position [i, o] gets the same `acc` as above; only where it lives changes.
//! - A result that is not finite after the final rounding (NaN, or too large for F16/BF16) is an
//!   error, never a silent infinity.
//!
//! Because each element's sum runs over k alone and in order, the result does not depend on how
//! rows are split between threads, on SIMD width, or on the device: this CPU kernel vectorizes
//! across columns (each lane owns one element and its own k-ordered sum), and the GPU twin
//! (`shaders/lora_merge.wgsl`, `gpu::lora_merge`) is one invocation per element running the same
//! k loop with a multiply the shader compiler cannot fuse into the following add (WGSL does not
//! forbid `a*b+c` contraction; see shared/notes/gpu.md), with P, Q and the scales uploaded
//! exactly as [`LowRankUpdate`] holds them.
//!
//! # The kernel's orientation
//!
//! The kernel sees one stored matrix W [rows, cols] and, per adapter, `P` [rows, r] and
//! `Q` [r, cols] with `delta[s, c] = Σ_k P[s,k]·Q[k,c]`. For a plain linear layer P = B and
//! Q = A, untouched; for fan_in_fan_out and embeddings P = Aᵀ and Q = Bᵀ (f32 products commute
//! exactly, so B·A and A·B give the same bits). The inner loop walks a row of Q and a row of the
//! accumulator together — contiguous memory, no gathers.

use std::sync::Arc;

use rayon::prelude::*;

use crate::gpu::{GpuContext, GpuError};
use crate::lora::gpu_merge::GpuLoraMerge;
use crate::quant::{self, GgmlType};

/// One adapter's update of one stored matrix, in the kernel's orientation.
#[derive(Clone, Debug)]
pub struct LowRankUpdate {
    /// [rows, rank], row-major.
    pub p: Vec<f32>,
    /// [rank, cols], row-major.
    pub q: Vec<f32>,
    /// Rank of the update (columns of `p`, rows of `q`).
    pub rank: usize,
    /// The factor the update is multiplied by before it is added.
    pub scale: f32,
}

impl LowRankUpdate {
    /// W [out, in] += scale · B [out, r] · A [r, in]: P = B, Q = A as they are.
    pub fn out_in(b: Vec<f32>, a: Vec<f32>, rank: usize, scale: f32) -> LowRankUpdate {
        LowRankUpdate {
            p: b,
            q: a,
            rank,
            scale,
        }
    }

    /// W stored [in, out] (fan_in_fan_out, embeddings): P = Aᵀ [in, r], Q = Bᵀ [r, out].
    pub fn in_out(b: &[f32], a: &[f32], rank: usize, scale: f32) -> LowRankUpdate {
        LowRankUpdate {
            p: transpose(a, rank),
            q: transpose(b, b.len() / rank.max(1)),
            rank,
            scale,
        }
    }

    /// Rows of the stored matrix this update is for.
    pub fn rows(&self) -> usize {
        self.p.len() / self.rank.max(1)
    }

    /// Columns of the stored matrix this update is for.
    pub fn cols(&self) -> usize {
        self.q.len() / self.rank.max(1)
    }
}

/// The transpose of a row-major matrix with `rows` rows.
pub fn transpose(m: &[f32], rows: usize) -> Vec<f32> {
    let cols = m.len() / rows.max(1);
    let mut t = vec![0f32; m.len()];
    for (r, row) in m.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// Columns one block of accumulators covers: eight AVX registers (four AVX-512 ones), kept in
/// registers across the whole k loop so each step costs one load of Q, one multiply, one add
/// per register — and enough independent sums that the add latency is hidden.
const LANES: usize = 64;

/// Fold every update into a block of stored rows, in order: `w` holds `rows.len()` rows of
/// `cols` values, row `i` of it being row `rows[i]` of the matrix (rows need not be adjacent:
/// the converter asks for them in its permuted order).
///
/// SIMD across columns: a block of [`LANES`] adjacent elements is computed together, each lane
/// running its own sum over k in ascending order (a rounded multiply, then a rounded add — Rust
/// never contracts them into an FMA, vectorized or not). So every element gets exactly the
/// contract's value; the block shapes change only speed. Column blocks are the outer loop and
/// rows the inner one, so the [rank × LANES] piece of Q a block needs stays in L1 across all
/// the rows instead of being streamed from L2 once per row.
#[inline(always)]
fn merge_block_body<const LANES: usize>(
    w: &mut [f32],
    cols: usize,
    rows: &[usize],
    updates: &[&LowRankUpdate],
) {
    for u in updates {
        let scale = u.scale;
        let full = cols / LANES * LANES;
        for c0 in (0..full).step_by(LANES) {
            // Rows two at a time: each load of Q feeds two independent sums, which also
            // doubles the chains in flight (the add latency, not the ports, bounds one row).
            let mut pairs = w.chunks_exact_mut(2 * cols);
            let mut row_pairs = rows.chunks_exact(2);
            for (w2, r2) in (&mut pairs).zip(&mut row_pairs) {
                let (w_a, w_b) = w2.split_at_mut(cols);
                let p_a = &u.p[r2[0] * u.rank..(r2[0] + 1) * u.rank];
                let p_b = &u.p[r2[1] * u.rank..(r2[1] + 1) * u.rank];
                let mut acc_a = [0f32; LANES];
                let mut acc_b = [0f32; LANES];
                for k in 0..u.rank {
                    let q: &[f32; LANES] = u.q[k * cols + c0..k * cols + c0 + LANES]
                        .try_into()
                        .expect("a full block");
                    let (pa, pb) = (p_a[k], p_b[k]);
                    for j in 0..LANES {
                        acc_a[j] += pa * q[j];
                        acc_b[j] += pb * q[j];
                    }
                }
                for j in 0..LANES {
                    w_a[c0 + j] += scale * acc_a[j];
                    w_b[c0 + j] += scale * acc_b[j];
                }
            }
            for (w_row, &row) in pairs
                .into_remainder()
                .chunks_exact_mut(cols)
                .zip(row_pairs.remainder())
            {
                let p_row = &u.p[row * u.rank..(row + 1) * u.rank];
                let mut acc = [0f32; LANES];
                for (k, &p) in p_row.iter().enumerate() {
                    let q: &[f32; LANES] = u.q[k * cols + c0..k * cols + c0 + LANES]
                        .try_into()
                        .expect("a full block");
                    for j in 0..LANES {
                        acc[j] += p * q[j];
                    }
                }
                let w_block = &mut w_row[c0..c0 + LANES];
                for j in 0..LANES {
                    w_block[j] += scale * acc[j];
                }
            }
        }
        for (w_row, &row) in w.chunks_exact_mut(cols).zip(rows) {
            let p_row = &u.p[row * u.rank..(row + 1) * u.rank];
            for (c, w) in w_row.iter_mut().enumerate().skip(full) {
                let mut acc = 0f32;
                for (k, &p) in p_row.iter().enumerate() {
                    acc += p * u.q[k * cols + c];
                }
                *w += scale * acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn merge_block_avx2(w: &mut [f32], cols: usize, rows: &[usize], updates: &[&LowRankUpdate]) {
    merge_block_body::<LANES>(w, cols, rows, updates)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn merge_block_avx512(w: &mut [f32], cols: usize, rows: &[usize], updates: &[&LowRankUpdate]) {
    merge_block_body::<LANES>(w, cols, rows, updates)
}

/// Fold every update into the stored rows `rows` held in `w` (see `merge_block_body`), in
/// order, with the widest vectors this CPU has.
pub fn merge_row_block(w: &mut [f32], cols: usize, rows: &[usize], updates: &[&LowRankUpdate]) {
    if cols == 0 {
        return;
    }
    assert_eq!(w.len(), rows.len() * cols);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        unsafe { merge_block_avx512(w, cols, rows, updates) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { merge_block_avx2(w, cols, rows, updates) };
        return;
    }
    merge_block_body::<LANES>(w, cols, rows, updates)
}

/// Fold every update into one stored row `w_row` (row `row` of the matrix), in order.
pub fn merge_row(w_row: &mut [f32], row: usize, updates: &[&LowRankUpdate]) {
    merge_row_block(w_row, w_row.len(), &[row], updates)
}

/// Rows per parallel task: about 64 Ki elements, so a task is worth scheduling and its rows
/// (with the Q block) stay in L2.
fn rows_per_task(cols: usize) -> usize {
    (65536 / cols.max(1)).max(1)
}

/// Fold `updates` into `w`, the rows `first_row ..` of a stored matrix with `cols` columns, on
/// the current rayon pool. Threads split rows only, so the bytes never depend on the thread
/// count.
pub fn merge_rows(w: &mut [f32], cols: usize, first_row: usize, updates: &[&LowRankUpdate]) {
    if cols == 0 || updates.is_empty() {
        return;
    }
    for u in updates {
        debug_assert_eq!(u.cols(), cols);
        debug_assert!(first_row + w.len() / cols <= u.rows());
    }
    let per_task = rows_per_task(cols);
    w.par_chunks_mut(cols * per_task)
        .enumerate()
        .for_each(|(t, block)| {
            let r0 = first_row + t * per_task;
            let rows: Vec<usize> = (r0..r0 + block.len() / cols).collect();
            merge_row_block(block, cols, &rows, updates)
        });
}

/// Where the merge arithmetic runs. Every device writes the same bytes (the contract above);
/// only the speed differs.
#[derive(Clone, Debug, Default)]
pub enum MergeDevice {
    /// Merge and round fused per block of rows on the current rayon pool (the values of
    /// [`merge_rows`] then [`round_merged`]).
    #[default]
    Cpu,
    /// `shaders/lora_merge.wgsl` on a GPU whose merge self-check passed.
    Gpu(Arc<GpuLoraMerge>),
}

/// Why a slab could not be merged.
#[derive(Debug)]
pub enum MergeFailure {
    /// The element at this slab index is not finite once rounded.
    NonFinite(usize),
    /// The GPU failed to run the kernel.
    Gpu(GpuError),
}

impl MergeFailure {
    /// The error for tensor `tensor` of `path` (written as `ty`), whose slab starts at element
    /// `slab_start`.
    pub fn into_lora(
        self,
        path: &std::path::Path,
        tensor: &str,
        ty: GgmlType,
        slab_start: usize,
    ) -> super::LoraError {
        match self {
            MergeFailure::NonFinite(i) => super::LoraError::NonFiniteResult {
                path: path.to_path_buf(),
                tensor: tensor.to_string(),
                dtype: ty.name().to_string(),
                index: slab_start + i,
            },
            MergeFailure::Gpu(source) => super::LoraError::Gpu {
                tensor: tensor.to_string(),
                source,
            },
        }
    }
}

impl MergeDevice {
    /// The merge device on `ctx` (a GPU chosen by `--device`), or the CPU when there is none.
    /// The GPU kernel is built and self-checked first; if that fails, `strict` (`--device gpu`)
    /// makes it an error, otherwise a warning and the CPU — never a silent fallback.
    pub fn open(ctx: Option<Arc<GpuContext>>, strict: bool) -> Result<MergeDevice, GpuError> {
        let Some(ctx) = ctx else {
            return Ok(MergeDevice::Cpu);
        };
        let name = ctx.adapter().name.clone();
        match GpuLoraMerge::open(ctx) {
            Ok(g) => Ok(MergeDevice::Gpu(Arc::new(g))),
            Err(e) if strict => Err(e),
            Err(e) => {
                crate::notice::emit(crate::notice::Notice::KernelDisabled {
                    kernel: "LoRA merge".into(),
                    adapter: name,
                    detail: e.to_string(),
                });
                Ok(MergeDevice::Cpu)
            }
        }
    }

    /// What runs the merge, for messages.
    pub fn describe(&self) -> String {
        match self {
            MergeDevice::Cpu => "cpu".into(),
            MergeDevice::Gpu(g) => format!("gpu '{}'", g.context().adapter().name),
        }
    }

    /// Fold `updates` into the slab `w` (rows `first_row ..` of a stored matrix with `cols`
    /// columns, as exact f32 values) and write it rounded to `ty` into `out`. `w` itself is
    /// left unchanged.
    pub fn merge_rounded(
        &self,
        ty: GgmlType,
        w: &[f32],
        cols: usize,
        first_row: usize,
        updates: &[&LowRankUpdate],
        out: &mut [u8],
    ) -> Result<(), MergeFailure> {
        match self {
            MergeDevice::Cpu => {
                let w: &[f32] = w;
                merge_round_rows_cpu(ty, cols, first_row, updates, out, &|i, row| {
                    row.copy_from_slice(&w[i * cols..(i + 1) * cols])
                })
                .map_err(MergeFailure::NonFinite)
            }
            MergeDevice::Gpu(g) => {
                assert!(is_merge_output(ty), "merged tensors are F32, F16 or BF16");
                let bits = g
                    .merge(ty, w, cols, first_row, updates)
                    .map_err(MergeFailure::Gpu)?;
                let size = ty.type_size();
                assert_eq!(out.len(), bits.len() * size);
                for (o, b) in out.chunks_exact_mut(size).zip(&bits) {
                    o.copy_from_slice(&b.to_le_bytes()[..size]);
                }
                match first_non_finite(ty, out) {
                    Some(i) => Err(MergeFailure::NonFinite(i)),
                    None => Ok(()),
                }
            }
        }
    }
}

impl MergeDevice {
    /// [`merge_rounded`](Self::merge_rounded) for a slab still in its stored encoding: `src`
    /// holds the slab's rows, `src_row_bytes` each, and `decode` turns one stored row into its
    /// exact f32 values. On the CPU every row is decoded, merged and rounded in one pass
    /// through a per-thread row buffer (one trip through memory instead of three); the GPU gets
    /// the decoded slab.
    #[allow(clippy::too_many_arguments)]
    pub fn merge_decoded(
        &self,
        ty: GgmlType,
        src: &[u8],
        src_row_bytes: usize,
        decode: &(dyn Fn(&[u8], &mut [f32]) + Sync),
        cols: usize,
        first_row: usize,
        updates: &[&LowRankUpdate],
        out: &mut [u8],
    ) -> Result<(), MergeFailure> {
        let rows = out.len() / (ty.type_size() * cols.max(1));
        assert_eq!(src.len(), rows * src_row_bytes);
        match self {
            MergeDevice::Cpu => {
                merge_round_rows_cpu(ty, cols, first_row, updates, out, &|i, row| {
                    decode(&src[i * src_row_bytes..(i + 1) * src_row_bytes], row)
                })
                .map_err(MergeFailure::NonFinite)
            }
            MergeDevice::Gpu(_) => {
                let mut w = vec![0f32; rows * cols];
                w.par_chunks_mut(cols.max(1))
                    .zip(src.par_chunks(src_row_bytes.max(1)))
                    .for_each(|(o, b)| decode(b, o));
                self.merge_rounded(ty, &w, cols, first_row, updates, out)
            }
        }
    }
}

/// The CPU merge, fused: for each block of rows of the slab (in parallel; rows are
/// independent), `load` fills a per-task f32 buffer row by row, every update is folded in
/// ([`merge_row_block`]) and the block is rounded to `ty` straight into `out` while it is
/// still in cache. Returns the slab index of the first
/// element that is not finite once rounded. Same values as [`merge_rows`] + [`round_merged`].
fn merge_round_rows_cpu(
    ty: GgmlType,
    cols: usize,
    first_row: usize,
    updates: &[&LowRankUpdate],
    out: &mut [u8],
    load: &(dyn Fn(usize, &mut [f32]) + Sync),
) -> Result<(), usize> {
    assert!(is_merge_output(ty), "merged tensors are F32, F16 or BF16");
    if cols == 0 {
        return Ok(());
    }
    let q = quant::quantizer(ty).expect("float types always have a converter");
    let row_out = cols * ty.type_size();
    let per_task = rows_per_task(cols);
    let bad = out
        .par_chunks_mut(row_out * per_task)
        .enumerate()
        .filter_map(|(t, o)| {
            let n = o.len() / row_out;
            let i0 = t * per_task;
            let mut w = vec![0f32; n * cols];
            for (k, row) in w.chunks_exact_mut(cols).enumerate() {
                load(i0 + k, row);
            }
            let rows: Vec<usize> = (first_row + i0..first_row + i0 + n).collect();
            merge_row_block(&mut w, cols, &rows, updates);
            q(&w, None, o);
            first_non_finite(ty, o).map(|j| i0 * cols + j)
        })
        .min();
    match bad {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

/// Round merged values to `ty` and back, in place: each becomes exactly what reading the
/// [`round_merged`] bytes back as f32 gives. For callers that consume the merged tensor as f32
/// rows without materialising its bytes (`convert --lora`'s fused path). Returns the index of
/// the first value that is not finite once rounded.
pub fn round_through(ty: GgmlType, row: &mut [f32]) -> Result<(), usize> {
    assert!(is_merge_output(ty), "merged tensors are F32, F16 or BF16");
    let finite = |row: &[f32]| match row.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(i),
        None => Ok(()),
    };
    match ty {
        GgmlType::F32 => return finite(row),
        GgmlType::BF16 => {
            // Same bits as the quantizer and dequantizer below, without the byte round trip.
            if quant::float::round_through_bf16(row) {
                return Ok(());
            }
            return finite(row);
        }
        _ => {}
    }
    // The very converters `round_merged` uses, a cache-sized piece at a time.
    const PIECE: usize = 256;
    let q = quant::quantizer(ty).expect("float types always have a converter");
    let size = ty.type_size();
    let mut bytes = [0u8; PIECE * 4];
    for (pi, piece) in row.chunks_mut(PIECE).enumerate() {
        let b = &mut bytes[..piece.len() * size];
        q(piece, None, b);
        if let Some(i) = first_non_finite(ty, b) {
            return Err(pi * PIECE + i);
        }
        quant::dequantize_rows(ty, b, piece).expect("float types dequantize");
    }
    Ok(())
}

/// The float types a merged tensor can be written as.
pub fn is_merge_output(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Round merged f32 values to `ty` (F32, F16 or BF16; round-to-nearest-even) into `out`.
/// Returns the index of the first value that is not finite once rounded, if any: the caller
/// refuses it instead of writing an infinity.
pub fn round_merged(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), usize> {
    assert!(is_merge_output(ty), "merged tensors are F32, F16 or BF16");
    let q = quant::quantizer(ty).expect("float types always have a converter");
    let size = ty.type_size();
    assert_eq!(out.len(), x.len() * size);
    // Rows are independent; chunk so the check below stays cache-warm.
    const CHUNK: usize = 1 << 14;
    let bad = x
        .par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK * size))
        .enumerate()
        .filter_map(|(ci, (xs, os))| {
            q(xs, None, os);
            first_non_finite(ty, os).map(|i| ci * CHUNK + i)
        })
        .min();
    match bad {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

/// Index of the first element of `bytes` (type `ty`) that is NaN or infinite.
fn first_non_finite(ty: GgmlType, bytes: &[u8]) -> Option<usize> {
    match ty {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        // F16 exponent all ones: 0x7c00; BF16: 0x7f80.
        GgmlType::F16 => bytes
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00),
        GgmlType::BF16 => bytes
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract, one element at a time.
    fn reference(w: f32, b_row: &[f32], a_col: &[f32], scale: f32) -> f32 {
        let mut acc = 0.0f32;
        for (b, a) in b_row.iter().zip(a_col) {
            acc += b * a;
        }
        w + scale * acc
    }

    #[test]
    fn kernel_matches_the_elementwise_contract() {
        let (out, inn, r) = (5, 7, 3);
        let f = |i: usize| ((i * 7919 % 101) as f32 - 50.0) / 37.0;
        let w: Vec<f32> = (0..out * inn).map(|i| f(i + 3)).collect();
        let a: Vec<f32> = (0..r * inn).map(|i| f(i * 3 + 1)).collect();
        let b: Vec<f32> = (0..out * r).map(|i| f(i * 5 + 2)).collect();
        let u = LowRankUpdate::out_in(b.clone(), a.clone(), r, 0.75);
        let mut merged = w.clone();
        merge_rows(&mut merged, inn, 0, &[&u]);
        for o in 0..out {
            for i in 0..inn {
                let a_col: Vec<f32> = (0..r).map(|k| a[k * inn + i]).collect();
                let want = reference(w[o * inn + i], &b[o * r..(o + 1) * r], &a_col, 0.75);
                assert_eq!(merged[o * inn + i].to_bits(), want.to_bits());
            }
        }
        // Transposed storage: same values at transposed positions.
        let wt = transpose(&w, out);
        let ut = LowRankUpdate::in_out(&b, &a, r, 0.75);
        let mut merged_t = wt.clone();
        merge_rows(&mut merged_t, out, 0, &[&ut]);
        assert_eq!(transpose(&merged_t, inn), merged);
    }

    #[test]
    fn overflow_after_rounding_is_reported() {
        let mut out = [0u8; 6];
        assert_eq!(
            round_merged(GgmlType::F16, &[1.0, 70000.0, 2.0], &mut out),
            Err(1)
        );
        assert!(round_merged(GgmlType::BF16, &[1.0, 70000.0, 2.0], &mut out).is_ok());
    }
}
