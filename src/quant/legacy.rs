//! The legacy 32-element block types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Without an importance matrix each reproduces ggml's (llama.cpp 0c1e57098) `quantize_row_<t>_ref`
//! (what `ggml_quantize_chunk` runs when it is given no imatrix); with one, `quantize_row_<t>_impl`
//! (Q8_0 has no imatrix variant: `quantize_q8_0` ignores the weights).
//!
//! Blocks are written as raw little-endian bytes; every block type below documents its byte
//! offsets, and `write`/`read` are the only code that knows them.

use super::search::{make_qkx3_quants, make_qx_quants};
use super::{f16_to_f32, f32_to_f16, read_u16, GgmlType, RowDequantizer, RowQuantizer};

/// Elements per block, the same for every legacy type.
pub const QK: usize = 32;

/// The CPU quantizer for `ty` if it is one of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::Q4_0 => quantize_row_q4_0,
        GgmlType::Q4_1 => quantize_row_q4_1,
        GgmlType::Q5_0 => quantize_row_q5_0,
        GgmlType::Q5_1 => quantize_row_q5_1,
        GgmlType::Q8_0 => quantize_row_q8_0,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is one of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::Q4_0 => dequantize_row_q4_0,
        GgmlType::Q4_1 => dequantize_row_q4_1,
        GgmlType::Q5_0 => dequantize_row_q5_0,
        GgmlType::Q5_1 => dequantize_row_q5_1,
        GgmlType::Q8_0 => dequantize_row_q8_0,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Block layouts
// ---------------------------------------------------------------------------------------------

/// Q4_0, 18 bytes: `d` (f16) at 0..2, `qs` at 2..18. Element j < 16 is the low nibble of
/// `qs[j]`, element j + 16 its high nibble; value = (q − 8)·d.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_0 {
    /// The block scale, f16 bits.
    pub d: u16,
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 16],
}

impl BlockQ4_0 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 18;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockQ4_0 {
        BlockQ4_0 {
            d: read_u16(b, 0),
            qs: b[2..18].try_into().unwrap(),
        }
    }
}

/// Q4_1, 20 bytes: `d` (f16) at 0..2, `m` (f16) at 2..4, `qs` at 4..20 packed as in Q4_0;
/// value = q·d + m.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_1 {
    /// The block scale, f16 bits.
    pub d: u16,
    /// The block minimum (offset), f16 bits.
    pub m: u16,
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 16],
}

impl BlockQ4_1 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 20;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..20].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockQ4_1 {
        BlockQ4_1 {
            d: read_u16(b, 0),
            m: read_u16(b, 2),
            qs: b[4..20].try_into().unwrap(),
        }
    }
}

/// Q5_0, 22 bytes: `d` (f16) at 0..2, `qh` (u32 LE) at 2..6, `qs` at 6..22. The low four bits
/// of each 5-bit quant are packed in `qs` as in Q4_0; bit j of `qh` is bit 4 of element j.
/// Value = (q − 16)·d.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_0 {
    /// The block scale, f16 bits.
    pub d: u16,
    /// The high (fifth) bit of each quant.
    pub qh: u32,
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 16],
}

impl BlockQ5_0 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 22;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..6].copy_from_slice(&self.qh.to_le_bytes());
        out[6..22].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockQ5_0 {
        BlockQ5_0 {
            d: read_u16(b, 0),
            qh: u32::from_le_bytes(b[2..6].try_into().unwrap()),
            qs: b[6..22].try_into().unwrap(),
        }
    }
}

/// Q5_1, 24 bytes: `d` (f16) at 0..2, `m` (f16) at 2..4, `qh` (u32 LE) at 4..8, `qs` at 8..24,
/// packed as in Q5_0; value = q·d + m.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_1 {
    /// The block scale, f16 bits.
    pub d: u16,
    /// The block minimum (offset), f16 bits.
    pub m: u16,
    /// The high (fifth) bit of each quant.
    pub qh: u32,
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 16],
}

impl BlockQ5_1 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 24;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..8].copy_from_slice(&self.qh.to_le_bytes());
        out[8..24].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockQ5_1 {
        BlockQ5_1 {
            d: read_u16(b, 0),
            m: read_u16(b, 2),
            qh: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            qs: b[8..24].try_into().unwrap(),
        }
    }
}

/// Q8_0, 34 bytes: `d` (f16) at 0..2, then 32 signed bytes `qs` at 2..34; value = q·d.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_0 {
    /// The block scale, f16 bits.
    pub d: u16,
    /// The packed quants (layout in the struct docs).
    pub qs: [i8; 32],
}

impl BlockQ8_0 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 34;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        for (o, q) in out[2..34].iter_mut().zip(self.qs) {
            *o = q as u8;
        }
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockQ8_0 {
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(&b[2..34]) {
            *q = v as i8;
        }
        BlockQ8_0 {
            d: read_u16(b, 0),
            qs,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Numeric details the C reference depends on
// ---------------------------------------------------------------------------------------------

/// A C float → integer conversion as GCC compiles it for x86-64 (`cvttss2si`): truncation toward
/// zero, and the "integer indefinite" value `i32::MIN` for NaN and out-of-range inputs. The
/// reference converts to `int8_t`/`uint8_t` through this and keeps the low byte, which is what
/// decides the quants of a block whose inverse scale overflowed to infinity (subnormal scales).
#[inline(always)]
pub(crate) fn c_float_to_i32(f: f32) -> i32 {
    if f.is_nan() || !(-2147483648.0..2147483648.0).contains(&f) {
        i32::MIN
    } else {
        f as i32
    }
}

/// The inverse scale the reference uses: `d ? 1/d : 0` (−0.0 counts as zero).
#[inline(always)]
fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Value with the largest magnitude, keeping the FIRST one on ties, and that magnitude (0 for an
/// all-zero block, in which case the value is +0.0).
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// Minimum and maximum as the reference scans them (start from ±FLT_MAX).
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Pack 32 nibble quants: element j < 16 low, element j + 16 high (the C code ORs an int into a
/// byte, so only the low eight bits of `lo | hi << 4` survive).
#[inline(always)]
fn pack_nibbles(q: &[u8; 32]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for j in 0..16 {
        qs[j] = q[j] | (q[j + 16] << 4);
    }
    qs
}

/// Split 32 five-bit quants into the low nibbles (`qs`) and the fifth bits (`qh`).
#[inline(always)]
fn pack_five_bits(q: &[u8; 32]) -> ([u8; 16], u32) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let (lo, hi) = (q[j], q[j + 16]);
        qs[j] = (lo & 0x0f) | ((hi & 0x0f) << 4);
        qh |= (((lo & 0x10) >> 4) as u32) << j;
        qh |= (((hi & 0x10) >> 4) as u32) << (j + 16);
    }
    (qs, qh)
}

// ---------------------------------------------------------------------------------------------
// Blocks without an importance matrix (the `_ref` quantizers)
// ---------------------------------------------------------------------------------------------

/// Reproduces one block of `quantize_row_q4_0_ref`: d = max/−8 (max = the signed value of largest
/// magnitude) so the extreme value lands on quant 0, then q = min(15, trunc(x/d + 8.5)).
pub fn quantize_block_q4_0(x: &[f32]) -> BlockQ4_0 {
    let (_, max) = signed_absmax(&x[..QK]);
    let d = max / -8.0;
    let id = inverse_or_zero(d);
    let mut q = [0u8; 32];
    for (qj, &v) in q.iter_mut().zip(&x[..QK]) {
        let t = c_float_to_i32(v * id + 8.5) as i8;
        *qj = (t as i32).min(15) as u8;
    }
    BlockQ4_0 {
        d: f32_to_f16(d),
        qs: pack_nibbles(&q),
    }
}

/// Reproduces one block of `quantize_row_q4_1_ref`: d = (max − min)/15, m = min,
/// q = min(15, trunc((x − min)/d + 0.5)).
pub fn quantize_block_q4_1(x: &[f32]) -> BlockQ4_1 {
    let (min, max) = min_max(&x[..QK]);
    let d = (max - min) / 15.0;
    let id = inverse_or_zero(d);
    let mut q = [0u8; 32];
    for (qj, &v) in q.iter_mut().zip(&x[..QK]) {
        let t = c_float_to_i32((v - min) * id + 0.5) as i8;
        *qj = (t as i32).min(15) as u8;
    }
    BlockQ4_1 {
        d: f32_to_f16(d),
        m: f32_to_f16(min),
        qs: pack_nibbles(&q),
    }
}

/// Reproduces one block of `quantize_row_q5_0_ref`: d = max/−16, q = min(31, trunc(x/d + 16.5)).
pub fn quantize_block_q5_0(x: &[f32]) -> BlockQ5_0 {
    let (_, max) = signed_absmax(&x[..QK]);
    let d = max / -16.0;
    let id = inverse_or_zero(d);
    let mut q = [0u8; 32];
    for (qj, &v) in q.iter_mut().zip(&x[..QK]) {
        let t = c_float_to_i32(v * id + 16.5) as i8;
        *qj = (t as i32).min(31) as u8;
    }
    let (qs, qh) = pack_five_bits(&q);
    BlockQ5_0 {
        d: f32_to_f16(d),
        qh,
        qs,
    }
}

/// Reproduces one block of `quantize_row_q5_1_ref`: d = (max − min)/31, m = min,
/// q = trunc((x − min)/d + 0.5) converted straight to a byte (the reference does not clamp).
pub fn quantize_block_q5_1(x: &[f32]) -> BlockQ5_1 {
    let (min, max) = min_max(&x[..QK]);
    let d = (max - min) / 31.0;
    let id = inverse_or_zero(d);
    let mut q = [0u8; 32];
    for (qj, &v) in q.iter_mut().zip(&x[..QK]) {
        *qj = c_float_to_i32((v - min) * id + 0.5) as u8;
    }
    let (qs, qh) = pack_five_bits(&q);
    BlockQ5_1 {
        d: f32_to_f16(d),
        m: f32_to_f16(min),
        qh,
        qs,
    }
}

/// Reproduces one block of `quantize_row_q8_0_ref`: d = amax/127, q = roundf(x/d) (C `roundf`:
/// halves away from zero, which is Rust's `f32::round`).
pub fn quantize_block_q8_0(x: &[f32]) -> BlockQ8_0 {
    let mut amax = 0.0f32;
    for &v in &x[..QK] {
        // MAX(amax, |v|) as the C macro evaluates it.
        amax = if amax > v.abs() { amax } else { v.abs() };
    }
    let d = amax / 127.0;
    let id = inverse_or_zero(d);
    let mut qs = [0i8; 32];
    for (qj, &v) in qs.iter_mut().zip(&x[..QK]) {
        *qj = c_float_to_i32((v * id).round()) as i8;
    }
    BlockQ8_0 {
        d: f32_to_f16(d),
        qs,
    }
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/// Quantize every 32-element block of `x` with `block`, writing `bytes` per block.
#[inline(always)]
fn quantize_blocks<B>(
    x: &[f32],
    out: &mut [u8],
    bytes: usize,
    block: impl Fn(&[f32]) -> B,
    write: impl Fn(&B, &mut [u8]),
) {
    debug_assert_eq!(x.len() % QK, 0);
    debug_assert_eq!(out.len(), x.len() / QK * bytes);
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(bytes)) {
        write(&block(xb), ob);
    }
}

/// The importance weights of one block of a row quantized with an imatrix: qw·sqrt(σ² + x²), where
/// σ² = Σx²/n over the WHOLE row (as the legacy `quantize_row_<t>_impl` compute it).
#[inline(always)]
fn block_weights(xb: &[f32], qwb: &[f32], sigma2: f32) -> [f32; QK] {
    let mut w = [0.0f32; QK];
    for j in 0..QK {
        w[j] = qwb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
    }
    w
}

/// σ² of a row: the mean of x², summed in index order.
#[inline(always)]
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// Quantize a row block by block with importance weights: `block` gets the block's values and
/// its weights (see [`block_weights`]).
#[inline(always)]
fn quantize_blocks_weighted<B>(
    x: &[f32],
    qw: &[f32],
    out: &mut [u8],
    bytes: usize,
    block: impl Fn(&[f32], &[f32; QK]) -> B,
    write: impl Fn(&B, &mut [u8]),
) {
    debug_assert_eq!(x.len() % QK, 0);
    debug_assert_eq!(qw.len(), x.len());
    let sigma2 = row_sigma2(x);
    for ((xb, qwb), ob) in x
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(out.chunks_exact_mut(bytes))
    {
        write(&block(xb, &block_weights(xb, qwb, sigma2)), ob);
    }
}

/// One Q4_0 block with importance weights (the block step of `quantize_row_q4_0_impl`): the
/// weighted symmetric search `make_qx_quants(nmax = 8, rmse_type = 1)`.
pub fn quantize_block_q4_0_weighted(xb: &[f32], w: &[f32; QK]) -> BlockQ4_0 {
    let mut l = [0i8; QK];
    let d = make_qx_quants(8, &xb[..QK], &mut l, 1, Some(w));
    BlockQ4_0 {
        d: f32_to_f16(d),
        qs: pack_nibbles(&l.map(|v| v as u8)),
    }
}

/// One Q5_0 block with importance weights: `make_qx_quants(nmax = 16, rmse_type = 1)`.
pub fn quantize_block_q5_0_weighted(xb: &[f32], w: &[f32; QK]) -> BlockQ5_0 {
    let mut l = [0i8; QK];
    let d = make_qx_quants(16, &xb[..QK], &mut l, 1, Some(w));
    let (qs, qh) = pack_five_bits(&l.map(|v| v as u8));
    BlockQ5_0 {
        d: f32_to_f16(d),
        qh,
        qs,
    }
}

/// One Q4_1 block with importance weights: the min+scale search
/// `make_qkx3_quants(nmax = 15, rmin = −0.9, rdelta = 0.05, nstep = 36, use_mad = false)`;
/// the stored min is the negated offset the search returns.
pub fn quantize_block_q4_1_weighted(xb: &[f32], w: &[f32; QK]) -> BlockQ4_1 {
    let mut l = [0u8; QK];
    let (d, neg_min) = make_qkx3_quants(15, &xb[..QK], Some(w), &mut l, -0.9, 0.05, 36, false);
    BlockQ4_1 {
        d: f32_to_f16(d),
        m: f32_to_f16(-neg_min),
        qs: pack_nibbles(&l),
    }
}

/// One Q5_1 block with importance weights: `make_qkx3_quants(nmax = 31, −0.9, 0.05, 36)`.
pub fn quantize_block_q5_1_weighted(xb: &[f32], w: &[f32; QK]) -> BlockQ5_1 {
    let mut l = [0u8; QK];
    let (d, neg_min) = make_qkx3_quants(31, &xb[..QK], Some(w), &mut l, -0.9, 0.05, 36, false);
    let (qs, qh) = pack_five_bits(&l);
    BlockQ5_1 {
        d: f32_to_f16(d),
        m: f32_to_f16(-neg_min),
        qh,
        qs,
    }
}

/// The Q4_0 `_ref` row quantizer block by block with the scalar code: the oracle the SIMD path
/// must match byte for byte.
pub fn quantize_row_q4_0_scalar(x: &[f32], out: &mut [u8]) {
    quantize_blocks(
        x,
        out,
        BlockQ4_0::BYTES,
        quantize_block_q4_0,
        BlockQ4_0::write,
    );
}

/// The Q8_0 row quantizer with the scalar code (the SIMD path's oracle).
pub fn quantize_row_q8_0_scalar(x: &[f32], out: &mut [u8]) {
    quantize_blocks(
        x,
        out,
        BlockQ8_0::BYTES,
        quantize_block_q8_0,
        BlockQ8_0::write,
    );
}

/// Whether the row quantizers of Q8_0 and Q4_0 (without imatrix) use the AVX2 path here.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn quantize_row_q4_0(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let bytes = BlockQ4_0::BYTES;
    match qw {
        None => {
            #[cfg(target_arch = "x86_64")]
            if simd_available() {
                // SAFETY: AVX2 is available (checked just above).
                unsafe { avx2::quantize_row_q4_0(x, out) };
                return;
            }
            quantize_row_q4_0_scalar(x, out)
        }
        Some(qw) => quantize_blocks_weighted(
            x,
            qw,
            out,
            bytes,
            quantize_block_q4_0_weighted,
            BlockQ4_0::write,
        ),
    }
}

fn quantize_row_q4_1(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let bytes = BlockQ4_1::BYTES;
    match qw {
        None => quantize_blocks(x, out, bytes, quantize_block_q4_1, BlockQ4_1::write),
        Some(qw) => quantize_blocks_weighted(
            x,
            qw,
            out,
            bytes,
            quantize_block_q4_1_weighted,
            BlockQ4_1::write,
        ),
    }
}

fn quantize_row_q5_0(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let bytes = BlockQ5_0::BYTES;
    match qw {
        None => quantize_blocks(x, out, bytes, quantize_block_q5_0, BlockQ5_0::write),
        Some(qw) => quantize_blocks_weighted(
            x,
            qw,
            out,
            bytes,
            quantize_block_q5_0_weighted,
            BlockQ5_0::write,
        ),
    }
}

fn quantize_row_q5_1(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let bytes = BlockQ5_1::BYTES;
    match qw {
        None => quantize_blocks(x, out, bytes, quantize_block_q5_1, BlockQ5_1::write),
        Some(qw) => quantize_blocks_weighted(
            x,
            qw,
            out,
            bytes,
            quantize_block_q5_1_weighted,
            BlockQ5_1::write,
        ),
    }
}

/// Q8_0 ignores the importance matrix, as `quantize_q8_0` does.
fn quantize_row_q8_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { avx2::quantize_row_q8_0(x, out) };
        return;
    }
    quantize_row_q8_0_scalar(x, out)
}

/// AVX2 versions of the Q8_0 and Q4_0 `_ref` quantizers, vectorized ACROSS blocks: lane k of
/// every vector belongs to block k of a group of eight, and runs exactly the scalar sequence of
/// IEEE operations for that block (same comparisons, same single-rounding multiplies, adds and
/// divides, no FMA, no reciprocal approximations), so the bytes cannot differ. Scales go through
/// the scalar f16 conversion. Blocks left over after the last group of eight use the scalar code.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{f32_to_f16, quantize_block_q4_0, quantize_block_q8_0, BlockQ4_0, BlockQ8_0, QK};
    use std::arch::x86_64::*;

    /// Blocks per group: one per f32 lane.
    const LANES: usize = 8;

    /// Transpose an 8×8 f32 tile: row r of the input becomes column r of the output.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xee>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xee>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xee>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xee>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// Element j of eight consecutive blocks, for every j: `cols[j]` lane k = x[32k + j].
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load_columns(x: &[f32]) -> [__m256; QK] {
        assert!(x.len() >= LANES * QK);
        let mut cols = [_mm256_setzero_ps(); QK];
        for j0 in (0..QK).step_by(8) {
            let mut rows = [_mm256_setzero_ps(); 8];
            for (k, r) in rows.iter_mut().enumerate() {
                // SAFETY: k*32 + j0 + 8 <= 256 <= x.len() (asserted above).
                *r = unsafe { _mm256_loadu_ps(x.as_ptr().add(k * QK + j0)) };
            }
            let c = transpose8(rows);
            cols[j0..j0 + 8].copy_from_slice(&c);
        }
        cols
    }

    /// `d ? 1/d : 0` per lane (NaN counts as non-zero, as in C).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn inverse_or_zero(d: __m256) -> __m256 {
        let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(d, _mm256_setzero_ps());
        _mm256_and_ps(nonzero, _mm256_div_ps(_mm256_set1_ps(1.0), d))
    }

    /// C `roundf` per lane (halves away from zero): truncate, then step away from zero when the
    /// exactly computed fraction is at least one half. Infinities and NaN pass through.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn round_half_away(p: __m256) -> __m256 {
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
        let sign = _mm256_and_ps(p, _mm256_set1_ps(-0.0));
        let frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(p, t));
        let away = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
        let step = _mm256_and_ps(away, _mm256_or_ps(sign, _mm256_set1_ps(1.0)));
        _mm256_add_ps(t, step)
    }

    /// Eight i32 lanes holding byte values 0..=255 (lanes a0..a3 = 32 values in order) → 32 bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pack_bytes32(a: [__m256i; 4]) -> __m256i {
        let p01 = _mm256_packus_epi32(a[0], a[1]);
        let p23 = _mm256_packus_epi32(a[2], a[3]);
        let b = _mm256_packus_epi16(p01, p23);
        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// Transpose the per-lane results back to per-block rows: `vals[j]` lane k → `rows[k][j]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose_back<const N: usize>(vals: &[__m256i; N], j0: usize) -> [__m256i; 8] {
        let mut tile = [_mm256_setzero_ps(); 8];
        for (t, v) in tile.iter_mut().zip(&vals[j0..j0 + 8]) {
            *t = _mm256_castsi256_ps(*v);
        }
        let cols = transpose8(tile);
        let mut rows = [_mm256_setzero_si256(); 8];
        for (r, c) in rows.iter_mut().zip(cols) {
            *r = _mm256_castps_si256(c);
        }
        rows
    }

    /// Eight Q8_0 blocks: lane k reproduces `quantize_block_q8_0` on block k.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn q8_0_group(x: &[f32], out: &mut [u8]) {
        let cols = load_columns(x);
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut amax = _mm256_setzero_ps();
        for c in &cols {
            // maxps(a, b) is `a > b ? a : b`, the C MAX macro exactly.
            amax = _mm256_max_ps(amax, _mm256_and_ps(*c, abs_mask));
        }
        let d = _mm256_div_ps(amax, _mm256_set1_ps(127.0));
        let id = inverse_or_zero(d);
        let low_byte = _mm256_set1_epi32(0xff);
        let mut q = [_mm256_setzero_si256(); QK];
        for (qj, c) in q.iter_mut().zip(&cols) {
            let r = round_half_away(_mm256_mul_ps(*c, id));
            // cvttps2dq gives the same indefinite value for NaN/overflow as the scalar path.
            *qj = _mm256_and_si256(_mm256_cvttps_epi32(r), low_byte);
        }
        let mut ds = [0f32; LANES];
        // SAFETY: ds has room for 8 f32.
        unsafe { _mm256_storeu_ps(ds.as_mut_ptr(), d) };
        let t = [
            transpose_back(&q, 0),
            transpose_back(&q, 8),
            transpose_back(&q, 16),
            transpose_back(&q, 24),
        ];
        for k in 0..LANES {
            let ob = &mut out[k * BlockQ8_0::BYTES..(k + 1) * BlockQ8_0::BYTES];
            ob[0..2].copy_from_slice(&f32_to_f16(ds[k]).to_le_bytes());
            let bytes = pack_bytes32([t[0][k], t[1][k], t[2][k], t[3][k]]);
            // SAFETY: ob[2..34] is 32 bytes.
            unsafe { _mm256_storeu_si256(ob[2..34].as_mut_ptr() as *mut __m256i, bytes) };
        }
    }

    /// Eight Q4_0 blocks: lane k reproduces `quantize_block_q4_0` on block k.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn q4_0_group(x: &[f32], out: &mut [u8]) {
        let cols = load_columns(x);
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut amax = _mm256_setzero_ps();
        let mut max = _mm256_setzero_ps();
        for c in &cols {
            let a = _mm256_and_ps(*c, abs_mask);
            // `amax < |v|` (false for NaN): the first element of largest magnitude wins.
            let bigger = _mm256_cmp_ps::<_CMP_LT_OQ>(amax, a);
            amax = _mm256_blendv_ps(amax, a, bigger);
            max = _mm256_blendv_ps(max, *c, bigger);
        }
        let d = _mm256_div_ps(max, _mm256_set1_ps(-8.0));
        let id = inverse_or_zero(d);
        let half_offset = _mm256_set1_ps(8.5);
        let fifteen = _mm256_set1_epi32(15);
        let mut q = [_mm256_setzero_si256(); QK];
        for (qj, c) in q.iter_mut().zip(&cols) {
            let t = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(*c, id), half_offset));
            // Keep the low byte as a signed int8, then MIN(15, ·).
            let t8 = _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(t));
            *qj = _mm256_min_epi32(t8, fifteen);
        }
        let low_byte = _mm256_set1_epi32(0xff);
        let mut packed = [_mm256_setzero_si256(); 16];
        for j in 0..16 {
            let hi = _mm256_slli_epi32::<4>(q[j + 16]);
            packed[j] = _mm256_and_si256(_mm256_or_si256(q[j], hi), low_byte);
        }
        let mut ds = [0f32; LANES];
        // SAFETY: ds has room for 8 f32.
        unsafe { _mm256_storeu_ps(ds.as_mut_ptr(), d) };
        let t0 = transpose_back(&packed, 0);
        let t1 = transpose_back(&packed, 8);
        for k in 0..LANES {
            let ob = &mut out[k * BlockQ4_0::BYTES..(k + 1) * BlockQ4_0::BYTES];
            ob[0..2].copy_from_slice(&f32_to_f16(ds[k]).to_le_bytes());
            // 16 values → 16 bytes: u16 pack, fix the lane interleave, u8 pack.
            let w = _mm256_permute4x64_epi64::<0xd8>(_mm256_packus_epi32(t0[k], t1[k]));
            let b = _mm256_packus_epi16(w, w);
            let b = _mm256_permute4x64_epi64::<0x08>(b);
            // SAFETY: ob[2..18] is 16 bytes.
            unsafe {
                _mm_storeu_si128(
                    ob[2..18].as_mut_ptr() as *mut __m128i,
                    _mm256_castsi256_si128(b),
                )
            };
        }
    }

    /// A Q8_0 row: groups of eight blocks in SIMD, the rest scalar.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
        let groups = x.len() / (LANES * QK);
        let (xg, xr) = x.split_at(groups * LANES * QK);
        let (og, or) = out.split_at_mut(groups * LANES * BlockQ8_0::BYTES);
        for (xs, os) in xg
            .chunks_exact(LANES * QK)
            .zip(og.chunks_exact_mut(LANES * BlockQ8_0::BYTES))
        {
            q8_0_group(xs, os);
        }
        for (xb, ob) in xr
            .chunks_exact(QK)
            .zip(or.chunks_exact_mut(BlockQ8_0::BYTES))
        {
            quantize_block_q8_0(xb).write(ob);
        }
    }

    /// A Q4_0 row (no imatrix): groups of eight blocks in SIMD, the rest scalar.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row_q4_0(x: &[f32], out: &mut [u8]) {
        let groups = x.len() / (LANES * QK);
        let (xg, xr) = x.split_at(groups * LANES * QK);
        let (og, or) = out.split_at_mut(groups * LANES * BlockQ4_0::BYTES);
        for (xs, os) in xg
            .chunks_exact(LANES * QK)
            .zip(og.chunks_exact_mut(LANES * BlockQ4_0::BYTES))
        {
            q4_0_group(xs, os);
        }
        for (xb, ob) in xr
            .chunks_exact(QK)
            .zip(or.chunks_exact_mut(BlockQ4_0::BYTES))
        {
            quantize_block_q4_0(xb).write(ob);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantizers (dequantize_row_<t>): each value is one f32 multiply (plus one add for the types
// with a min), in the reference's order.
// ---------------------------------------------------------------------------------------------

fn dequantize_row_q4_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockQ4_0::BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let blk = BlockQ4_0::read(b);
        let d = f16_to_f32(blk.d);
        for j in 0..16 {
            y[j] = ((blk.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((blk.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

fn dequantize_row_q4_1(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockQ4_1::BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let blk = BlockQ4_1::read(b);
        let d = f16_to_f32(blk.d);
        let m = f16_to_f32(blk.m);
        for j in 0..16 {
            y[j] = (blk.qs[j] & 0x0f) as f32 * d + m;
            y[j + 16] = (blk.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// The 5-bit quant of element `j` of a Q5 block.
#[inline(always)]
fn five_bit_quant(qs: &[u8; 16], qh: u32, j: usize) -> u8 {
    let nibble = if j < 16 {
        qs[j] & 0x0f
    } else {
        qs[j - 16] >> 4
    };
    nibble | ((((qh >> j) & 1) as u8) << 4)
}

fn dequantize_row_q5_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockQ5_0::BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let blk = BlockQ5_0::read(b);
        let d = f16_to_f32(blk.d);
        for (j, yj) in y.iter_mut().enumerate() {
            *yj = (five_bit_quant(&blk.qs, blk.qh, j) as i32 - 16) as f32 * d;
        }
    }
}

fn dequantize_row_q5_1(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockQ5_1::BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let blk = BlockQ5_1::read(b);
        let d = f16_to_f32(blk.d);
        let m = f16_to_f32(blk.m);
        for (j, yj) in y.iter_mut().enumerate() {
            *yj = five_bit_quant(&blk.qs, blk.qh, j) as f32 * d + m;
        }
    }
}

fn dequantize_row_q8_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockQ8_0::BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = f16_to_f32(read_u16(b, 0));
        for (yj, &q) in y.iter_mut().zip(&b[2..34]) {
            *yj = (q as i8) as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_conversion_truncates_and_gives_indefinite_for_nan_and_overflow() {
        assert_eq!(c_float_to_i32(16.5), 16);
        assert_eq!(c_float_to_i32(-0.9), 0);
        assert_eq!(c_float_to_i32(-1.5), -1);
        assert_eq!(c_float_to_i32(f32::NAN), i32::MIN);
        assert_eq!(c_float_to_i32(f32::INFINITY), i32::MIN);
        assert_eq!(c_float_to_i32(-f32::INFINITY), i32::MIN);
        assert_eq!(c_float_to_i32(3e9), i32::MIN);
        assert_eq!(c_float_to_i32(-2147483648.0), i32::MIN);
        // The byte C keeps of the indefinite value is 0.
        assert_eq!(c_float_to_i32(f32::NAN) as i8, 0);
    }

    #[test]
    fn block_layouts_round_trip_through_bytes() {
        let qs: [u8; 16] = core::array::from_fn(|i| (i * 17 + 3) as u8);
        let mut buf = [0u8; 34];
        let b = BlockQ4_0 { d: 0x1234, qs };
        b.write(&mut buf);
        assert_eq!(&buf[..2], &[0x34, 0x12]);
        assert_eq!(&buf[2..18], &qs);
        assert_eq!(BlockQ4_0::read(&buf), b);
        let b = BlockQ4_1 {
            d: 1,
            m: 0xabcd,
            qs,
        };
        b.write(&mut buf);
        assert_eq!(&buf[2..4], &[0xcd, 0xab]);
        assert_eq!(BlockQ4_1::read(&buf), b);
        let b = BlockQ5_0 {
            d: 2,
            qh: 0x0102_0304,
            qs,
        };
        b.write(&mut buf);
        assert_eq!(&buf[2..6], &[4, 3, 2, 1]);
        assert_eq!(BlockQ5_0::read(&buf), b);
        let b = BlockQ5_1 {
            d: 3,
            m: 4,
            qh: 0xdead_beef,
            qs,
        };
        b.write(&mut buf);
        assert_eq!(&buf[4..8], &[0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(BlockQ5_1::read(&buf), b);
        let b = BlockQ8_0 {
            d: 5,
            qs: core::array::from_fn(|i| i as i8 - 16),
        };
        b.write(&mut buf);
        assert_eq!(buf[2], 0xf0);
        assert_eq!(BlockQ8_0::read(&buf), b);
    }

    #[test]
    fn dequantizers_decode_hand_built_blocks() {
        // Q4_0: d = 0.5, element 0 = level 0 (−8·0.5), element 16 = level 15 (7·0.5).
        let mut b = [0u8; 18];
        BlockQ4_0 {
            d: f32_to_f16(0.5),
            qs: [0xf0; 16],
        }
        .write(&mut b);
        let mut y = [0f32; 32];
        dequantize_row_q4_0(&b, &mut y);
        assert_eq!((y[0], y[16]), (-4.0, 3.5));
        // Q4_1: d = 2, m = −1: levels 3 and 12.
        let mut b = [0u8; 20];
        BlockQ4_1 {
            d: f32_to_f16(2.0),
            m: f32_to_f16(-1.0),
            qs: [0xc3; 16],
        }
        .write(&mut b);
        dequantize_row_q4_1(&b, &mut y);
        assert_eq!((y[0], y[16]), (5.0, 23.0));
        // Q5_0: fifth bit set for element 1 and element 17 only; nibbles 0xf.
        let mut b = [0u8; 22];
        let qh = (1 << 1) | (1 << 17);
        BlockQ5_0 {
            d: f32_to_f16(1.0),
            qh,
            qs: [0xff; 16],
        }
        .write(&mut b);
        dequantize_row_q5_0(&b, &mut y);
        assert_eq!((y[0], y[1], y[16], y[17]), (-1.0, 15.0, -1.0, 15.0));
        // Q5_1: same bits, d = 1, m = 0.5.
        let mut b = [0u8; 24];
        BlockQ5_1 {
            d: f32_to_f16(1.0),
            m: f32_to_f16(0.5),
            qh,
            qs: [0xff; 16],
        }
        .write(&mut b);
        dequantize_row_q5_1(&b, &mut y);
        assert_eq!((y[0], y[1], y[16], y[17]), (15.5, 31.5, 15.5, 31.5));
        // Q8_0: d = 0.25, q = −128 and 127.
        let mut qs = [0i8; 32];
        qs[0] = -128;
        qs[31] = 127;
        let mut b = [0u8; 34];
        BlockQ8_0 {
            d: f32_to_f16(0.25),
            qs,
        }
        .write(&mut b);
        dequantize_row_q8_0(&b, &mut y);
        assert_eq!((y[0], y[1], y[31]), (-32.0, 0.0, 31.75));
    }

    #[test]
    fn q4_1_and_q5_1_are_exact_on_integer_ranges() {
        // Range 0..31 exactly: d = 1, quants equal the values.
        let x: [f32; 32] = core::array::from_fn(|i| i as f32);
        let b = quantize_block_q5_1(&x);
        assert_eq!(f16_to_f32(b.d), 1.0);
        let mut y = [0f32; 32];
        let mut bytes = [0u8; 24];
        b.write(&mut bytes);
        dequantize_row_q5_1(&bytes, &mut y);
        assert_eq!(y, x);
        // Q4_1 over 0..15 with the top at 15: d = 1 and the max lands on 15 exactly.
        let x: [f32; 32] = core::array::from_fn(|i| (i % 16) as f32);
        let b = quantize_block_q4_1(&x);
        assert_eq!(b.qs[15], 0xff);
    }
}
