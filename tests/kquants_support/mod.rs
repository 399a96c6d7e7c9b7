//! Shared by the kquants_* integration tests: a deterministic generator of random and adversarial
//! super-blocks and importance weights, and a reader for the golden imatrix.
#![allow(dead_code)]

use std::path::Path;

use qforge::formats::gguf::GgufFile;
use qforge::quant::GgmlType;

/// SplitMix64: small, deterministic, good enough to draw test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller, computed in f64 then rounded).
    pub fn gauss(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// One group of `n` values of a randomly chosen adversarial kind.
pub fn fill_group(rng: &mut Rng, out: &mut [f32]) {
    let scale = 10f32.powf(rng.unit() * 10.0 - 6.0);
    match rng.below(16) {
        0..=4 => out.iter_mut().for_each(|v| *v = rng.gauss() * scale),
        5 => out.fill(0.0),
        6 => {
            out.fill(0.0);
            let i = rng.below(out.len() as u64) as usize;
            out[i] = if rng.below(2) == 0 { scale } else { -scale };
        }
        7 => out.fill(if rng.below(2) == 0 { scale } else { -scale }),
        8 => out
            .iter_mut()
            .for_each(|v| *v = (rng.below(17) as f32 - 8.0) * 0.5),
        9 => out
            .iter_mut()
            .for_each(|v| *v = (rng.below(33) as f32 - 16.0) * 0.125 * scale),
        10 => out
            .iter_mut()
            .for_each(|v| *v = f32::from_bits(rng.below(0x0080_0000) as u32) * sign(rng)),
        11 => out
            .iter_mut()
            .for_each(|v| *v = (rng.unit() * 2.0 - 1.0) * 6.0e4),
        12 => out.iter_mut().for_each(|v| *v = rng.gauss().abs() * scale),
        13 => out.iter_mut().for_each(|v| *v = -rng.gauss().abs() * scale),
        14 => out.iter_mut().for_each(|v| {
            // Student-t-like heavy tail.
            let g = rng.gauss();
            let d = rng.unit().max(1e-3);
            *v = g / d.sqrt() * scale
        }),
        _ => out.iter_mut().for_each(|v| {
            *v = if rng.below(8) == 0 {
                rng.gauss() * scale * 100.0
            } else {
                rng.gauss() * scale * 1e-3
            }
        }),
    }
}

fn sign(rng: &mut Rng) -> f32 {
    if rng.below(2) == 0 {
        1.0
    } else {
        -1.0
    }
}

/// A 256-element super-block: usually one kind throughout, sometimes a mix of 16-element groups
/// of different kinds (which stresses the super-block scale logic).
pub fn super_block(rng: &mut Rng) -> Vec<f32> {
    let mut b = vec![0.0f32; 256];
    if rng.below(3) == 0 {
        for g in b.chunks_mut(16) {
            fill_group(rng, g);
        }
    } else {
        fill_group(rng, &mut b);
    }
    b
}

/// Importance weights for `n` columns: positive random, with zero columns, all zeros, huge
/// dynamic range, or constant.
pub fn imatrix_weights(rng: &mut Rng, n: usize) -> Vec<f32> {
    match rng.below(6) {
        0 => vec![0.0; n],
        1 => vec![1.0; n],
        2 => (0..n)
            .map(|_| if rng.below(3) == 0 { 0.0 } else { rng.unit() })
            .collect(),
        3 => (0..n)
            .map(|_| 10f32.powf(rng.unit() * 12.0 - 6.0))
            .collect(),
        _ => (0..n).map(|_| rng.gauss().powi(2)).collect(),
    }
}

/// The per-column importance weights llama-quantize derives from an imatrix GGUF entry:
/// `in_sum2 / count`, or all ones when the count is 0 (tools/quantize `load_imatrix`).
pub fn imatrix_weights_for(imatrix: &GgufFile, tensor: &str) -> Option<Vec<f32>> {
    let sums = imatrix.tensor(&format!("{tensor}.in_sum2"))?;
    let counts = imatrix.tensor(&format!("{tensor}.counts"))?;
    assert_eq!(sums.ty, GgmlType::F32);
    assert_eq!(counts.ty, GgmlType::F32);
    let sums = f32s(imatrix.tensor_data(sums));
    let counts = f32s(imatrix.tensor_data(counts));
    let ne0 = sums.len() / counts.len();
    let mut w = vec![0.0f32; sums.len()];
    for (j, &count) in counts.iter().enumerate() {
        for i in 0..ne0 {
            w[j * ne0 + i] = if count > 0.0 {
                sums[j * ne0 + i] / count
            } else {
                1.0
            };
        }
    }
    Some(w)
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn open(path: &Path) -> GgufFile {
    GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
