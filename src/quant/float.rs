//! Plain float types: F32 copy, F16 and BF16 (ggml_fp32_to_fp16_row, ggml_fp32_to_bf16_row_ref).

use super::{
    bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, GgmlType, RowDequantizer, RowQuantizer,
};

pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::F32 => quantize_row_f32,
        GgmlType::F16 => quantize_row_f16,
        GgmlType::BF16 => quantize_row_bf16,
        _ => return None,
    })
}

pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::F32 => dequantize_row_f32,
        GgmlType::F16 => dequantize_row_f16,
        GgmlType::BF16 => dequantize_row_bf16,
        _ => return None,
    })
}

fn quantize_row_f32(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

fn quantize_row_f16(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
    }
}

fn quantize_row_bf16(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
    }
}

fn dequantize_row_f32(b: &[u8], out: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, f32>(b) {
        Ok(src) => out.copy_from_slice(&src[..out.len()]),
        Err(_) => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
    }
}

/// f16 → f32 is exact, so the F16C path gives the scalar path's values for every non-NaN input
/// (NaN input is refused downstream).
fn dequantize_row_f16(b: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the features were detected just above.
        unsafe { f16c::dequantize_row_f16(b, out) };
        return;
    }
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

#[cfg(target_arch = "x86_64")]
mod f16c {
    use std::arch::x86_64::*;

    /// Eight halves per instruction (`vcvtph2ps`).
    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn dequantize_row_f16(b: &[u8], out: &mut [f32]) {
        let n = out.len().min(b.len() / 2);
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm_loadu_si128(b.as_ptr().add(2 * i) as *const __m128i);
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        for j in i..n {
            out[j] = super::f16_to_f32(u16::from_le_bytes([b[2 * j], b[2 * j + 1]]));
        }
    }
}

fn dequantize_row_bf16(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}
