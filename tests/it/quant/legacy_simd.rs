//! The SIMD row quantizers (Q8_0, Q4_0 without imatrix) against their scalar oracles: over a
//! million random and adversarial blocks each, the bytes must be identical. Rows have a block
//! count that is not a multiple of the SIMD group (8) so the scalar tail is exercised too.

use crate::support::rng::Rng;
use qforge::quant::legacy::{
    quantize_row_q4_0_scalar, quantize_row_q8_0_scalar, simd_available, BlockQ4_0, BlockQ8_0, QK,
};
use qforge::quant::{self, GgmlType};

const SCALES: [f32; 14] = [
    1e-42, 1e-39, 3e-38, 1e-20, 1e-5, 1e-3, 0.02, 1.0, 7.0, 1000.0, 6e4, 1e7, 1e30, 3e38,
];

/// One block of a randomly chosen kind: gaussian at a random scale, zeros (±), one spike, a
/// constant, exact rounding ties, equal-magnitude extremes of both signs, one-signed, raw random
/// bits (subnormals, NaN, infinities included), or a single infinity.
fn adversarial_block(r: &mut Rng, out: &mut [f32]) {
    let s = SCALES[r.below(SCALES.len() as u64) as usize];
    for v in out.iter_mut() {
        *v = r.gauss() * s;
    }
    match r.below(14) {
        0 => out.fill(0.0),
        1 => out.fill(-0.0),
        2 => {
            out.fill(0.0);
            out[r.below(32) as usize] = if r.below(2) == 0 { s } else { -s };
        }
        3 => {
            let c = r.gauss() * s;
            out.fill(c);
        }
        4 => {
            // Multiples of 0.5 and 1/8 around an extreme of 127 or 8: x·id lands on .5 ties.
            let top = [127.0f32, 8.0, 16.0][r.below(3) as usize];
            for v in out.iter_mut() {
                *v = (r.below(2 * top as u64 * 8 + 1) as f32 - top * 8.0) / 8.0;
            }
            out[r.below(32) as usize] = top;
        }
        5 => {
            let (i, j) = (r.below(32) as usize, r.below(32) as usize);
            out[i] = 10.0 * s;
            out[j] = -10.0 * s;
        }
        6 => out.iter_mut().for_each(|v| *v = v.abs()),
        7 => out.iter_mut().for_each(|v| *v = -v.abs()),
        8 => out
            .iter_mut()
            .for_each(|v| *v = f32::from_bits(r.next_u64() as u32)),
        9 => out
            .iter_mut()
            .for_each(|v| *v = f32::from_bits(r.next_u64() as u32 & 0x807f_ffff)),
        10 => {
            out[r.below(32) as usize] =
                [f32::INFINITY, f32::NEG_INFINITY, f32::NAN][r.below(3) as usize]
        }
        _ => {}
    }
}

fn differential(
    ty: GgmlType,
    block_bytes: usize,
    scalar: fn(&[f32], &mut [u8]),
    seed: u64,
) -> usize {
    let q = quant::quantizer(ty).unwrap();
    let mut r = Rng::new(seed);
    let blocks_per_row = 8 * 64 + 5;
    let rows = 2000;
    let mut x = vec![0f32; blocks_per_row * QK];
    let mut fast = vec![0u8; blocks_per_row * block_bytes];
    let mut oracle = vec![0u8; blocks_per_row * block_bytes];
    for row in 0..rows {
        for b in x.chunks_exact_mut(QK) {
            adversarial_block(&mut r, b);
        }
        q(&x, None, &mut fast);
        scalar(&x, &mut oracle);
        if fast != oracle {
            let b = fast
                .chunks(block_bytes)
                .zip(oracle.chunks(block_bytes))
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "{ty} row {row} block {b} differs:\n x {:?}\n simd   {:02x?}\n scalar {:02x?}",
                &x[b * QK..(b + 1) * QK],
                &fast[b * block_bytes..(b + 1) * block_bytes],
                &oracle[b * block_bytes..(b + 1) * block_bytes]
            );
        }
    }
    rows * blocks_per_row
}

#[test]
fn simd_path_is_used_where_avx2_exists() {
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        simd_available(),
        std::arch::is_x86_feature_detected!("avx2")
    );
    if !simd_available() {
        eprintln!("no AVX2 here: the differential tests compare the scalar path with itself");
    }
}

#[test]
fn q8_0_simd_matches_scalar_on_a_million_blocks() {
    let n = differential(
        GgmlType::Q8_0,
        BlockQ8_0::BYTES,
        quantize_row_q8_0_scalar,
        1,
    );
    assert!(n >= 1_000_000);
}

#[test]
fn q4_0_simd_matches_scalar_on_a_million_blocks() {
    let n = differential(
        GgmlType::Q4_0,
        BlockQ4_0::BYTES,
        quantize_row_q4_0_scalar,
        2,
    );
    assert!(n >= 1_000_000);
}
