//! Quantizer test data: random and adversarial super-blocks and importance weights drawn from the
//! one [`Rng`], the importance weights llama-quantize derives from an imatrix, and the golden
//! tensors of tensors.f32.gguf with what llama-quantize wrote for them.

use std::path::Path;
use std::sync::OnceLock;

use qforge::formats::gguf::GgufFile;
use qforge::quant::GgmlType;

use super::rng::Rng;

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

/// Little-endian f32 bytes as floats.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Open a GGUF file, panicking with its path.
pub fn open(path: &Path) -> GgufFile {
    GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One tensor of golden/tensors.f32.gguf with what llama-quantize wrote for it.
pub struct GoldenCase {
    /// Tensor name.
    pub name: String,
    /// Row length.
    pub n_per_row: usize,
    /// The F32 input.
    pub x: Vec<f32>,
    /// Importance weights, for the pure-imatrix goldens.
    pub qw: Option<Vec<f32>>,
    /// llama-quantize's bytes.
    pub want: Vec<u8>,
}

/// Importance weights of `name` from golden/imatrix.gguf (read once per process).
pub fn golden_imatrix_weights(name: &str) -> Option<Vec<f32>> {
    static IM: OnceLock<GgufFile> = OnceLock::new();
    let im = IM.get_or_init(|| open(&super::golden("imatrix.gguf")));
    imatrix_weights_for(im, name)
}

/// The tensors of tensors.f32.gguf that `golden_file` (e.g. "pure/Q4_0.gguf") stores as `ty`.
pub fn golden_cases(golden_file: &str, ty: GgmlType) -> Vec<GoldenCase> {
    let src = open(&super::golden("tensors.f32.gguf"));
    let gold = open(&super::golden(golden_file));
    let with_imatrix = golden_file.starts_with("pure-imatrix/");
    let mut cases = Vec::new();
    for t in &src.tensors {
        let Some(g) = gold.tensor(&t.name) else {
            continue;
        };
        if g.ty != ty {
            continue;
        }
        assert_eq!(t.ty, GgmlType::F32, "{}", t.name);
        let qw = if with_imatrix {
            golden_imatrix_weights(&t.name)
        } else {
            None
        };
        cases.push(GoldenCase {
            name: t.name.clone(),
            n_per_row: t.ne[0] as usize,
            x: f32s(src.tensor_data(t)),
            qw,
            want: gold.tensor_data(g).to_vec(),
        });
    }
    cases
}

/// Where `ours` and `want` (rows of `block`-byte blocks) differ, for a failure message: how many
/// blocks, and the first one's bytes side by side; `None` when they are equal.
pub fn block_mismatch(ours: &[u8], want: &[u8], block: usize) -> Option<String> {
    if ours.len() != want.len() {
        return Some(format!("{} bytes, expected {}", ours.len(), want.len()));
    }
    let bad: Vec<usize> = ours
        .chunks(block)
        .zip(want.chunks(block))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    let &f = bad.first()?;
    Some(format!(
        "{} of {} blocks differ, first #{f}:\n    ours     {:02x?}\n    expected {:02x?}",
        bad.len(),
        ours.len() / block,
        &ours[f * block..(f + 1) * block],
        &want[f * block..(f + 1) * block],
    ))
}
