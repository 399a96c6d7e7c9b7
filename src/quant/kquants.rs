//! The K-quants Q2_K … Q6_K: 256-element super-blocks of 16 or 32-element sub-blocks whose
//! scales (and mins) are themselves quantized against one or two fp16 super-block scales.
//!
//! Without an importance matrix each type reproduces llama.cpp's (0c1e57098)
//! `quantize_row_<t>_ref`; with one, `quantize_row_<t>_impl` (what `quantize_<t>` calls when given
//! quant weights). All five types use the weights: Q2_K/Q4_K/Q5_K and Q3_K scale them by
//! `sqrt(sigma2 + x²)` per element, Q6_K passes them to its search unchanged. The stored fp16
//! super-block scales are read back (rounded) before the final requantization, as in C.
//!
//! Super-blocks are independent. The scalar code here processes one at a time and is the
//! oracle; `simd` runs 8 or 16 super-blocks side by side (AVX2 / AVX-512, detected at run time)
//! and must, and is tested to, write the same bytes. `quantizer(ty)` uses the best backend;
//! `quantize_row_with` picks one explicitly.

// Index loops here walk several parallel arrays in the reference's element order; iterator
// chains would hide that order, which is what byte-exactness depends on.
#![allow(clippy::needless_range_loop)]

use super::search::{
    make_q3_quants, make_qkx2_quants, make_qkx3_quants, make_qp_quants, make_qx_quants,
    GROUP_MAX_EPS,
};
use super::{
    f16_to_f32, f32_to_f16, nearest_int, read_u16, GgmlType, RowDequantizer, RowQuantizer,
};

pub(crate) mod simd;

pub use simd::{available_backends, best_backend, Backend};

/// Elements per super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// Bytes of one Q2_K super-block (256 weights).
pub const BLOCK_Q2_K_BYTES: usize = 84;
/// Bytes of one Q3_K super-block (256 weights).
pub const BLOCK_Q3_K_BYTES: usize = 110;
/// Bytes of one Q4_K super-block (256 weights).
pub const BLOCK_Q4_K_BYTES: usize = 144;
/// Bytes of one Q5_K super-block (256 weights).
pub const BLOCK_Q5_K_BYTES: usize = 176;
/// Bytes of one Q6_K super-block (256 weights).
pub const BLOCK_Q6_K_BYTES: usize = 210;

/// The CPU quantizer for `ty` if it is one of Q2_K to Q6_K.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::Q2_K => quantize_row_q2_k,
        GgmlType::Q3_K => quantize_row_q3_k,
        GgmlType::Q4_K => quantize_row_q4_k,
        GgmlType::Q5_K => quantize_row_q5_k,
        GgmlType::Q6_K => quantize_row_q6_k,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is one of Q2_K to Q6_K.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::Q2_K => dequantize_row_q2_k,
        GgmlType::Q3_K => dequantize_row_q3_k,
        GgmlType::Q4_K => dequantize_row_q4_k,
        GgmlType::Q5_K => dequantize_row_q5_k,
        GgmlType::Q6_K => dequantize_row_q6_k,
        _ => return None,
    })
}

/// Quantizes one row of a K-quant type with the given backend's kernels (falling back to the
/// scalar oracle for types or CPUs without one). All backends write identical bytes; this entry
/// point exists so tests and benchmarks can compare them.
///
/// # Panics
/// If `ty` is not a K-quant, or the row, weights or output have inconsistent lengths.
pub fn quantize_row_with(
    backend: Backend,
    ty: GgmlType,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) {
    let (kernel, bytes) = match ty {
        GgmlType::Q2_K => (Some(simd::Kernel::Q2K), BLOCK_Q2_K_BYTES),
        GgmlType::Q3_K => (Some(simd::Kernel::Q3K), BLOCK_Q3_K_BYTES),
        GgmlType::Q4_K => (Some(simd::Kernel::Q4K), BLOCK_Q4_K_BYTES),
        GgmlType::Q5_K => (Some(simd::Kernel::Q5K), BLOCK_Q5_K_BYTES),
        GgmlType::Q6_K => (Some(simd::Kernel::Q6K), BLOCK_Q6_K_BYTES),
        _ => panic!("{ty} is not a K-quant"),
    };
    check_row(x, qw, out, bytes);
    if let Some(kernel) = kernel {
        if simd::quantize_row_simd(backend, kernel, x, qw, out) {
            return;
        }
    }
    for_each_block(x, qw, out, bytes, |xb, wb, ob| match ty {
        GgmlType::Q2_K => match wb {
            None => quantize_block_q2_k(xb, ob),
            Some(w) => quantize_block_q2_k_imatrix(xb, w, ob),
        },
        GgmlType::Q3_K => match wb {
            None => quantize_block_q3_k(xb, ob),
            Some(w) => quantize_block_q3_k_imatrix(xb, w, ob),
        },
        GgmlType::Q4_K => match wb {
            None => quantize_block_q4_k(xb, ob),
            Some(w) => quantize_block_q4_k_imatrix(xb, w, ob),
        },
        GgmlType::Q5_K => match wb {
            None => quantize_block_q5_k(xb, ob),
            Some(w) => quantize_block_q5_k_imatrix(xb, w, ob),
        },
        _ => quantize_block_q6_k(xb, wb, ob),
    });
}

fn check_row(x: &[f32], qw: Option<&[f32]>, out: &[u8], block_bytes: usize) {
    assert_eq!(x.len() % QK_K, 0, "K-quant row of {} elements", x.len());
    assert_eq!(out.len(), x.len() / QK_K * block_bytes);
    if let Some(w) = qw {
        assert_eq!(
            w.len(),
            x.len(),
            "importance weights for a row of another length"
        );
    }
}

/// Runs `block` over every super-block of a row (with the matching slice of the row's importance
/// weights, if any).
#[inline(always)]
fn for_each_block(
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
    block_bytes: usize,
    mut block: impl FnMut(&[f32], Option<&[f32]>, &mut [u8]),
) {
    assert_eq!(x.len() % QK_K, 0, "K-quant row of {} elements", x.len());
    assert_eq!(out.len(), x.len() / QK_K * block_bytes);
    if let Some(w) = qw {
        assert_eq!(
            w.len(),
            x.len(),
            "importance weights for a row of another length"
        );
    }
    for (i, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(block_bytes))
        .enumerate()
    {
        block(xb, qw.map(|w| &w[i * QK_K..(i + 1) * QK_K]), ob);
    }
}

fn write_f16(out: &mut [u8], at: usize, v: f32) -> f32 {
    let h = f32_to_f16(v);
    out[at..at + 2].copy_from_slice(&h.to_le_bytes());
    f16_to_f32(h)
}

/// `sigma2` of the imatrix paths: `factor * Σx² / 256` (factor 1 for Q2_K, 2 for the others).
#[inline(always)]
fn block_sigma2(x: &[f32], factor: f32) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in &x[..QK_K] {
        sum_x2 += v * v;
    }
    factor * sum_x2 / QK_K as f32
}

/// Packs two 2-bit fields per 128 elements four deep: byte `l` of each 32-byte group holds
/// elements `l, l+32, l+64, l+96` of its 128-element half (Q2_K and Q3_K low bits).
#[inline(always)]
pub fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8]) {
    for half in 0..2 {
        let base = half * 128;
        for l in 0..32 {
            qs[half * 32 + l] = levels[base + l]
                | (levels[base + l + 32] << 2)
                | (levels[base + l + 64] << 4)
                | (levels[base + l + 96] << 6);
        }
    }
}

// ───────────────────────────── 6-bit scale/min packing (Q4_K, Q5_K) ─────────────────────────────

/// Packs eight 6-bit scales and eight 6-bit mins into 12 bytes: scales 0–3 / mins 0–3 in the low
/// six bits of bytes 0–3 / 4–7; scales and mins 4–7 as nibbles in bytes 8–11 with their top two
/// bits in the high bits of bytes 0–7. Inputs wider than six bits are truncated exactly as
/// llama.cpp's `uint8_t` arithmetic truncates them.
pub fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Scale and min of sub-block `j` from the 12-byte packing (llama.cpp's `get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

// ───────────────────────────────────────────── Q2_K ─────────────────────────────────────────────
// Layout: scales[16] (low nibble scale, high nibble min) @0, qs[64] @16, d @80, dmin @82.

fn quantize_row_q2_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_with(best_backend(), GgmlType::Q2_K, x, qw, out);
}

/// Requantizes every 16-element sub-block against the stored (fp16-rounded) scales, keeping the
/// search's levels where a sub-block's scale is zero; then packs.
fn finish_q2_k(x: &[f32], levels: &mut [u8; QK_K], d: f32, dmin: f32, out: &mut [u8]) {
    for j in 0..16 {
        let sc = out[j];
        let dl = d * (sc & 0xF) as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dmin * (sc >> 4) as f32;
        for ii in 0..16 {
            let l = nearest_int((x[16 * j + ii] + ml) / dl);
            levels[16 * j + ii] = l.clamp(0, 3) as u8;
        }
    }
    pack_2bit(levels, &mut out[16..80]);
}

/// Reproduces one block of `quantize_row_q2_K_ref`.
pub fn quantize_block_q2_k(x: &[f32], out: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut weights = [0f32; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for l in 0..16 {
            weights[l] = xs[l].abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut levels[16 * j..16 * j + 16],
            -0.5,
            0.1,
            15,
            true,
        );
    }
    let (d, dmin) = quantize_scales_q2_k(&scales, &mins, out);
    finish_q2_k(x, &mut levels, d, dmin, out);
}

/// No-imatrix Q2_K scale quantization: 4-bit scales and mins relative to the largest of each,
/// fp16 `d = max_scale/15`, `dmin = max_min/15`. Returns the read-back (d, dmin).
pub fn quantize_scales_q2_k(scales: &[f32; 16], mins: &[f32; 16], out: &mut [u8]) -> (f32, f32) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let d = if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            out[j] = nearest_int(iscale * scales[j]) as u8;
        }
        write_f16(out, 80, max_scale / 15.0)
    } else {
        out[..16].fill(0);
        write_f16(out, 80, 0.0)
    };
    let dmin = if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            out[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        write_f16(out, 82, max_min / 15.0)
    } else {
        write_f16(out, 82, 0.0)
    };
    (d, dmin)
}

/// Imatrix Q2_K scale quantization with `make_qp_quants` weighted by the sub-block weight sums.
pub fn quantize_scales_q2_k_imatrix(
    scales: &[f32; 16],
    mins: &[f32; 16],
    sw: &[f32; 16],
    out: &mut [u8],
) -> (f32, f32) {
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(15, scales, &mut ls, sw);
    let mm = make_qp_quants(15, mins, &mut lm, sw);
    let d = write_f16(out, 80, dm);
    let dmin = write_f16(out, 82, mm);
    for j in 0..16 {
        out[j] = ((ls[j] as u32) | ((lm[j] as u32) << 4)) as u8;
    }
    (d, dmin)
}

/// Reproduces one block of `quantize_row_q2_K_impl` (importance weights `qw`).
pub fn quantize_block_q2_k_imatrix(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut sw = [0f32; 16];
    let mut weights = [0f32; 16];
    let sigma2 = block_sigma2(x, 1.0);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for l in 0..16 {
            weights[l] = qw[16 * j + l] * (sigma2 + xs[l] * xs[l]).sqrt();
        }
        let mut sum_w = 0.0f32;
        for l in 0..16 {
            sum_w += weights[l];
        }
        sw[j] = sum_w;
        (scales[j], mins[j]) = make_qkx3_quants(
            3,
            xs,
            Some(&weights),
            &mut levels[16 * j..16 * j + 16],
            -0.9,
            0.05,
            36,
            false,
        );
    }
    let (d, dmin) = quantize_scales_q2_k_imatrix(&scales, &mins, &sw, out);
    finish_q2_k(x, &mut levels, d, dmin, out);
}

fn dequantize_row_q2_k(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BLOCK_Q2_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f16_to_f32(read_u16(b, 80));
        let dmin = f16_to_f32(read_u16(b, 82));
        let (scales, qs) = (&b[..16], &b[16..80]);
        for half in 0..2 {
            let q = &qs[half * 32..half * 32 + 32];
            for shift in 0..4 {
                for part in 0..2 {
                    let sc = scales[half * 8 + shift * 2 + part];
                    let dl = d * (sc & 0xF) as f32;
                    let ml = dmin * (sc >> 4) as f32;
                    let y0 = half * 128 + shift * 32 + part * 16;
                    for l in 0..16 {
                        let v = (q[part * 16 + l] >> (2 * shift)) & 3;
                        y[y0 + l] = dl * v as f32 - ml;
                    }
                }
            }
        }
    }
}

// ───────────────────────────────────────────── Q3_K ─────────────────────────────────────────────
// Layout: hmask[32] @0, qs[64] @32, scales[12] @96 (sixteen 6-bit values, offset by 32), d @108.

fn quantize_row_q3_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_with(best_backend(), GgmlType::Q3_K, x, qw, out);
}

/// Packs sixteen 6-bit values: low nibbles of 0–7 / 8–15 in the low / high halves of bytes 0–7,
/// top two bits in bytes 8–11 (value j at bit `2*(j/4)` of byte `8 + j%4`).
fn pack_q3_k_scales(l6: &[u8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..16 {
        let l = l6[j];
        if j < 8 {
            s[j] = l & 0xF;
        } else {
            s[j - 8] |= (l & 0xF) << 4;
        }
        s[j % 4 + 8] |= ((l as u32 >> 4) << (2 * (j / 4))) as u8;
    }
    s
}

/// Sub-block `j`'s signed scale from the packed Q3_K scales.
#[inline(always)]
pub fn q3_k_scale(j: usize, s: &[u8]) -> i8 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

/// Requantizes against the stored scales, splits out the high bit into `hmask`, packs.
fn finish_q3_k(x: &[f32], levels: &mut [u8; QK_K], out: &mut [u8]) {
    let d_all = f16_to_f32(read_u16(out, 108));
    for j in 0..16 {
        let d = d_all * q3_k_scale(j, &out[96..108]) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let l = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            levels[16 * j + ii] = (l + 4) as u8;
        }
    }
    pack_q3_k(levels, out);
}

/// Q3_K bits: the third bit of element j goes to bit `j/32` of `hmask[j%32]`, the low two bits
/// are packed like Q2_K's.
pub fn pack_q3_k(levels: &mut [u8; QK_K], out: &mut [u8]) {
    let hmask = &mut out[..32];
    hmask.fill(0);
    for j in 0..QK_K {
        if levels[j] > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            levels[j] -= 4;
        }
    }
    pack_2bit(levels, &mut out[32..96]);
}

/// Reproduces one block of `quantize_row_q3_K_ref`.
pub fn quantize_block_q3_k(x: &[f32], out: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for j in 0..16 {
        scales[j] = make_q3_quants(
            4,
            &x[16 * j..16 * j + 16],
            &mut levels[16 * j..16 * j + 16],
            true,
        );
    }
    quantize_scales_q3_k(&scales, out);
    let mut levels = levels.map(|l| l as u8);
    finish_q3_k(x, &mut levels, out);
}

/// No-imatrix Q3_K scale quantization: signed 6-bit scales relative to the largest-magnitude
/// one, fp16 `d`. Writes bytes 96..110.
pub fn quantize_scales_q3_k(scales: &[f32; 16], out: &mut [u8]) {
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..16 {
        let a = scales[j].abs();
        if a > amax {
            amax = a;
            max_scale = scales[j];
        }
    }
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut l6 = [0u8; 16];
        for j in 0..16 {
            let l = nearest_int(iscale * scales[j]) as i8;
            l6[j] = (l.clamp(-32, 31) + 32) as u8;
        }
        out[96..108].copy_from_slice(&pack_q3_k_scales(&l6));
        write_f16(out, 108, 1.0 / iscale);
    } else {
        out[96..108].fill(0);
        write_f16(out, 108, 0.0);
    }
}

/// Reproduces one block of `quantize_row_q3_K_impl` (importance weights `qw`).
pub fn quantize_block_q3_k_imatrix(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut sw = [0f32; 16];
    let mut weights = [0f32; 16];
    let sigma2 = block_sigma2(x, 2.0);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for l in 0..16 {
            weights[l] = qw[16 * j + l] * (sigma2 + xs[l] * xs[l]).sqrt();
        }
        let mut sum_w = 0.0f32;
        for l in 0..16 {
            sum_w += weights[l];
        }
        sw[j] = sum_w;
        scales[j] = make_qx_quants(4, xs, &mut levels[16 * j..16 * j + 16], 1, Some(&weights));
    }
    quantize_scales_q3_k_imatrix(&scales, &sw, out);
    let mut levels = levels.map(|l| l as u8);
    finish_q3_k(x, &mut levels, out);
}

/// Imatrix Q3_K scale quantization: `make_qx_quants` on the sub-block scales weighted by the
/// sub-block weight sums. Writes bytes 96..110.
pub fn quantize_scales_q3_k_imatrix(scales: &[f32; 16], sw: &[f32; 16], out: &mut [u8]) {
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(32, scales, &mut ls, 1, Some(sw));
    out[96..108].copy_from_slice(&pack_q3_k_scales(&ls.map(|l| l as u8)));
    write_f16(out, 108, d_block);
}

fn dequantize_row_q3_k(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BLOCK_Q3_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d_all = f16_to_f32(read_u16(b, 108));
        let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
        for half in 0..2 {
            let q = &qs[half * 32..half * 32 + 32];
            for shift in 0..4 {
                let bit = 1u8 << (half * 4 + shift);
                for part in 0..2 {
                    let is = half * 8 + shift * 2 + part;
                    let dl = d_all * (q3_k_scale(is, scales) as i32) as f32;
                    let y0 = half * 128 + shift * 32 + part * 16;
                    for l in 0..16 {
                        let k = part * 16 + l;
                        let low = ((q[k] >> (2 * shift)) & 3) as i32;
                        let v = low - if hmask[k] & bit != 0 { 0 } else { 4 };
                        y[y0 + l] = dl * v as f32;
                    }
                }
            }
        }
    }
}

// ───────────────────────────────────────── Q4_K and Q5_K ─────────────────────────────────────────
// Q4_K layout: d @0, dmin @2, scales[12] @4, qs[128] @16.
// Q5_K layout: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48.

fn quantize_row_q4_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_with(best_backend(), GgmlType::Q4_K, x, qw, out);
}

fn quantize_row_q5_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_with(best_backend(), GgmlType::Q5_K, x, qw, out);
}

/// Result of the per-sub-block min+scale searches of Q4_K/Q5_K: eight (scale, −min) pairs and the
/// search's levels (which survive for sub-blocks whose stored scale turns out zero).
pub struct SubBlockFits {
    /// Each sub-block's fitted scale.
    pub scales: [f32; 8],
    /// Each sub-block's fitted minimum, negated.
    pub mins: [f32; 8],
    /// The search's quant level of every element.
    pub levels: [u8; QK_K],
}

/// The no-imatrix search of Q4_K (`nmax` 15, steps −1.0 + 0.1k, k ≤ 20) and Q5_K (`nmax` 31,
/// −0.5 + 0.1k, k ≤ 15): weights `sqrt(mean x²) + |x|` per 32-element sub-block.
pub fn fit_sub_blocks_k(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> SubBlockFits {
    let mut fits = SubBlockFits {
        scales: [0.0; 8],
        mins: [0.0; 8],
        levels: [0; QK_K],
    };
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for l in 0..32 {
            sum_x2 += xs[l] * xs[l];
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for l in 0..32 {
            weights[l] = av_x + xs[l].abs();
        }
        (fits.scales[j], fits.mins[j]) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut fits.levels[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
            false,
        );
    }
    fits
}

/// The imatrix search of Q4_K/Q5_K: weights `qw * sqrt(sigma2 + x²)`, qkx3 with
/// (−0.9, 0.05, 36); also returns each sub-block's weight sum (for the scale quantization).
pub fn fit_sub_blocks_k_imatrix(x: &[f32], qw: &[f32], nmax: i32) -> (SubBlockFits, [f32; 8]) {
    let mut fits = SubBlockFits {
        scales: [0.0; 8],
        mins: [0.0; 8],
        levels: [0; QK_K],
    };
    let mut sw = [0f32; 8];
    let mut weights = [0f32; 32];
    let sigma2 = block_sigma2(x, 2.0);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        for l in 0..32 {
            weights[l] = qw[32 * j + l] * (sigma2 + xs[l] * xs[l]).sqrt();
        }
        let mut sum_w = 0.0f32;
        for l in 0..32 {
            sum_w += weights[l];
        }
        sw[j] = sum_w;
        (fits.scales[j], fits.mins[j]) = make_qkx3_quants(
            nmax,
            xs,
            Some(&weights),
            &mut fits.levels[32 * j..32 * j + 32],
            -0.9,
            0.05,
            36,
            false,
        );
    }
    (fits, sw)
}

/// No-imatrix scale quantization of Q4_K/Q5_K: 6-bit scales and mins relative to the largest,
/// fp16 `d = max_scale/63`, `dmin = max_min/63`. Writes bytes 0..16 and returns the read-back
/// (d, dmin).
pub fn quantize_scales_k(scales: &[f32; 8], mins: &[f32; 8], out: &mut [u8]) -> (f32, f32) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    out[4..16].copy_from_slice(&pack_scale_min_k4(&ls, &lm));
    (
        write_f16(out, 0, max_scale / 63.0),
        write_f16(out, 2, max_min / 63.0),
    )
}

/// Imatrix scale quantization of Q4_K/Q5_K via `make_qp_quants` weighted by the sub-block weight
/// sums. Q5_K clamps the levels to 63 (a no-op unless a level wrapped); Q4_K does not.
pub fn quantize_scales_k_imatrix(
    scales: &[f32; 8],
    mins: &[f32; 8],
    sw: &[f32; 8],
    clamp_levels: bool,
    out: &mut [u8],
) -> (f32, f32) {
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, scales, &mut ls, sw);
    let m_block = make_qp_quants(63, mins, &mut lm, sw);
    if clamp_levels {
        ls = ls.map(|l| l.min(63));
        lm = lm.map(|l| l.min(63));
    }
    out[4..16].copy_from_slice(&pack_scale_min_k4(&ls, &lm));
    (write_f16(out, 0, d_block), write_f16(out, 2, m_block))
}

/// Requantizes every sub-block with a non-zero stored scale to `0..=nmax` against the stored
/// (d, dmin) and packed 6-bit scales/mins.
pub fn requantize_k(
    x: &[f32],
    levels: &mut [u8; QK_K],
    d: f32,
    dmin: f32,
    scales: &[u8],
    nmax: i32,
) {
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let dl = d * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dmin * m as f32;
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + ml) / dl);
            levels[32 * j + ii] = l.clamp(0, nmax) as u8;
        }
    }
}

/// Q4_K nibbles: byte `l` of each 32-byte group holds element `l` (low) and `l+32` (high) of its
/// 64-element span.
pub fn pack_q4_k(levels: &[u8; QK_K], qs: &mut [u8]) {
    for g in 0..4 {
        for l in 0..32 {
            qs[32 * g + l] = levels[64 * g + l] | (levels[64 * g + l + 32] << 4);
        }
    }
}

/// Q5_K: nibbles as Q4_K, and the fifth bit of elements `64g + l` / `64g + 32 + l` at bits
/// `2g` / `2g+1` of `qh[l]`.
pub fn pack_q5_k(levels: &[u8; QK_K], qh: &mut [u8], qs: &mut [u8]) {
    qh.fill(0);
    for g in 0..4 {
        for l in 0..32 {
            let mut lo = levels[64 * g + l];
            if lo > 15 {
                lo -= 16;
                qh[l] |= 1 << (2 * g);
            }
            let mut hi = levels[64 * g + l + 32];
            if hi > 15 {
                hi -= 16;
                qh[l] |= 2 << (2 * g);
            }
            qs[32 * g + l] = lo | (hi << 4);
        }
    }
}

/// Reproduces one block of `quantize_row_q4_K_ref`.
pub fn quantize_block_q4_k(x: &[f32], out: &mut [u8]) {
    let mut fits = fit_sub_blocks_k(x, 15, -1.0, 20);
    let (d, dmin) = quantize_scales_k(&fits.scales, &fits.mins, out);
    finish_q4_k(x, &mut fits.levels, d, dmin, out);
}

/// Reproduces one block of `quantize_row_q4_K_impl` (importance weights `qw`).
pub fn quantize_block_q4_k_imatrix(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let (mut fits, sw) = fit_sub_blocks_k_imatrix(x, qw, 15);
    let (d, dmin) = quantize_scales_k_imatrix(&fits.scales, &fits.mins, &sw, false, out);
    finish_q4_k(x, &mut fits.levels, d, dmin, out);
}

/// Completes a Q4_K block whose header (`d`, `dmin`, 6-bit scales) is in `out[..16]`: requantizes
/// `levels` against the stored scales and packs them into `out[16..]`.
pub fn finish_q4_k(x: &[f32], levels: &mut [u8; QK_K], d: f32, dmin: f32, out: &mut [u8]) {
    let (head, qs) = out.split_at_mut(16);
    requantize_k(x, levels, d, dmin, &head[4..16], 15);
    pack_q4_k(levels, qs);
}

/// Reproduces one block of `quantize_row_q5_K_ref`.
pub fn quantize_block_q5_k(x: &[f32], out: &mut [u8]) {
    let mut fits = fit_sub_blocks_k(x, 31, -0.5, 15);
    let (d, dmin) = quantize_scales_k(&fits.scales, &fits.mins, out);
    finish_q5_k(x, &mut fits.levels, d, dmin, out);
}

/// Reproduces one block of `quantize_row_q5_K_impl` (importance weights `qw`).
pub fn quantize_block_q5_k_imatrix(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let (mut fits, sw) = fit_sub_blocks_k_imatrix(x, qw, 31);
    let (d, dmin) = quantize_scales_k_imatrix(&fits.scales, &fits.mins, &sw, true, out);
    finish_q5_k(x, &mut fits.levels, d, dmin, out);
}

/// Completes a Q5_K block whose header (`d`, `dmin`, 6-bit scales) is in `out[..16]`: requantizes
/// `levels` against the stored scales and packs the low and high bits.
pub fn finish_q5_k(x: &[f32], levels: &mut [u8; QK_K], d: f32, dmin: f32, out: &mut [u8]) {
    let (head, rest) = out.split_at_mut(16);
    requantize_k(x, levels, d, dmin, &head[4..16], 31);
    let (qh, qs) = rest.split_at_mut(32);
    pack_q5_k(levels, qh, qs);
}

fn dequantize_row_q4_k(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BLOCK_Q4_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f16_to_f32(read_u16(b, 0));
        let dmin = f16_to_f32(read_u16(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..144]);
        for g in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * g, scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            for l in 0..32 {
                let q = qs[32 * g + l];
                y[64 * g + l] = d1 * (q & 0xF) as f32 - m1;
                y[64 * g + 32 + l] = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

fn dequantize_row_q5_k(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BLOCK_Q5_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f16_to_f32(read_u16(b, 0));
        let dmin = f16_to_f32(read_u16(b, 2));
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
        for g in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * g, scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            for l in 0..32 {
                let q = qs[32 * g + l];
                let h1 = if qh[l] & (1 << (2 * g)) != 0 { 16 } else { 0 };
                let h2 = if qh[l] & (2 << (2 * g)) != 0 { 16 } else { 0 };
                y[64 * g + l] = d1 * ((q & 0xF) + h1) as f32 - m1;
                y[64 * g + 32 + l] = d2 * ((q >> 4) + h2) as f32 - m2;
            }
        }
    }
}

// ───────────────────────────────────────────── Q6_K ─────────────────────────────────────────────
// Layout: ql[128] @0, qh[64] @128, i8 scales[16] @192, d @208.

fn quantize_row_q6_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_with(best_backend(), GgmlType::Q6_K, x, qw, out);
}

/// Reproduces one block of `quantize_row_q6_K_ref` (`qw` None) or `quantize_row_q6_K_impl`
/// (the importance weights go to the search as they are, without the sigma2 term).
pub fn quantize_block_q6_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..16 {
        let scale = make_qx_quants(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut levels[16 * ib..16 * ib + 16],
            1,
            qw.map(|w| &w[16 * ib..16 * ib + 16]),
        );
        scales[ib] = scale;
        let a = scale.abs();
        if a > max_abs_scale {
            max_abs_scale = a;
            max_scale = scale;
        }
    }
    finish_q6_k(x, &scales, max_scale, max_abs_scale, &mut levels, out);
}

/// Everything after the sub-block searches: 8-bit scales relative to the largest-magnitude one,
/// requantization against the stored fp16 `d`, packing. A block whose scales are all (near) zero
/// is stored as all zero bytes.
pub fn finish_q6_k(
    x: &[f32],
    scales: &[f32; 16],
    max_scale: f32,
    max_abs_scale: f32,
    levels: &mut [i8; QK_K],
    out: &mut [u8],
) {
    let Some(d) = quantize_scales_q6_k(scales, max_scale, max_abs_scale, out) else {
        return;
    };
    for j in 0..16 {
        let dl = d * (out[192 + j] as i8) as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let l = nearest_int(x[16 * j + ii] / dl).clamp(-32, 31);
            levels[16 * j + ii] = (l + 32) as i8;
        }
    }
    pack_q6_k(levels, out);
}

/// Q6_K's 8-bit sub-block scales relative to the largest-magnitude one, and the fp16 `d`.
/// Returns the read-back `d`, or None for a block whose scales are all (near) zero, which is
/// then already written as all zero bytes.
pub fn quantize_scales_q6_k(
    scales: &[f32; 16],
    max_scale: f32,
    max_abs_scale: f32,
    out: &mut [u8],
) -> Option<f32> {
    if max_abs_scale < GROUP_MAX_EPS {
        out[..BLOCK_Q6_K_BYTES].fill(0);
        write_f16(out, 208, 0.0);
        return None;
    }
    let iscale = -128.0 / max_scale;
    let d = write_f16(out, 208, 1.0 / iscale);
    for ib in 0..16 {
        out[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    Some(d)
}

/// Q6_K packing: low nibbles of elements `l`/`l+64` and `l+32`/`l+96` of each 128-element half
/// share bytes of `ql`; the top two bits of all four go to `qh[l]`.
pub fn pack_q6_k(levels: &[i8; QK_K], out: &mut [u8]) {
    let (ql, rest) = out.split_at_mut(128);
    let qh = &mut rest[..64];
    for half in 0..2 {
        let lv = &levels[half * 128..half * 128 + 128];
        for l in 0..32 {
            let (a, b, c, e) = (
                lv[l] as u8,
                lv[l + 32] as u8,
                lv[l + 64] as u8,
                lv[l + 96] as u8,
            );
            ql[half * 64 + l] = (a & 0xF) | ((c & 0xF) << 4);
            ql[half * 64 + l + 32] = (b & 0xF) | ((e & 0xF) << 4);
            qh[half * 32 + l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
        }
    }
}

fn dequantize_row_q6_k(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BLOCK_Q6_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f16_to_f32(read_u16(b, 208));
        for half in 0..2 {
            let ql = &b[half * 64..half * 64 + 64];
            let qh = &b[128 + half * 32..128 + half * 32 + 32];
            let sc = &b[192 + half * 8..192 + half * 8 + 8];
            let y = &mut y[half * 128..half * 128 + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_k4_unpacks_what_pack_scale_min_k4_packs() {
        for seed in 0..64u8 {
            let ls: [u8; 8] =
                std::array::from_fn(|j| seed.wrapping_mul(7).wrapping_add(13 * j as u8) & 63);
            let lm: [u8; 8] =
                std::array::from_fn(|j| seed.wrapping_mul(11).wrapping_add(29 * j as u8) & 63);
            let packed = pack_scale_min_k4(&ls, &lm);
            for j in 0..8 {
                assert_eq!(
                    scale_min_k4(j, &packed),
                    (ls[j], lm[j]),
                    "seed {seed} j {j}"
                );
            }
        }
    }

    #[test]
    fn q3_k_scales_unpack_what_they_pack() {
        for seed in 0..64u8 {
            let l6: [u8; 16] =
                std::array::from_fn(|j| seed.wrapping_mul(5).wrapping_add(17 * j as u8) & 63);
            let packed = pack_q3_k_scales(&l6);
            for j in 0..16 {
                assert_eq!(q3_k_scale(j, &packed), l6[j] as i8 - 32);
            }
        }
    }

    /// Every element goes through Q6_K's 4+2-bit split and back into its own position: on a
    /// coarse grid the reconstruction is within half a quantization step everywhere.
    #[test]
    fn q6_k_levels_and_scales_roundtrip_through_packing() {
        let x: Vec<f32> = (0..QK_K)
            .map(|i| ((i * 37 % 64) as f32 - 32.0) * 0.5)
            .collect();
        let mut b = [0u8; BLOCK_Q6_K_BYTES];
        quantize_block_q6_k(&x, None, &mut b);
        let mut y = [0f32; QK_K];
        dequantize_row_q6_k(&b, &mut y);
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            assert!((a - b).abs() <= 16.0 / 64.0, "element {i}: {a} vs {b}");
        }
    }
}
