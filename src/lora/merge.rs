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
//! across columns (each lane owns one element and its own k-ordered sum), and a GPU twin is one
//! invocation per element running the same k loop with a multiply the shader compiler cannot
//! fuse into the following add (WGSL does not forbid `a*b+c` contraction; see
//! shared/notes/gpu.md), with P, Q and the scales uploaded exactly as [`LowRankUpdate`] holds
//! them.
//!
//! # The kernel's orientation
//!
//! The kernel sees one stored matrix W [rows, cols] and, per adapter, `P` [rows, r] and
//! `Q` [r, cols] with `delta[s, c] = Σ_k P[s,k]·Q[k,c]`. For a plain linear layer P = B and
//! Q = A, untouched; for fan_in_fan_out and embeddings P = Aᵀ and Q = Bᵀ (f32 products commute
//! exactly, so B·A and A·B give the same bits). The inner loop walks a row of Q and a row of the
//! accumulator together — contiguous memory, no gathers.

use rayon::prelude::*;

use crate::quant::{self, GgmlType};

/// One adapter's update of one stored matrix, in the kernel's orientation.
#[derive(Clone, Debug)]
pub struct LowRankUpdate {
    /// [rows, rank], row-major.
    pub p: Vec<f32>,
    /// [rank, cols], row-major.
    pub q: Vec<f32>,
    pub rank: usize,
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

/// Fold every update into one stored row `w_row` (row `row` of the matrix), in order. `acc` is
/// scratch of the row's length.
#[inline]
pub fn merge_row(w_row: &mut [f32], row: usize, updates: &[&LowRankUpdate], acc: &mut [f32]) {
    let cols = w_row.len();
    for u in updates {
        acc.fill(0.0);
        let p_row = &u.p[row * u.rank..(row + 1) * u.rank];
        for (k, &p) in p_row.iter().enumerate() {
            let q_row = &u.q[k * cols..(k + 1) * cols];
            // A rounded multiply, then a rounded add: Rust never contracts them into an FMA.
            for (a, &q) in acc.iter_mut().zip(q_row) {
                *a += p * q;
            }
        }
        let scale = u.scale;
        for (w, &a) in w_row.iter_mut().zip(acc.iter()) {
            *w += scale * a;
        }
    }
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
    // Batch short rows so a task is worth scheduling.
    let min_rows = (16384 / cols).max(1);
    w.par_chunks_mut(cols)
        .enumerate()
        .with_min_len(min_rows)
        .for_each_init(
            || vec![0f32; cols],
            |acc, (i, row)| merge_row(row, first_row + i, updates, acc),
        );
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
