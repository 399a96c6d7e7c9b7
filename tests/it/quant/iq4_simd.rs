//! The SIMD IQ4_NL / IQ4_XS kernels write exactly the scalar oracle's bytes, on random and
//! adversarial blocks (zeros, exact ties between levels, huge, subnormal and non-finite values,
//! one spike, constants, sign-only), with and without importance weights (zeros among them),
//! for every backend this CPU has. The goldens (`legacy_golden`) go through the same dispatch.

use crate::support::quant_data::{fill_group, imatrix_weights, super_block};
use crate::support::rng::Rng;
use qforge::quant::iq4::{quantize_row_with, KVALUES_IQ4NL};
use qforge::quant::kquants::{available_backends, Backend};
use qforge::quant::GgmlType;

/// Quantizes `x` with every backend and asserts each wrote the scalar oracle's bytes, naming the
/// first differing block. Returns the number of 32-element block comparisons made.
fn compare(ty: GgmlType, x: &[f32], qw: Option<&[f32]>) -> usize {
    let block = ty.block_size();
    let bs = ty.type_size();
    let nb = x.len() / block;
    let mut expected = vec![0u8; nb * bs];
    quantize_row_with(Backend::Scalar, ty, x, qw, &mut expected);
    let mut compared = 0;
    for &b in &available_backends()[1..] {
        let mut got = vec![0x5Au8; nb * bs];
        quantize_row_with(b, ty, x, qw, &mut got);
        if got != expected {
            let k = (0..nb)
                .find(|&k| got[k * bs..(k + 1) * bs] != expected[k * bs..(k + 1) * bs])
                .unwrap();
            panic!(
                "{ty} {b:?} imatrix {}: block {k} of {nb} differs\n got {:02x?}\n expected {:02x?}\n x = {:?}\n qw = {:?}",
                qw.is_some(),
                &got[k * bs..(k + 1) * bs],
                &expected[k * bs..(k + 1) * bs],
                &x[k * block..(k + 1) * block],
                qw.map(|w| &w[k * block..(k + 1) * block]),
            );
        }
        compared += x.len() / 32;
    }
    compared
}

/// A 32-element block whose values land exactly on the midpoints between adjacent levels (and
/// on the levels) at the first trial scale: the block maximum ±127 makes d = ±1, so the C tie
/// rule (ties go to the upper index) decides every element.
fn tie_block(rng: &mut Rng) -> Vec<f32> {
    let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
    let mut b: Vec<f32> = (0..32)
        .map(|_| {
            let k = rng.below(15) as usize;
            let (lo, hi) = (KVALUES_IQ4NL[k] as f32, KVALUES_IQ4NL[k + 1] as f32);
            match rng.below(3) {
                0 => (lo + hi) / 2.0,
                1 => lo,
                _ => hi,
            }
        })
        .collect();
    b[rng.below(32) as usize] = 127.0 * sign;
    if rng.below(2) == 0 {
        // Scaled by a power of two, the ties stay exact.
        let p = 2f32.powi(rng.below(40) as i32 - 20);
        b.iter_mut().for_each(|v| *v *= p);
    }
    b
}

/// A 32-element block of one adversarial kind: the shared kinds of `fill_group`, exact ties,
/// or non-finite values mixed into ordinary ones.
fn adversarial_block(rng: &mut Rng) -> Vec<f32> {
    match rng.below(12) {
        0 => tie_block(rng),
        1 => {
            let mut b = vec![0.0f32; 32];
            fill_group(rng, &mut b);
            let special = [
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                f32::MAX,
                -f32::MAX,
            ];
            let i = rng.below(32) as usize;
            b[i] = special[rng.below(special.len() as u64) as usize];
            b
        }
        _ => {
            let mut b = vec![0.0f32; 32];
            if rng.below(3) == 0 {
                for g in b.chunks_mut(8) {
                    fill_group(rng, g);
                }
            } else {
                fill_group(rng, &mut b);
            }
            b
        }
    }
}

/// Importance weights for `n` columns: the shared kinds, sometimes with sprinkled zeros or a
/// non-finite entry.
fn weights(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut w = imatrix_weights(rng, n);
    match rng.below(8) {
        0 => w.iter_mut().step_by(3).for_each(|v| *v = 0.0),
        1 => w[rng.below(n as u64) as usize] = f32::INFINITY,
        _ => {}
    }
    w
}

/// Rows totalling at least `target_blocks` 32-element blocks, alternating IQ4_NL rows of 1–40
/// blocks and IQ4_XS rows of 1–5 super-blocks (so every batch width sees partial batches and
/// the AVX2 tail), half of them with importance weights.
fn differential(seed: u64, target_blocks: usize) {
    eprintln!("backends: {:?}", available_backends());
    let mut rng = Rng::new(seed);
    let (mut done, mut compared, mut row) = (0usize, 0usize, 0usize);
    while done < target_blocks {
        row += 1;
        let x: Vec<f32> = if row % 2 == 0 {
            let nb = 1 + rng.below(40) as usize;
            (0..nb).flat_map(|_| adversarial_block(&mut rng)).collect()
        } else {
            let nsb = 1 + rng.below(5) as usize;
            (0..nsb)
                .flat_map(|_| match rng.below(3) {
                    0 => (0..8).flat_map(|_| adversarial_block(&mut rng)).collect(),
                    _ => super_block(&mut rng),
                })
                .collect()
        };
        let ty = if row % 2 == 0 {
            GgmlType::IQ4_NL
        } else {
            GgmlType::IQ4_XS
        };
        let qw = (rng.below(2) == 0).then(|| weights(&mut rng, x.len()));
        compared += compare(ty, &x, qw.as_deref());
        done += x.len() / 32;
    }
    eprintln!("{done} blocks of 32, {compared} block comparisons");
}

#[test]
fn simd_matches_scalar_on_300k_blocks() {
    differential(0x1a4_51d, 300_000);
}

#[test]
#[ignore = "long: ~10M blocks (a minute of CPU per backend); run with --ignored"]
fn simd_matches_scalar_on_10m_blocks() {
    differential(0x10_000_000, 10_000_000);
}

/// Hand-picked rows where neighbouring lanes disagree about every data-dependent branch: a zero
/// block next to a spike, constants, subnormals, huge values, sign-only, exact ties; with no,
/// all-zero, patterned and random weights.
#[test]
fn simd_matches_scalar_on_mixed_adversarial_rows() {
    let mut rng = Rng::new(7);
    let mut blocks: Vec<Vec<f32>> = vec![
        vec![0.0; 32],
        {
            let mut b = vec![0.0; 32];
            b[5] = -7.0;
            b
        },
        vec![0.25; 32],
        vec![-3.0; 32],
        (0..32).map(|i| f32::from_bits(i * 977 + 1)).collect(),
        (0..32).map(|i| ((i % 13) as f32 - 6.0) * 3.0e37).collect(),
        (0..32)
            .map(|i| if i % 2 == 0 { 1e-20 } else { -1e-20 })
            .collect(),
        (0..32)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect(),
        vec![1e-16; 32],
        tie_block(&mut rng),
        tie_block(&mut rng),
    ];
    while blocks.len() < 48 {
        blocks.push(adversarial_block(&mut rng));
    }
    // Shuffle so that each kind meets every lane position across the rotations below.
    for rot in 0..blocks.len() {
        blocks.rotate_left(1);
        let x: Vec<f32> = blocks.concat();
        let weight_sets: Vec<Option<Vec<f32>>> = vec![
            None,
            Some(vec![0.0; x.len()]),
            Some((0..x.len()).map(|i| (i % 3) as f32).collect()),
            Some(imatrix_weights(&mut rng, x.len())),
        ];
        for qw in &weight_sets {
            // 48 blocks: 3 full AVX-512 batches / 6 AVX2 batches; prefixes give the tails.
            let n = if rot % 2 == 0 {
                x.len()
            } else {
                x.len() - 32 * (rot % 8 + 1)
            };
            let qw = qw.as_deref().map(|w| &w[..n]);
            compare(GgmlType::IQ4_NL, &x[..n], qw);
            let n = n / 256 * 256;
            if n > 0 {
                compare(GgmlType::IQ4_XS, &x[..n], qw.map(|w| &w[..n]));
            }
        }
    }
}
