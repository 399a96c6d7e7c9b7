//! Q1_0 and Q2_0: the scale-only 1- and 2-bit types. Each block holds one f16 scale `d` and a
//! code per weight: Q1_0 (128 weights, 18 bytes) stores only the sign, decoded as ±d; Q2_0
//! (64 weights, 18 bytes) stores round(x/d) + 1 in two bits, decoded as (q − 1)·d.
//!
//! Quantization reproduces `quantize_row_q1_0_ref` / `quantize_row_q2_0_ref` (ggml-quants.c,
//! llama.cpp 0c1e57098). `quantize_q1_0` / `quantize_q2_0` call them row by row whether or not an
//! importance matrix is given, so the imatrix is ignored here too.

use super::legacy::c_float_to_i32;
use super::{f16_to_f32, f32_to_f16, read_u16, GgmlType, RowDequantizer, RowQuantizer};

/// Elements per Q1_0 block.
pub const Q1_0_BLOCK: usize = 128;
/// Elements per Q2_0 block.
pub const Q2_0_BLOCK: usize = 64;

/// The CPU quantizer for `ty` if it is Q1_0 or Q2_0.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::Q1_0 => quantize_row_q1_0,
        GgmlType::Q2_0 => quantize_row_q2_0,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is Q1_0 or Q2_0.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::Q1_0 => dequantize_row_q1_0,
        GgmlType::Q2_0 => dequantize_row_q2_0,
        _ => return None,
    })
}

/// Q1_0, 18 bytes: `d` (f16) at 0..2, `qs` at 2..18; bit j%8 of `qs[j/8]` is 1 when element j
/// was ≥ 0 (so −0.0 counts as positive), and decodes as +d, else −d.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ1_0 {
    /// The block scale (mean |x|), f16 bits.
    pub d: u16,
    /// One sign bit per element, least significant bit first.
    pub qs: [u8; 16],
}

impl BlockQ1_0 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 18;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockQ1_0 {
        BlockQ1_0 {
            d: read_u16(b, 0),
            qs: b[2..18].try_into().unwrap(),
        }
    }
}

/// Q2_0, 18 bytes: `d` (f16) at 0..2, `qs` at 2..18; element j's 2-bit code q is bits
/// 2·(j%4)..2·(j%4)+2 of `qs[j/4]` and decodes as (q − 1)·d (codes mean −1, 0, +1, +2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ2_0 {
    /// The block scale (max |x|), f16 bits.
    pub d: u16,
    /// Four 2-bit codes per byte, lowest bits first.
    pub qs: [u8; 16],
}

impl BlockQ2_0 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 18;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockQ2_0 {
        BlockQ2_0 {
            d: read_u16(b, 0),
            qs: b[2..18].try_into().unwrap(),
        }
    }
}

/// One block of `quantize_row_q1_0_ref`: d = (Σ|x| in index order)/128, rounded to f16; one sign
/// bit per element.
pub fn quantize_block_q1_0(x: &[f32]) -> BlockQ1_0 {
    let x = &x[..Q1_0_BLOCK];
    let mut sum_abs = 0.0f32;
    for &v in x {
        sum_abs += v.abs();
    }
    let d = sum_abs / Q1_0_BLOCK as f32;
    let mut qs = [0u8; 16];
    for (j, &v) in x.iter().enumerate() {
        if v >= 0.0 {
            qs[j / 8] |= 1 << (j % 8);
        }
    }
    BlockQ1_0 {
        d: f32_to_f16(d),
        qs,
    }
}

/// One block of `quantize_row_q2_0_ref`: d = max |x| (stored as f16); each code is
/// `(int)roundf(x·(1/d)) + 1` clamped to 0..=3, with the inverse taken from the f32 d. A d so
/// small that 1/d overflows makes x·(1/d) infinite or NaN; C's conversion of that (x86's
/// "integer indefinite", INT_MIN) clamps to code 0.
pub fn quantize_block_q2_0(x: &[f32]) -> BlockQ2_0 {
    let x = &x[..Q2_0_BLOCK];
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
        }
    }
    let d = amax;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for (j, &v) in x.iter().enumerate() {
        let q = c_float_to_i32((v * id).round())
            .saturating_add(1)
            .clamp(0, 3);
        qs[j / 4] |= (q as u8) << (2 * (j % 4));
    }
    BlockQ2_0 {
        d: f32_to_f16(d),
        qs,
    }
}

fn quantize_row_q1_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % Q1_0_BLOCK, 0);
    for (xb, ob) in x
        .chunks_exact(Q1_0_BLOCK)
        .zip(out.chunks_exact_mut(BlockQ1_0::BYTES))
    {
        quantize_block_q1_0(xb).write(ob);
    }
}

fn quantize_row_q2_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % Q2_0_BLOCK, 0);
    for (xb, ob) in x
        .chunks_exact(Q2_0_BLOCK)
        .zip(out.chunks_exact_mut(BlockQ2_0::BYTES))
    {
        quantize_block_q2_0(xb).write(ob);
    }
}

/// `dequantize_row_q1_0`: +d for a set bit, −d for a clear one.
fn dequantize_row_q1_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockQ1_0::BYTES)
        .zip(out.chunks_exact_mut(Q1_0_BLOCK))
    {
        let blk = BlockQ1_0::read(b);
        let d = f16_to_f32(blk.d);
        for (j, yj) in y.iter_mut().enumerate() {
            *yj = if (blk.qs[j / 8] >> (j % 8)) & 1 == 1 {
                d
            } else {
                -d
            };
        }
    }
}

/// `dequantize_row_q2_0`: (q − 1)·d.
fn dequantize_row_q2_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockQ2_0::BYTES)
        .zip(out.chunks_exact_mut(Q2_0_BLOCK))
    {
        let blk = BlockQ2_0::read(b);
        let d = f16_to_f32(blk.d);
        for (j, yj) in y.iter_mut().enumerate() {
            let q = (blk.qs[j / 4] >> (2 * (j % 4))) & 3;
            *yj = (q as i32 - 1) as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q1_0_stores_signs_and_the_mean_magnitude() {
        let mut x = [0.0f32; 128];
        for (j, v) in x.iter_mut().enumerate() {
            *v = if j % 3 == 0 { -1.5 } else { 0.75 };
        }
        x[1] = -0.0; // counts as non-negative
        let b = quantize_block_q1_0(&x);
        // 43 values of 1.5, 84 of 0.75, one zero: (64.5 + 63)/128.
        assert_eq!(f16_to_f32(b.d), (43.0 * 1.5 + 84.0 * 0.75) / 128.0);
        assert_eq!(b.qs[0], 0b1011_0110);
        let mut bytes = [0u8; 18];
        b.write(&mut bytes);
        let mut y = [0.0f32; 128];
        dequantize_row_q1_0(&bytes, &mut y);
        let d = f16_to_f32(b.d);
        assert_eq!(y[0], -d);
        assert_eq!(y[1], d);
        assert_eq!(y[2], d);
    }

    #[test]
    fn q2_0_rounds_half_away_and_never_uses_code_3() {
        let mut x = [0.0f32; 64];
        x[0] = 4.0; // amax: code 2 (+1)
        x[1] = -4.0; // code 0 (−1)
        x[2] = 2.0; // 0.5 rounds away from zero: code 2
        x[3] = -2.0; // −0.5 → −1: code 0
        x[4] = 1.9; // 0.475 → 0: code 1
        let b = quantize_block_q2_0(&x);
        assert_eq!(f16_to_f32(b.d), 4.0);
        assert_eq!(b.qs[0], 0b00_10_00_10);
        assert_eq!(b.qs[1] & 3, 1);
        assert!(b
            .qs
            .iter()
            .all(|&q| (0..4).all(|k| (q >> (2 * k)) & 3 != 3)));
        let mut bytes = [0u8; 18];
        b.write(&mut bytes);
        let mut y = [0.0f32; 64];
        dequantize_row_q2_0(&bytes, &mut y);
        assert_eq!(&y[..5], &[4.0, -4.0, 4.0, -4.0, 0.0]);
    }

    #[test]
    fn q2_0_with_an_overflowing_inverse_scale_writes_code_0() {
        // amax = 1e−39: 1/d = inf, so x·id is ±inf or NaN (0·inf) and every code is 0.
        let mut x = [0.0f32; 64];
        x[5] = 1e-39;
        x[6] = -1e-39;
        let b = quantize_block_q2_0(&x);
        assert_eq!(b.qs, [0u8; 16]);
        assert_eq!(b.d, 0); // 1e−39 rounds to f16 zero
                            // All zero: d = 0, id = 0, every code 1 (0 + 1).
        let b = quantize_block_q2_0(&[0.0; 64]);
        assert_eq!(b.qs, [0x55u8; 16]);
    }
}
