//! Ternary types TQ1_0 (1.6875 bits/weight, base-3 packing) and TQ2_0 (2 bits/weight), for
//! BitNet b1.58-style models: each weight is −1, 0 or +1 times the block's absolute maximum.
//!
//! Quantization reproduces `quantize_row_tq1_0_ref` / `quantize_row_tq2_0_ref` (llama.cpp
//! 0c1e57098); `quantize_tq*_0` ignores the importance matrix, and so do we.

use super::{f16_to_f32, f32_to_f16, read_u16, GgmlType, RowDequantizer, RowQuantizer};

/// Elements per block.
pub const QK_K: usize = 256;

/// The CPU quantizer for `ty` if it is one of TQ1_0 and TQ2_0.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::TQ1_0 => quantize_row_tq1_0,
        GgmlType::TQ2_0 => quantize_row_tq2_0,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is one of TQ1_0 and TQ2_0.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::TQ1_0 => dequantize_row_tq1_0,
        GgmlType::TQ2_0 => dequantize_row_tq2_0,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Block layouts
// ---------------------------------------------------------------------------------------------

/// TQ1_0, 54 bytes: `qs` at 0..48, `qh` at 48..52, `d` (f16) at 52..54.
///
/// Trits t ∈ {0, 1, 2} (weight t − 1) are packed five per byte as a fixed-point fraction:
/// byte = ⌈(Σ t_n·3^(4−n))·256/243⌉, so the first trit is the most significant; it is recovered
/// as (byte·3^n mod 256)·3 >> 8. `qs[m]` (m < 32) holds elements m + 32n (n < 5), i.e. elements
/// 0..160; `qs[32 + m]` (m < 16) holds elements 160 + m + 16n, i.e. 160..240; `qh[j]` (j < 4)
/// holds four trits, elements 240 + j + 4n (n < 4), as the top four of five trit positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTq1_0 {
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 48],
    /// The last 16 elements, four trits per byte.
    pub qh: [u8; 4],
    /// The block scale, f16 bits.
    pub d: u16,
}

impl BlockTq1_0 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 54;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..48].copy_from_slice(&self.qs);
        out[48..52].copy_from_slice(&self.qh);
        out[52..54].copy_from_slice(&self.d.to_le_bytes());
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockTq1_0 {
        BlockTq1_0 {
            qs: b[0..48].try_into().unwrap(),
            qh: b[48..52].try_into().unwrap(),
            d: read_u16(b, 52),
        }
    }
}

/// TQ2_0, 66 bytes: `qs` at 0..64, `d` (f16) at 64..66. Byte `qs[32h + m]` (h < 2, m < 32)
/// holds elements 128h + m + 32n (n < 4) in bits 2n..2n+2, each as t = weight + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTq2_0 {
    /// The packed quants (layout in the struct docs).
    pub qs: [u8; 64],
    /// The block scale, f16 bits.
    pub d: u16,
}

impl BlockTq2_0 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 66;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..64].copy_from_slice(&self.qs);
        out[64..66].copy_from_slice(&self.d.to_le_bytes());
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockTq2_0 {
        BlockTq2_0 {
            qs: b[0..64].try_into().unwrap(),
            d: read_u16(b, 64),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Quantizers
// ---------------------------------------------------------------------------------------------

/// The block's scale: its absolute maximum, scanned as `MAX(amax, fabsf(v))`.
#[inline(always)]
fn absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        amax = if amax > v.abs() { amax } else { v.abs() };
    }
    amax
}

/// 2^63: from here on `lroundf` cannot represent the result.
const TWO_POW_63: f32 = 9_223_372_036_854_775_808.0;

/// The trit of `v·id` plus one, as `lroundf(v·id) + 1` truncated to `int`: halves round away
/// from zero; glibc returns the x86 "indefinite" LONG_MIN for NaN and infinities (an inverse
/// scale that overflowed), whose low 32 bits plus one give 1, i.e. weight 0.
#[inline(always)]
fn trit(v: f32, id: f32) -> u8 {
    let p = v * id;
    let l: i64 = if p.is_nan() || p.abs() >= TWO_POW_63 {
        i64::MIN
    } else {
        p.round() as i64
    };
    (l.wrapping_add(1) as i32) as u8
}

/// Fold five (or four, then a zero) base-3 digits into a byte as a fraction of 243, rounding up.
#[inline(always)]
fn trits_to_byte(base3: u8) -> u8 {
    (base3 as u16 * 256).div_ceil(243) as u8
}

/// Reproduces one block of `quantize_row_tq1_0_ref`.
pub fn quantize_block_tq1_0(x: &[f32]) -> BlockTq1_0 {
    let x = &x[..QK_K];
    let d = absmax(x);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut blk = BlockTq1_0 {
        qs: [0; 48],
        qh: [0; 4],
        d: f32_to_f16(d),
    };
    // Five trits per byte: 32 bytes over elements 0..160, then 16 bytes over 160..240.
    for (base, width, first_byte) in [(0usize, 32usize, 0usize), (160, 16, 32)] {
        for m in 0..width {
            let mut q = 0u8;
            for n in 0..5 {
                q = q
                    .wrapping_mul(3)
                    .wrapping_add(trit(x[base + m + n * width], id));
            }
            blk.qs[first_byte + m] = trits_to_byte(q);
        }
    }
    // Four trits per byte over elements 240..256, shifted up one trit position.
    for j in 0..4 {
        let mut q = 0u8;
        for m in 0..4 {
            q = q.wrapping_mul(3).wrapping_add(trit(x[240 + j + m * 4], id));
        }
        blk.qh[j] = trits_to_byte(q.wrapping_mul(3));
    }
    blk
}

/// Reproduces one block of `quantize_row_tq2_0_ref`.
pub fn quantize_block_tq2_0(x: &[f32]) -> BlockTq2_0 {
    let x = &x[..QK_K];
    let d = absmax(x);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut blk = BlockTq2_0 {
        qs: [0; 64],
        d: f32_to_f16(d),
    };
    for h in 0..2 {
        for m in 0..32 {
            let mut q = 0u8;
            for n in 0..4 {
                q = q.wrapping_add((trit(x[128 * h + m + 32 * n], id) & 3) << (2 * n));
            }
            blk.qs[32 * h + m] = q;
        }
    }
    blk
}

fn quantize_row_tq1_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % QK_K, 0);
    for (xb, ob) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BlockTq1_0::BYTES))
    {
        quantize_block_tq1_0(xb).write(ob);
    }
}

fn quantize_row_tq2_0(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % QK_K, 0);
    for (xb, ob) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BlockTq2_0::BYTES))
    {
        quantize_block_tq2_0(xb).write(ob);
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantizers (dequantize_row_tq1_0 / _tq2_0): (t − 1)·d.
// ---------------------------------------------------------------------------------------------

/// Trit number `n` (0 = most significant) of a TQ1_0 byte.
#[inline(always)]
fn unpack_trit(byte: u8, n: usize) -> i32 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = byte.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as i32
}

fn dequantize_row_tq1_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockTq1_0::BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let blk = BlockTq1_0::read(b);
        let d = f16_to_f32(blk.d);
        for (base, width, first_byte) in [(0usize, 32usize, 0usize), (160, 16, 32)] {
            for n in 0..5 {
                for m in 0..width {
                    let t = unpack_trit(blk.qs[first_byte + m], n);
                    y[base + n * width + m] = (t - 1) as f32 * d;
                }
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                let t = unpack_trit(blk.qh[j], n);
                y[240 + n * 4 + j] = (t - 1) as f32 * d;
            }
        }
    }
}

fn dequantize_row_tq2_0(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockTq2_0::BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let blk = BlockTq2_0::read(b);
        let d = f16_to_f32(blk.d);
        for h in 0..2 {
            for n in 0..4 {
                for m in 0..32 {
                    let t = ((blk.qs[32 * h + m] >> (2 * n)) & 3) as i32;
                    y[128 * h + 32 * n + m] = (t - 1) as f32 * d;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_trits_survive_the_byte_packing() {
        // Every combination of five trits decodes back from its ⌈·256/243⌉ byte.
        for code in 0u32..243 {
            let trits: Vec<u8> = (0..5)
                .rev()
                .map(|k| ((code / 3u32.pow(k)) % 3) as u8)
                .collect();
            let mut q = 0u8;
            for &t in &trits {
                q = q * 3 + t;
            }
            let byte = trits_to_byte(q);
            for (n, &t) in trits.iter().enumerate() {
                assert_eq!(unpack_trit(byte, n), t as i32, "code {code} trit {n}");
            }
        }
    }

    #[test]
    fn trit_rounds_half_away_and_maps_non_finite_to_zero_weight() {
        assert_eq!(trit(0.5, 1.0), 2);
        assert_eq!(trit(-0.5, 1.0), 0);
        assert_eq!(trit(0.49, 1.0), 1);
        assert_eq!(trit(1.0, f32::INFINITY), 1);
        assert_eq!(trit(0.0, f32::INFINITY), 1); // NaN
    }

    #[test]
    fn tq_layouts_place_elements_where_documented() {
        // One +1 at element e, everything else 0 (amax = 1, d = 1): find which byte changed.
        for e in [0usize, 31, 32, 159, 160, 175, 176, 239, 240, 243, 255] {
            let mut x = [0.0f32; 256];
            x[e] = 1.0;
            let blk = quantize_block_tq1_0(&x);
            let mut bytes = [0u8; 54];
            blk.write(&mut bytes);
            let mut y = [0f32; 256];
            dequantize_row_tq1_0(&bytes, &mut y);
            assert_eq!(y, x, "TQ1_0 element {e}");
            let blk = quantize_block_tq2_0(&x);
            let mut bytes = [0u8; 66];
            blk.write(&mut bytes);
            // Element e is in byte 32·(e/128) + e%32, bits 2·((e%128)/32).
            let byte = 32 * (e / 128) + e % 32;
            assert_eq!(
                (bytes[byte] >> (2 * ((e % 128) / 32))) & 3,
                2,
                "TQ2_0 element {e}"
            );
            dequantize_row_tq2_0(&bytes, &mut y);
            assert_eq!(y, x, "TQ2_0 element {e}");
        }
    }
}
