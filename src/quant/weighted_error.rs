//! How far a quantized row is from its source: Σ wⱼ(yⱼ − xⱼ)², the importance-weighted squared
//! error, and the row's weighted energy Σ wⱼxⱼ² beside it. With an importance matrix (wⱼ the
//! mean squared activation of column j) the error is the expected squared change of the
//! matmul's output that the row feeds (diagonal approximation); without one every wⱼ is 1.
//!
//! `eval::tensor_error` (relative RMSE of a quantized file) and the size-targeted search in
//! `pipeline::target_size` (which type to give each tensor) both measure with these functions.

use super::{dequantize_rows, quantize_rows, row_bytes, GgmlType, QuantError};

/// Σ wⱼ(yⱼ − xⱼ)² and Σ wⱼxⱼ² in f64, summed in column order (`w` None: every weight is 1).
pub fn squared_sums(x: &[f32], y: &[f32], w: Option<&[f32]>) -> (f64, f64) {
    let mut err = 0f64;
    let mut energy = 0f64;
    match w {
        Some(w) => {
            for ((&a, &b), &wj) in x.iter().zip(y).zip(w) {
                let (a, b, wj) = (a as f64, b as f64, wj as f64);
                err += wj * (b - a) * (b - a);
                energy += wj * a * a;
            }
        }
        None => {
            for (&a, &b) in x.iter().zip(y) {
                let (a, b) = (a as f64, b as f64);
                err += (b - a) * (b - a);
                energy += a * a;
            }
        }
    }
    (err, energy)
}

/// Scratch space for [`quantization_error`], reused across rows of one worker.
#[derive(Default)]
pub struct ErrorScratch {
    bytes: Vec<u8>,
    back: Vec<f32>,
}

/// The weighted squared error of quantizing row `x` to `ty` with the quantizer's importance
/// weights `qw` (what the file's bytes would be made with), measured with weights `w`: quantize,
/// dequantize, compare.
pub fn quantization_error(
    ty: GgmlType,
    x: &[f32],
    qw: Option<&[f32]>,
    w: Option<&[f32]>,
    scratch: &mut ErrorScratch,
) -> Result<f64, QuantError> {
    let n = x.len();
    scratch.bytes.resize(row_bytes(ty, n)?, 0);
    scratch.back.resize(n, 0.0);
    quantize_rows(ty, x, n, qw, &mut scratch.bytes)?;
    dequantize_rows(ty, &scratch.bytes, &mut scratch.back)?;
    Ok(squared_sums(x, &scratch.back, w).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_scale_each_column() {
        let x = [1.0f32, 2.0, 3.0];
        let y = [1.5f32, 2.0, 1.0];
        assert_eq!(squared_sums(&x, &y, None), (0.25 + 4.0, 14.0));
        let w = [2.0f32, 1.0, 0.5];
        assert_eq!(squared_sums(&x, &y, Some(&w)), (0.5 + 2.0, 2.0 + 4.0 + 4.5));
    }

    #[test]
    fn exact_types_have_no_error_and_coarse_ones_some() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let mut s = ErrorScratch::default();
        let f32_err = quantization_error(GgmlType::F32, &x, None, None, &mut s).unwrap();
        assert_eq!(f32_err, 0.0);
        let q8 = quantization_error(GgmlType::Q8_0, &x, None, None, &mut s).unwrap();
        let q4 = quantization_error(GgmlType::Q4_0, &x, None, None, &mut s).unwrap();
        assert!(0.0 < q8 && q8 < q4, "{q8} {q4}");
    }
}
