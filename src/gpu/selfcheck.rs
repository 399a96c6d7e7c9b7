//! Before a kernel is trusted on an adapter it quantizes a built-in canary set and must match the
//! CPU quantizer byte for byte. The canaries are the inputs where drivers go wrong: rounding
//! ties, f32 subnormals (flushed by some hardware), huge and tiny magnitudes, zeros, spikes,
//! constant rows and f16 edge values — plus, with an imatrix, weights that include zeros.

use super::pipelines::{Imatrix, KernelDef};
use super::quantize::{kernel_label, run_checked_geometry};
use super::GpuContext;
use crate::quant;

/// The outcome of a kernel's self-check.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelHealth {
    /// Matched the CPU on every canary.
    Passed,
    /// Differed from the CPU (or failed to run): disabled on this adapter.
    Failed(String),
    /// No CPU quantizer to compare with: not used.
    Unverifiable(String),
}

impl KernelHealth {
    /// `Ok` when the kernel passed, else the reason it is not used.
    pub fn as_result(&self) -> Result<(), String> {
        match self {
            KernelHealth::Passed => Ok(()),
            KernelHealth::Failed(s) | KernelHealth::Unverifiable(s) => Err(s.clone()),
        }
    }
}

pub use crate::rng::Rng;

/// The kinds of adversarial row [`adversarial_rows`] produces, in order.
pub const ROW_KINDS: &[&str] = &[
    "gaussian",
    "zeros",
    "single spike",
    "half-integer ties",
    "eighth ties",
    "f32 subnormals",
    "tiny normals",
    "huge (|x| <= 6e4)",
    "constant",
    "positive only",
    "negative only",
    "heavy tails",
    "mixed magnitudes",
    "block-wise zero/non-zero",
];

/// `n_rows` rows of `n_per_row` values for each kind of [`ROW_KINDS`] (the kinds cycle), all
/// finite and within what a valid model tensor holds (no NaN/Inf, |x| <= 6e4).
pub fn adversarial_rows(n_per_row: usize, n_rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(n_per_row * n_rows);
    for r in 0..n_rows {
        let kind = r % ROW_KINDS.len();
        let scale = 10f64.powf(rng.uniform() * 6.0 - 3.0);
        let spike_at = (rng.next_u64() as usize) % n_per_row;
        for j in 0..n_per_row {
            let g = rng.gauss();
            let v: f64 = match kind {
                0 => g * scale,
                1 => 0.0,
                2 => {
                    if j == spike_at {
                        -37.5 * scale
                    } else {
                        0.0
                    }
                }
                3 => ((rng.next_u64() % 33) as f64 - 16.0) * 0.5,
                4 => ((rng.next_u64() % 129) as f64 - 64.0) / 8.0,
                5 => {
                    let bits = (rng.next_u64() as u32) & 0x807f_ffff;
                    f32::from_bits(bits) as f64
                }
                6 => g * 1e-30,
                7 => g.clamp(-3.0, 3.0) * 2e4,
                8 => 0.3712,
                9 => g.abs() * scale + 1e-3,
                10 => -(g.abs() * scale) - 1e-3,
                11 => g / rng.uniform().max(1e-3).sqrt() * scale,
                12 => g * 10f64.powf(rng.uniform() * 16.0 - 8.0),
                _ => {
                    if (j / 32) % 2 == 0 {
                        0.0
                    } else {
                        g
                    }
                }
            };
            x.push(v as f32);
        }
    }
    x
}

/// Importance weights: positive, spread over two decades, every seventh column zero.
pub fn canary_weights(n_per_row: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    (0..n_per_row)
        .map(|j| {
            if j % 7 == 3 {
                0.0
            } else {
                (10f64.powf(rng.uniform() * 2.0 - 1.0)) as f32
            }
        })
        .collect()
}

/// Values where f32→f16/bf16 conversions go wrong: ties, the f16 subnormal range, overflow.
pub fn float_edge_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        65504.0,
        65519.996,
        65520.0,
        -65520.0,
        1e9,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        5.960_464_5e-8,
        2.980_232_2e-8,
        2.980_232_5e-8,
        8.940_697e-8,
        6.097_555e-5,
        6.103_515_6e-5,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    // Exact f16 and bf16 halfway points around 1 (both parities) and in the subnormal range.
    for bits in [
        0x3f80_1000u32,
        0x3f80_3000,
        0x3f80_8000,
        0x3f81_8000,
        0x3380_0000,
        0x3340_0000,
        0x33c0_0000,
    ] {
        v.push(f32::from_bits(bits));
        v.push(-f32::from_bits(bits));
    }
    v
}

/// The CPU quantizer's answer, or why there is none. A CPU quantizer that panics (e.g. "not
/// supported yet" for an imatrix mode) means "no reference", never a crash of the caller.
pub fn cpu_reference(
    ty: crate::quant::GgmlType,
    x: &[f32],
    n_per_row: usize,
    qw: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), String> {
    if quant::quantizer(ty).is_none() {
        return Err(format!("no CPU quantizer for {ty}"));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        quant::quantize_rows(ty, x, n_per_row, qw, out)
    })) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CPU quantizer panicked".into())),
    }
}

/// Run `def` on its canaries (with importance weights when `imatrix`) and compare with the CPU.
pub fn check_kernel(ctx: &GpuContext, def: &'static KernelDef, imatrix: bool) -> KernelHealth {
    let Some(ty) = def.ty else {
        return KernelHealth::Unverifiable("not a quantization kernel".into());
    };
    if quant::quantizer(ty).is_none() {
        return KernelHealth::Unverifiable(format!(
            "no CPU quantizer for {ty} to check the GPU kernel against"
        ));
    }
    let n_per_row = def.block_elems.max(256) * 2;
    let mut x = adversarial_rows(n_per_row, ROW_KINDS.len() * 2, canary_seed(def.name));
    if def.block_elems == 1 {
        // Plain float types also see the conversion edge cases (these are not valid weights
        // for block quantizers: Inf makes a block scale meaningless).
        let mut edge = float_edge_values();
        edge.resize(n_per_row, 0.5);
        x.extend(edge);
    }
    let use_qw = imatrix && def.imatrix == Imatrix::Used;
    let qw = use_qw.then(|| canary_weights(n_per_row, 7));
    let row_bytes = match quant::row_bytes(ty, n_per_row) {
        Ok(b) => b,
        Err(e) => return KernelHealth::Failed(e.to_string()),
    };
    let n_rows = x.len() / n_per_row;
    let mut want = vec![0u8; n_rows * row_bytes];
    if let Err(e) = cpu_reference(ty, &x, n_per_row, qw.as_deref(), &mut want) {
        return KernelHealth::Unverifiable(format!("no CPU reference to check against: {e}"));
    }
    let mut got = vec![0u8; want.len()];
    if let Err(e) = run_checked_geometry(ctx, def, ty, &x, n_per_row, qw.as_deref(), &mut got) {
        return KernelHealth::Failed(format!("did not run: {e}"));
    }
    match got.iter().zip(&want).position(|(a, b)| a != b) {
        None => KernelHealth::Passed,
        Some(i) => {
            let row = i / row_bytes;
            let kind = if row < ROW_KINDS.len() * 2 {
                ROW_KINDS[row % ROW_KINDS.len()]
            } else {
                "float edge values"
            };
            KernelHealth::Failed(format!(
                "{} differs from the CPU on canary row {row} ({kind}) at byte {}: gpu {:#04x}, cpu {:#04x}",
                kernel_label(def, imatrix),
                i % row_bytes,
                got[i],
                want[i]
            ))
        }
    }
}

/// A per-kernel seed, so different kernels see different (but fixed) canaries.
fn canary_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
