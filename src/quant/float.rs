//! Plain float types: F32 copy, F16 and BF16 (ggml_fp32_to_fp16_row, ggml_fp32_to_bf16_row_ref;
//! llama.cpp 0c1e57098).

use super::{
    bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, GgmlType, RowDequantizer, RowQuantizer,
};

/// The CPU quantizer for `ty` if it is one of F32, F16 and BF16.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::F32 => quantize_row_f32,
        GgmlType::F16 => quantize_row_f16,
        GgmlType::BF16 => quantize_row_bf16,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is one of F32, F16 and BF16.
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
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the features were detected just above.
        unsafe { f16c::quantize_row_f16(x, out) };
        return;
    }
    quantize_row_f16_scalar(x, out)
}

fn quantize_row_f16_scalar(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
    }
}

/// Pieces of 64 through a stack buffer of u16, so the conversion loop has no byte stores and
/// the compiler vectorizes it (the NaN branch becomes a select).
fn quantize_row_bf16(x: &[f32], _qw: Option<&[f32]>, out: &mut [u8]) {
    let mut bits = [0u16; 64];
    for (xs, os) in x.chunks(64).zip(out.chunks_mut(128)) {
        for (b, v) in bits.iter_mut().zip(xs) {
            *b = f32_to_bf16(*v);
        }
        os.copy_from_slice(bytemuck::cast_slice(&bits[..xs.len()]));
    }
}

/// Round to bf16 and back, in place (the value a BF16 tensor of `x` reads back as); returns
/// whether every result is finite. Vectorizes like `quantize_row_bf16`.
pub fn round_through_bf16(x: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { round_through_bf16_avx2(x) };
    }
    round_through_bf16_body(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn round_through_bf16_avx2(x: &mut [f32]) -> bool {
    round_through_bf16_body(x)
}

/// [`f32_to_bf16`] then [`bf16_to_f32`], written branch-free so it vectorizes.
#[inline(always)]
fn round_through_bf16_body(x: &mut [f32]) -> bool {
    let mut non_finite = 0u32;
    for v in x.iter_mut() {
        let u = v.to_bits();
        let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1)) & 0xffff_0000;
        let quiet_nan = ((u >> 16) | 64) << 16;
        let q = if (u & 0x7fff_ffff) > 0x7f80_0000 {
            quiet_nan
        } else {
            rounded
        };
        non_finite |= ((q & 0x7f80_0000) == 0x7f80_0000) as u32;
        *v = f32::from_bits(q);
    }
    non_finite == 0
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

    /// Eight floats per instruction (`vcvtps2ph`, round to nearest even — `half`'s rounding,
    /// overflow to infinity, subnormals kept). NaN lanes are redone by the scalar converter,
    /// which writes ggml's canonical quiet NaN where the instruction would keep the payload.
    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn quantize_row_f16(x: &[f32], out: &mut [u8]) {
        let n = x.len().min(out.len() / 2);
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(out.as_mut_ptr().add(2 * i) as *mut __m128i, h);
            let nan = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            if nan != 0 {
                for j in i..i + 8 {
                    out[2 * j..2 * j + 2].copy_from_slice(&super::f32_to_f16(x[j]).to_le_bytes());
                }
            }
            i += 8;
        }
        super::quantize_row_f16_scalar(&x[i..n], &mut out[2 * i..2 * n]);
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The F16C row converter writes the scalar (ggml) bits for every kind of input: ties,
    /// subnormals, overflow, infinities, NaNs with payloads, signed zeros, odd row tails.
    #[test]
    fn vector_f16_rows_equal_the_scalar_conversion() {
        let mut vals: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            65504.0,
            65519.99,
            65520.0,
            -65520.0,
            1e-8,
            -1e-8,
            5.9604645e-8,
            2.9802322e-8,
            2.9802326e-8,
            6.1035156e-5,
            6.097555e-5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0xffc1_2345),
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
        ];
        // Every rounding boundary near 1.0 and in the subnormal range, plus pseudo-random bits.
        for k in 0..4096u32 {
            vals.push(f32::from_bits(0x3f80_0000 + k * 0x1000 - 0x0800_0000 / 2));
            vals.push(f32::from_bits(0x3380_0000 + k * 0x1000));
        }
        let mut s = 0x1234_5678u64;
        for _ in 0..100_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            vals.push(f32::from_bits((s >> 32) as u32));
        }
        for len in [vals.len(), vals.len() - 3, 7, 9] {
            let x = &vals[..len];
            let mut a = vec![0u8; 2 * len];
            let mut b = vec![0u8; 2 * len];
            quantize_row_f16(x, None, &mut a);
            quantize_row_f16_scalar(x, &mut b);
            assert!(a == b, "F16 rows differ (len {len})");
        }
    }

    #[test]
    fn bf16_round_trip_matches_quantize_then_dequantize() {
        let mut s = 99u64;
        let mut x: Vec<f32> = (0..10_000)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                f32::from_bits((s >> 32) as u32)
            })
            .filter(|v| !v.is_nan())
            .collect();
        x.extend([f32::MAX, -f32::MAX, 3.3961776e38]);
        let mut bytes = vec![0u8; 2 * x.len()];
        quantize_row_bf16(&x, None, &mut bytes);
        let mut back = vec![0f32; x.len()];
        dequantize_row_bf16(&bytes, &mut back);
        let finite = back.iter().all(|v| v.is_finite());
        let mut y = x.clone();
        assert_eq!(round_through_bf16(&mut y), finite);
        assert!(!finite, "f32::MAX rounds to infinity in bf16");
        for (a, b) in y.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
