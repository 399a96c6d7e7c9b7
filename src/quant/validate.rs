//! Post-quantization row checks (ggml_validate_row_data, llama.cpp 0c1e57098): every stored fp16
//! scale and every float value must be finite. This is how llama-quantize refuses NaN/Inf weights
//! and scales that overflow fp16; we run it on every row we produce.

use super::{read_u16, GgmlType};

/// Byte offsets of the fp16 scale fields inside one block of `ty`.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S
        | IQ1_S | Q1_0 | Q2_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        _ => &[],
    }
}

/// What is wrong with a row, if anything: (element or block index, description).
pub fn validate_row(ty: GgmlType, bytes: &[u8]) -> Result<(), String> {
    let bad_f16 = |h: u16| (h & 0x7c00) == 0x7c00;
    match ty {
        GgmlType::F32 => {
            for (i, c) in bytes.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes(c.try_into().unwrap());
                if !v.is_finite() {
                    return Err(format!("value {v} at element {i}"));
                }
            }
        }
        GgmlType::F16 => {
            for i in 0..bytes.len() / 2 {
                let h = read_u16(bytes, 2 * i);
                if bad_f16(h) {
                    return Err(format!("non-finite F16 value at element {i}"));
                }
            }
        }
        GgmlType::BF16 => {
            for i in 0..bytes.len() / 2 {
                let h = read_u16(bytes, 2 * i);
                if (h & 0x7fff) >= 0x7f80 {
                    return Err(format!("non-finite BF16 value at element {i}"));
                }
            }
        }
        _ => {
            let fields = f16_fields(ty);
            let size = ty.type_size();
            for (b, block) in bytes.chunks_exact(size).enumerate() {
                for &off in fields {
                    let h = read_u16(block, off);
                    if bad_f16(h) {
                        let v = super::f16_to_f32(h);
                        return Err(format!(
                            "block {b} has scale {v} (weights are NaN/Inf, or the scale overflows fp16)"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Index and value of the first non-finite element of `x`.
pub fn first_non_finite(x: &[f32]) -> Option<(usize, f32)> {
    // A branch-free OR over each chunk vectorizes; the exact position is searched only in a chunk
    // that holds a NaN/Inf (an all-ones exponent).
    const EXP: u32 = 0x7f80_0000;
    for (c, chunk) in x.chunks(64).enumerate() {
        let bad = chunk
            .iter()
            .fold(0u32, |acc, v| acc | (((v.to_bits() & EXP) == EXP) as u32));
        if bad != 0 {
            let i = chunk.iter().position(|v| !v.is_finite()).unwrap();
            return Some((c * 64 + i, chunk[i]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_overflowed_scales() {
        let mut block = vec![0u8; 18];
        assert!(validate_row(GgmlType::Q4_0, &block).is_ok());
        block[0..2].copy_from_slice(&0x7c00u16.to_le_bytes());
        assert!(validate_row(GgmlType::Q4_0, &block).is_err());
        assert!(validate_row(GgmlType::F32, &f32::NAN.to_le_bytes()).is_err());
    }
}
