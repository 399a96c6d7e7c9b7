//! NVFP4, read only: 64-element blocks of FP4 (E2M1) codes with one UE4M3 scale per 16
//! elements (36 bytes). qforge reads NVFP4 tensors (`dequantize_row_nvfp4`, ggml-quants.c,
//! llama.cpp 0c1e57098) but does not write them yet: llama-quantize has no NVFP4 mix (TYPE), and
//! writes NVFP4 only where `--tensor-type` / `--output-tensor-type` name it; a request for it
//! here is answered "not supported yet" by [`super::quantizer`] returning `None`.
//!
//! Its own file rather than beside MXFP4 in `iq4.rs`: the only thing the two share is the E2M1
//! level table ([`KVALUES_MXFP4`]); the scale format (UE4M3 per 16 instead of E8M0 per 32) and
//! the block layout are NVFP4's alone, and a read-only type is clearer on its own.

use super::iq4::KVALUES_MXFP4;
use super::{GgmlType, RowDequantizer};

/// Elements per NVFP4 block.
pub const BLOCK: usize = 64;
/// Elements per UE4M3 scale.
pub const SUB_BLOCK: usize = 16;

/// The CPU dequantizer for `ty` if it is NVFP4.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    (ty == GgmlType::NVFP4).then_some(dequantize_row_nvfp4 as RowDequantizer)
}

/// NVFP4, 36 bytes: the four UE4M3 scales `d` at 0..4 (one per 16 elements), `qs` at 4..36.
/// Sub-block s has its 16 codes in `qs[8s..8s+8]`: element j < 8 in the low nibble of
/// `qs[8s + j]`, element j + 8 in the high nibble; value = `KVALUES_MXFP4[q]`·[`ue4m3_to_f32`]`(d[s])`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockNvfp4 {
    /// The UE4M3 scale of each 16-element sub-block.
    pub d: [u8; 4],
    /// The packed E2M1 codes (layout in the struct docs).
    pub qs: [u8; 32],
}

impl BlockNvfp4 {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 36;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.d);
        out[4..36].copy_from_slice(&self.qs);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockNvfp4 {
        BlockNvfp4 {
            d: b[0..4].try_into().unwrap(),
            qs: b[4..36].try_into().unwrap(),
        }
    }
}

/// A UE4M3 scale byte as ggml reads it (`ggml_ue4m3_to_fp32`): 4 exponent bits (bias 7) over
/// 3 mantissa bits, with exponent 0 subnormal (m·2^−9); the top bit is not read. Halved, because
/// the E2M1 table is doubled. 0x00 and 0x7F (E4M3's NaN) read as 0. Every value is exact in f32.
pub fn ue4m3_to_f32(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let exp = ((x >> 3) & 0x0f) as i32;
    let man = (x & 0x07) as f32;
    let raw = if exp == 0 {
        man * pow2(-9)
    } else {
        (1.0 + man / 8.0) * pow2(exp - 7)
    };
    raw * 0.5
}

/// 2^k for a k where it is a normal f32 (what `ldexpf(1, k)` gives), built from its bits.
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// `dequantize_row_nvfp4`: code value × sub-block scale.
fn dequantize_row_nvfp4(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes
        .chunks_exact(BlockNvfp4::BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let blk = BlockNvfp4::read(b);
        for s in 0..BLOCK / SUB_BLOCK {
            let d = ue4m3_to_f32(blk.d[s]);
            let qs = &blk.qs[8 * s..8 * s + 8];
            let yb = &mut y[SUB_BLOCK * s..SUB_BLOCK * (s + 1)];
            for j in 0..8 {
                yb[j] = KVALUES_MXFP4[(qs[j] & 0x0f) as usize] as f32 * d;
                yb[j + 8] = KVALUES_MXFP4[(qs[j] >> 4) as usize] as f32 * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ue4m3_scales() {
        assert_eq!(ue4m3_to_f32(0x00), 0.0);
        assert_eq!(ue4m3_to_f32(0x7f), 0.0);
        assert_eq!(ue4m3_to_f32(0x38), 0.5); // exp 7, man 0: 1.0, halved
        assert_eq!(ue4m3_to_f32(0x01), 2f32.powi(-10)); // smallest subnormal, halved
        assert_eq!(ue4m3_to_f32(0x07), 7.0 * 2f32.powi(-10));
        assert_eq!(ue4m3_to_f32(0x7e), 224.0); // 448 halved: the largest finite E4M3
        assert_eq!(ue4m3_to_f32(0xb8), 0.5); // the top bit is ignored
        assert_eq!(ue4m3_to_f32(0xff), 240.0); // not the NaN pattern once the top bit is set
    }

    #[test]
    fn nvfp4_dequantizes_per_sub_block() {
        let mut blk = BlockNvfp4 {
            d: [0x38, 0x40, 0x00, 0x7e],
            qs: [0; 32],
        };
        blk.qs[0] = 0x7f; // element 0 code 15 (−12), element 8 code 7 (12)
        blk.qs[8] = 0x05; // sub-block 1, element 0 code 5 (6)
        blk.qs[24 + 7] = 0x90; // sub-block 3, element 7 code 0, element 15 code 9 (−1)
        let mut bytes = [0u8; 36];
        blk.write(&mut bytes);
        assert_eq!(BlockNvfp4::read(&bytes), blk);
        let mut y = [1.0f32; 64];
        dequantize_row_nvfp4(&bytes, &mut y);
        assert_eq!(y[0], -6.0);
        assert_eq!(y[8], 6.0);
        assert_eq!(y[16], 6.0); // 0x40: exp 8 → 2, halved 1
        assert_eq!(y[32], 0.0);
        assert_eq!(y[63], -224.0);
        assert_eq!(y[55], 0.0);
    }
}
