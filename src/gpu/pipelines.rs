//! WGSL sources, compute pipelines (built once per kernel and cached) and the chunked dispatch of
//! a tensor.
//!
//! Every kernel shares one bind group layout (see `shaders/io.wgsl`):
//! 0 uniform `Params`, 1 `src` f32 input (read as vec4), 2 `qw` importance weights (one per
//! column), 3 `row_stats` (σ² of each row, from the `row_sigma2` pre-pass; or a family's lookup
//! tables, [`Family::tables`]), 4 `dst` u32 output.
//!
//! Running a kernel over a tensor (chunks, transfers) is in [`super::dispatch`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::device::GpuContext;
use super::dispatch::{HostTimes, Slot, CHUNK_CAP_BYTES};
use super::GpuError;
use crate::quant::GgmlType;

/// The WGSL files a kernel's module is assembled from (WGSL has no includes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Test kernel running every exact.wgsl helper.
    Probe,
    /// F32, F16 and BF16 (float.wgsl).
    Float,
    /// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (legacy.wgsl, with search.wgsl).
    Legacy,
    /// TQ1_0 and TQ2_0 (ternary.wgsl).
    Ternary,
    /// Q2_K to Q6_K (kquants.wgsl, with search.wgsl).
    KQuants,
    /// IQ4_NL, IQ4_XS and MXFP4 (iq4.wgsl, with search.wgsl).
    Iq4,
    /// Q1_0 and Q2_0 (q1_q2.wgsl).
    Q1Q2,
    /// IQ3_XXS and IQ3_S (iq3.wgsl; codebook tables at binding 3, see [`super::tables`]).
    Iq3,
}

impl Family {
    fn sources(self) -> &'static [&'static str] {
        const IO: &str = include_str!("../../shaders/io.wgsl");
        const EXACT: &str = include_str!("../../shaders/exact.wgsl");
        const SEARCH: &str = include_str!("../../shaders/search.wgsl");
        match self {
            Family::Probe => &[IO, EXACT, include_str!("../../shaders/exact_probe.wgsl")],
            Family::Float => &[IO, EXACT, include_str!("../../shaders/float.wgsl")],
            Family::Legacy => &[IO, EXACT, SEARCH, include_str!("../../shaders/legacy.wgsl")],
            Family::Ternary => &[IO, EXACT, include_str!("../../shaders/ternary.wgsl")],
            Family::KQuants => &[
                IO,
                EXACT,
                SEARCH,
                include_str!("../../shaders/kquants.wgsl"),
            ],
            Family::Iq4 => &[IO, EXACT, SEARCH, include_str!("../../shaders/iq4.wgsl")],
            Family::Q1Q2 => &[IO, EXACT, include_str!("../../shaders/q1_q2.wgsl")],
            Family::Iq3 => &[IO, EXACT, include_str!("../../shaders/iq3.wgsl")],
        }
    }

    /// (words of the largest unit, elements of the largest working block).
    fn sizes(self) -> (u32, u32) {
        match self {
            Family::Probe => (1, 1),
            Family::Float => (4, 1),
            Family::Legacy => (17, 32),
            Family::Ternary => (33, 1),
            // Q6_K's two 210-byte blocks; searches run one (≤ 32-element) sub-block at a time.
            Family::KQuants => (105, 32),
            Family::Iq4 => (34, 32),
            Family::Q1Q2 => (9, 1),
            // Two 110-byte IQ3_S blocks.
            Family::Iq3 => (55, 32),
        }
    }

    /// Whether the imatrix path reads a per-row σ² (the `row_sigma2` pre-pass). The K-quants
    /// and IQ4 types compute their σ² per super-block inside the kernel.
    pub(crate) fn needs_row_sigma2(self) -> bool {
        self == Family::Legacy
    }

    /// The lookup tables the family reads at binding 3 instead of row σ² (u32 words), if any.
    pub(crate) fn tables(self) -> Option<&'static [u32]> {
        match self {
            Family::Iq3 => Some(&super::tables::Iq3Tables::get().words),
            _ => None,
        }
    }

    fn source(self, faulty: bool) -> String {
        let (ob_words, work_elems) = self.sizes();
        // Binding 3 holds f32 row σ², or a family's u32 tables (with their offsets).
        let (binding3, table_consts) = match self {
            Family::Iq3 => ("u32", super::tables::Iq3Tables::get().wgsl.as_str()),
            _ => ("f32", ""),
        };
        let mut s = format!(
            "const FAULT_INJECT: bool = {faulty};\nconst OB_MAX_WORDS: u32 = {ob_words}u;\n\
             const WORK_ELEMS: u32 = {work_elems}u;\nalias Binding3 = {binding3};\n{table_consts}"
        );
        for part in self.sources() {
            s.push_str(part);
            s.push('\n');
        }
        s
    }
}

/// What a kernel does with an importance matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imatrix {
    /// The CPU reference ignores it (Q8_0, F16, BF16): one code path.
    Ignored,
    /// A different algorithm runs with one (needs the σ² pre-pass).
    Used,
}

/// One compute kernel: an entry point and the geometry of what it writes.
#[derive(Debug)]
pub struct KernelDef {
    /// Entry point name; also the kernel's name in reports.
    pub name: &'static str,
    /// Entry point of the imatrix path (`Imatrix::Used`; else `name`). Separate entry points
    /// keep each pipeline to one path: lavapipe executes both sides of even a uniform branch.
    pub imatrix_entry: &'static str,
    /// The WGSL files the kernel's module is assembled from.
    pub family: Family,
    /// The ggml type it writes; `None` for test kernels.
    pub ty: Option<GgmlType>,
    /// What it does with an importance matrix.
    pub imatrix: Imatrix,
    /// Elements of one block (1 for plain float types).
    pub block_elems: usize,
    /// Bytes of one block.
    pub block_bytes: usize,
    /// Blocks per unit: the smallest count whose bytes are a multiple of 4, unless the kernel
    /// asks for more (`unit_of`: the float kernels' 16-byte units).
    pub unit_blocks: usize,
    /// Units one invocation quantizes (without / with an imatrix). Cheap kernels batch many:
    /// per-invocation overhead dominates them on lavapipe. Kept small where a unit already
    /// runs thousands of loop iterations: lavapipe silently ends the loops of an invocation
    /// after 65535 iterations in total (see shaders/exact.wgsl).
    pub batch: [u32; 2],
}

impl KernelDef {
    /// The entry point of the imatrix path.
    const fn imatrix_entry(mut self, entry: &'static str) -> KernelDef {
        self.imatrix_entry = entry;
        self
    }

    /// The entry point to run, with or without importance weights.
    pub fn entry(&self, imatrix: bool) -> &'static str {
        if imatrix && self.imatrix == Imatrix::Used {
            self.imatrix_entry
        } else {
            self.name
        }
    }

    /// Blocks per unit, where a kernel reads more than the smallest whole-word count at once.
    const fn unit_of(mut self, blocks: usize) -> KernelDef {
        self.unit_blocks = blocks;
        self
    }

    /// `batch` for both modes.
    const fn batched(mut self, plain: u32, imatrix: u32) -> KernelDef {
        self.batch = [plain, imatrix];
        self
    }
}

const fn quant(
    name: &'static str,
    family: Family,
    ty: GgmlType,
    imatrix: Imatrix,
    block_elems: usize,
    block_bytes: usize,
) -> KernelDef {
    let unit_blocks = if block_bytes.is_multiple_of(4) {
        1
    } else if block_bytes.is_multiple_of(2) {
        2
    } else {
        4
    };
    KernelDef {
        name,
        imatrix_entry: name,
        family,
        ty: Some(ty),
        imatrix,
        block_elems,
        block_bytes,
        unit_blocks,
        batch: [1, 1],
    }
}

/// Every quantization kernel, in report order.
pub static KERNELS: &[KernelDef] = &[
    quant(
        "quantize_row_f32",
        Family::Float,
        GgmlType::F32,
        Imatrix::Ignored,
        1,
        4,
    )
    .unit_of(4)
    .batched(4, 4),
    quant(
        "quantize_row_f16",
        Family::Float,
        GgmlType::F16,
        Imatrix::Ignored,
        1,
        2,
    )
    .unit_of(8)
    .batched(4, 4),
    quant(
        "quantize_row_bf16",
        Family::Float,
        GgmlType::BF16,
        Imatrix::Ignored,
        1,
        2,
    )
    .unit_of(8)
    .batched(4, 4),
    quant(
        "quantize_q8_0",
        Family::Legacy,
        GgmlType::Q8_0,
        Imatrix::Ignored,
        32,
        34,
    )
    .batched(8, 8),
    quant(
        "quantize_q4_0",
        Family::Legacy,
        GgmlType::Q4_0,
        Imatrix::Used,
        32,
        18,
    )
    .batched(8, 1)
    .imatrix_entry("quantize_q4_0_imatrix"),
    quant(
        "quantize_q4_1",
        Family::Legacy,
        GgmlType::Q4_1,
        Imatrix::Used,
        32,
        20,
    )
    .batched(8, 1)
    .imatrix_entry("quantize_q4_1_imatrix"),
    quant(
        "quantize_q5_0",
        Family::Legacy,
        GgmlType::Q5_0,
        Imatrix::Used,
        32,
        22,
    )
    .batched(8, 1)
    .imatrix_entry("quantize_q5_0_imatrix"),
    quant(
        "quantize_q5_1",
        Family::Legacy,
        GgmlType::Q5_1,
        Imatrix::Used,
        32,
        24,
    )
    .batched(8, 1)
    .imatrix_entry("quantize_q5_1_imatrix"),
    quant(
        "quantize_q2_k",
        Family::KQuants,
        GgmlType::Q2_K,
        Imatrix::Used,
        256,
        84,
    )
    .imatrix_entry("quantize_q2_k_imatrix"),
    quant(
        "quantize_q3_k",
        Family::KQuants,
        GgmlType::Q3_K,
        Imatrix::Used,
        256,
        110,
    )
    .imatrix_entry("quantize_q3_k_imatrix"),
    quant(
        "quantize_q4_k",
        Family::KQuants,
        GgmlType::Q4_K,
        Imatrix::Used,
        256,
        144,
    )
    .imatrix_entry("quantize_q4_k_imatrix"),
    quant(
        "quantize_q5_k",
        Family::KQuants,
        GgmlType::Q5_K,
        Imatrix::Used,
        256,
        176,
    )
    .imatrix_entry("quantize_q5_k_imatrix"),
    quant(
        "quantize_q6_k",
        Family::KQuants,
        GgmlType::Q6_K,
        Imatrix::Used,
        256,
        210,
    )
    .imatrix_entry("quantize_q6_k_imatrix"),
    quant(
        "quantize_iq4_nl",
        Family::Iq4,
        GgmlType::IQ4_NL,
        Imatrix::Used,
        32,
        18,
    )
    .imatrix_entry("quantize_iq4_nl_imatrix"),
    quant(
        "quantize_iq4_xs",
        Family::Iq4,
        GgmlType::IQ4_XS,
        Imatrix::Used,
        256,
        136,
    )
    .imatrix_entry("quantize_iq4_xs_imatrix"),
    quant(
        "quantize_iq3_xxs",
        Family::Iq3,
        GgmlType::IQ3_XXS,
        Imatrix::Used,
        256,
        98,
    )
    .imatrix_entry("quantize_iq3_xxs_imatrix"),
    quant(
        "quantize_iq3_s",
        Family::Iq3,
        GgmlType::IQ3_S,
        Imatrix::Used,
        256,
        110,
    )
    .imatrix_entry("quantize_iq3_s_imatrix"),
    quant(
        "quantize_tq1_0",
        Family::Ternary,
        GgmlType::TQ1_0,
        Imatrix::Ignored,
        256,
        54,
    )
    .batched(4, 4),
    quant(
        "quantize_tq2_0",
        Family::Ternary,
        GgmlType::TQ2_0,
        Imatrix::Ignored,
        256,
        66,
    )
    .batched(4, 4),
    quant(
        "quantize_mxfp4",
        Family::Iq4,
        GgmlType::MXFP4,
        Imatrix::Ignored,
        32,
        17,
    )
    .batched(4, 4),
    quant(
        "quantize_q1_0",
        Family::Q1Q2,
        GgmlType::Q1_0,
        Imatrix::Ignored,
        128,
        18,
    )
    .batched(4, 4),
    quant(
        "quantize_q2_0",
        Family::Q1Q2,
        GgmlType::Q2_0,
        Imatrix::Ignored,
        64,
        18,
    )
    .batched(4, 4),
];

/// The exact.wgsl probe: a "block" is one (a, b) pair, answered by `PROBE_WORDS` words.
pub(crate) static PROBE_KERNEL: KernelDef = KernelDef {
    name: "probe_exact",
    imatrix_entry: "probe_exact",
    family: Family::Probe,
    ty: None,
    imatrix: Imatrix::Ignored,
    block_elems: 2,
    block_bytes: PROBE_WORDS * 4,
    unit_blocks: 1,
    batch: [1, 1],
};

/// Words the probe writes per (a, b) pair.
pub const PROBE_WORDS: usize = 13;

pub(crate) static ROW_SIGMA2: KernelDef = KernelDef {
    name: "row_sigma2",
    imatrix_entry: "row_sigma2",
    family: Family::Legacy,
    ty: None,
    imatrix: Imatrix::Ignored,
    block_elems: 1,
    block_bytes: 4,
    unit_blocks: 1,
    batch: [1, 1],
};

/// The kernel for `ty`, if the GPU has one.
pub fn kernel_for(ty: GgmlType) -> Option<&'static KernelDef> {
    KERNELS.iter().find(|k| k.ty == Some(ty))
}

/// Pipelines, modules and reusable buffers of one device.
pub(crate) struct KernelCache {
    pub(crate) bind_layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<(Family, bool), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(&'static str, bool), wgpu::ComputePipeline>>,
    /// Kernels to build with FAULT_INJECT (the self-check's negative test).
    faulty: Mutex<HashSet<&'static str>>,
    /// Two slots, taken for the duration of a run (runs on one device are serialised).
    pub(crate) slots: Mutex<Vec<Slot>>,
    /// Each family's lookup tables ([`Family::tables`]), uploaded once.
    pub(crate) tables: Mutex<HashMap<Family, wgpu::Buffer>>,
    /// A 16-byte stand-in bound where a kernel declares a buffer it will not read.
    pub(crate) dummy: wgpu::Buffer,
    /// Upper bound of a chunk's input bytes (CHUNK_CAP_BYTES unless a test lowers it).
    pub(crate) chunk_cap: AtomicU64,
    /// Validation or device errors reported by wgpu, drained after each operation.
    errors: Arc<Mutex<Vec<String>>>,
    /// Where the host's time went in kernel runs since the last `take_host_times`.
    pub(crate) host_times: Mutex<HostTimes>,
}

impl KernelCache {
    pub(crate) fn new(device: &wgpu::Device) -> KernelCache {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let ro = wgpu::BufferBindingType::Storage { read_only: true };
        let rw = wgpu::BufferBindingType::Storage { read_only: false };
        let uniform = wgpu::BufferBindingType::Uniform;
        let (bind_layout, pipeline_layout) =
            buffer_layouts(device, "qforge kernels", &[uniform, ro, ro, ro, rw]);
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qforge dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        KernelCache {
            bind_layout,
            pipeline_layout,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            faulty: Mutex::default(),
            slots: Mutex::default(),
            tables: Mutex::default(),
            dummy,
            chunk_cap: AtomicU64::new(CHUNK_CAP_BYTES),
            errors,
            host_times: Mutex::default(),
        }
    }

    pub(crate) fn take_errors(&self) -> Result<(), GpuError> {
        let mut errs = self.errors.lock().unwrap();
        if errs.is_empty() {
            Ok(())
        } else {
            let msg = errs.join("; ");
            errs.clear();
            Err(GpuError::Execution(msg))
        }
    }
}

/// What wgpu may leave out of the quantize kernels: the index clamps it injects around every
/// array access and the counter it adds to every loop. Together they stop the driver's compiler
/// from unrolling the fixed-length block loops and keeping the small working arrays in
/// registers; on lavapipe the K-quant kernels ran 2.4× slower with them (Q4_K 27 → 66 MB/s),
/// for pipeline builds that now take ~10 s instead of ~3 s there (cached on disk by Mesa).
///
/// Why it is sound for these shaders: every loop ends by construction (a constant or uniform
/// bound, or IQ4's bisection, which halves its range); private arrays are indexed by loop
/// counters below their constant lengths or by values clamped to them (bisection results,
/// byte positions inside the unit); `src`/`qw`/`dst` indices stay inside the buffers the host sizes in
/// `dispatch` (whole units, the last one padded), which the GPU-vs-CPU tests exercise at every
/// chunk edge. Storage accesses stay protected where the platform does it itself (Vulkan's
/// robustBufferAccess). Integer division checks are kept (they cost nothing measurable).
const QUANTIZE_RUNTIME_CHECKS: wgpu::ShaderRuntimeChecks = {
    let mut c = wgpu::ShaderRuntimeChecks::checked();
    c.bounds_checks = false;
    c.force_loop_bounding = false;
    c
};

impl GpuContext {
    /// Build (or fetch from the cache) the pipeline of `def`.
    pub(crate) fn pipeline(
        &self,
        def: &'static KernelDef,
        imatrix: bool,
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let cache = &self.kernels;
        let entry = def.entry(imatrix);
        let faulty = cache.faulty.lock().unwrap().contains(def.name);
        if let Some(p) = cache.pipelines.lock().unwrap().get(&(entry, faulty)) {
            return Ok(p.clone());
        }
        // An error scope (per thread) catches shader compile and pipeline errors with their
        // full message, so they become a GpuError instead of a panic.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = cache.modules.lock().unwrap();
            modules
                .entry((def.family, faulty))
                .or_insert_with(|| {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(def.name),
                        source: wgpu::ShaderSource::Wgsl(def.family.source(faulty).into()),
                    };
                    // SAFETY: see `QUANTIZE_RUNTIME_CHECKS`.
                    unsafe {
                        self.device
                            .create_shader_module_trusted(desc, QUANTIZE_RUNTIME_CHECKS)
                    }
                })
                .clone()
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&cache.pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            // Drop a broken module so a later attempt does not reuse it.
            cache.modules.lock().unwrap().remove(&(def.family, faulty));
            return Err(GpuError::Execution(format!("building kernel {entry}: {e}")));
        }
        cache
            .pipelines
            .lock()
            .unwrap()
            .insert((entry, faulty), pipeline.clone());
        Ok(pipeline)
    }

    /// Test hook: from now on build `kernel` with a deliberate one-bit error in its output (or
    /// without it again), so tests can prove the self-check notices a wrong kernel.
    #[doc(hidden)]
    pub fn set_fault_injection(&self, kernel: &'static str, on: bool) {
        let mut f = self.kernels.faulty.lock().unwrap();
        if on {
            f.insert(kernel);
        } else {
            f.remove(kernel);
        }
    }

    /// Run the exact.wgsl probe on (a, b) pairs: `PROBE_WORDS` result words per pair (see
    /// `shaders/exact_probe.wgsl`). For tests of the rounding helpers.
    #[doc(hidden)]
    pub fn probe_exact(&self, pairs: &[(f32, f32)]) -> Result<Vec<[u32; PROBE_WORDS]>, GpuError> {
        let x: Vec<f32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        let mut out = vec![0u8; pairs.len() * PROBE_WORDS * 4];
        self.run_kernel(&PROBE_KERNEL, &x, 2, None, &mut out)?;
        Ok(out
            .chunks_exact(PROBE_WORDS * 4)
            .map(|c| {
                let mut w = [0u32; PROBE_WORDS];
                for (i, v) in w.iter_mut().enumerate() {
                    *v = u32::from_le_bytes(c[4 * i..4 * i + 4].try_into().unwrap());
                }
                w
            })
            .collect())
    }
}

/// A bind-group layout of storage/uniform buffers at bindings 0.. (in `bindings` order), visible
/// to compute, and a pipeline layout holding just it: the shape every qforge kernel binds.
pub(crate) fn buffer_layouts(
    device: &wgpu::Device,
    label: &str,
    bindings: &[wgpu::BufferBindingType],
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .enumerate()
        .map(|(i, &ty)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let bind = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    });
    let pipeline = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&bind)],
        immediate_size: 0,
    });
    (bind, pipeline)
}
