//! WGSL sources, compute pipelines (built once per kernel and cached) and the chunked dispatch of
//! a tensor.
//!
//! Every kernel shares one bind group layout (see `shaders/io.wgsl`):
//! 0 uniform `Params`, 1 `src` f32 input, 2 `qw` importance weights (one per column),
//! 3 `row_stats` (σ² of each row, from the `row_sigma2` pre-pass), 4 `dst` u32 output.
//!
//! A tensor is processed in chunks of whole rows whose input and output each fit the adapter's
//! `max_storage_buffer_binding_size` (128 MiB on lavapipe; capped lower so uploads overlap with
//! compute). Each chunk is bound at offset 0 of its own buffer, so binding offsets are always
//! aligned. Two sets of buffers alternate: while the GPU runs chunk k, chunk k+1 is uploaded and
//! chunk k-1 read back. Each chunk is one submission (σ² pass, kernel pass, copy to read-back).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use wgpu::util::DeviceExt;

use super::device::GpuContext;
use super::GpuError;
use crate::quant::GgmlType;

/// The WGSL files a kernel's module is assembled from (WGSL has no includes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Test kernel running every exact.wgsl helper.
    Probe,
    Float,
    Legacy,
    Ternary,
    KQuants,
    Iq4,
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
        }
    }

    /// (words of the largest unit, elements of the largest working block).
    fn sizes(self) -> (u32, u32) {
        match self {
            Family::Probe | Family::Float => (1, 1),
            Family::Legacy => (17, 32),
            Family::Ternary => (33, 1),
            // Q6_K's two 210-byte blocks; searches run one (≤ 32-element) sub-block at a time.
            Family::KQuants => (105, 32),
            Family::Iq4 => (34, 32),
        }
    }

    /// Whether the imatrix path reads a per-row σ² (the `row_sigma2` pre-pass). The K-quants
    /// and IQ4 types compute their σ² per super-block inside the kernel.
    fn needs_row_sigma2(self) -> bool {
        self == Family::Legacy
    }

    fn source(self, faulty: bool) -> String {
        let (ob_words, work_elems) = self.sizes();
        let mut s = format!(
            "const FAULT_INJECT: bool = {faulty};\nconst OB_MAX_WORDS: u32 = {ob_words}u;\n\
             const WORK_ELEMS: u32 = {work_elems}u;\n"
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
    pub family: Family,
    pub ty: Option<GgmlType>,
    pub imatrix: Imatrix,
    /// Elements of one block (1 for plain float types).
    pub block_elems: usize,
    /// Bytes of one block.
    pub block_bytes: usize,
    /// Blocks per invocation: the smallest count whose bytes are a multiple of 4.
    pub unit_blocks: usize,
}

const fn quant(
    name: &'static str,
    family: Family,
    ty: GgmlType,
    imatrix: Imatrix,
    block_elems: usize,
    block_bytes: usize,
) -> KernelDef {
    let unit_blocks = if block_bytes % 4 == 0 {
        1
    } else if block_bytes % 2 == 0 {
        2
    } else {
        4
    };
    KernelDef {
        name,
        family,
        ty: Some(ty),
        imatrix,
        block_elems,
        block_bytes,
        unit_blocks,
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
    ),
    quant(
        "quantize_row_f16",
        Family::Float,
        GgmlType::F16,
        Imatrix::Ignored,
        1,
        2,
    ),
    quant(
        "quantize_row_bf16",
        Family::Float,
        GgmlType::BF16,
        Imatrix::Ignored,
        1,
        2,
    ),
    quant(
        "quantize_q8_0",
        Family::Legacy,
        GgmlType::Q8_0,
        Imatrix::Ignored,
        32,
        34,
    ),
    quant(
        "quantize_q4_0",
        Family::Legacy,
        GgmlType::Q4_0,
        Imatrix::Used,
        32,
        18,
    ),
    quant(
        "quantize_q4_1",
        Family::Legacy,
        GgmlType::Q4_1,
        Imatrix::Used,
        32,
        20,
    ),
    quant(
        "quantize_q5_0",
        Family::Legacy,
        GgmlType::Q5_0,
        Imatrix::Used,
        32,
        22,
    ),
    quant(
        "quantize_q5_1",
        Family::Legacy,
        GgmlType::Q5_1,
        Imatrix::Used,
        32,
        24,
    ),
    quant(
        "quantize_q2_k",
        Family::KQuants,
        GgmlType::Q2_K,
        Imatrix::Used,
        256,
        84,
    ),
    quant(
        "quantize_q3_k",
        Family::KQuants,
        GgmlType::Q3_K,
        Imatrix::Used,
        256,
        110,
    ),
    quant(
        "quantize_q4_k",
        Family::KQuants,
        GgmlType::Q4_K,
        Imatrix::Used,
        256,
        144,
    ),
    quant(
        "quantize_q5_k",
        Family::KQuants,
        GgmlType::Q5_K,
        Imatrix::Used,
        256,
        176,
    ),
    quant(
        "quantize_q6_k",
        Family::KQuants,
        GgmlType::Q6_K,
        Imatrix::Used,
        256,
        210,
    ),
    quant(
        "quantize_iq4_nl",
        Family::Iq4,
        GgmlType::IQ4_NL,
        Imatrix::Used,
        32,
        18,
    ),
    quant(
        "quantize_iq4_xs",
        Family::Iq4,
        GgmlType::IQ4_XS,
        Imatrix::Used,
        256,
        136,
    ),
    quant(
        "quantize_tq1_0",
        Family::Ternary,
        GgmlType::TQ1_0,
        Imatrix::Ignored,
        256,
        54,
    ),
    quant(
        "quantize_tq2_0",
        Family::Ternary,
        GgmlType::TQ2_0,
        Imatrix::Ignored,
        256,
        66,
    ),
];

/// The exact.wgsl probe: a "block" is one (a, b) pair, answered by `PROBE_WORDS` words.
pub(crate) static PROBE_KERNEL: KernelDef = KernelDef {
    name: "probe_exact",
    family: Family::Probe,
    ty: None,
    imatrix: Imatrix::Ignored,
    block_elems: 2,
    block_bytes: PROBE_WORDS * 4,
    unit_blocks: 1,
};

/// Words the probe writes per (a, b) pair.
pub const PROBE_WORDS: usize = 13;

static ROW_SIGMA2: KernelDef = KernelDef {
    name: "row_sigma2",
    family: Family::Legacy,
    ty: None,
    imatrix: Imatrix::Ignored,
    block_elems: 1,
    block_bytes: 4,
    unit_blocks: 1,
};

/// The kernel for `ty`, if the GPU has one.
pub fn kernel_for(ty: GgmlType) -> Option<&'static KernelDef> {
    KERNELS.iter().find(|k| k.ty == Some(ty))
}

/// Input chunks stay below this even when the adapter allows more: smaller chunks let uploads,
/// compute and read-back of neighbouring chunks overlap.
const CHUNK_CAP_BYTES: u64 = 64 << 20;
const WORKGROUP_SIZE: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_units: u32,
    blocks_per_row: u32,
    n_per_row: u32,
    has_qw: u32,
    zero: u32,
    dispatch_width: u32,
    n_rows: u32,
    pad0: u32,
}

/// Buffers for one in-flight chunk, reused across chunks and calls.
struct Slot {
    input: wgpu::Buffer,
    output: wgpu::Buffer,
    readback: wgpu::Buffer,
    stats: wgpu::Buffer,
    params_main: wgpu::Buffer,
    params_stats: wgpu::Buffer,
    in_cap: u64,
    out_cap: u64,
    stats_cap: u64,
}

impl Slot {
    fn new(device: &wgpu::Device, in_cap: u64, out_cap: u64, stats_cap: u64) -> Slot {
        let buf = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        Slot {
            input: buf("qforge input", in_cap, U::STORAGE | U::COPY_DST),
            output: buf("qforge output", out_cap, U::STORAGE | U::COPY_SRC),
            readback: buf("qforge readback", out_cap, U::MAP_READ | U::COPY_DST),
            stats: buf("qforge row stats", stats_cap, U::STORAGE),
            params_main: buf("qforge params", 32, U::UNIFORM | U::COPY_DST),
            params_stats: buf("qforge params σ²", 32, U::UNIFORM | U::COPY_DST),
            in_cap,
            out_cap,
            stats_cap,
        }
    }

    fn fits(&self, in_bytes: u64, out_bytes: u64, stats_bytes: u64) -> bool {
        self.in_cap >= in_bytes && self.out_cap >= out_bytes && self.stats_cap >= stats_bytes
    }
}

/// Pipelines, modules and reusable buffers of one device.
pub(crate) struct KernelCache {
    bind_layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<(Family, bool), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(&'static str, bool), wgpu::ComputePipeline>>,
    /// Kernels to build with FAULT_INJECT (the self-check's negative test).
    faulty: Mutex<HashSet<&'static str>>,
    /// Two slots, taken for the duration of a run (runs on one device are serialised).
    slots: Mutex<Vec<Slot>>,
    /// A 16-byte stand-in bound where a kernel declares a buffer it will not read.
    dummy: wgpu::Buffer,
    /// Upper bound of a chunk's input bytes (CHUNK_CAP_BYTES unless a test lowers it).
    chunk_cap: AtomicU64,
    /// Validation or device errors reported by wgpu, drained after each operation.
    errors: Arc<Mutex<Vec<String>>>,
}

impl KernelCache {
    pub(crate) fn new(device: &wgpu::Device) -> KernelCache {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let ro = wgpu::BufferBindingType::Storage { read_only: true };
        let bind_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("qforge kernels"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, ro),
                entry(2, ro),
                entry(3, ro),
                entry(4, wgpu::BufferBindingType::Storage { read_only: false }),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("qforge kernels"),
            bind_group_layouts: &[Some(&bind_layout)],
            immediate_size: 0,
        });
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
            dummy,
            chunk_cap: AtomicU64::new(CHUNK_CAP_BYTES),
            errors,
        }
    }

    fn take_errors(&self) -> Result<(), GpuError> {
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

impl GpuContext {
    /// Build (or fetch from the cache) the pipeline of `def`.
    fn pipeline(&self, def: &'static KernelDef) -> Result<wgpu::ComputePipeline, GpuError> {
        let cache = &self.kernels;
        let faulty = cache.faulty.lock().unwrap().contains(def.name);
        if let Some(p) = cache.pipelines.lock().unwrap().get(&(def.name, faulty)) {
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
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(def.name),
                            source: wgpu::ShaderSource::Wgsl(def.family.source(faulty).into()),
                        })
                })
                .clone()
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(def.name),
                layout: Some(&cache.pipeline_layout),
                module: &module,
                entry_point: Some(def.name),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            // Drop a broken module so a later attempt does not reuse it.
            cache.modules.lock().unwrap().remove(&(def.family, faulty));
            return Err(GpuError::Execution(format!(
                "building kernel {}: {e}",
                def.name
            )));
        }
        cache
            .pipelines
            .lock()
            .unwrap()
            .insert((def.name, faulty), pipeline.clone());
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

    /// Test hook: cap a chunk's input at `bytes` (rounded down to 256), so small tensors
    /// exercise the multi-chunk path. Never raises the cap above the adapter's limits.
    #[doc(hidden)]
    pub fn set_chunk_cap(&self, bytes: u64) {
        self.kernels
            .chunk_cap
            .store((bytes & !255).max(256), Ordering::Relaxed);
    }

    /// Run `def` over `x` (rows of `n_per_row`), writing `out` (exactly the bytes of all rows).
    /// `qw` holds one importance weight per column. No self-check here: see `GpuQuantizer`.
    pub(crate) fn run_kernel(
        &self,
        def: &'static KernelDef,
        x: &[f32],
        n_per_row: usize,
        qw: Option<&[f32]>,
        out: &mut [u8],
    ) -> Result<(), GpuError> {
        if x.is_empty() {
            return Ok(());
        }
        let blocks_per_row = n_per_row / def.block_elems;
        let n_rows = x.len() / n_per_row;
        debug_assert_eq!(blocks_per_row * def.block_elems, n_per_row);
        debug_assert_eq!(n_rows * n_per_row, x.len());
        debug_assert_eq!(out.len(), n_rows * blocks_per_row * def.block_bytes);
        let qw = match (def.imatrix, qw) {
            (Imatrix::Used, Some(w)) => Some(w),
            _ => None,
        };

        // Chunk geometry: whole rows; whole units except in the last chunk.
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
            .min(self.kernels.chunk_cap.load(Ordering::Relaxed));
        let unit_in = (def.unit_blocks * def.block_elems * 4) as u64;
        let unit_out = (def.unit_blocks * def.block_bytes) as u64;
        let row_in = (n_per_row * 4) as u64;
        let row_out = (blocks_per_row * def.block_bytes) as u64;
        // One extra unit of padding per chunk, for its last partial unit.
        let mut rows_per_chunk = (limit.saturating_sub(unit_in) / row_in)
            .min(limit.saturating_sub(unit_out) / row_out.max(1))
            as usize;
        if rows_per_chunk == 0 {
            return Err(GpuError::RowTooLarge {
                row_bytes: row_in,
                limit,
            });
        }
        if rows_per_chunk < n_rows {
            while (rows_per_chunk * blocks_per_row) % def.unit_blocks != 0 {
                rows_per_chunk -= 1;
            }
            if rows_per_chunk == 0 {
                return Err(GpuError::RowTooLarge {
                    row_bytes: row_in * def.unit_blocks as u64,
                    limit,
                });
            }
        }
        rows_per_chunk = rows_per_chunk.min(n_rows);
        let units_cap = (rows_per_chunk * blocks_per_row).div_ceil(def.unit_blocks);
        let in_cap = (units_cap as u64 * unit_in).max(16);
        let out_cap = (units_cap as u64 * unit_out).max(16);
        let stats_cap = (rows_per_chunk as u64 * 4).max(16);

        let pipeline = self.pipeline(def)?;
        let sigma_pipeline = match qw {
            Some(_) if def.family.needs_row_sigma2() => Some(self.pipeline(&ROW_SIGMA2)?),
            _ => None,
        };
        if let Some(w) = qw {
            if w.len() != n_per_row {
                return Err(GpuError::Execution(format!(
                    "importance weights: {} values for rows of {n_per_row}",
                    w.len()
                )));
            }
        }
        let qw_buf = qw.map(|w| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("qforge qw"),
                    contents: bytemuck::cast_slice(w),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        });

        let mut slots = self.kernels.slots.lock().unwrap();
        if slots.len() != 2 || !slots.iter().all(|s| s.fits(in_cap, out_cap, stats_cap)) {
            // Grow to the next power of two so a sequence of growing tensors does not
            // reallocate every time.
            let grow =
                |need: u64, have: u64| need.max(have).next_power_of_two().min(limit.max(need));
            let (hi, ho, hs) = slots
                .first()
                .map(|s| (s.in_cap, s.out_cap, s.stats_cap))
                .unwrap_or((0, 0, 0));
            let (ic, oc, sc) = (grow(in_cap, hi), grow(out_cap, ho), grow(stats_cap, hs));
            slots.clear();
            for _ in 0..2 {
                slots.push(Slot::new(&self.device, ic, oc, sc));
            }
        }

        struct InFlight {
            slot: usize,
            out_range: std::ops::Range<usize>,
            copy_bytes: u64,
            submission: wgpu::SubmissionIndex,
            mapped: mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
        }
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let finish = |f: InFlight, slots: &[Slot], out: &mut [u8]| -> Result<(), GpuError> {
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(f.submission),
                    timeout: None,
                })
                .map_err(|e| GpuError::Execution(e.to_string()))?;
            f.mapped
                .recv()
                .map_err(|e| GpuError::Execution(e.to_string()))?
                .map_err(|e| GpuError::Execution(format!("mapping the result: {e}")))?;
            let rb = &slots[f.slot].readback;
            {
                let view = rb
                    .get_mapped_range(0..f.copy_bytes)
                    .map_err(|e| GpuError::Execution(e.to_string()))?;
                out[f.out_range.clone()].copy_from_slice(&view[..f.out_range.len()]);
            }
            rb.unmap();
            Ok(())
        };

        let result = (|| -> Result<(), GpuError> {
            let zeros = vec![0u8; unit_in as usize];
            for (chunk, row0) in (0..n_rows).step_by(rows_per_chunk).enumerate() {
                let slot_ix = chunk % 2;
                if in_flight.len() == 2 {
                    let f = in_flight.pop_front().unwrap();
                    finish(f, &slots, out)?;
                }
                let slot = &slots[slot_ix];
                let rows = rows_per_chunk.min(n_rows - row0);
                let blocks = rows * blocks_per_row;
                let units = blocks.div_ceil(def.unit_blocks);
                let x_chunk = &x[row0 * n_per_row..(row0 + rows) * n_per_row];
                let x_bytes: &[u8] = bytemuck::cast_slice(x_chunk);
                self.queue.write_buffer(&slot.input, 0, x_bytes);
                let padded_in = units as u64 * unit_in;
                if padded_in > x_bytes.len() as u64 {
                    let pad = (padded_in - x_bytes.len() as u64) as usize;
                    self.queue
                        .write_buffer(&slot.input, x_bytes.len() as u64, &zeros[..pad]);
                }

                let mut encoder =
                    self.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some(def.name),
                        });
                let qw_res = qw_buf.as_ref().unwrap_or(&self.kernels.dummy);
                let bind = |params: &wgpu::Buffer, stats: &wgpu::Buffer, dst: &wgpu::Buffer| {
                    self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(def.name),
                        layout: &self.kernels.bind_layout,
                        entries: &[
                            wgpu::BindGroupEntry {
                                binding: 0,
                                resource: params.as_entire_binding(),
                            },
                            wgpu::BindGroupEntry {
                                binding: 1,
                                resource: slot.input.as_entire_binding(),
                            },
                            wgpu::BindGroupEntry {
                                binding: 2,
                                resource: qw_res.as_entire_binding(),
                            },
                            wgpu::BindGroupEntry {
                                binding: 3,
                                resource: stats.as_entire_binding(),
                            },
                            wgpu::BindGroupEntry {
                                binding: 4,
                                resource: dst.as_entire_binding(),
                            },
                        ],
                    })
                };
                let mut pass = |pipeline: &wgpu::ComputePipeline,
                                params_buf: &wgpu::Buffer,
                                stats: &wgpu::Buffer,
                                dst: &wgpu::Buffer,
                                n_units: u32| {
                    let (wg_x, wg_y, width) = self.dispatch_grid(n_units);
                    let params = Params {
                        n_units,
                        blocks_per_row: blocks_per_row as u32,
                        n_per_row: n_per_row as u32,
                        has_qw: qw.is_some() as u32,
                        zero: 0,
                        dispatch_width: width,
                        n_rows: rows as u32,
                        pad0: 0,
                    };
                    self.queue
                        .write_buffer(params_buf, 0, bytemuck::bytes_of(&params));
                    let group = bind(params_buf, stats, dst);
                    let mut cp = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(def.name),
                        timestamp_writes: None,
                    });
                    cp.set_pipeline(pipeline);
                    cp.set_bind_group(0, &group, &[]);
                    cp.dispatch_workgroups(wg_x, wg_y, 1);
                };
                if let Some(sp) = &sigma_pipeline {
                    pass(
                        sp,
                        &slot.params_stats,
                        &self.kernels.dummy,
                        &slot.stats,
                        rows as u32,
                    );
                }
                pass(
                    &pipeline,
                    &slot.params_main,
                    &slot.stats,
                    &slot.output,
                    units as u32,
                );
                let copy_bytes = units as u64 * unit_out;
                encoder.copy_buffer_to_buffer(&slot.output, 0, &slot.readback, 0, copy_bytes);
                let submission = self.queue.submit([encoder.finish()]);
                let (tx, rx) = mpsc::channel();
                slot.readback
                    .slice(0..copy_bytes)
                    .map_async(wgpu::MapMode::Read, move |r| {
                        let _ = tx.send(r);
                    });
                let out_start = row0 * row_out as usize;
                in_flight.push_back(InFlight {
                    slot: slot_ix,
                    out_range: out_start..out_start + rows * row_out as usize,
                    copy_bytes,
                    submission,
                    mapped: rx,
                });
                self.kernels.take_errors()?;
            }
            while let Some(f) = in_flight.pop_front() {
                finish(f, &slots, out)?;
            }
            self.kernels.take_errors()
        })();
        if result.is_err() {
            // Leave no buffer mapped or in flight for the next run.
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
            slots.clear();
        }
        result
    }

    /// Workgroups in x and y, and invocations per grid row, covering `n_units`.
    fn dispatch_grid(&self, n_units: u32) -> (u32, u32, u32) {
        let groups = n_units.div_ceil(WORKGROUP_SIZE).max(1);
        let max_x = self.limits.max_compute_workgroups_per_dimension.max(1);
        let wg_x = groups.min(max_x);
        let wg_y = groups.div_ceil(wg_x);
        (wg_x, wg_y, wg_x * WORKGROUP_SIZE)
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
