//! The numeric heart: ggml types, CPU quantizers and dequantizers, and the per-tensor type rules.
//! No I/O here. Each type family lives in its own file, which exports `quantizer(ty)` and
//! `dequantizer(ty)`; this module only chains them.

pub mod finite_output;
pub mod float;
pub mod iq1;
pub mod iq2;
pub mod iq3;
pub mod iq3_grid;
pub mod iq4;
pub mod iq_grid;
pub mod kquants;
pub mod legacy;
pub mod nvfp4;
pub mod q1_q2;
pub mod rules;
pub mod search;
pub mod size_allocation;
pub mod ternary;
pub mod validate;
pub mod weighted_error;

pub use crate::ggml::{FileType, GgmlType};

/// Quantize one row: `x` has a whole number of blocks; `qw` (importance weights, one per column)
/// is `None` without an imatrix; `out` is exactly the row's bytes.
pub type RowQuantizer = fn(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]);
/// Dequantize one row of whole blocks into `out`.
pub type RowDequantizer = fn(bytes: &[u8], out: &mut [f32]);

/// Errors of the numeric layer.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The type has no CPU quantizer (yet).
    #[error("quantizing to {0} is not supported yet")]
    NotSupported(GgmlType),
    /// The type has no dequantizer (yet).
    #[error("reading {0} tensors is not supported yet")]
    NoDequantizer(GgmlType),
    /// The type's quantizer needs importance weights and none were given ([`needs_weights`]).
    #[error("quantizing to {0} needs importance weights (an imatrix)")]
    NeedsWeights(GgmlType),
    /// A row length that is not a whole number of blocks.
    #[error("row of {n} elements is not a multiple of {ty}'s block size {block}")]
    BadRowLength {
        /// The target type.
        ty: GgmlType,
        /// The row length given.
        n: usize,
        /// The type's block size.
        block: usize,
    },
    /// Output buffer of the wrong size.
    #[error("output buffer of {got} bytes, expected {expected}")]
    BadOutputSize {
        /// Bytes provided.
        got: usize,
        /// Bytes the rows need.
        expected: usize,
    },
}

/// The CPU quantizer for `ty`, if one exists.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    float::quantizer(ty)
        .or_else(|| legacy::quantizer(ty))
        .or_else(|| kquants::quantizer(ty))
        .or_else(|| iq3::quantizer(ty))
        .or_else(|| iq4::quantizer(ty))
        .or_else(|| iq2::quantizer(ty))
        .or_else(|| ternary::quantizer(ty))
        .or_else(|| q1_q2::quantizer(ty))
        .or_else(|| iq1::quantizer(ty))
}

/// The CPU dequantizer for `ty`, if one exists.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    float::dequantizer(ty)
        .or_else(|| legacy::dequantizer(ty))
        .or_else(|| kquants::dequantizer(ty))
        .or_else(|| iq3::dequantizer(ty))
        .or_else(|| iq4::dequantizer(ty))
        .or_else(|| iq2::dequantizer(ty))
        .or_else(|| ternary::dequantizer(ty))
        .or_else(|| q1_q2::dequantizer(ty))
        .or_else(|| nvfp4::dequantizer(ty))
        .or_else(|| iq1::dequantizer(ty))
}

/// Types whose CPU quantizer cannot run without importance weights (llama.cpp asserts; the row
/// quantizer panics): a tensor of such a type with no imatrix entry must be refused first, even
/// where llama-quantize's rules do not ask for an imatrix (token_embd, output).
pub fn needs_weights(ty: GgmlType) -> bool {
    iq2::needs_weights(ty) || iq1::needs_weights(ty)
}

/// Types whose quantizer needs an importance matrix (llama-quantize refuses them without one).
pub fn requires_imatrix(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::IQ2_XXS
            | GgmlType::IQ2_XS
            | GgmlType::IQ2_S
            | GgmlType::IQ3_XXS
            | GgmlType::IQ1_S
            | GgmlType::IQ1_M
    )
}

/// Quantize `x` (rows of `n_per_row`) into `out`, checking geometry (and that a type which
/// needs importance weights has them).
pub fn quantize_rows(
    ty: GgmlType,
    x: &[f32],
    n_per_row: usize,
    qw: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), QuantError> {
    let q = quantizer(ty).ok_or(QuantError::NotSupported(ty))?;
    if qw.is_none() && needs_weights(ty) {
        return Err(QuantError::NeedsWeights(ty));
    }
    let row_bytes = row_bytes(ty, n_per_row)?;
    let n_rows = x.len() / n_per_row.max(1);
    if out.len() != n_rows * row_bytes || x.len() != n_rows * n_per_row {
        return Err(QuantError::BadOutputSize {
            got: out.len(),
            expected: n_rows * row_bytes,
        });
    }
    for (xr, or) in x
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        q(xr, qw, or);
    }
    Ok(())
}

/// Dequantize whole rows of `ty` into `out`.
pub fn dequantize_rows(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let d = dequantizer(ty).ok_or(QuantError::NoDequantizer(ty))?;
    let expected = row_bytes(ty, out.len())?;
    if bytes.len() != expected {
        return Err(QuantError::BadOutputSize {
            got: bytes.len(),
            expected,
        });
    }
    d(bytes, out);
    Ok(())
}

/// Bytes of a row of `n` elements.
pub fn row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::BadRowLength { ty, n, block });
    }
    Ok(n / block * ty.type_size())
}

/// ggml's `nearest_int`: round half to even through the float adder (valid for |f| ≤ 4194303).
#[inline(always)]
pub fn nearest_int(f: f32) -> i32 {
    let val = f + 12582912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// fp32 → fp16 bits, IEEE round-to-nearest-even, subnormals kept (ggml_compute_fp32_to_fp16).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    if x.is_nan() {
        // ggml writes every NaN as the canonical quiet NaN with the input's sign.
        return ((x.to_bits() >> 16) as u16 & 0x8000) | 0x7e00;
    }
    half::f16::from_f32(x).to_bits()
}

/// fp16 bits → fp32 (exact).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// fp32 → bf16 bits, round-to-nearest-even, NaN quieted (ggml_compute_fp32_to_bf16).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

#[inline(always)]
/// bf16 bits to f32 (exact: bf16 is the top half of an f32).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Read the little-endian u16 at `b[i..i+2]`.
#[inline(always)]
pub fn read_u16(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-7.4), -7);
    }

    #[test]
    fn f16_matches_ieee_including_subnormals_and_overflow() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds to inf
        assert_eq!(f32_to_f16(5.960_464_5e-8), 0x0001);
        assert_eq!(f32_to_f16(f32::from_bits(0xffc0_1234)), 0xfe00);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_f16(f), h);
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie → even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
    }
}
