//! The LoRA merge on the GPU (`shaders/lora_merge.wgsl`): the twin of
//! [`crate::lora::merge::merge_rows`] + [`crate::lora::merge::round_merged`], writing the same
//! bits (the contract is documented in `src/lora/merge.rs`).
//!
//! The kernel has its own bind group layout (W, P, Q and the output are four different arrays,
//! unlike the quantizers' one-input layout), built once per [`GpuLoraMerge`]. Work is cut into
//! chunks of whole rows so no binding exceeds the adapter's storage binding limit; P is sliced to
//! the chunk's rows, Q is bound whole. Buffers are made per chunk: the merge moves a few bytes per
//! element and is never the bottleneck of a conversion, so this stays simple.
//!
//! Before it is used, [`GpuLoraMerge::open`] runs a self-check: canary matrices (ragged edges,
//! rank 1 and ranks that are not multiples of the tile, subnormals, signed zeros, values that
//! round to f16 infinity, several adapters) merged on the GPU and on the CPU must agree bit for
//! bit.

use std::sync::{mpsc, Arc};

use wgpu::util::DeviceExt;

use crate::gpu::{GpuContext, GpuError};
use crate::lora::merge::{merge_rows, LowRankUpdate};
use crate::quant::GgmlType;

/// Updates one dispatch folds (`MAX_ADAPTERS` in the shader).
const MAX_ADAPTERS: usize = 8;
/// Edge of the square tile a workgroup computes (`TILE` in the shader).
const TILE: usize = 16;
/// W and output chunks stay below this even when the adapter allows more.
const CHUNK_CAP_BYTES: u64 = 64 << 20;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MergeParams {
    rows: u32,
    cols: u32,
    n_adapters: u32,
    out_type: u32,
    zero: u32,
    pad: [u32; 3],
    adapters: [[u32; 4]; MAX_ADAPTERS],
}
// `MergeParams` in shaders/lora_merge.wgsl; offsets are checked by `merge_params_mirror_wgsl`.
const _: () = assert!(std::mem::size_of::<MergeParams>() == 32 + 16 * MAX_ADAPTERS);

/// The merge kernel on one device, self-checked.
pub struct GpuLoraMerge {
    ctx: Arc<GpuContext>,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl std::fmt::Debug for GpuLoraMerge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuLoraMerge")
            .field("adapter", &self.ctx.adapter().name)
            .finish_non_exhaustive()
    }
}

/// The shader's `out_type` code of a merge output type.
fn out_type_code(ty: GgmlType) -> Result<u32, GpuError> {
    match ty {
        GgmlType::F32 => Ok(0),
        GgmlType::F16 => Ok(1),
        GgmlType::BF16 => Ok(2),
        other => Err(GpuError::NotSupported {
            ty: other,
            imatrix: false,
        }),
    }
}

impl GpuLoraMerge {
    /// Build the kernel on `ctx` and run its self-check; a kernel that disagrees with the CPU
    /// on any canary is refused ([`GpuError::SelfCheckFailed`]).
    pub fn open(ctx: Arc<GpuContext>) -> Result<GpuLoraMerge, GpuError> {
        let m = GpuLoraMerge::build(ctx)?;
        m.self_check()?;
        Ok(m)
    }

    /// The kernel without its self-check (tests call [`Self::self_check`] themselves).
    #[doc(hidden)]
    pub fn build(ctx: Arc<GpuContext>) -> Result<GpuLoraMerge, GpuError> {
        let device = &ctx.device;
        let ro = wgpu::BufferBindingType::Storage { read_only: true };
        let rw = wgpu::BufferBindingType::Storage { read_only: false };
        let uniform = wgpu::BufferBindingType::Uniform;
        let (layout, pipeline_layout) = crate::gpu::pipelines::buffer_layouts(
            device,
            "qforge lora_merge",
            &[uniform, ro, ro, ro, rw],
        );
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let source = format!(
            "{}\n{}\n",
            include_str!("../../shaders/exact.wgsl"),
            include_str!("../../shaders/lora_merge.wgsl")
        );
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("lora_merge"),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("lora_merge"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("lora_merge"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Execution(format!(
                "building kernel lora_merge: {e}"
            )));
        }
        Ok(GpuLoraMerge {
            ctx,
            layout,
            pipeline,
        })
    }

    /// The device the kernel runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Fold `updates` into `w` (rows `first_row ..` of a stored matrix with `cols` columns, exact
    /// f32 values) and return each merged element rounded to `ty`, as the bits of `ty` in a u32
    /// (f16/bf16 in the low half).
    pub fn merge(
        &self,
        ty: GgmlType,
        w: &[f32],
        cols: usize,
        first_row: usize,
        updates: &[&LowRankUpdate],
    ) -> Result<Vec<u32>, GpuError> {
        let final_code = out_type_code(ty)?;
        if cols == 0 || w.is_empty() {
            return Ok(Vec::new());
        }
        let rows = w.len() / cols;
        let limit = self
            .ctx
            .limits
            .max_storage_buffer_binding_size
            .min(CHUNK_CAP_BYTES);
        let row_bytes = (cols * 4) as u64;
        if row_bytes > limit {
            return Err(GpuError::RowTooLarge { row_bytes, limit });
        }
        // Chunks of whole rows; rows of a chunk must also keep each P slice under the limit.
        let max_rank = updates.iter().map(|u| u.rank).max().unwrap_or(0);
        let p_row_bytes = (max_rank.max(1) * MAX_ADAPTERS * 4) as u64;
        let chunk_rows = ((limit / row_bytes).min(limit / p_row_bytes) as usize)
            .max(1)
            .min(rows);
        let mut out = vec![0u32; w.len()];
        let groups: Vec<&[&LowRankUpdate]> = if updates.is_empty() {
            vec![&[]]
        } else {
            updates.chunks(MAX_ADAPTERS).collect()
        };
        for r0 in (0..rows).step_by(chunk_rows) {
            let n = chunk_rows.min(rows - r0);
            let range = r0 * cols..(r0 + n) * cols;
            // More than MAX_ADAPTERS updates: the f32 result of one group is W of the next.
            let mut current: Vec<f32> = w[range.clone()].to_vec();
            for (gi, group) in groups.iter().enumerate() {
                let last = gi + 1 == groups.len();
                let code = if last { final_code } else { 0 };
                let bits = self.dispatch(&current, cols, first_row + r0, group, code)?;
                if last {
                    out[range.clone()].copy_from_slice(&bits);
                } else {
                    current = bits.into_iter().map(f32::from_bits).collect();
                }
            }
        }
        Ok(out)
    }

    /// One dispatch over the rows in `w` with at most MAX_ADAPTERS updates.
    fn dispatch(
        &self,
        w: &[f32],
        cols: usize,
        first_row: usize,
        updates: &[&LowRankUpdate],
        out_type: u32,
    ) -> Result<Vec<u32>, GpuError> {
        let device = &self.ctx.device;
        let rows = w.len() / cols;
        let mut params = MergeParams {
            rows: rows as u32,
            cols: cols as u32,
            n_adapters: updates.len() as u32,
            out_type,
            zero: 0,
            pad: [0; 3],
            adapters: [[0; 4]; MAX_ADAPTERS],
        };
        let mut p_all: Vec<f32> = Vec::new();
        let mut q_all: Vec<f32> = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            if u.cols() != cols || first_row + rows > u.rows() {
                return Err(GpuError::Execution(format!(
                    "lora_merge: an update of {}×{} does not cover rows {first_row}..{} of a \
                     {cols}-column matrix",
                    u.rows(),
                    u.cols(),
                    first_row + rows
                )));
            }
            params.adapters[i] = [
                u.rank as u32,
                p_all.len() as u32,
                q_all.len() as u32,
                u.scale.to_bits(),
            ];
            p_all.extend_from_slice(&u.p[first_row * u.rank..(first_row + rows) * u.rank]);
            q_all.extend_from_slice(&u.q);
        }
        let q_bytes = (q_all.len() * 4) as u64;
        if q_bytes > self.ctx.limits.max_storage_buffer_binding_size {
            return Err(GpuError::Execution(format!(
                "lora_merge: the adapters' Q factors ({q_bytes} bytes) exceed the adapter's \
                 storage binding limit"
            )));
        }
        // Bindings may not be empty.
        for v in [&mut p_all, &mut q_all] {
            if v.is_empty() {
                v.push(0.0);
            }
        }
        let init = |label: &str, contents: &[u8], usage: wgpu::BufferUsages| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
        };
        use wgpu::BufferUsages as U;
        let params_buf = init("lora_merge params", bytemuck::bytes_of(&params), U::UNIFORM);
        let w_buf = init("lora_merge w", bytemuck::cast_slice(w), U::STORAGE);
        let p_buf = init("lora_merge p", bytemuck::cast_slice(&p_all), U::STORAGE);
        let q_buf = init("lora_merge q", bytemuck::cast_slice(&q_all), U::STORAGE);
        let out_bytes = (w.len() * 4) as u64;
        let dst = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lora_merge dst"),
            size: out_bytes,
            usage: U::STORAGE | U::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lora_merge readback"),
            size: out_bytes,
            usage: U::MAP_READ | U::COPY_DST,
            mapped_at_creation: false,
        });
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("lora_merge"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: w_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: p_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: q_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: dst.as_entire_binding(),
                },
            ],
        });
        let wg_x = cols.div_ceil(TILE) as u32;
        let wg_y = rows.div_ceil(TILE) as u32;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        if wg_x > max || wg_y > max {
            return Err(GpuError::Execution(format!(
                "lora_merge: a {rows}×{cols} chunk needs {wg_x}×{wg_y} workgroups (limit {max})"
            )));
        }
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("lora_merge"),
        });
        {
            let mut cp = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("lora_merge"),
                timestamp_writes: None,
            });
            cp.set_pipeline(&self.pipeline);
            cp.set_bind_group(0, &group, &[]);
            cp.dispatch_workgroups(wg_x, wg_y, 1);
        }
        encoder.copy_buffer_to_buffer(&dst, 0, &readback, 0, out_bytes);
        let submission = self.ctx.queue.submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| GpuError::Execution(e.to_string()))?;
        loop {
            match rx.try_recv() {
                Ok(r) => {
                    r.map_err(|e| GpuError::Execution(format!("lora_merge read-back: {e}")))?;
                    break;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(GpuError::Execution(
                        "lora_merge read-back: callback dropped".into(),
                    ))
                }
                Err(mpsc::TryRecvError::Empty) => {
                    device
                        .poll(wgpu::PollType::Poll)
                        .map_err(|e| GpuError::Execution(e.to_string()))?;
                    std::thread::yield_now();
                }
            }
        }
        let bits = {
            let view = readback
                .get_mapped_range(..)
                .map_err(|e| GpuError::Execution(e.to_string()))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        readback.unmap();
        self.ctx.kernels.take_errors()?;
        Ok(bits)
    }

    /// Merge the canary set on the GPU and on the CPU and compare every bit.
    pub fn self_check(&self) -> Result<(), GpuError> {
        for (i, c) in canaries().iter().enumerate() {
            let refs: Vec<&LowRankUpdate> = c.updates.iter().collect();
            let gpu = self.merge(c.ty, &c.w, c.cols, c.first_row, &refs)?;
            let cpu = cpu_merge_bits(c.ty, &c.w, c.cols, c.first_row, &refs);
            if let Some(at) = gpu.iter().zip(&cpu).position(|(g, c)| g != c) {
                return Err(GpuError::SelfCheckFailed {
                    kernel: "lora_merge".into(),
                    adapter: self.ctx.adapter().name.clone(),
                    detail: format!(
                        "canary {i} ({}): element {at} is {:#x}, the CPU says {:#x}",
                        c.what, gpu[at], cpu[at]
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The CPU merge of the contract, as the bits the GPU returns (one u32 per element).
pub fn cpu_merge_bits(
    ty: GgmlType,
    w: &[f32],
    cols: usize,
    first_row: usize,
    updates: &[&LowRankUpdate],
) -> Vec<u32> {
    let mut v = w.to_vec();
    merge_rows(&mut v, cols, first_row, updates);
    v.iter()
        .map(|&x| match ty {
            GgmlType::F16 => crate::quant::f32_to_f16(x) as u32,
            GgmlType::BF16 => crate::quant::f32_to_bf16(x) as u32,
            _ => x.to_bits(),
        })
        .collect()
}

/// One self-check case.
pub struct Canary {
    /// What the case exercises, for the failure message.
    pub what: &'static str,
    /// The output type (F32, F16 or BF16).
    pub ty: GgmlType,
    /// The base matrix's rows to merge into, row-major.
    pub w: Vec<f32>,
    /// Columns of the base matrix.
    pub cols: usize,
    /// Row of the full matrix where `w` starts (exercises slicing the updates).
    pub first_row: usize,
    /// The updates to fold in.
    pub updates: Vec<LowRankUpdate>,
}

/// The self-check's cases: what a driver that fuses, flushes or mishandles zeros gets wrong.
pub fn canaries() -> Vec<Canary> {
    let mut rng = crate::rng::Rng::new(0x10ea);
    let mut gauss =
        |n: usize, s: f64| -> Vec<f32> { (0..n).map(|_| (rng.gauss() * s) as f32).collect() };
    let update = |rows: usize, cols: usize, rank: usize, scale: f32, p: Vec<f32>, q: Vec<f32>| {
        assert_eq!((p.len(), q.len()), (rows * rank, rank * cols));
        LowRankUpdate { p, q, rank, scale }
    };
    let mut out = Vec::new();

    // Ragged tiles, ranks 1 and 17 (a tile and one), two adapters, bf16 rounding.
    let (r, c) = (37, 45);
    out.push(Canary {
        what: "ragged 37×45, ranks 1 + 17, bf16",
        ty: GgmlType::BF16,
        w: gauss(r * c, 0.05),
        cols: c,
        first_row: 0,
        updates: vec![
            update(r, c, 1, 2.0, gauss(r, 0.1), gauss(c, 0.1)),
            update(r, c, 17, -0.37, gauss(r * 17, 0.1), gauss(17 * c, 0.1)),
        ],
    });

    // f32 subnormals in W, P and Q; products that underflow; signed zeros in W with a zero
    // update (W = -0 must stay -0 when scale·acc is +0, and become +0 with a -0 update).
    let (r, c, k) = (20, 19, 5);
    let tiny = |rng_v: Vec<f32>| -> Vec<f32> {
        rng_v
            .into_iter()
            .enumerate()
            .map(|(i, v)| match i % 4 {
                0 => v * 1e-39,
                1 => v * 1e-20,
                2 => 0.0,
                _ => v,
            })
            .collect()
    };
    let mut w = tiny(gauss(r * c, 1.0));
    for (i, x) in w.iter_mut().enumerate().take(c) {
        *x = if i % 2 == 0 { -0.0 } else { 0.0 };
    }
    let mut p = tiny(gauss(r * k, 1.0));
    for x in p.iter_mut().take(k) {
        *x = 0.0; // row 0 gets a zero update
    }
    out.push(Canary {
        what: "subnormals and signed zeros, f32",
        ty: GgmlType::F32,
        w: w.clone(),
        cols: c,
        first_row: 0,
        updates: vec![update(r, c, k, 1.5, p.clone(), tiny(gauss(k * c, 1.0)))],
    });
    out.push(Canary {
        what: "subnormals and signed zeros, negative scale, f16",
        ty: GgmlType::F16,
        w,
        cols: c,
        first_row: 0,
        updates: vec![update(r, c, k, -0.75, p, tiny(gauss(k * c, 1.0)))],
    });

    // Values near the f16 limits (overflow to inf, subnormal f16 results), rank 16 exactly.
    let (r, c, k) = (16, 33, 16);
    let mut w = gauss(r * c, 30000.0);
    w.iter_mut().step_by(3).for_each(|x| *x *= 1e-9);
    out.push(Canary {
        what: "f16 limits, rank 16",
        ty: GgmlType::F16,
        w,
        cols: c,
        first_row: 0,
        updates: vec![update(r, c, k, 1.0, gauss(r * k, 60.0), gauss(k * c, 60.0))],
    });

    // Nine adapters (two dispatches chained) on a slab that starts at row 5 of its update.
    let (rows_total, r, c) = (12, 7, 18);
    let updates = (0..9)
        .map(|i| {
            let k = 1 + (i * 5) % 19;
            update(
                rows_total,
                c,
                k,
                0.25 * (i as f32 - 4.0),
                gauss(rows_total * k, 0.3),
                gauss(k * c, 0.3),
            )
        })
        .collect();
    out.push(Canary {
        what: "nine adapters, slab from row 5, bf16",
        ty: GgmlType::BF16,
        w: gauss(r * c, 0.2),
        cols: c,
        first_row: 5,
        updates,
    });
    out
}

#[cfg(test)]
mod wgsl_layout {
    use super::MergeParams;
    use crate::gpu::layout::assert_wgsl_mirror;

    #[test]
    fn merge_params_mirror_wgsl() {
        let source = format!(
            "{}\n{}\n",
            include_str!("../../shaders/exact.wgsl"),
            include_str!("../../shaders/lora_merge.wgsl")
        );
        assert_wgsl_mirror!(MergeParams, source, "MergeParams", {
            rows => "rows",
            cols => "cols",
            n_adapters => "n_adapters",
            out_type => "out_type",
            zero => "zero",
            pad => "pad0",
            adapters => "adapters",
        });
    }
}
