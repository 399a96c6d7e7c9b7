//! Adapter enumeration and selection for `--device auto|cpu|gpu|gpu:N`.
//!
//! Only Vulkan, Metal and DX12 are ever used. wgpu falls back to GL when no Vulkan driver is
//! installed; GL's float behaviour (NaN, f16) differs and it is not what the self-check
//! qualifies, so a GL adapter is refused loudly instead of being used quietly.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::dispatch::TransferMode;
use super::pipelines::KernelCache;
use super::GpuError;

/// The backends qforge trusts for exact results.
pub const ALLOWED_BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN
    .union(wgpu::Backends::METAL)
    .union(wgpu::Backends::DX12);

/// What `--device` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A hardware GPU if one is usable, else the CPU (software adapters such as lavapipe are
    /// slower than the CPU path, so `auto` never picks them).
    Auto,
    /// The CPU path only.
    Cpu,
    /// The best usable adapter, software ones included; failure to get one is an error.
    Gpu,
    /// Adapter number N of [`enumerate`] (as printed by `qforge doctor`).
    GpuIndex(usize),
}

impl DeviceSpec {
    /// Whether a GPU problem (no adapter, failed self-check) must be an error rather than a
    /// fallback to the CPU.
    pub fn is_strict(self) -> bool {
        matches!(self, DeviceSpec::Gpu | DeviceSpec::GpuIndex(_))
    }
}

impl FromStr for DeviceSpec {
    type Err = GpuError;

    fn from_str(s: &str) -> Result<Self, GpuError> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "gpu" => Ok(DeviceSpec::Gpu),
            _ => t
                .strip_prefix("gpu:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceSpec::GpuIndex)
                .ok_or_else(|| GpuError::BadDeviceSpec(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Gpu => f.write_str("gpu"),
            DeviceSpec::GpuIndex(n) => write!(f, "gpu:{n}"),
        }
    }
}

/// The limits that matter to our kernels, as the adapter reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLimits {
    /// Largest storage buffer one binding may cover; chunks are sized under it.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer the adapter can create.
    pub max_buffer_size: u64,
    /// Most workgroups per dispatch dimension (wide dispatches fold into a 2-D grid).
    pub max_compute_workgroups_per_dimension: u32,
    /// Most invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Bytes of workgroup memory a kernel may use.
    pub max_compute_workgroup_storage_size: u32,
    /// Alignment of storage-buffer binding offsets.
    pub min_storage_buffer_offset_alignment: u32,
}

impl KeyLimits {
    fn of(l: &wgpu::Limits) -> KeyLimits {
        KeyLimits {
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
        }
    }
}

/// One adapter as seen by enumeration.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// Position in the enumeration: the N of `--device gpu:N`.
    pub index: usize,
    /// The adapter's name (`AdapterInfo::name`).
    pub name: String,
    /// The wgpu backend it runs on.
    pub backend: wgpu::Backend,
    /// The driver name.
    pub driver: String,
    /// The driver's version and details.
    pub driver_info: String,
    /// Discrete, integrated, virtual or CPU.
    pub device_type: wgpu::DeviceType,
    /// The limits that shape our dispatches.
    pub limits: KeyLimits,
}

impl AdapterReport {
    /// Software rasterizers (lavapipe, WARP, SwiftShader) run on the CPU.
    pub fn is_software(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }

    fn preference(&self) -> u8 {
        match self.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        }
    }
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gpu:{} {} [{:?}, {}, driver {} {}] storage binding {} MiB, buffer {} MiB",
            self.index,
            self.name,
            self.device_type,
            self.backend,
            self.driver,
            self.driver_info,
            self.limits.max_storage_buffer_binding_size >> 20,
            self.limits.max_buffer_size >> 20,
        )
    }
}

/// The backends to enumerate: ours, narrowed by `WGPU_BACKEND` when it is set (it can never
/// widen them to GL).
fn backends_to_try() -> Result<wgpu::Backends, GpuError> {
    match wgpu::Backends::from_env() {
        None => Ok(ALLOWED_BACKENDS),
        Some(env) => {
            let b = env & ALLOWED_BACKENDS;
            if b.is_empty() {
                Err(GpuError::NoAdapter(format!(
                    "WGPU_BACKEND={} selects no allowed backend (Vulkan, Metal, DX12; GL is refused)",
                    std::env::var("WGPU_BACKEND").unwrap_or_default()
                )))
            } else {
                Ok(b)
            }
        }
    }
}

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn enumerate_raw() -> Result<Vec<(AdapterReport, wgpu::Adapter)>, GpuError> {
    let backends = backends_to_try()?;
    let instance = new_instance(backends);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    Ok(adapters
        .into_iter()
        .enumerate()
        .map(|(index, a)| {
            let info = a.get_info();
            let report = AdapterReport {
                index,
                name: info.name,
                backend: info.backend,
                driver: info.driver,
                driver_info: info.driver_info,
                device_type: info.device_type,
                limits: KeyLimits::of(&a.limits()),
            };
            (report, a)
        })
        .collect())
}

/// Every adapter wgpu sees on the allowed backends, in `gpu:N` order.
pub fn enumerate() -> Result<Vec<AdapterReport>, GpuError> {
    Ok(enumerate_raw()?.into_iter().map(|(r, _)| r).collect())
}

fn check_backend(r: &AdapterReport) -> Result<(), GpuError> {
    if ALLOWED_BACKENDS.contains(wgpu::Backends::from(r.backend)) {
        Ok(())
    } else {
        Err(GpuError::ForbiddenBackend {
            name: r.name.clone(),
            backend: r.backend.to_string(),
        })
    }
}

fn no_adapter_hint() -> String {
    let icd: String = ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!(" ({k}={v})")))
        .collect();
    format!(
        "no Vulkan, Metal or DX12 adapter found{icd}; install a GPU driver, or Mesa's software \
         Vulkan (scripts/install-lavapipe.sh), or use --device cpu"
    )
}

/// Resolve a device spec. `Ok(None)` means "use the CPU path"; `auto` never fails (a broken
/// GPU stack means the CPU), `gpu` and `gpu:N` fail with a message saying why.
pub fn select(spec: DeviceSpec) -> Result<Option<GpuContext>, GpuError> {
    if spec == DeviceSpec::Cpu {
        return Ok(None);
    }
    let found = match enumerate_raw() {
        Ok(f) => f,
        Err(e) if spec == DeviceSpec::Auto => {
            crate::notice::emit(crate::notice::Notice::CpuFallback {
                reason: format!("GPU unavailable ({e})"),
            });
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let usable: Vec<_> = found
        .into_iter()
        .filter(|(r, _)| check_backend(r).is_ok())
        .collect();
    let chosen = match spec {
        DeviceSpec::Cpu => unreachable!(),
        DeviceSpec::GpuIndex(n) => {
            let count = usable.len();
            if count == 0 {
                return Err(GpuError::NoAdapter(no_adapter_hint()));
            }
            usable
                .into_iter()
                .find(|(r, _)| r.index == n)
                .ok_or(GpuError::AdapterIndex { index: n, count })?
        }
        DeviceSpec::Gpu | DeviceSpec::Auto => {
            let best = usable
                .into_iter()
                .filter(|(r, _)| spec == DeviceSpec::Gpu || !r.is_software())
                .min_by_key(|(r, _)| (r.preference(), r.index));
            match best {
                Some(b) => b,
                None if spec == DeviceSpec::Auto => return Ok(None),
                None => return Err(GpuError::NoAdapter(no_adapter_hint())),
            }
        }
    };
    match GpuContext::open(chosen.0, chosen.1) {
        Ok(ctx) => Ok(Some(ctx)),
        Err(e) if spec == DeviceSpec::Auto => {
            crate::notice::emit(crate::notice::Notice::CpuFallback {
                reason: format!("GPU unavailable ({e})"),
            });
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// An opened device: queue, limits, and the per-kernel pipeline cache.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) adapter: AdapterReport,
    pub(crate) limits: wgpu::Limits,
    pub(crate) kernels: KernelCache,
    pub(crate) transfer: TransferMode,
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    fn open(report: AdapterReport, adapter: wgpu::Adapter) -> Result<GpuContext, GpuError> {
        check_backend(&report)?;
        // Features: WebGPU-baseline, plus mappable storage buffers where memory is shared with
        // the host (see dispatch.rs). Limits: the adapter's own, so big tensors need fewer
        // chunks.
        let limits = adapter.limits();
        let transfer = TransferMode::for_adapter(adapter.features(), report.device_type);
        let desc = wgpu::DeviceDescriptor {
            label: Some("qforge"),
            required_features: transfer.features(),
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            GpuError::RequestDevice {
                name: report.name.clone(),
                reason: e.to_string(),
            }
        })?;
        let kernels = KernelCache::new(&device);
        Ok(GpuContext {
            device,
            queue,
            adapter: report,
            limits,
            kernels,
            transfer,
        })
    }

    /// Which adapter this is.
    pub fn adapter(&self) -> &AdapterReport {
        &self.adapter
    }

    /// Shareable handle (the quantizer and the self-check keep one).
    pub fn into_shared(self) -> Arc<GpuContext> {
        Arc::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_spec_parses_all_forms() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("gpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Gpu);
        assert_eq!(
            "gpu:3".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::GpuIndex(3)
        );
        for bad in ["", "gpu:", "gpu:x", "gpu:-1", "tpu", "gpu3"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(DeviceSpec::GpuIndex(2).to_string(), "gpu:2");
        assert!(DeviceSpec::Gpu.is_strict() && !DeviceSpec::Auto.is_strict());
    }
}
