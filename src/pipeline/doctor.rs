//! `qforge doctor`: which adapters exist, which one a device spec selects, and whether each GPU
//! kernel (every quantizer, the LoRA merge, the forward pass) passes its self-check there.

use std::fmt;
use std::sync::Arc;

use crate::gpu::device::{self, AdapterReport, DeviceSpec};
use crate::gpu::pipelines::{Imatrix, KERNELS};
use crate::gpu::quantize::kernel_label;
use crate::gpu::selfcheck::{check_kernel, KernelHealth};

/// Self-check results of one adapter.
#[derive(Debug)]
pub struct AdapterCheck {
    /// The adapter checked.
    pub adapter: AdapterReport,
    /// (kernel label, result); empty when the device could not be opened.
    pub kernels: Vec<(String, KernelHealth)>,
    /// Why the device could not be opened, if it could not.
    pub open_error: Option<String>,
}

/// Everything `qforge doctor` prints.
#[derive(Debug)]
pub struct DoctorReport {
    /// The `--device` spec the report answers.
    pub spec: DeviceSpec,
    /// Enumeration failure (no loader, WGPU_BACKEND naming only GL, …).
    pub enumerate_error: Option<String>,
    /// Every adapter found, with its kernels' self-check results.
    pub adapters: Vec<AdapterCheck>,
    /// What `spec` resolves to: an adapter index, the CPU, or an error.
    pub selection: Result<Option<usize>, String>,
}

/// Enumerate adapters, self-check every kernel on each, and resolve `spec`.
pub fn doctor(spec: DeviceSpec) -> DoctorReport {
    let (adapters, enumerate_error) = match device::enumerate() {
        Ok(a) => (a, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let mut checks = Vec::new();
    for a in adapters {
        match device::select(DeviceSpec::GpuIndex(a.index)) {
            Ok(Some(ctx)) => {
                let ctx = Arc::new(ctx);
                let mut kernels = Vec::new();
                for def in KERNELS {
                    let modes: &[bool] = match def.imatrix {
                        Imatrix::Ignored => &[false],
                        Imatrix::Used => &[false, true],
                    };
                    for &im in modes {
                        kernels.push((kernel_label(def, im), check_kernel(&ctx, def, im)));
                    }
                }
                let health = |r: Result<(), String>| match r {
                    Ok(()) => KernelHealth::Passed,
                    Err(e) => KernelHealth::Failed(e),
                };
                kernels.push((
                    "lora_merge".into(),
                    health(
                        crate::lora::gpu_merge::GpuLoraMerge::open(ctx.clone())
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                    ),
                ));
                kernels.push((
                    "forward_pass".into(),
                    health(
                        crate::runtime::gpu_forward::GpuLlama::self_check(&ctx)
                            .map_err(|e| format!("{e:#}")),
                    ),
                ));
                checks.push(AdapterCheck {
                    adapter: a,
                    kernels,
                    open_error: None,
                });
            }
            Ok(None) => unreachable!("gpu:N never resolves to the CPU"),
            Err(e) => checks.push(AdapterCheck {
                adapter: a,
                kernels: Vec::new(),
                open_error: Some(e.to_string()),
            }),
        }
    }
    let selection = match device::select(spec) {
        Ok(Some(ctx)) => Ok(Some(ctx.adapter().index)),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    };
    DoctorReport {
        spec,
        enumerate_error,
        adapters: checks,
        selection,
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "GPU adapters (Vulkan, Metal, DX12; GL is never used):")?;
        if let Some(e) = &self.enumerate_error {
            writeln!(f, "  enumeration failed: {e}")?;
        }
        if self.adapters.is_empty() {
            writeln!(f, "  none")?;
        }
        for a in &self.adapters {
            writeln!(f, "  {}", a.adapter)?;
            if let Some(e) = &a.open_error {
                writeln!(f, "    cannot open: {e}")?;
            }
            for (name, h) in &a.kernels {
                let status = match h {
                    KernelHealth::Passed => "ok".to_string(),
                    KernelHealth::Failed(d) => format!("FAILED ({d})"),
                    KernelHealth::Unverifiable(d) => format!("not checked ({d})"),
                };
                writeln!(f, "    {name:<24} {status}")?;
            }
        }
        match &self.selection {
            Ok(Some(i)) => writeln!(f, "--device {} selects gpu:{i}", self.spec),
            Ok(None) => writeln!(f, "--device {} selects the CPU", self.spec),
            Err(e) => writeln!(f, "--device {} fails: {e}", self.spec),
        }
    }
}
