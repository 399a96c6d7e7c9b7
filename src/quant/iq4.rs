//! The 4-bit table types: IQ4_NL (32-element blocks) and IQ4_XS (256-element super-blocks of
//! eight 32-element blocks with 6-bit block scales), which map each weight to one of the 16
//! levels of [`KVALUES_IQ4NL`] times a scale, and MXFP4 (32-element blocks of FP4 E2M1 values
//! with a shared power-of-two E8M0 scale).
//!
//! IQ4 quantization (llama.cpp 0c1e57098) reproduces `quantize_iq4_nl` / `quantize_iq4_xs`, i.e.
//! `quantize_row_iq4_nl_impl` with `ntry = 7` — the path llama-quantize takes with or without an
//! importance matrix (the `_ref` entry points use another `ntry` and are not what model files are
//! made with). MXFP4 reproduces `quantize_row_mxfp4_ref` and ignores the importance matrix.
//!
//! Blocks are independent. The scalar IQ4 code here processes one block at a time and is the
//! oracle; `simd` searches 8 or 16 blocks side by side (AVX2 / AVX-512, detected at run time) and
//! must, and is tested to, write the same bytes. `quantizer(ty)` uses the best backend;
//! [`quantize_row_with`] picks one explicitly.

use super::kquants::{best_backend, Backend};
use super::{
    f16_to_f32, f32_to_f16, nearest_int, read_u16, GgmlType, RowDequantizer, RowQuantizer,
};

/// The 16 non-linear levels (`kvalues_iq4nl`), ascending.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Elements per IQ4_NL block, and per scale block inside an IQ4_XS super-block.
pub const BLOCK: usize = 32;
/// Elements per IQ4_XS super-block.
pub const SUPER_BLOCK: usize = 256;

mod simd;

/// Scale searches try `(itry + KVALUES_IQ4NL[0]) / max` for itry in −NTRY..=NTRY.
const NTRY: i32 = 7;

/// Below this block magnitude a block is treated as all zero (ggml's GROUP_MAX_EPS).
const GROUP_MAX_EPS: f32 = 1e-15;

/// The CPU quantizer for `ty` if it is one of IQ4_NL, IQ4_XS and MXFP4.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::IQ4_NL => quantize_row_iq4_nl,
        GgmlType::IQ4_XS => quantize_row_iq4_xs,
        GgmlType::MXFP4 => quantize_row_mxfp4,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is one of IQ4_NL, IQ4_XS and MXFP4.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::IQ4_NL => dequantize_row_iq4_nl,
        GgmlType::IQ4_XS => dequantize_row_iq4_xs,
        GgmlType::MXFP4 => dequantize_row_mxfp4,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Block layouts
// ---------------------------------------------------------------------------------------------

/// IQ4_NL, 18 bytes: `d` (f16) at 0..2, `qs` at 2..18; element j < 16 is the low nibble of
/// `qs[j]`, element j + 16 the high nibble; value = d·`KVALUES_IQ4NL[q]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIq4Nl {
    /// The block scale, f16 bits.
    pub d: u16,
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 16],
}

impl BlockIq4Nl {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 18;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq4Nl {
        BlockIq4Nl {
            d: read_u16(b, 0),
            qs: b[2..18].try_into().unwrap(),
        }
    }
}

/// IQ4_XS, 136 bytes: `d` (f16) at 0..2, `scales_h` (u16 LE) at 2..4, `scales_l` at 4..8,
/// `qs` at 8..136. Block b (of 8) has the 6-bit scale `ls` = low nibble b%2 of `scales_l[b/2]`
/// | bits 2b..2b+2 of `scales_h` << 4, and its 32 quants in `qs[16b..16b+16]` packed as in
/// IQ4_NL; value = d·(ls − 32)·`KVALUES_IQ4NL[q]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIq4Xs {
    /// The block scale, f16 bits.
    pub d: u16,
    /// High two bits of each sub-block's 6-bit scale.
    pub scales_h: u16,
    /// Low four bits of each sub-block's scale, two per byte.
    pub scales_l: [u8; 4],
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 128],
}

impl BlockIq4Xs {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 136;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.scales_h.to_le_bytes());
        out[4..8].copy_from_slice(&self.scales_l);
        out[8..136].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq4Xs {
        BlockIq4Xs {
            d: read_u16(b, 0),
            scales_h: read_u16(b, 2),
            scales_l: b[4..8].try_into().unwrap(),
            qs: b[8..136].try_into().unwrap(),
        }
    }

    /// The 6-bit scale of block `b`, biased by 32.
    pub fn block_scale(&self, b: usize) -> u8 {
        let lo = (self.scales_l[b / 2] >> (4 * (b % 2))) & 0x0f;
        let hi = ((self.scales_h >> (2 * b)) & 3) as u8;
        lo | (hi << 4)
    }
}

// ---------------------------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------------------------

/// Index of the level nearest to `x` (reproduces `best_index_int8` over the 16 levels: a
/// bisection, then the lower neighbour only when STRICTLY nearer, so ties go up).
#[inline(always)]
pub fn best_index(x: f32) -> u8 {
    let v = &KVALUES_IQ4NL;
    if x <= v[0] as f32 {
        return 0;
    }
    if x >= v[15] as f32 {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < v[mid] as f32 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - (v[hi - 1] as f32) < (v[hi] as f32) - x {
        (hi - 1) as u8
    } else {
        hi as u8
    }
}

/// Σ w·q·x and Σ w·q² for the levels nearest to `id·x` (in index order, `(w·q)·x`).
#[inline(always)]
fn weighted_sums(xb: &[f32], weight: &[f32; BLOCK], id: f32) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for j in 0..BLOCK {
        let q = KVALUES_IQ4NL[best_index(id * xb[j]) as usize] as f32;
        let w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The best scale of one 32-element block (the per-block part of `quantize_row_iq4_nl_impl`):
/// the least-squares scale for the levels picked at d = max/127, then for each of 15 trial
/// inverse scales (itry + −127)/max the least-squares scale, kept on STRICT improvement of
/// sumqx²/sumq2. Returns 0 for a block whose magnitude is below GROUP_MAX_EPS.
fn best_block_scale(xb: &[f32], sigma2: f32, qw: Option<&[f32]>) -> f32 {
    let mut weight = [0.0f32; BLOCK];
    match qw {
        Some(qw) => {
            for j in 0..BLOCK {
                weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
        }
        None => {
            for j in 0..BLOCK {
                weight[j] = xb[j] * xb[j];
            }
        }
    }
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in &xb[..BLOCK] {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let d = -max / v0;
    let (sumqx, sumq2) = weighted_sums(xb, &weight, 1.0 / d);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        let (sumqx, sumq2) = weighted_sums(xb, &weight, id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Σx² over the super-block times 2/n: the `sigma2` of the importance weights.
#[inline(always)]
fn sigma2_of(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s * (2.0 / x.len() as f32)
}

/// Pack 32 level indices: element j < 16 low nibble, j + 16 high nibble.
#[inline(always)]
fn pack_block(l: &[u8], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
}

/// One IQ4_NL block: `quantize_row_iq4_nl_impl(32, 32, …, ntry = 7)`. The stored scale is the
/// f32 block scale rounded to f16; the levels are re-picked with the inverse of the f32 scale.
pub fn quantize_block_iq4_nl(x: &[f32], qw: Option<&[f32]>) -> BlockIq4Nl {
    let x = &x[..BLOCK];
    let sigma2 = sigma2_of(x);
    let d = best_block_scale(x, sigma2, qw);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut l = [0u8; BLOCK];
    for j in 0..BLOCK {
        l[j] = best_index(id * x[j]);
    }
    let mut qs = [0u8; 16];
    pack_block(&l, &mut qs);
    BlockIq4Nl {
        d: f32_to_f16(d),
        qs,
    }
}

/// One IQ4_XS super-block: `quantize_row_iq4_nl_impl(256, 32, …, ntry = 7)`. Block scales are
/// quantized to 6 bits against d = −max_scale/32 (max_scale = the signed block scale of largest
/// magnitude, first wins), and each block's levels re-picked with 1/(d·l) from the f32 d.
pub fn quantize_block_iq4_xs(x: &[f32], qw: Option<&[f32]>) -> BlockIq4Xs {
    let x = &x[..SUPER_BLOCK];
    let sigma2 = sigma2_of(x);
    let mut scales = [0.0f32; XS_BLOCKS];
    for (ib, s) in scales.iter_mut().enumerate() {
        let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
        let qwb = qw.map(|w| &w[ib * BLOCK..(ib + 1) * BLOCK]);
        *s = best_block_scale(xb, sigma2, qwb);
    }
    let (d, ls) = quantize_xs_scales(&scales);
    let mut blk = BlockIq4Xs::new(d, &ls);
    for (ib, &l) in ls.iter().enumerate() {
        let idl = xs_inverse_block_scale(d, l);
        let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
        let mut lv = [0u8; BLOCK];
        for j in 0..BLOCK {
            lv[j] = best_index(idl * xb[j]);
        }
        pack_block(&lv, &mut blk.qs[16 * ib..16 * ib + 16]);
    }
    blk
}

/// Blocks per IQ4_XS super-block.
const XS_BLOCKS: usize = SUPER_BLOCK / BLOCK;

/// The IQ4_XS super-block scale d = −max_scale/32 (max_scale: the signed block scale of
/// largest magnitude, the first on ties) and each block's 6-bit scale
/// `clamp(nearest_int(scale/d), −32, 31)`, with 1/d taken as 0 when d is 0.
fn quantize_xs_scales(scales: &[f32; XS_BLOCKS]) -> (f32, [i32; XS_BLOCKS]) {
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for &s in scales {
        if s.abs() > amax_scale {
            amax_scale = s.abs();
            max_scale = s;
        }
    }
    let d = -max_scale / 32.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, scales.map(|s| nearest_int(id * s).clamp(-32, 31)))
}

/// The inverse block scale an IQ4_XS block's levels are re-picked with: 1/(d·l), 0 if d·l is.
#[inline(always)]
fn xs_inverse_block_scale(d: f32, l: i32) -> f32 {
    let dl = d * l as f32;
    if dl != 0.0 {
        1.0 / dl
    } else {
        0.0
    }
}

impl BlockIq4Xs {
    /// A super-block with the f32 scale `d` (stored as f16), the block scales `ls` (in −32..=31,
    /// stored biased by 32) and no quants yet.
    fn new(d: f32, ls: &[i32; XS_BLOCKS]) -> BlockIq4Xs {
        let mut blk = BlockIq4Xs {
            d: f32_to_f16(d),
            scales_h: 0,
            scales_l: [0; 4],
            qs: [0; 128],
        };
        for (ib, &l) in ls.iter().enumerate() {
            let biased = (l + 32) as u8;
            blk.scales_l[ib / 2] |= (biased & 0x0f) << (4 * (ib % 2));
            blk.scales_h |= ((biased >> 4) as u16) << (2 * ib);
        }
        blk
    }
}

fn quantize_row_iq4_nl(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_with(best_backend(), GgmlType::IQ4_NL, x, qw, out);
}

fn quantize_row_iq4_xs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_with(best_backend(), GgmlType::IQ4_XS, x, qw, out);
}

/// Quantizes one IQ4_NL or IQ4_XS row with the given backend's kernels (the scalar oracle for
/// `Backend::Scalar` or a CPU without the backend's instructions). Every backend writes the same
/// bytes; this entry point exists so tests and benchmarks can compare them.
///
/// # Panics
/// If `ty` is neither type, or the row, weights or output have inconsistent lengths.
pub fn quantize_row_with(
    backend: Backend,
    ty: GgmlType,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) {
    let (block, bytes, kernel) = match ty {
        GgmlType::IQ4_NL => (BLOCK, BlockIq4Nl::BYTES, simd::Kernel::Nl),
        GgmlType::IQ4_XS => (SUPER_BLOCK, BlockIq4Xs::BYTES, simd::Kernel::Xs),
        _ => panic!("{ty} is not IQ4_NL or IQ4_XS"),
    };
    assert_eq!(x.len() % block, 0, "{ty} row of {} elements", x.len());
    assert_eq!(out.len(), x.len() / block * bytes, "{ty} output size");
    if let Some(w) = qw {
        assert_eq!(
            w.len(),
            x.len(),
            "importance weights for a row of another length"
        );
    }
    if simd::quantize_row_simd(backend, kernel, x, qw, out) {
        return;
    }
    for (ib, (xb, ob)) in x
        .chunks_exact(block)
        .zip(out.chunks_exact_mut(bytes))
        .enumerate()
    {
        let qwb = qw.map(|w| &w[ib * block..(ib + 1) * block]);
        match kernel {
            simd::Kernel::Nl => quantize_block_iq4_nl(xb, qwb).write(ob),
            simd::Kernel::Xs => quantize_block_iq4_xs(xb, qwb).write(ob),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantizers (dequantize_row_iq4_nl / _xs): d·level, and (d·(ls − 32))·level for IQ4_XS.
// ---------------------------------------------------------------------------------------------

fn dequantize_row_iq4_nl(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockIq4Nl::BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let blk = BlockIq4Nl::read(b);
        let d = f16_to_f32(blk.d);
        for j in 0..16 {
            y[j] = d * KVALUES_IQ4NL[(blk.qs[j] & 0x0f) as usize] as f32;
            y[j + 16] = d * KVALUES_IQ4NL[(blk.qs[j] >> 4) as usize] as f32;
        }
    }
}

fn dequantize_row_iq4_xs(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockIq4Xs::BYTES)
        .zip(out.chunks_exact_mut(SUPER_BLOCK))
    {
        let blk = BlockIq4Xs::read(b);
        let d = f16_to_f32(blk.d);
        for ib in 0..SUPER_BLOCK / BLOCK {
            let dl = d * (blk.block_scale(ib) as i32 - 32) as f32;
            let qs = &blk.qs[16 * ib..16 * ib + 16];
            let yb = &mut y[BLOCK * ib..BLOCK * (ib + 1)];
            for j in 0..16 {
                yb[j] = dl * KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as f32;
                yb[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MXFP4
// ---------------------------------------------------------------------------------------------

/// The FP4 (E2M1) values doubled, by 4-bit code (`kvalues_mxfp4`): codes 8..16 are the negatives
/// of 0..8 (code 8 is −0, equal to 0).
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// MXFP4, 17 bytes: the E8M0 exponent `e` at 0, `qs` at 1..17 (element j < 16 in the low nibble
/// of `qs[j]`, j + 16 in the high nibble); value = `KVALUES_MXFP4[q]`·2^(e − 128) (half the E8M0
/// scale, since the table is doubled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMxfp4 {
    /// The shared E8M0 exponent.
    pub e: u8,
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 16],
}

impl BlockMxfp4 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 17;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.e;
        out[1..17].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockMxfp4 {
        BlockMxfp4 {
            e: b[0],
            qs: b[1..17].try_into().unwrap(),
        }
    }
}

/// Half the E8M0 scale `2^(e − 127)`, built from its bits (`ggml_e8m0_to_fp32_half`; e < 2 gives
/// the subnormals 2^−128 and 2^−127).
#[inline(always)]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        ((e - 1) as u32) << 23
    };
    f32::from_bits(bits)
}

/// Code of the level nearest to `x` at scale `d` (`best_index_mxfp4`): a linear scan, the first
/// code wins ties.
#[inline(always)]
fn best_index_mxfp4(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * d - x).abs();
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// `floorf(log2f(x))` for a positive finite `x`, in integer arithmetic: the exponent E of x,
/// plus one when the f32 log2 rounds up to E + 1. That happens just below a power of two: with
/// x = 2^(E+1) − i·ulp(x), log2 x = E + 1 − δ, δ ≈ i·ulp(x)/(2^(E+1)·ln 2), and the f32 result is
/// E + 1 exactly when δ is below half the spacing h of the floats just under E + 1. With
/// h = 2^−c and ulp(x)/2^(E+1) = 2^−s, that is i < ln 2·2^(s − c), never a tie (ln 2 is
/// irrational and the second-order term is far too small to cross an integer), so the answer is
/// i ≤ ⌊ln 2·2^r⌋ for r = s − c. This is what a correctly rounded log2f gives, and what glibc's
/// gives (checked over every positive f32 by a test), without depending on the platform's libm;
/// shaders/iq4.wgsl computes the same.
pub fn floor_log2(x: f32) -> i32 {
    debug_assert!(x > 0.0 && x.is_finite());
    let u = x.to_bits();
    // E, i (in ulps of x below 2^(E+1)) and s (2^(E+1) = 2^s ulps).
    let (e, i, s) = if u >= 0x0080_0000 {
        ((u >> 23) as i32 - 127, 0x0080_0000 - (u & 0x007f_ffff), 24)
    } else {
        let b = 31 - u.leading_zeros() as i32;
        (b - 149, (2u32 << b) - u, b + 1)
    };
    let n = e + 1;
    if n == 0 {
        // log2 x is just below 0, where floats are dense: it never rounds to 0.
        return e;
    }
    let m = n.unsigned_abs();
    let p = 31 - m.leading_zeros() as i32;
    // Spacing below n: ulp of |n|'s binade, halved below a positive power of two; h is half that.
    let c = if n > 0 && m.is_power_of_two() {
        25 - p
    } else {
        24 - p
    };
    let r = s - c;
    // ⌊ln 2·2^r⌋ for 1 ≤ r ≤ 31: the top r bits of ln 2 as a 32-bit fraction (0.b17217f7d1…).
    if r >= 1 && i <= 0xb172_17f7u32 >> (32 - r) {
        e + 1
    } else {
        e
    }
}

/// One block of `quantize_row_mxfp4_ref`: e = floor(log2(amax)) − 2 + 127 (exact small integers
/// in f32), converted to a byte as C does (so a subnormal amax wraps), 0 for an all-zero block;
/// each element gets the nearest level at half that scale.
pub fn quantize_block_mxfp4(x: &[f32]) -> BlockMxfp4 {
    let x = &x[..BLOCK];
    let mut amax = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
        }
    }
    let e = if amax > 0.0 {
        (floor_log2(amax) - 2 + 127) as u8
    } else {
        0
    };
    let d = e8m0_to_f32_half(e);
    let mut l = [0u8; BLOCK];
    for (lj, &v) in l.iter_mut().zip(x) {
        *lj = best_index_mxfp4(v, d);
    }
    let mut qs = [0u8; 16];
    pack_block(&l, &mut qs);
    BlockMxfp4 { e, qs }
}

/// MXFP4 ignores the importance matrix, as `quantize_mxfp4` does.
fn quantize_row_mxfp4(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % BLOCK, 0);
    for (xb, ob) in x
        .chunks_exact(BLOCK)
        .zip(out.chunks_exact_mut(BlockMxfp4::BYTES))
    {
        quantize_block_mxfp4(xb).write(ob);
    }
}

/// `dequantize_row_mxfp4`: level·d.
fn dequantize_row_mxfp4(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockMxfp4::BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let blk = BlockMxfp4::read(b);
        let d = e8m0_to_f32_half(blk.e);
        for j in 0..16 {
            y[j] = KVALUES_MXFP4[(blk.qs[j] & 0x0f) as usize] as f32 * d;
            y[j + 16] = KVALUES_MXFP4[(blk.qs[j] >> 4) as usize] as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_is_the_nearest_level_with_ties_up() {
        // Compare with a brute-force nearest search (strict < keeps the later, upper level on a
        // tie when scanning downward from the top).
        let mut x = -140.0f32;
        while x < 130.0 {
            let mut best = 15usize;
            for i in (0..15).rev() {
                if (KVALUES_IQ4NL[i] as f32 - x).abs() < (KVALUES_IQ4NL[best] as f32 - x).abs() {
                    best = i;
                }
            }
            assert_eq!(best_index(x) as usize, best, "x = {x}");
            x += 0.25;
        }
    }

    #[test]
    fn iq4_xs_block_scales_unpack_as_packed() {
        // Quantize blocks of growing magnitude: scales differ per block and decode consistently.
        let x: Vec<f32> = (0..256)
            .map(|i| ((i % 7) as f32 - 3.0) * (1 + i / 32) as f32)
            .collect();
        let blk = quantize_block_iq4_xs(&x, None);
        let mut bytes = [0u8; 136];
        blk.write(&mut bytes);
        assert_eq!(BlockIq4Xs::read(&bytes), blk);
        let d = f16_to_f32(blk.d);
        // The largest block (the last) gets the extreme 6-bit scale: −32 + 32 = 0 stored, since
        // d = −max_scale/32 maps it to l = −32.
        assert_eq!(blk.block_scale(7), 0);
        let mut y = [0f32; 256];
        dequantize_row_iq4_xs(&bytes, &mut y);
        for ib in 0..8 {
            let dl = d * (blk.block_scale(ib) as i32 - 32) as f32;
            let q = blk.qs[16 * ib] & 0x0f;
            assert_eq!(y[32 * ib], dl * KVALUES_IQ4NL[q as usize] as f32);
        }
    }

    /// `floor_log2` against the platform's log2f where they can disagree (the top and bottom
    /// 64 values of every binade, every subnormal "binade") and at random.
    #[test]
    fn floor_log2_equals_log2f_floor() {
        let check = |u: u32| {
            let x = f32::from_bits(u);
            assert_eq!(
                floor_log2(x),
                x.log2().floor() as i32,
                "x = {x:e} ({u:#010x})"
            );
        };
        for e in 0..255u32 {
            for k in 0..64u32 {
                check((e << 23) | k | (e == 0) as u32);
                check((e << 23) | (0x007f_ffff - k));
            }
        }
        for b in 0..23u32 {
            for k in 0..64u32.min(1 << b) {
                check((2u32 << b) - 1 - k);
            }
        }
        let mut r = 0x1234_5678u32;
        for _ in 0..1_000_000 {
            r ^= r << 13;
            r ^= r >> 17;
            r ^= r << 5;
            let u = r & 0x7fff_ffff;
            if u != 0 && u < 0x7f80_0000 {
                check(u);
            }
        }
    }

    /// Every positive finite f32 (2^31 values; about a minute in release builds).
    #[test]
    #[ignore = "exhaustive: cargo test --release --lib -- --ignored floor_log2_exhaustive"]
    fn floor_log2_exhaustive() {
        let bad = (1..0x7f80_0000u32)
            .filter(|&u| {
                let x = f32::from_bits(u);
                floor_log2(x) != x.log2().floor() as i32
            })
            .take(10)
            .collect::<Vec<_>>();
        assert!(bad.is_empty(), "differs at {bad:#x?}");
    }

    #[test]
    fn mxfp4_scale_and_levels() {
        assert_eq!(e8m0_to_f32_half(0), f32::from_bits(0x0020_0000)); // 2^-128
        assert_eq!(e8m0_to_f32_half(1), f32::from_bits(0x0040_0000)); // 2^-127
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        assert_eq!(e8m0_to_f32_half(255), 2f32.powi(127));
        // amax = 6: e = ⌊log2 6⌋ − 2 + 127 = 127, d = 0.5; 6 = 12·0.5 → code 7, −3 = −6·0.5 →
        // code 13, 0.25 is a tie between 0 and 0.5 → the first (code 0).
        let mut x = [0.0f32; 32];
        x[0] = 6.0;
        x[1] = -3.0;
        x[2] = 0.25;
        let b = quantize_block_mxfp4(&x);
        assert_eq!(b.e, 127);
        assert_eq!(b.qs[0] & 0x0f, 7);
        assert_eq!(b.qs[1] & 0x0f, 13);
        assert_eq!(b.qs[2] & 0x0f, 0);
        // A subnormal amax: ⌊log2⌋ − 2 + 127 is negative and C keeps its low byte.
        let mut x = [0.0f32; 32];
        x[0] = 1e-40; // log2 ≈ −132.9 → −133 − 2 + 127 = −8 → 248
        assert_eq!(quantize_block_mxfp4(&x).e, 248);
    }
}
