//! The SIMD K-quant kernels write exactly the scalar oracle's bytes, on random and adversarial
//! super-blocks, with and without importance weights, for every backend this CPU has.

use crate::support::quant_data::{imatrix_weights, super_block};
use crate::support::rng::Rng;
use qforge::quant::kquants::{available_backends, quantize_row_with, Backend};
use qforge::quant::GgmlType;

const TYPES: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Quantizes rows totalling at least `target_blocks` super-blocks with every backend and
/// compares each against the scalar result. Rows have 1–37 blocks so that every batch width
/// sees partial (padded) batches.
fn differential(seed: u64, target_blocks: usize) {
    let backends = available_backends();
    eprintln!("backends: {backends:?}");
    let mut rng = Rng::new(seed);
    let mut done = 0usize;
    let mut compared = 0usize;
    let mut row = 0usize;
    while done < target_blocks {
        let ty = TYPES[row % TYPES.len()];
        row += 1;
        let nb = 1 + rng.below(37) as usize;
        let x: Vec<f32> = (0..nb).flat_map(|_| super_block(&mut rng)).collect();
        let qw = (rng.below(2) == 0).then(|| imatrix_weights(&mut rng, x.len()));
        let bytes = ty.row_size(x.len() as u64).unwrap() as usize;
        let mut expected = vec![0u8; bytes];
        quantize_row_with(Backend::Scalar, ty, &x, qw.as_deref(), &mut expected);
        for &b in &backends[1..] {
            let mut got = vec![0x5Au8; bytes];
            quantize_row_with(b, ty, &x, qw.as_deref(), &mut got);
            if got != expected {
                let bs = ty.type_size();
                let k = (0..nb)
                    .find(|&k| got[k * bs..(k + 1) * bs] != expected[k * bs..(k + 1) * bs])
                    .unwrap();
                panic!(
                    "{ty} {b:?} imatrix {}: block {k} of {nb} differs\n x = {:?}\n qw = {:?}",
                    qw.is_some(),
                    &x[k * 256..(k + 1) * 256],
                    qw.as_ref().map(|w| &w[k * 256..(k + 1) * 256]),
                );
            }
            compared += nb;
        }
        done += nb;
    }
    eprintln!("{done} super-blocks, {compared} block comparisons");
}

#[test]
fn simd_matches_scalar_on_50k_blocks() {
    differential(0x51_3d, 50_000);
}

#[test]
#[ignore = "long: ~1M super-blocks; run with --ignored"]
fn simd_matches_scalar_on_1m_blocks() {
    differential(0x1_000_000, 1_000_000);
}

/// Hand-picked batches where lanes disagree about every data-dependent branch: a zero block next
/// to a spike, a constant, subnormals, huge values, zero weights.
#[test]
fn simd_matches_scalar_on_mixed_adversarial_batches() {
    let mut blocks: Vec<Vec<f32>> = vec![
        vec![0.0; 256],
        {
            let mut b = vec![0.0; 256];
            b[17] = -7.0;
            b
        },
        vec![0.25; 256],
        vec![-3.0; 256],
        (0..256)
            .map(|i| f32::from_bits(i as u32 * 977 + 1))
            .collect(),
        (0..256).map(|i| ((i % 13) as f32 - 6.0) * 5.0e3).collect(),
        (0..256).map(|i| ((i % 17) as f32 - 8.0) * 0.5).collect(),
        (0..256)
            .map(|i| if i % 2 == 0 { 1e-20 } else { -1e-20 })
            .collect(),
    ];
    let mut rng = Rng::new(11);
    while blocks.len() < 40 {
        blocks.push(super_block(&mut rng));
    }
    let x: Vec<f32> = blocks.concat();
    let weight_sets: Vec<Option<Vec<f32>>> = vec![
        None,
        Some(vec![0.0; x.len()]),
        Some((0..x.len()).map(|i| (i % 3) as f32).collect()),
        Some(imatrix_weights(&mut rng, x.len())),
    ];
    for ty in TYPES {
        for qw in &weight_sets {
            let bytes = ty.row_size(x.len() as u64).unwrap() as usize;
            let mut expected = vec![0u8; bytes];
            quantize_row_with(Backend::Scalar, ty, &x, qw.as_deref(), &mut expected);
            for &b in &available_backends()[1..] {
                let mut got = vec![0u8; bytes];
                quantize_row_with(b, ty, &x, qw.as_deref(), &mut got);
                assert!(got == expected, "{ty} {b:?} imatrix {}", qw.is_some());
            }
        }
    }
}
