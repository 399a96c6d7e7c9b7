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
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes(c.try_into().unwrap());
    }
}

fn dequantize_row_f16(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

fn dequantize_row_bf16(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}
