//! The device seam: the pipeline hands rows to a `Backend` and never knows which it holds.

use std::sync::Arc;

use rayon::prelude::*;

use crate::gpu::{self, DeviceSpec, GpuContext, GpuOptions, GpuQuantizer};
use crate::pipeline::DeviceChoice;
use crate::quant::{self, GgmlType};

/// Where rows are quantized.
pub enum Backend {
    /// The CPU kernels on a fixed-size thread pool (the thread count never changes bytes: rows
    /// are independent).
    Cpu(CpuBackend),
    /// A GPU that passed its self-check, with the CPU for what it cannot do. Under `strict`
    /// (`--device gpu`), "cannot" is an error instead of a fallback.
    Gpu {
        /// The self-checked GPU quantizers.
        gpu: GpuQuantizer,
        /// The CPU, for the kernels the GPU lacks.
        cpu: CpuBackend,
        /// `--device gpu`/`gpu:N`: a GPU problem is an error, not a fallback.
        strict: bool,
        /// The device, shared with other GPU work of the same job (the LoRA merge).
        ctx: Arc<GpuContext>,
    },
}

/// The CPU kernels on a fixed-size rayon pool.
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    threads: usize,
}

/// Errors of the seam: a kernel missing or refused on the chosen device.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    /// A CPU kernel is missing or refused the row.
    Quant(#[from] quant::QuantError),
    #[error(transparent)]
    /// The GPU kernel failed or is not trusted on this adapter.
    Gpu(#[from] gpu::GpuError),
}

impl CpuBackend {
    /// Run `f` on this backend's thread pool (so `--threads` bounds every parallel step).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// A pool of `threads` workers (0 = one per core; capped by [`crate::threads`]).
    pub fn new(threads: usize) -> CpuBackend {
        let pool = crate::threads::pool(threads).expect("the operating system starts the workers");
        let threads = pool.current_num_threads();
        CpuBackend { pool, threads }
    }

    fn quantize_rows(
        &self,
        ty: GgmlType,
        x: &[f32],
        n_per_row: usize,
        qw_all: Option<&[f32]>,
        expert_of: &(dyn Fn(usize) -> usize + Sync),
        out: &mut [u8],
    ) -> Result<(), quant::QuantError> {
        let q = quant::quantizer(ty).ok_or(quant::QuantError::NotSupported(ty))?;
        if qw_all.is_none() && quant::needs_weights(ty) {
            return Err(quant::QuantError::NeedsWeights(ty));
        }
        let row_out = quant::row_bytes(ty, n_per_row)?;
        self.pool.install(|| {
            // Small rows are batched so a task is worth scheduling.
            let min_rows = (16384 / n_per_row.max(1)).max(1);
            x.par_chunks(n_per_row)
                .zip(out.par_chunks_mut(row_out))
                .enumerate()
                .with_min_len(min_rows)
                .for_each(|(r, (xr, or))| {
                    let qw = qw_all.map(|w| {
                        let e = expert_of(r);
                        &w[e * n_per_row..(e + 1) * n_per_row]
                    });
                    q(xr, qw, or)
                });
        });
        Ok(())
    }
}

impl Backend {
    /// The CPU side of this backend: the whole of it, or the GPU's helper for what the GPU
    /// does not do (dequantizing input, validating output).
    pub fn cpu_side(&self) -> &CpuBackend {
        match self {
            Backend::Cpu(cpu) => cpu,
            Backend::Gpu { cpu, .. } => cpu,
        }
    }

    /// A CPU backend with `threads` workers (0 = all cores).
    pub fn cpu(threads: usize) -> Backend {
        Backend::Cpu(CpuBackend::new(threads))
    }

    /// The backend `--device` asks for, by the one device policy ([`DeviceChoice`]).
    pub fn select(
        spec: DeviceSpec,
        threads: usize,
        verify_fraction: f64,
    ) -> Result<Backend, gpu::GpuError> {
        Ok(Backend::on(
            &DeviceChoice::select(spec)?,
            threads,
            verify_fraction,
        ))
    }

    /// The backend on an already resolved device.
    pub fn on(choice: &DeviceChoice, threads: usize, verify_fraction: f64) -> Backend {
        let cpu = CpuBackend::new(threads);
        match choice.gpu() {
            None => Backend::Cpu(cpu),
            Some(ctx) => {
                let strict = choice.is_strict();
                let ctx = ctx.clone();
                let gpu = GpuQuantizer::new(
                    ctx.clone(),
                    GpuOptions {
                        strict,
                        verify_fraction,
                    },
                );
                Backend::Gpu {
                    gpu,
                    cpu,
                    strict,
                    ctx,
                }
            }
        }
    }

    /// The GPU this backend runs on, if any (for other kernels of the same job).
    pub fn gpu_context(&self) -> Option<Arc<GpuContext>> {
        match self {
            Backend::Cpu(_) => None,
            Backend::Gpu { ctx, .. } => Some(ctx.clone()),
        }
    }

    /// Whether `--device gpu`/`gpu:N` chose this backend (GPU problems are errors).
    pub fn is_strict(&self) -> bool {
        matches!(self, Backend::Gpu { strict: true, .. })
    }

    /// Where rows go, for messages (device and thread count).
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu(c) => format!("cpu ({} threads)", c.threads),
            Backend::Gpu { gpu, .. } => {
                let a = gpu.context().adapter();
                format!("gpu '{}' ({:?}, {})", a.name, a.backend, a.driver)
            }
        }
    }

    /// Quantize rows of `x` into `out`. `qw_all` holds the imatrix of every expert
    /// back to back; `expert_of(row)` says which slice a row uses.
    pub fn quantize_rows(
        &self,
        ty: GgmlType,
        x: &[f32],
        n_per_row: usize,
        qw_all: Option<&[f32]>,
        expert_of: impl Fn(usize) -> usize + Sync,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        match self {
            Backend::Cpu(cpu) => Ok(cpu.quantize_rows(ty, x, n_per_row, qw_all, &expert_of, out)?),
            Backend::Gpu {
                gpu, cpu, strict, ..
            } => {
                let has_imatrix = qw_all.is_some();
                // F32 output is a copy: no kernel needed.
                if ty == GgmlType::F32 {
                    return Ok(cpu.quantize_rows(ty, x, n_per_row, qw_all, &expert_of, out)?);
                }
                if !gpu.supports(ty, has_imatrix) {
                    if *strict {
                        // Says why: no kernel, or a failed self-check.
                        gpu.check(ty, has_imatrix)?;
                    }
                    return Ok(cpu.quantize_rows(ty, x, n_per_row, qw_all, &expert_of, out)?);
                }
                let row_out = quant::row_bytes(ty, n_per_row)?;
                let n_rows = x.len() / n_per_row;
                // One call per run of rows sharing an expert's imatrix slice.
                let mut first = 0;
                while first < n_rows {
                    let e = expert_of(first);
                    let mut last = first + 1;
                    while last < n_rows && expert_of(last) == e {
                        last += 1;
                    }
                    let qw = qw_all.map(|w| &w[e * n_per_row..(e + 1) * n_per_row]);
                    gpu.quantize_rows(
                        ty,
                        &x[first * n_per_row..last * n_per_row],
                        n_per_row,
                        qw,
                        &mut out[first * row_out..last * row_out],
                    )?;
                    first = last;
                }
                Ok(())
            }
        }
    }
}
