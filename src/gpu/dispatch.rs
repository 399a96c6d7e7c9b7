//! Running a kernel over a tensor: chunks of whole rows through two sets of persistent buffers
//! ("slots"), so that the host fills chunk k+1's input while the device works on chunk k, and
//! drains chunk k−1's output.
//!
//! Tensor data never goes through `queue.write_buffer`: that allocates fresh staging memory on
//! every call (on lavapipe the page faults alone ran at ~1 GB/s). Instead, one of two transfer
//! modes, chosen once per device ([`TransferMode::for_adapter`]):
//! - [`TransferMode::Mapped`]: where the adapter offers `MAPPABLE_PRIMARY_BUFFERS` and shares
//!   memory with the host (integrated GPUs, software adapters such as lavapipe), the storage
//!   buffers themselves are mapped: the input is written straight into the buffer the kernel
//!   reads and the output read straight from the buffer it writes. One host copy each way.
//! - [`TransferMode::Staged`]: elsewhere (discrete GPUs, whose mappable memory is slow for
//!   shaders), persistent MAP_WRITE / MAP_READ staging buffers and device-side copies.
//!
//! A slot's upload buffer is re-mapped for writing as soon as its chunk is submitted, so it is
//! ready (without a wait) when the slot comes round again, in this call or the next.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wgpu::util::DeviceExt;

use super::device::GpuContext;
use super::pipelines::{Imatrix, KernelDef, ROW_SIGMA2};
use super::GpuError;

/// Input chunks stay below this even when the adapter allows more: smaller chunks let uploads,
/// compute and read-back of neighbouring chunks overlap.
pub(crate) const CHUNK_CAP_BYTES: u64 = 16 << 20;
const WORKGROUP_SIZE: u32 = 64;
/// A dispatch keeps at least this many invocations (when it has that many units) before units
/// are batched per invocation, so a real GPU still has threads to spread.
const MIN_INVOCATIONS: u32 = 8192;

/// How tensor bytes move between the host and the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferMode {
    /// Storage buffers mapped directly (requires `MAPPABLE_PRIMARY_BUFFERS`).
    Mapped,
    /// Persistent staging buffers and device-side copies.
    Staged,
}

impl TransferMode {
    /// Mapped where the adapter allows it and its memory is the host's; staged elsewhere.
    pub fn for_adapter(features: wgpu::Features, device_type: wgpu::DeviceType) -> TransferMode {
        let shared_memory = matches!(
            device_type,
            wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu
        );
        if shared_memory && features.contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS) {
            TransferMode::Mapped
        } else {
            TransferMode::Staged
        }
    }

    /// The features to request for this mode.
    pub fn features(self) -> wgpu::Features {
        match self {
            TransferMode::Mapped => wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
            TransferMode::Staged => wgpu::Features::empty(),
        }
    }
}

/// Where the calling thread's time went while kernels ran: the answer to "does host overhead
/// dominate?". Summed over runs until [`GpuContext::take_host_times`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostTimes {
    /// Copying tensor rows into the mapped input buffer (and zero-padding the last unit).
    pub fill: Duration,
    /// Recording command buffers, writing parameters, asking for mappings.
    pub record: Duration,
    /// Inside `queue.submit`. Near zero on a real GPU; a driver that runs the work at
    /// submission (lavapipe does, as measured by this very field) spends the kernels' run here.
    pub submit: Duration,
    /// Copying results out of the mapped output buffer.
    pub drain: Duration,
    /// Blocked until the device finished a chunk (or freed a slot).
    pub waiting: Duration,
    /// Chunks submitted.
    pub chunks: u64,
}

impl HostTimes {
    /// The host's own work: fill + record + drain.
    pub fn host_work(&self) -> Duration {
        self.fill + self.record + self.drain
    }

    /// Time the host spent while the device ran: submit + waiting.
    pub fn device(&self) -> Duration {
        self.submit + self.waiting
    }
}

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
    units_per_invocation: u32,
}
// `Params` in shaders/io.wgsl; member offsets are checked by `params_mirror_io_wgsl` below.
const _: () = assert!(std::mem::size_of::<Params>() == 32);

type MapResult = mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>;

/// Buffers for one in-flight chunk, reused across chunks and calls.
pub(crate) struct Slot {
    /// Staged mode only: what the host writes (MAP_WRITE | COPY_SRC).
    upload: Option<wgpu::Buffer>,
    /// What the kernel reads (mapped for writing in Mapped mode).
    input: wgpu::Buffer,
    /// What the kernel writes (mapped for reading in Mapped mode).
    output: wgpu::Buffer,
    /// Staged mode only: what the host reads (MAP_READ | COPY_DST).
    readback: Option<wgpu::Buffer>,
    stats: wgpu::Buffer,
    params_main: wgpu::Buffer,
    params_stats: wgpu::Buffer,
    in_cap: u64,
    out_cap: u64,
    stats_cap: u64,
    /// The pending (or completed) write mapping of the upload buffer.
    upload_mapping: Option<MapResult>,
    /// The last submission that used this slot.
    last_submission: Option<wgpu::SubmissionIndex>,
}

impl Slot {
    fn new(device: &wgpu::Device, mode: TransferMode, caps: (u64, u64, u64)) -> Slot {
        let (in_cap, out_cap, stats_cap) = caps;
        let buf = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        let (upload, input, output, readback) = match mode {
            TransferMode::Mapped => (
                None,
                buf("qforge input", in_cap, U::STORAGE | U::MAP_WRITE),
                buf("qforge output", out_cap, U::STORAGE | U::MAP_READ),
                None,
            ),
            TransferMode::Staged => (
                Some(buf("qforge upload", in_cap, U::MAP_WRITE | U::COPY_SRC)),
                buf("qforge input", in_cap, U::STORAGE | U::COPY_DST),
                buf("qforge output", out_cap, U::STORAGE | U::COPY_SRC),
                Some(buf("qforge readback", out_cap, U::MAP_READ | U::COPY_DST)),
            ),
        };
        Slot {
            upload,
            input,
            output,
            readback,
            stats: buf("qforge row stats", stats_cap, U::STORAGE),
            params_main: buf("qforge params", 32, U::UNIFORM | U::COPY_DST),
            params_stats: buf("qforge params σ²", 32, U::UNIFORM | U::COPY_DST),
            in_cap,
            out_cap,
            stats_cap,
            upload_mapping: None,
            last_submission: None,
        }
    }

    fn fits(&self, in_bytes: u64, out_bytes: u64, stats_bytes: u64) -> bool {
        self.in_cap >= in_bytes && self.out_cap >= out_bytes && self.stats_cap >= stats_bytes
    }

    fn upload_buffer(&self) -> &wgpu::Buffer {
        self.upload.as_ref().unwrap_or(&self.input)
    }

    fn readback_buffer(&self) -> &wgpu::Buffer {
        self.readback.as_ref().unwrap_or(&self.output)
    }

    /// Ask for the upload buffer to be mapped for writing once the device is done with it.
    fn request_upload_mapping(&mut self) {
        let (tx, rx) = mpsc::channel();
        self.upload_buffer()
            .map_async(wgpu::MapMode::Write, .., move |r| {
                let _ = tx.send(r);
            });
        self.upload_mapping = Some(rx);
    }
}

/// A submitted chunk whose output has not been copied out yet.
struct InFlight {
    slot: usize,
    out_range: Range<usize>,
    copy_bytes: u64,
    submission: wgpu::SubmissionIndex,
    mapped: MapResult,
}

/// Chunk geometry of one run.
struct Geometry {
    blocks_per_row: usize,
    rows_per_chunk: usize,
    unit_in: u64,
    unit_out: u64,
    row_out: u64,
    caps: (u64, u64, u64),
}

impl GpuContext {
    /// Test hook: cap a chunk's input at `bytes` (rounded down to 256), so small tensors
    /// exercise the multi-chunk path. Never raises the cap above the adapter's limits.
    #[doc(hidden)]
    pub fn set_chunk_cap(&self, bytes: u64) {
        self.kernels
            .chunk_cap
            .store((bytes & !255).max(256), Ordering::Relaxed);
    }

    /// How this device moves tensor bytes.
    pub fn transfer_mode(&self) -> TransferMode {
        self.transfer
    }

    /// Where the host's time went in kernel runs since the last call (and reset the sums).
    pub fn take_host_times(&self) -> HostTimes {
        std::mem::take(&mut *self.kernels.host_times.lock().unwrap())
    }

    fn add_host_time(&self, f: impl FnOnce(&mut HostTimes)) {
        f(&mut self.kernels.host_times.lock().unwrap());
    }

    /// The storage buffer of `family`'s lookup tables, uploaded on first use.
    fn family_tables(&self, family: super::pipelines::Family) -> Option<wgpu::Buffer> {
        let words = family.tables()?;
        let mut tables = self.kernels.tables.lock().unwrap();
        let buf = tables.entry(family).or_insert_with(|| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("qforge kernel tables"),
                    contents: bytemuck::cast_slice(words),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        });
        Some(buf.clone())
    }

    fn geometry(
        &self,
        def: &KernelDef,
        n_per_row: usize,
        n_rows: usize,
    ) -> Result<Geometry, GpuError> {
        let blocks_per_row = n_per_row / def.block_elems;
        // Chunks are whole rows; whole units except the last chunk.
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
            while !(rows_per_chunk * blocks_per_row).is_multiple_of(def.unit_blocks) {
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
        let units_cap = (rows_per_chunk * blocks_per_row).div_ceil(def.unit_blocks) as u64;
        // Sizes rounded up to whole words (mapping ranges must be multiples of 4).
        let caps = (
            (units_cap * unit_in).max(16).next_multiple_of(256),
            (units_cap * unit_out).max(16).next_multiple_of(256),
            (rows_per_chunk as u64 * 4).max(16).next_multiple_of(256),
        );
        Ok(Geometry {
            blocks_per_row,
            rows_per_chunk,
            unit_in,
            unit_out,
            row_out,
            caps,
        })
    }

    /// Make sure both slots exist and are big enough, growing to the next power of two so a
    /// sequence of growing tensors does not reallocate every time.
    fn ensure_slots(&self, slots: &mut Vec<Slot>, caps: (u64, u64, u64)) {
        if slots.len() == 2 && slots.iter().all(|s| s.fits(caps.0, caps.1, caps.2)) {
            return;
        }
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        let grow = |need: u64, have: u64| need.max(have).next_power_of_two().min(limit.max(need));
        let have = slots
            .first()
            .map(|s| (s.in_cap, s.out_cap, s.stats_cap))
            .unwrap_or((0, 0, 0));
        let caps = (
            grow(caps.0, have.0),
            grow(caps.1, have.1),
            grow(caps.2, have.2),
        );
        slots.clear();
        for _ in 0..2 {
            let mut slot = Slot::new(&self.device, self.transfer, caps);
            slot.request_upload_mapping();
            slots.push(slot);
        }
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
        let n_rows = x.len() / n_per_row;
        debug_assert_eq!(n_rows * n_per_row, x.len());
        debug_assert_eq!(
            out.len(),
            n_rows * (n_per_row / def.block_elems) * def.block_bytes
        );
        let qw = match (def.imatrix, qw) {
            (Imatrix::Used, Some(w)) => Some(w),
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
        let geo = self.geometry(def, n_per_row, n_rows)?;
        let pipeline = self.pipeline(def, qw.is_some())?;
        let sigma_pipeline = match qw {
            Some(_) if def.family.needs_row_sigma2() => Some(self.pipeline(&ROW_SIGMA2, false)?),
            _ => None,
        };
        let qw_buf = qw.map(|w| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("qforge qw"),
                    contents: bytemuck::cast_slice(w),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        });
        let batch = def.batch[qw.is_some() as usize].max(1);

        let mut slots = self.kernels.slots.lock().unwrap();
        self.ensure_slots(&mut slots, geo.caps);
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let result = (|| -> Result<(), GpuError> {
            for (chunk, row0) in (0..n_rows).step_by(geo.rows_per_chunk).enumerate() {
                let slot_ix = chunk % 2;
                if let Some(pos) = in_flight.iter().position(|f| f.slot == slot_ix) {
                    // In order: finish everything submitted before this slot's last chunk.
                    for f in in_flight.drain(..=pos) {
                        self.finish_chunk(f, &slots, out)?;
                    }
                }
                let rows = geo.rows_per_chunk.min(n_rows - row0);
                let x_chunk = &x[row0 * n_per_row..(row0 + rows) * n_per_row];
                let f = self.submit_chunk(
                    def,
                    &pipeline,
                    sigma_pipeline.as_ref(),
                    qw_buf.as_ref(),
                    &geo,
                    batch,
                    n_per_row,
                    &mut slots[slot_ix],
                    slot_ix,
                    row0,
                    x_chunk,
                )?;
                in_flight.push_back(f);
                self.kernels.take_errors()?;
            }
            while let Some(f) = in_flight.pop_front() {
                self.finish_chunk(f, &slots, out)?;
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

    /// Fill `slot` with `x_chunk` (rows from `row0`), record and submit the kernel, and ask for
    /// the output to be mapped.
    #[allow(clippy::too_many_arguments)]
    fn submit_chunk(
        &self,
        def: &'static KernelDef,
        pipeline: &wgpu::ComputePipeline,
        sigma_pipeline: Option<&wgpu::ComputePipeline>,
        qw_buf: Option<&wgpu::Buffer>,
        geo: &Geometry,
        batch: u32,
        n_per_row: usize,
        slot: &mut Slot,
        slot_ix: usize,
        row0: usize,
        x_chunk: &[f32],
    ) -> Result<InFlight, GpuError> {
        let rows = x_chunk.len() / n_per_row;
        let blocks = rows * geo.blocks_per_row;
        let units = blocks.div_ceil(def.unit_blocks);
        let x_bytes: &[u8] = bytemuck::cast_slice(x_chunk);
        let padded_in = units as u64 * geo.unit_in;

        // The upload buffer: mapped for writing since its last use (or now, the first time).
        if slot.upload_mapping.is_none() {
            slot.request_upload_mapping();
        }
        let mapping = slot.upload_mapping.take().unwrap();
        self.wait_mapping(&mapping, slot.last_submission.clone(), "mapping the input")?;
        let fill_start = Instant::now();
        {
            let upload = slot.upload_buffer();
            let mut view = upload
                .get_mapped_range_mut(0..padded_in.next_multiple_of(4))
                .map_err(|e| GpuError::Execution(format!("mapping the input: {e}")))?;
            let mut w = view.slice(..);
            w.slice(..x_bytes.len()).copy_from_slice(x_bytes);
            // The last unit's padding must be zeros (the host keeps no bytes of it, but a
            // kernel must not meet NaN/garbage that could, say, trip a loop bound).
            let pad = padded_in as usize - x_bytes.len();
            if pad > 0 {
                w.slice(x_bytes.len()..x_bytes.len() + pad)
                    .copy_from_slice(&vec![0u8; pad]);
            }
        }
        slot.upload_buffer().unmap();
        let record_start = Instant::now();
        let fill = record_start - fill_start;

        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(def.name),
            });
        if let Some(upload) = &slot.upload {
            encoder.copy_buffer_to_buffer(upload, 0, &slot.input, 0, padded_in);
        }
        let qw_res = qw_buf.unwrap_or(&self.kernels.dummy);
        let mut pass = |pipeline: &wgpu::ComputePipeline,
                        params_buf: &wgpu::Buffer,
                        stats: &wgpu::Buffer,
                        dst: &wgpu::Buffer,
                        n_units: u32,
                        upi: u32| {
            let (wg_x, wg_y, width) = self.dispatch_grid(n_units.div_ceil(upi));
            let params = Params {
                n_units,
                blocks_per_row: geo.blocks_per_row as u32,
                n_per_row: n_per_row as u32,
                has_qw: qw_buf.is_some() as u32,
                zero: 0,
                dispatch_width: width,
                n_rows: rows as u32,
                units_per_invocation: upi,
            };
            self.queue
                .write_buffer(params_buf, 0, bytemuck::bytes_of(&params));
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(def.name),
                layout: &self.kernels.bind_layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: params_buf.as_entire_binding(),
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
            });
            let mut cp = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(def.name),
                timestamp_writes: None,
            });
            cp.set_pipeline(pipeline);
            cp.set_bind_group(0, &group, &[]);
            cp.dispatch_workgroups(wg_x, wg_y, 1);
        };
        if let Some(sp) = sigma_pipeline {
            // One row per invocation.
            pass(
                sp,
                &slot.params_stats,
                &self.kernels.dummy,
                &slot.stats,
                rows as u32,
                1,
            );
        }
        // Batch units per invocation, but keep enough invocations to spread.
        let upi = batch.min((units as u32 / MIN_INVOCATIONS).max(1));
        // Binding 3: the row σ², or the family's lookup tables.
        let tables = self.family_tables(def.family);
        pass(
            pipeline,
            &slot.params_main,
            tables.as_ref().unwrap_or(&slot.stats),
            &slot.output,
            units as u32,
            upi,
        );
        let copy_bytes = (units as u64 * geo.unit_out).next_multiple_of(4);
        if let Some(readback) = &slot.readback {
            encoder.copy_buffer_to_buffer(&slot.output, 0, readback, 0, copy_bytes);
        }
        let commands = encoder.finish();
        let submit_start = Instant::now();
        let submission = self.queue.submit([commands]);
        let submit = submit_start.elapsed();
        slot.last_submission = Some(submission.clone());
        let (tx, rx) = mpsc::channel();
        slot.readback_buffer()
            .map_async(wgpu::MapMode::Read, 0..copy_bytes, move |r| {
                let _ = tx.send(r);
            });
        // Ready for the slot's next chunk as soon as the device is done with this one.
        slot.request_upload_mapping();
        let record = record_start.elapsed() - submit;
        self.add_host_time(|t| {
            t.fill += fill;
            t.record += record;
            t.submit += submit;
            t.chunks += 1;
        });
        let out_start = row0 * geo.row_out as usize;
        Ok(InFlight {
            slot: slot_ix,
            out_range: out_start..out_start + rows * geo.row_out as usize,
            copy_bytes,
            submission,
            mapped: rx,
        })
    }

    /// Block until `mapping` has resolved, polling the device up to `submission` (the work the
    /// mapping waits for; None: the buffer is idle, so any poll resolves it).
    fn wait_mapping(
        &self,
        mapping: &MapResult,
        submission: Option<wgpu::SubmissionIndex>,
        what: &str,
    ) -> Result<(), GpuError> {
        let start = Instant::now();
        let r = self.wait_mapping_inner(mapping, submission, what);
        let waited = start.elapsed();
        self.add_host_time(|t| t.waiting += waited);
        r
    }

    fn wait_mapping_inner(
        &self,
        mapping: &MapResult,
        submission: Option<wgpu::SubmissionIndex>,
        what: &str,
    ) -> Result<(), GpuError> {
        loop {
            match mapping.try_recv() {
                Ok(r) => return r.map_err(|e| GpuError::Execution(format!("{what}: {e}"))),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(GpuError::Execution(format!("{what}: callback dropped")))
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let poll = match &submission {
                Some(index) => wgpu::PollType::Wait {
                    submission_index: Some(index.clone()),
                    timeout: None,
                },
                // An idle buffer: a non-blocking poll resolves it. (Waiting would wait for the
                // other slot's chunk too, stalling the pipeline.)
                None => wgpu::PollType::Poll,
            };
            self.device
                .poll(poll)
                .map_err(|e| GpuError::Execution(e.to_string()))?;
            if submission.is_none() {
                std::thread::yield_now();
            }
        }
    }

    /// Wait for a chunk's output and copy it into `out`.
    fn finish_chunk(&self, f: InFlight, slots: &[Slot], out: &mut [u8]) -> Result<(), GpuError> {
        self.wait_mapping(&f.mapped, Some(f.submission), "mapping the result")?;
        let start = Instant::now();
        let rb = slots[f.slot].readback_buffer();
        {
            let view = rb
                .get_mapped_range(0..f.copy_bytes)
                .map_err(|e| GpuError::Execution(e.to_string()))?;
            out[f.out_range.clone()].copy_from_slice(&view[..f.out_range.len()]);
        }
        rb.unmap();
        let drain = start.elapsed();
        self.add_host_time(|t| t.drain += drain);
        Ok(())
    }

    /// Workgroups in x and y, and invocations per grid row, covering `n_invocations`.
    fn dispatch_grid(&self, n_invocations: u32) -> (u32, u32, u32) {
        let groups = n_invocations.div_ceil(WORKGROUP_SIZE).max(1);
        let max_x = self.limits.max_compute_workgroups_per_dimension.max(1);
        let wg_x = groups.min(max_x);
        let wg_y = groups.div_ceil(wg_x);
        (wg_x, wg_y, wg_x * WORKGROUP_SIZE)
    }
}

#[cfg(test)]
mod wgsl_layout {
    use super::Params;
    use crate::gpu::layout::{assert_wgsl_mirror, kernel_params_source};

    #[test]
    fn params_mirror_io_wgsl() {
        assert_wgsl_mirror!(Params, kernel_params_source(), "Params", {
            n_units => "n_units",
            blocks_per_row => "blocks_per_row",
            n_per_row => "n_per_row",
            has_qw => "has_qw",
            zero => "zero",
            dispatch_width => "dispatch_width",
            n_rows => "n_rows",
            units_per_invocation => "units_per_invocation",
        });
    }
}
