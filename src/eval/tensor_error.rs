//! How far each quantized tensor moved from its source: relative RMSE, sqrt(Σ(q−x)² / Σx²),
//! tensor by tensor (both dequantized to f32), so a sweep can say which tensors a type hurts.

use crate::eval::error::EvalError;

/// What the evaluation functions return.
type Result<T, E = EvalError> = std::result::Result<T, E>;
use rayon::prelude::*;
use serde::Serialize;

use crate::formats::gguf::GgufFile;
use crate::formats::tensor_source::TensorSource;
use crate::quant::{self, weighted_error, GgmlType, QuantError};

/// One tensor's quantization error.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TensorError {
    /// GGUF tensor name.
    pub name: String,
    /// The type the quantized file stores it as.
    pub ty: String,
    /// Elements in the tensor.
    pub n_elements: u64,
    /// sqrt(Σ(q−x)² / Σx²); 0 for an all-zero tensor stored exactly.
    pub rel_rmse: f64,
}

/// Every tensor of a quantized file, with the summary a report prints.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TensorErrorSummary {
    /// Relative RMSE over all tensors together (large tensors weigh more).
    pub overall_rel_rmse: f64,
    /// The tensor with the largest relative RMSE.
    pub worst: Option<TensorError>,
    /// Every compared tensor, in file order.
    pub tensors: Vec<TensorError>,
}

/// Σ(q−x)² and Σx² over rows, in f64 (the sum of per-row partials, so the order is fixed
/// whatever the thread count).
fn squared_sums(
    src_ty: GgmlType,
    src: &[u8],
    q_ty: GgmlType,
    q: &[u8],
    n_per_row: usize,
) -> Result<(f64, f64), QuantError> {
    let src_row = quant::row_bytes(src_ty, n_per_row)?;
    let q_row = quant::row_bytes(q_ty, n_per_row)?;
    let partials: Vec<Result<(f64, f64), QuantError>> = src
        .par_chunks(src_row)
        .zip(q.par_chunks(q_row))
        .map_init(
            || (vec![0f32; n_per_row], vec![0f32; n_per_row]),
            |(a, b), (s, d)| {
                quant::dequantize_rows(src_ty, s, a)?;
                quant::dequantize_rows(q_ty, d, b)?;
                Ok(weighted_error::squared_sums(a, b, None))
            },
        )
        .collect();
    let mut num = 0f64;
    let mut den = 0f64;
    for p in partials {
        let (n, d) = p?;
        num += n;
        den += d;
    }
    Ok((num, den))
}

fn ratio(num: f64, den: f64) -> f64 {
    if num == 0.0 {
        0.0
    } else {
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// Compare every tensor of the quantized GGUF `quantized` that changed type against the same
/// tensor of `source`, one tensor in memory at a time. Tensors kept in their source type are
/// exact and left out.
pub fn tensor_errors(
    source: &dyn TensorSource,
    quantized: &GgufFile,
) -> Result<TensorErrorSummary> {
    let src_tensors = source.tensors();
    let mut tensors = Vec::new();
    let (mut num_all, mut den_all) = (0f64, 0f64);
    for t in &quantized.tensors {
        let index = src_tensors
            .iter()
            .position(|s| s.name == t.name)
            .ok_or_else(|| EvalError::TensorNotInSource {
                tensor: t.name.clone(),
                source_name: source.describe(),
            })?;
        let s = &src_tensors[index];
        if s.ty == t.ty {
            continue;
        }
        let n_per_row = t.ne[0] as usize;
        let bytes = source.tensor_bytes(index)?;
        let (num, den) = squared_sums(s.ty, &bytes, t.ty, quantized.tensor_data(t), n_per_row)
            .map_err(|source| EvalError::CompareTensor {
                tensor: t.name.clone(),
                source,
            })?;
        drop(bytes);
        source.release(index);
        num_all += num;
        den_all += den;
        tensors.push(TensorError {
            name: t.name.clone(),
            ty: t.ty.name().to_string(),
            n_elements: t.n_elements(),
            rel_rmse: ratio(num, den),
        });
    }
    let worst = tensors
        .iter()
        .max_by(|a, b| a.rel_rmse.total_cmp(&b.rel_rmse))
        .cloned();
    Ok(TensorErrorSummary {
        overall_rel_rmse: ratio(num_all, den_all),
        worst,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squared_sums_of_an_exact_copy_are_zero_error() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 - 20.0).collect();
        let bytes: &[u8] = bytemuck::cast_slice(&x);
        let (num, den) = squared_sums(GgmlType::F32, bytes, GgmlType::F32, bytes, 32).unwrap();
        assert_eq!(num, 0.0);
        assert_eq!(den, x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>());
        assert_eq!(ratio(num, den), 0.0);
    }

    #[test]
    fn relative_rmse_of_a_known_perturbation() {
        // q = 1.1·x everywhere: relative RMSE exactly 0.1 (up to f32 rounding of 1.1·x).
        let x: Vec<f32> = (1..=64).map(|i| i as f32 * 0.25).collect();
        let q: Vec<f32> = x.iter().map(|v| v * 1.1).collect();
        let (num, den) = squared_sums(
            GgmlType::F32,
            bytemuck::cast_slice(&x),
            GgmlType::F32,
            bytemuck::cast_slice(&q),
            16,
        )
        .unwrap();
        assert!((ratio(num, den) - 0.1).abs() < 1e-6, "{}", ratio(num, den));
    }
}
