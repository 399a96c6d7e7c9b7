//! GPU against CPU throughput, measured in one run on one generated tensor (what `qforge bench`
//! reports). The CPU side is the pipeline's CPU path (`pipeline::Backend::cpu`: rayon over rows);
//! the GPU side is [`GpuQuantizer::quantize_rows`] after its self-check and one untimed run (so
//! pipeline builds and buffer allocation are not counted: they happen once per process).
//! Throughput is f32 input bytes per second; every run's bytes are also compared.

use std::time::Instant;

use crate::gpu::pipelines::{Imatrix, KERNELS};
use crate::gpu::{GpuError, GpuQuantizer};
use crate::pipeline::Backend;
use crate::quant::{self, GgmlType};
use crate::rng::Rng;

/// What to measure on.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Elements per row (a multiple of 256 suits every type).
    pub n_per_row: usize,
    /// Rows of the generated tensor.
    pub n_rows: usize,
    /// CPU worker threads (0: all cores), as `--threads`.
    pub cpu_threads: usize,
    /// Timed runs per side; the best is reported.
    pub repeats: usize,
    /// Quantize with (generated) importance weights; types that require them always get them.
    pub imatrix: bool,
    /// Seed of the generated tensor.
    pub seed: u64,
}

impl Default for BenchOptions {
    /// A 4096 × 4096 tensor (64 MiB of f32), two timed runs per side.
    fn default() -> Self {
        BenchOptions {
            n_per_row: 4096,
            n_rows: 4096,
            cpu_threads: 0,
            repeats: 2,
            imatrix: false,
            seed: 1,
        }
    }
}

/// One type's result.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// The type quantized to.
    pub ty: GgmlType,
    /// Whether an importance matrix was used.
    pub imatrix: bool,
    /// Input megabytes (10^6 bytes of f32) per second.
    pub cpu_mb_s: f64,
    /// GPU throughput, MB of f32 input per second.
    pub gpu_mb_s: f64,
    /// Whether the GPU wrote exactly the CPU's bytes.
    pub identical: bool,
}

impl BenchRow {
    /// GPU throughput as a multiple of the CPU's.
    pub fn ratio(&self) -> f64 {
        self.gpu_mb_s / self.cpu_mb_s
    }
}

/// Every type with a CPU quantizer, in ggml id order. The list is the quantizer registry's
/// (`quant::quantizer`), so a type gains a row as soon as its quantizer is registered; types
/// that need an importance matrix ([`quant::requires_imatrix`]) are measured with generated
/// weights ([`bench_weights`]).
pub fn cpu_types() -> Vec<GgmlType> {
    GgmlType::all()
        .filter(|&ty| quant::quantizer(ty).is_some())
        .collect()
}

/// The types that have a GPU kernel, in kernel order.
pub fn gpu_types() -> Vec<GgmlType> {
    KERNELS.iter().filter_map(|k| k.ty).collect()
}

/// Rows like a model's weights: gaussian with a per-row scale and rare large outliers.
pub fn bench_tensor(n_per_row: usize, n_rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(n_per_row * n_rows);
    for _ in 0..n_rows {
        let scale = 0.02 * 10f64.powf(rng.uniform() - 0.5);
        for _ in 0..n_per_row {
            let mut v = rng.gauss() * scale;
            if rng.next_u64().is_multiple_of(1024) {
                v *= 12.0;
            }
            x.push(v as f32);
        }
    }
    x
}

/// Importance weights for `bench_tensor`: positive, spread over three decades.
pub fn bench_weights(n_per_row: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0x1a7e);
    (0..n_per_row)
        .map(|_| 10f64.powf(rng.uniform() * 3.0 - 2.0) as f32)
        .collect()
}

/// Measure every type of `types` on one generated tensor. A type without a GPU kernel (or
/// whose kernel fails its self-check here) is an error naming it.
pub fn bench_types(
    gpu: &GpuQuantizer,
    types: &[GgmlType],
    opts: &BenchOptions,
) -> Result<Vec<BenchRow>, GpuError> {
    let x = bench_tensor(opts.n_per_row, opts.n_rows, opts.seed);
    let w = bench_weights(opts.n_per_row, opts.seed);
    let cpu = Backend::cpu(opts.cpu_threads);
    let mb = (x.len() * 4) as f64 / 1e6;
    let repeats = opts.repeats.max(1);
    let mut rows = Vec::new();
    for &ty in types {
        // A type that cannot be quantized without an imatrix gets the generated one anyway.
        let uses_imatrix = (opts.imatrix || quant::requires_imatrix(ty))
            && KERNELS
                .iter()
                .any(|k| k.ty == Some(ty) && k.imatrix == Imatrix::Used);
        let qw = uses_imatrix.then_some(w.as_slice());
        gpu.check(ty, qw.is_some())?;
        let row_bytes = quant::row_bytes(ty, opts.n_per_row)?;
        let mut out_cpu = vec![0u8; row_bytes * opts.n_rows];
        let mut out_gpu = vec![0u8; row_bytes * opts.n_rows];
        // Untimed: pipeline build, buffer allocation, first touch of the output pages.
        gpu.quantize_rows(ty, &x, opts.n_per_row, qw, &mut out_gpu)?;
        let mut best_gpu = f64::MAX;
        let mut best_cpu = f64::MAX;
        let mut identical = true;
        for _ in 0..repeats {
            let t = Instant::now();
            cpu.quantize_rows(ty, &x, opts.n_per_row, qw, |_| 0, &mut out_cpu)
                .map_err(|e| GpuError::Execution(format!("CPU path for {ty}: {e}")))?;
            best_cpu = best_cpu.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            gpu.quantize_rows(ty, &x, opts.n_per_row, qw, &mut out_gpu)?;
            best_gpu = best_gpu.min(t.elapsed().as_secs_f64());
            identical &= out_cpu == out_gpu;
        }
        rows.push(BenchRow {
            ty,
            imatrix: qw.is_some(),
            cpu_mb_s: mb / best_cpu,
            gpu_mb_s: mb / best_gpu,
            identical,
        });
    }
    Ok(rows)
}
