//! [`GpuQuantizer`]: the seam the pipeline calls, mirroring `quant::quantize_rows`.
//!
//! A kernel is used only after it passed its self-check on this adapter (run lazily, once per
//! kernel and imatrix mode). With `verify_fraction > 0` a share of every tensor's rows is
//! re-quantized on the CPU and compared byte for byte; a mismatch is an error, never a silent
//! fix-up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::pipelines::{kernel_for, Imatrix, KernelDef};
use super::selfcheck::{self, KernelHealth};
use super::{GpuContext, GpuError};
use crate::quant::{self, GgmlType};

/// How the quantizer treats doubts.
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// `--device gpu` / `gpu:N`: a kernel failing its self-check is an error. Otherwise
    /// (`auto`) it is a warning and `supports` answers false, so the caller uses the CPU.
    pub strict: bool,
    /// Share of rows (0.0..=1.0) of every call re-quantized on the CPU and compared.
    pub verify_fraction: f64,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            strict: false,
            verify_fraction: 0.0,
        }
    }
}

/// Quantizes on one GPU, exactly as the CPU does.
pub struct GpuQuantizer {
    ctx: Arc<GpuContext>,
    opts: GpuOptions,
    health: Mutex<HashMap<(&'static str, bool), KernelHealth>>,
    /// Types without a kernel already reported (one notice per type, not per tensor).
    no_kernel: Mutex<HashSet<GgmlType>>,
}

/// Key of a self-check result: a kernel, and whether the imatrix code path runs.
fn health_key(def: &'static KernelDef, has_imatrix: bool) -> (&'static str, bool) {
    (def.name, has_imatrix && def.imatrix == Imatrix::Used)
}

impl GpuQuantizer {
    /// A quantizer on `ctx` with `opts`; each kernel is self-checked on its first use.
    pub fn new(ctx: Arc<GpuContext>, opts: GpuOptions) -> GpuQuantizer {
        GpuQuantizer {
            ctx,
            opts,
            health: Mutex::default(),
            no_kernel: Mutex::default(),
        }
    }

    /// The device this quantizer runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The options it was made with.
    pub fn options(&self) -> GpuOptions {
        self.opts
    }

    /// Whether a GPU kernel exists for `ty` (regardless of any adapter).
    pub fn has_kernel(ty: GgmlType, _has_imatrix: bool) -> bool {
        kernel_for(ty).is_some()
    }

    /// Whether this GPU will quantize `ty`: a kernel exists and passed its self-check here.
    /// Under `strict`, a failed self-check still answers false; `quantize_rows` then says why.
    /// Without `strict`, a type with no kernel is reported once ([`crate::notice::Notice::NoGpuKernel`]).
    pub fn supports(&self, ty: GgmlType, has_imatrix: bool) -> bool {
        match kernel_for(ty) {
            Some(def) => self.health(def, has_imatrix).is_ok(),
            None => {
                if !self.opts.strict && self.no_kernel.lock().unwrap().insert(ty) {
                    crate::notice::emit(crate::notice::Notice::NoGpuKernel { ty: ty.to_string() });
                }
                false
            }
        }
    }

    /// The self-check result of `ty`'s kernel (running the check if it has not run yet).
    pub fn check(&self, ty: GgmlType, has_imatrix: bool) -> Result<(), GpuError> {
        let def = kernel_for(ty).ok_or(GpuError::NotSupported {
            ty,
            imatrix: has_imatrix,
        })?;
        self.health(def, has_imatrix)
            .map_err(|detail| GpuError::SelfCheckFailed {
                kernel: kernel_label(def, has_imatrix),
                adapter: self.ctx.adapter().name.clone(),
                detail,
            })
    }

    fn health(&self, def: &'static KernelDef, has_imatrix: bool) -> Result<(), String> {
        let key = health_key(def, has_imatrix);
        if let Some(h) = self.health.lock().unwrap().get(&key) {
            return h.as_result();
        }
        let h = selfcheck::check_kernel(&self.ctx, def, key.1);
        if let Err(detail) = h.as_result() {
            if !self.opts.strict {
                crate::notice::emit(crate::notice::Notice::KernelDisabled {
                    kernel: format!("kernel {}", kernel_label(def, has_imatrix)),
                    adapter: self.ctx.adapter().name.clone(),
                    detail: detail.clone(),
                });
            }
        }
        let r = h.as_result();
        self.health.lock().unwrap().insert(key, h);
        r
    }

    /// Quantize `x` (rows of `n_per_row`) into `out`: the bytes `quant::quantize_rows` writes.
    pub fn quantize_rows(
        &self,
        ty: GgmlType,
        x: &[f32],
        n_per_row: usize,
        qw: Option<&[f32]>,
        out: &mut [u8],
    ) -> Result<(), GpuError> {
        self.check(ty, qw.is_some())?;
        self.quantize_rows_unchecked(ty, x, n_per_row, qw, out)?;
        if self.opts.verify_fraction > 0.0 {
            self.verify(ty, x, n_per_row, qw, out)?;
        }
        Ok(())
    }

    /// `quantize_rows` without the self-check gate or verification: for the self-check itself
    /// and for tests that compare kernels with golden files directly.
    #[doc(hidden)]
    pub fn quantize_rows_unchecked(
        &self,
        ty: GgmlType,
        x: &[f32],
        n_per_row: usize,
        qw: Option<&[f32]>,
        out: &mut [u8],
    ) -> Result<(), GpuError> {
        let def = kernel_for(ty).ok_or(GpuError::NotSupported {
            ty,
            imatrix: qw.is_some(),
        })?;
        run_checked_geometry(&self.ctx, def, ty, x, n_per_row, qw, out)
    }

    /// Re-quantize an evenly spread share of the rows on the CPU and compare.
    fn verify(
        &self,
        ty: GgmlType,
        x: &[f32],
        n_per_row: usize,
        qw: Option<&[f32]>,
        out: &[u8],
    ) -> Result<(), GpuError> {
        let n_rows = x.len() / n_per_row.max(1);
        if n_rows == 0 {
            return Ok(());
        }
        let row_bytes = quant::row_bytes(ty, n_per_row)?;
        let fraction = self.opts.verify_fraction.clamp(0.0, 1.0);
        let n_check = ((n_rows as f64 * fraction).ceil() as usize).clamp(1, n_rows);
        let mut cpu = vec![0u8; row_bytes];
        for i in 0..n_check {
            let row = i * n_rows / n_check;
            let xr = &x[row * n_per_row..(row + 1) * n_per_row];
            selfcheck::cpu_reference(ty, xr, n_per_row, qw, &mut cpu).map_err(|e| {
                GpuError::Execution(format!("verify_fraction: CPU reference for {ty}: {e}"))
            })?;
            let gpu = &out[row * row_bytes..(row + 1) * row_bytes];
            if let Some(byte) = gpu.iter().zip(&cpu).position(|(a, b)| a != b) {
                return Err(GpuError::VerifyMismatch { ty, row, byte });
            }
        }
        Ok(())
    }
}

/// The geometry checks of `quant::quantize_rows`, then the kernel.
pub(crate) fn run_checked_geometry(
    ctx: &GpuContext,
    def: &'static KernelDef,
    ty: GgmlType,
    x: &[f32],
    n_per_row: usize,
    qw: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), GpuError> {
    let row_bytes = quant::row_bytes(ty, n_per_row)?;
    let n_rows = x.len() / n_per_row.max(1);
    if out.len() != n_rows * row_bytes || x.len() != n_rows * n_per_row {
        return Err(quant::QuantError::BadOutputSize {
            got: out.len(),
            expected: n_rows * row_bytes,
        }
        .into());
    }
    ctx.run_kernel(def, x, n_per_row, qw, out)
}

/// "quantize_q4_0" or "quantize_q4_0+imatrix" (only for kernels where that changes the code).
pub fn kernel_label(def: &KernelDef, has_imatrix: bool) -> String {
    if has_imatrix && def.imatrix == Imatrix::Used {
        format!("{}+imatrix", def.name)
    } else {
        def.name.to_string()
    }
}
