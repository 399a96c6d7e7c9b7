//! Output encodings of llama.cpp's converter (`--outtype`), reproducing gguf-py's
//! `quants.quantize` for F32, F16, BF16 and Q8_0 on f32 input (llama.cpp 0c1e57098).

use crate::quant::{f32_to_f16, GgmlType};

/// `--outtype` of the converter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    /// 32-bit floats, copied as read.
    F32,
    /// IEEE half precision, round to nearest even (numpy `astype(float16)`).
    F16,
    /// bfloat16 as gguf-py rounds it: to nearest even, NaN quieted.
    BF16,
    /// 32-element blocks of int8 with one f16 scale (gguf-py's `quantize_q8_0`).
    Q8_0,
    /// The first matrix's dtype decides: BF16 → bf16, else f16.
    Auto,
}

impl OutType {
    /// Parses a `--outtype` value (`f32`, `f16`, `bf16`, `q8_0`, `auto`; any case).
    pub fn parse(s: &str) -> Option<OutType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::BF16,
            "q8_0" => OutType::Q8_0,
            "auto" => OutType::Auto,
            _ => return None,
        })
    }

    /// The ggml type matrices get; `None` for `Auto` (decided from the checkpoint).
    pub fn matrix_type(self) -> Option<GgmlType> {
        match self {
            OutType::F32 => Some(GgmlType::F32),
            OutType::F16 => Some(GgmlType::F16),
            OutType::BF16 => Some(GgmlType::BF16),
            OutType::Q8_0 => Some(GgmlType::Q8_0),
            OutType::Auto => None,
        }
    }

    /// `general.file_type` (llama_ftype) for a resolved outtype.
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 | OutType::Auto => 1,
            OutType::Q8_0 => 7,
            OutType::BF16 => 32,
        }
    }

    /// The encoding part of the `LlamaFileType` name (`MOSTLY_F16` → `F16`), for file names.
    pub fn label(self) -> &'static str {
        match self {
            OutType::F32 => "F32",
            OutType::F16 | OutType::Auto => "F16",
            OutType::BF16 => "BF16",
            OutType::Q8_0 => "Q8_0",
        }
    }
}

/// Encode f32 values as `ty` into `out` (exactly the encoded size). For Q8_0, `x` is a whole
/// number of 32-element blocks of consecutive row data.
pub fn encode(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    match ty {
        GgmlType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        // The quantizer's float rows: the same bits (numpy's and torch's rounding is ggml's),
        // vectorized.
        GgmlType::F16 | GgmlType::BF16 => {
            crate::quant::float::quantizer(ty).expect("float type")(x, None, out)
        }
        GgmlType::Q8_0 => quantize_q8_0(x, out),
        other => unreachable!("the converter does not write {other}"),
    }
}

/// Bytes of `n` elements of `ty` (`n` a whole number of blocks).
pub fn encoded_size(ty: GgmlType, n: usize) -> usize {
    n / ty.block_size() * ty.type_size()
}

/// numpy's float32 → int8 cast as x86-64 builds do it: truncate through a 32-bit integer, where
/// NaN and out-of-range values become 0x80000000 (low byte 0).
fn f32_to_i8_like_numpy(v: f32) -> i8 {
    if v.is_nan() || !(-2147483648.0..2147483648.0).contains(&v) {
        0
    } else {
        (v as i32) as i8
    }
}

/// gguf-py's `np_roundf`: half away from zero, as `|x|`'s floor plus the floor of twice its
/// fraction, with the sign put back.
fn np_roundf(n: f32) -> f32 {
    let a = n.abs();
    let floored = a.floor();
    let b = floored + (2.0 * (a - floored)).floor();
    // np.sign: -1, 0 or 1 (NaN stays NaN)
    let sign = if n > 0.0 {
        1.0
    } else if n < 0.0 {
        -1.0
    } else if n.is_nan() {
        f32::NAN
    } else {
        0.0
    };
    sign * b
}

/// gguf-py's `Q8_0.quantize_blocks` (gguf-py/gguf/quants.py): per 32 values d = max|x| / 127
/// in f32, id = 1/d (0 when d is 0), q = np_roundf(x·id) cast to int8, d stored as f16.
/// For finite input this is bit-identical to ggml's `quantize_row_q8_0_ref` (same f32
/// operations, and np_roundf equals roundf); it is written out here because the converter's
/// bytes are what this module promises.
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    for (block, o) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        // numpy's max of |x| propagates NaN.
        let mut amax = 0.0f32;
        let mut nan = false;
        for v in block {
            let a = v.abs();
            if a.is_nan() {
                nan = true;
            } else if a > amax {
                amax = a;
            }
        }
        if nan {
            amax = f32::NAN;
        }
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        o[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        for (q, v) in o[2..].iter_mut().zip(block) {
            *q = f32_to_i8_like_numpy(np_roundf(v * id)) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn np_roundf_is_half_away_from_zero() {
        assert_eq!(np_roundf(0.5), 1.0);
        assert_eq!(np_roundf(1.5), 2.0);
        assert_eq!(np_roundf(2.5), 3.0);
        assert_eq!(np_roundf(-2.5), -3.0);
        assert_eq!(np_roundf(0.49999997), 0.0);
        assert_eq!(np_roundf(-126.6), -127.0);
    }

    #[test]
    fn q8_0_of_zeros_and_ramp() {
        let mut out = [0u8; 34];
        quantize_q8_0(&[0.0; 32], &mut out);
        assert_eq!(out, [0u8; 34]);
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        quantize_q8_0(&x, &mut out);
        // d = 16/127; the extreme value maps to -127.
        assert_eq!(
            u16::from_le_bytes([out[0], out[1]]),
            f32_to_f16(16.0 / 127.0)
        );
        assert_eq!(out[2] as i8, -127);
        assert_eq!(out[2 + 16] as i8, 0);
    }
}
