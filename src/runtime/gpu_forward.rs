//! The GPU twin of the CPU llama forward pass (`model::forward`): [`GpuLlama`] implements
//! [`CausalLm`], so perplexity, KL divergence and importance-matrix collection run on either
//! device.
//!
//! What lives where:
//! - Weights are uploaded once, as f32 (packed matrices are dequantized row by row with the
//!   same dequantizer the CPU path uses). A matrix larger than the adapter's storage binding
//!   limit (128 MiB on lavapipe) is split into chunks of whole rows, one buffer each, and its
//!   matmul runs one dispatch per chunk.
//! - The KV cache, every activation, and the token-embedding gather stay on the GPU; a forward
//!   call uploads the token ids and reads back only the logits.
//! - RoPE's cos/sin table is computed on the host, once per position, with the very expression
//!   the CPU path evaluates: WGSL only promises sin/cos to 2⁻¹¹ absolute inside [−π, π], and
//!   RoPE angles reach thousands of radians.
//! - With an observer (imatrix collection), the input of every matmul is read back and handed
//!   to `observe` under the CPU path's weight names, in the CPU path's order.
//!
//! Determinism: shaders/forward.wgsl reduces in a fixed order (no atomics, no subgroups), so a
//! device gives identical bits on every run. Results differ from the CPU's in the last bits
//! (different summation order, f32 instead of the CPU's f64 in RMSNorm and softmax sums,
//! device `exp`); tests/gpu/forward_*.rs state the tolerances.
//!
//! Self-check: a driver may fuse, flush or approximate differently from lavapipe, so before a
//! model is uploaded to an adapter, [`GpuLlama::self_check`] runs a generated canary model on
//! it and compares the logits with the CPU path's (within the tolerance above); an adapter
//! that fails is never used for the forward pass. The result is kept per adapter.
//!
//! Steps are planned once per buffer size (the [`Scratch`]): every dispatch's bind group and
//! static parameters are built then; a forward call only writes the token ids and a 16-byte
//! call uniform (token count, first position) and records the dispatches.

use std::collections::HashMap;
use std::sync::{mpsc, Mutex, OnceLock};

use crate::runtime::error::{error_chain_text, RuntimeError};

/// What the GPU forward pass's functions return.
type Result<T, E = RuntimeError> = std::result::Result<T, E>;
use wgpu::util::DeviceExt;

use crate::formats::gguf::Metadata;
use crate::gpu::device::GpuContext;
use crate::quant::GgmlType;
use crate::runtime::forward::{CausalLm, Linear, LlamaConfig, LlamaModel, MatmulObserver, Matrix};
use crate::runtime::synthetic::SyntheticLlama;

const SHADER: &str = include_str!("../../shaders/forward.wgsl");
/// Invocations per workgroup of every kernel (`WG` in the shader).
const WG: usize = 64;
/// Weight rows and tokens of a matmul workgroup's tile (`TILE_R`, `TILE_T`).
const TILE: usize = 32;
/// Largest head width the attention kernel holds (`MAX_HEAD_DIM`, 4 dims per invocation).
const MAX_HEAD_DIM: usize = 256;
/// Keys per softmax block of the attention kernel (`ATT_BLOCK`).
const ATT_BLOCK: usize = 512;
/// Step parameters sit at this stride in their uniform buffer (WebGPU's largest permitted
/// `min_uniform_buffer_offset_alignment`).
const PARAM_STRIDE: u64 = 256;
/// lavapipe (llvmpipe) silently stops every loop of an invocation after 65535 iterations in
/// total; on software adapters, shapes whose estimated loop count exceeds this are refused.
const SOFTWARE_LOOP_BUDGET: usize = 60_000;

/// `Step` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct StepParams {
    rows: u32,
    cols: u32,
    x_base: u32,
    x_stride: u32,
    y_base: u32,
    y_stride: u32,
    y_pos_stride: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    head_dim_v: u32,
    n_rot: u32,
    eps: f32,
    scale: f32,
    pad0: u32,
    pad1: u32,
}
const _: () = assert!(std::mem::size_of::<StepParams>() == 64);

/// `Call` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct CallParams {
    n_tokens: u32,
    pos0: u32,
    pad0: u32,
    pad1: u32,
}
const _: () = assert!(std::mem::size_of::<CallParams>() == 16);

/// The entry points of shaders/forward.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Embed,
    RmsNorm,
    Matmul,
    Rope,
    Attention,
    Swiglu,
    Add,
}

impl Kernel {
    const ALL: [Kernel; 7] = [
        Kernel::Embed,
        Kernel::RmsNorm,
        Kernel::Matmul,
        Kernel::Rope,
        Kernel::Attention,
        Kernel::Swiglu,
        Kernel::Add,
    ];

    fn entry(self) -> &'static str {
        match self {
            Kernel::Embed => "embed",
            Kernel::RmsNorm => "rms_norm",
            Kernel::Matmul => "matmul",
            Kernel::Rope => "rope",
            Kernel::Attention => "attention",
            Kernel::Swiglu => "swiglu",
            Kernel::Add => "add",
        }
    }
}

/// How many workgroups a step dispatches, as a function of the call's token count.
#[derive(Clone, Copy, Debug)]
enum Grid {
    /// One workgroup per token.
    PerToken,
    /// Matmul tiles over `rows` weight rows × tokens.
    Tiles { rows: usize },
    /// One workgroup per (head, token).
    Heads { n_head: usize },
    /// A grid-stride loop over `per_token` values of each token.
    Stride { per_token: usize },
}

/// One recorded operation of the forward pass.
enum Step {
    Dispatch {
        kernel: Kernel,
        group: wgpu::BindGroup,
        grid: Grid,
    },
    /// Read back `src` (tokens × `width`) and show it to the observer once per weight name.
    Observe {
        src: wgpu::Buffer,
        width: usize,
        names: Vec<String>,
    },
}

/// A step before its bind group exists (the parameter buffer is made from all of them).
struct PlannedStep {
    kernel: Kernel,
    params: StepParams,
    inputs: [Option<wgpu::Buffer>; 3],
    out: wgpu::Buffer,
    grid: Grid,
}

/// A run of whole weight rows in one buffer.
struct WeightChunk {
    row0: usize,
    rows: usize,
    buffer: wgpu::Buffer,
}

/// A matrix (and optional bias) on the device.
struct GpuMatrix {
    name: String,
    rows: usize,
    cols: usize,
    chunks: Vec<WeightChunk>,
    bias: Option<wgpu::Buffer>,
}

struct GpuLayer {
    attn_norm: wgpu::Buffer,
    wq: GpuMatrix,
    wk: GpuMatrix,
    wv: GpuMatrix,
    wo: GpuMatrix,
    ffn_norm: wgpu::Buffer,
    ffn_gate: GpuMatrix,
    ffn_up: GpuMatrix,
    ffn_down: GpuMatrix,
}

/// Logits of one output-matrix chunk: tokens × `rows`, for vocabulary rows `row0..`.
struct LogitsPart {
    row0: usize,
    rows: usize,
    buffer: wgpu::Buffer,
}

/// Activations, KV cache and the planned steps for up to `max_tokens` per call and `max_ctx`
/// positions.
struct Scratch {
    max_tokens: usize,
    max_ctx: usize,
    tokens: wgpu::Buffer,
    call: wgpu::Buffer,
    rope_table: wgpu::Buffer,
    /// Positions whose RoPE table rows have been written.
    rope_rows: usize,
    logits_parts: Vec<LogitsPart>,
    logits_read: wgpu::Buffer,
    observe_read: wgpu::Buffer,
    steps: Vec<Step>,
}

/// A llama model on a GPU. Build it with [`GpuLlama::new`]; evaluate through [`CausalLm`].
pub struct GpuLlama {
    config: LlamaConfig,
    metadata: Metadata,
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: String,
    software: bool,
    /// Largest buffer this model binds (the adapter's limits, or a test's cap).
    binding_limit: u64,
    max_buffer: u64,
    max_workgroups: u32,
    bind_layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
    dummy: wgpu::Buffer,
    tok_embd: GpuMatrix,
    layers: Vec<GpuLayer>,
    output_norm: wgpu::Buffer,
    /// None: tied embeddings, the output matmul reads `tok_embd`.
    output: Option<GpuMatrix>,
    /// The per-pair angle factors, exactly as the CPU path computes them.
    rope_inv_freq: Vec<f32>,
    state: Mutex<Option<Scratch>>,
}

impl std::fmt::Debug for GpuLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuLlama")
            .field("adapter", &self.adapter)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Read-only storage usage of weights and constant vectors.
const WEIGHT_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE;
/// Activations: bound read-write, copied out for observers and logits.
const ACT_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

fn padded(bytes: u64) -> u64 {
    bytes.max(16).next_multiple_of(4)
}

/// Largest |GPU − CPU| logit difference the self-check accepts, relative to the largest CPU
/// logit (the tolerance tests/gpu/forward_logits.rs holds the pass to).
const CHECK_TOLERANCE: f32 = 1e-3;

/// The canary the self-check runs: [`SyntheticLlama::tiny`] with F16 weights, small enough to
/// take milliseconds.
fn canary_model() -> SyntheticLlama {
    SyntheticLlama::tiny(GgmlType::F16, 0x5e1f_c4ec)
}

/// Why `gpu` logits are not the CPU's `cpu` logits within [`CHECK_TOLERANCE`], if they are not.
pub fn compare_logits(cpu: &[f32], gpu: &[f32]) -> Result<(), String> {
    if cpu.len() != gpu.len() {
        return Err(format!("{} logits instead of {}", gpu.len(), cpu.len()));
    }
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = (0usize, 0f32);
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        let d = (c - g).abs();
        if !g.is_finite() || d.is_nan() {
            return Err(format!("logit {i} is {g} on the GPU, {c} on the CPU"));
        }
        if d > worst.1 {
            worst = (i, d);
        }
    }
    if worst.1 > CHECK_TOLERANCE * scale {
        let i = worst.0;
        return Err(format!(
            "logit {i} is {} on the GPU, {} on the CPU (|Δ| {:.3e} > {:.0e} × {scale:.3})",
            gpu[i], cpu[i], worst.1, CHECK_TOLERANCE
        ));
    }
    Ok(())
}

impl GpuLlama {
    /// Upload `model` to `gpu` and build the kernels, once the adapter has passed the forward
    /// pass's self-check. The CPU model can be dropped afterwards.
    pub fn new(gpu: &GpuContext, model: &LlamaModel) -> Result<GpuLlama> {
        GpuLlama::self_check(gpu)?;
        GpuLlama::build(gpu, model, None)
    }

    /// Run the canary model on `gpu` and compare its logits with the CPU path's; the result is
    /// remembered per adapter, so each process checks an adapter once.
    pub fn self_check(gpu: &GpuContext) -> Result<()> {
        static CHECKED: OnceLock<Mutex<HashMap<String, Result<(), String>>>> = OnceLock::new();
        let a = gpu.adapter();
        let key = format!("{}|{:?}|{}|{}", a.index, a.backend, a.name, a.driver);
        let cache = CHECKED.get_or_init(|| Mutex::new(HashMap::new()));
        let known = cache.lock().unwrap().get(&key).cloned();
        let result = match known {
            Some(r) => r,
            None => {
                let r = LlamaModel::from_source(&canary_model().source())
                    .and_then(|canary| GpuLlama::self_check_models(gpu, &canary, &canary))
                    .map_err(|e| error_chain_text(&e));
                cache.lock().unwrap().insert(key, r.clone());
                r
            }
        };
        result.map_err(|detail| RuntimeError::SelfCheck {
            adapter: a.name.clone(),
            detail,
        })
    }

    /// The self-check's comparison: `on_gpu` uploaded and run on the canary tokens, against
    /// `reference` run on the CPU. (Tests hand in a reference that differs on purpose.)
    #[doc(hidden)]
    pub fn self_check_models(
        gpu: &GpuContext,
        on_gpu: &LlamaModel,
        reference: &LlamaModel,
    ) -> Result<()> {
        let n_vocab = reference.config.n_vocab as u32;
        // Enough tokens for two micro-batches and positions far enough apart for RoPE to matter.
        let tokens: Vec<u32> = (0..24u32).map(|i| (i * 37 + 11) % n_vocab).collect();
        let cpu = reference.eval_sequence(&tokens, 16, None)?;
        let g = GpuLlama::build(gpu, on_gpu, None)?;
        let gpu_logits = g.eval_sequence(&tokens, 16, None)?;
        compare_logits(&cpu, &gpu_logits).map_err(|what| RuntimeError::LogitsDiffer { what })
    }

    /// `new`, binding no buffer larger than `cap_bytes` (so tests can exercise chunked
    /// weights and split micro-batches on tiny models).
    #[doc(hidden)]
    pub fn with_binding_cap(
        gpu: &GpuContext,
        model: &LlamaModel,
        cap_bytes: u64,
    ) -> Result<GpuLlama> {
        GpuLlama::build(gpu, model, Some(cap_bytes))
    }

    fn build(gpu: &GpuContext, model: &LlamaModel, cap: Option<u64>) -> Result<GpuLlama> {
        let c = model.config.clone();
        if c.head_dim > MAX_HEAD_DIM || c.head_dim_v > MAX_HEAD_DIM {
            return Err(RuntimeError::unsupported(format!(
                "head width {}/{} is not supported yet by the GPU forward pass (at most {MAX_HEAD_DIM})",
                c.head_dim,
                c.head_dim_v
            )));
        }
        let device = gpu.device.clone();
        let queue = gpu.queue.clone();
        let limits = &gpu.limits;
        let binding_limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(cap.unwrap_or(u64::MAX))
            & !3;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);

        let ro = wgpu::BufferBindingType::Storage { read_only: true };
        let rw = wgpu::BufferBindingType::Storage { read_only: false };
        let uniform = wgpu::BufferBindingType::Uniform;
        let (bind_layout, pipeline_layout) = crate::gpu::pipelines::buffer_layouts(
            &device,
            "qforge forward",
            &[uniform, uniform, ro, ro, ro, rw],
        );
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("forward.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let pipelines = Kernel::ALL
            .iter()
            .map(|k| {
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(k.entry()),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(k.entry()),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .collect();
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qforge forward dummy"),
            size: 16,
            usage: WEIGHT_USAGE,
            mapped_at_creation: false,
        });

        let vector = |name: &str, v: &[f32]| -> wgpu::Buffer {
            let mut bytes: Vec<u8> = bytemuck::cast_slice(v).to_vec();
            bytes.resize(padded(bytes.len() as u64) as usize, 0);
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(name),
                contents: &bytes,
                usage: WEIGHT_USAGE,
            })
        };
        let matrix = |m: &Matrix, bias: Option<&Vec<f32>>| -> Result<GpuMatrix> {
            upload_matrix(&device, m, bias.map(|b| vector(&m.name, b)), binding_limit)
        };
        let linear = |l: &Linear| matrix(&l.weight, l.bias.as_ref());

        let tok_embd = matrix(&model.tok_embd, None)?;
        let mut layers = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            layers.push(GpuLayer {
                attn_norm: vector("attn_norm", &l.attn_norm),
                wq: linear(&l.wq)?,
                wk: linear(&l.wk)?,
                wv: linear(&l.wv)?,
                wo: linear(&l.wo)?,
                ffn_norm: vector("ffn_norm", &l.ffn_norm),
                ffn_gate: linear(&l.ffn_gate)?,
                ffn_up: linear(&l.ffn_up)?,
                ffn_down: linear(&l.ffn_down)?,
            });
        }
        let output = model.output.as_ref().map(linear).transpose()?;
        let output_norm = vector("output_norm", &model.output_norm);

        // The CPU path's `rope`: theta_scale^i / freq_factor[i].
        let half = c.n_rot / 2;
        let theta_scale = c.rope_freq_base.powf(-2.0 / c.n_rot as f32);
        let rope_inv_freq = (0..half)
            .map(|i| {
                let f = theta_scale.powi(i as i32);
                match &model.rope_freqs {
                    Some(ff) => f / ff[i],
                    None => f,
                }
            })
            .collect();

        let verr = pollster::block_on(validation.pop());
        let oerr = pollster::block_on(oom.pop());
        if let Some(e) = oerr.or(verr) {
            return Err(RuntimeError::gpu(format!(
                "building the GPU forward pass on '{}': {e}",
                gpu.adapter.name
            )));
        }
        Ok(GpuLlama {
            config: c,
            metadata: model.metadata.clone(),
            device,
            queue,
            adapter: gpu.adapter.name.clone(),
            software: gpu.adapter.is_software(),
            binding_limit,
            max_buffer: limits.max_buffer_size,
            max_workgroups: limits.max_compute_workgroups_per_dimension,
            bind_layout,
            pipelines,
            dummy,
            tok_embd,
            layers,
            output_norm,
            output,
            rope_inv_freq,
            state: Mutex::new(None),
        })
    }

    /// The adapter this model runs on.
    pub fn adapter_name(&self) -> &str {
        &self.adapter
    }

    /// The matrix the logits come from (the embedding when tied).
    fn output_matrix(&self) -> &GpuMatrix {
        self.output.as_ref().unwrap_or(&self.tok_embd)
    }

    /// Widest per-token activation (values), including one chunk of logits.
    fn max_width(&self) -> usize {
        let c = &self.config;
        let logits_chunk = self
            .output_matrix()
            .chunks
            .iter()
            .map(|ch| ch.rows)
            .max()
            .unwrap_or(0);
        [
            c.n_embd,
            c.n_head * c.head_dim,
            c.n_head * c.head_dim_v,
            c.n_ff,
            logits_chunk,
        ]
        .into_iter()
        .max()
        .unwrap_or(1)
    }

    /// Most tokens one forward call can hold within the binding and dispatch limits.
    fn max_tokens_per_call(&self) -> usize {
        let by_binding = (self.binding_limit / (4 * self.max_width() as u64)) as usize;
        let by_readback = (self.max_buffer / (4 * self.config.n_vocab.max(1) as u64)) as usize;
        by_binding
            .min(by_readback)
            .min(self.max_workgroups as usize)
            .max(1)
    }

    /// Refuse contexts the KV cache bindings, the dispatch limits or (on software adapters)
    /// llvmpipe's loop limit cannot take.
    fn check_context(&self, n_ctx: usize) -> Result<()> {
        let c = &self.config;
        let kv_row = (c.n_head_kv * c.head_dim.max(c.head_dim_v)).max(c.n_rot);
        if (n_ctx * kv_row * 4) as u64 > self.binding_limit {
            return Err(RuntimeError::unsupported(format!(
                "a context of {n_ctx} positions does not fit the KV cache bindings of '{}' \
                 ({} bytes per binding): not supported yet on this adapter",
                self.adapter, self.binding_limit
            )));
        }
        if self.software {
            let max_cols = self
                .layers
                .iter()
                .flat_map(|l| [l.wq.cols, l.wo.cols, l.ffn_down.cols, l.ffn_gate.cols])
                .chain([self.output_matrix().cols])
                .max()
                .unwrap_or(0);
            let matmul = max_cols.div_ceil(TILE) * (16 + TILE + 4);
            let attention = n_ctx.div_ceil(ATT_BLOCK) * 24
                + n_ctx.div_ceil(WG) * (c.head_dim + 4)
                + n_ctx
                + c.head_dim;
            let norm = 2 * c.n_embd.div_ceil(WG) + 16;
            let worst = matmul.max(attention).max(norm);
            if worst > SOFTWARE_LOOP_BUDGET {
                return Err(RuntimeError::unsupported(format!(
                    "this shape (context {n_ctx}, widest matmul input {max_cols}) needs ~{worst} \
                     loop iterations per invocation; the software adapter '{}' stops loops after \
                     65535: not supported yet on it (use --device cpu or a hardware GPU)",
                    self.adapter
                )));
            }
        }
        Ok(())
    }

    fn new_buffer(&self, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: padded(bytes),
            usage,
            mapped_at_creation: false,
        })
    }

    /// Allocate activations and cache for `t` tokens per call and `n_ctx` positions, and plan
    /// every step of a forward call.
    fn build_scratch(&self, t: usize, n_ctx: usize) -> Result<Scratch> {
        let c = &self.config;
        let f = 4u64;
        let (t64, n64) = (t as u64, n_ctx as u64);
        let q_width = c.n_head * c.head_dim;
        let a_width = c.n_head * c.head_dim_v;
        let k_row = c.n_head_kv * c.head_dim;
        let v_row = c.n_head_kv * c.head_dim_v;
        let act =
            |label: &str, width: usize| self.new_buffer(label, t64 * width as u64 * f, ACT_USAGE);
        let tokens = act("tokens", 1);
        let hidden = act("hidden", c.n_embd);
        let xnorm = act("xnorm", c.n_embd);
        let delta = act("delta", c.n_embd);
        let q = act("q", q_width);
        let attn = act("attn", a_width);
        let gate = act("gate", c.n_ff);
        let up = act("up", c.n_ff);
        let rope_table = self.new_buffer("rope table", n64 * c.n_rot as u64 * f, ACT_USAGE);
        let call = self.new_buffer(
            "call",
            std::mem::size_of::<CallParams>() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        let out_m = self.output_matrix();
        let logits_parts: Vec<LogitsPart> = out_m
            .chunks
            .iter()
            .map(|ch| LogitsPart {
                row0: ch.row0,
                rows: ch.rows,
                buffer: act("logits", ch.rows),
            })
            .collect();
        let read = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let logits_read = self.new_buffer("logits read", t64 * c.n_vocab as u64 * f, read);
        let observe_read = self.new_buffer("observe read", t64 * self.max_width() as u64 * f, read);

        let u = |v: usize| v as u32;
        let base = StepParams {
            n_head: u(c.n_head),
            n_head_kv: u(c.n_head_kv),
            head_dim: u(c.head_dim),
            head_dim_v: u(c.head_dim_v),
            n_rot: u(c.n_rot),
            eps: c.rms_eps,
            scale: c.attn_scale,
            ..Default::default()
        };
        let mut plan: Vec<PlannedStep> = Vec::new();
        let mut observes: Vec<(usize, Step)> = Vec::new();
        let observe = |plan: &Vec<PlannedStep>,
                       observes: &mut Vec<(usize, Step)>,
                       src: &wgpu::Buffer,
                       width: usize,
                       names: Vec<String>| {
            observes.push((
                plan.len(),
                Step::Observe {
                    src: src.clone(),
                    width,
                    names,
                },
            ));
        };
        // y = W·x (+ b) into `out` at y_base, y_stride per token, y_pos_stride per position.
        let linear = |plan: &mut Vec<PlannedStep>,
                      m: &GpuMatrix,
                      x: &wgpu::Buffer,
                      out: &wgpu::Buffer,
                      y_stride: usize,
                      y_pos_stride: usize| {
            for ch in &m.chunks {
                plan.push(PlannedStep {
                    kernel: Kernel::Matmul,
                    params: StepParams {
                        rows: u(ch.rows),
                        cols: u(m.cols),
                        x_stride: u(m.cols),
                        y_base: u(ch.row0),
                        y_stride: u(y_stride),
                        y_pos_stride: u(y_pos_stride),
                        ..base
                    },
                    inputs: [Some(ch.buffer.clone()), Some(x.clone()), None],
                    out: out.clone(),
                    grid: Grid::Tiles { rows: ch.rows },
                });
            }
            if let Some(b) = &m.bias {
                plan.push(PlannedStep {
                    kernel: Kernel::Add,
                    params: StepParams {
                        rows: u(m.rows),
                        x_stride: 0,
                        y_stride: u(y_stride),
                        y_pos_stride: u(y_pos_stride),
                        ..base
                    },
                    inputs: [Some(b.clone()), None, None],
                    out: out.clone(),
                    grid: Grid::Stride { per_token: m.rows },
                });
            }
        };
        let rms = |plan: &mut Vec<PlannedStep>, w: &wgpu::Buffer| {
            plan.push(PlannedStep {
                kernel: Kernel::RmsNorm,
                params: StepParams {
                    rows: u(c.n_embd),
                    x_stride: u(c.n_embd),
                    y_stride: u(c.n_embd),
                    ..base
                },
                inputs: [Some(hidden.clone()), Some(w.clone()), None],
                out: xnorm.clone(),
                grid: Grid::PerToken,
            });
        };
        let residual = |plan: &mut Vec<PlannedStep>| {
            plan.push(PlannedStep {
                kernel: Kernel::Add,
                params: StepParams {
                    rows: u(c.n_embd),
                    x_stride: u(c.n_embd),
                    y_stride: u(c.n_embd),
                    ..base
                },
                inputs: [Some(delta.clone()), None, None],
                out: hidden.clone(),
                grid: Grid::Stride {
                    per_token: c.n_embd,
                },
            });
        };
        let rope = |plan: &mut Vec<PlannedStep>,
                    buf: &wgpu::Buffer,
                    n_head: usize,
                    y_stride: usize,
                    y_pos_stride: usize| {
            if c.n_rot == 0 {
                return;
            }
            plan.push(PlannedStep {
                kernel: Kernel::Rope,
                params: StepParams {
                    n_head: u(n_head),
                    y_stride: u(y_stride),
                    y_pos_stride: u(y_pos_stride),
                    ..base
                },
                inputs: [Some(rope_table.clone()), None, None],
                out: buf.clone(),
                grid: Grid::Stride {
                    per_token: n_head * c.n_rot / 2,
                },
            });
        };

        for ch in &self.tok_embd.chunks {
            plan.push(PlannedStep {
                kernel: Kernel::Embed,
                params: StepParams {
                    rows: u(ch.rows),
                    cols: u(c.n_embd),
                    x_base: u(ch.row0),
                    y_stride: u(c.n_embd),
                    ..base
                },
                inputs: [Some(ch.buffer.clone()), Some(tokens.clone()), None],
                out: hidden.clone(),
                grid: Grid::Stride {
                    per_token: c.n_embd,
                },
            });
        }
        for layer in &self.layers {
            let k_cache = self.new_buffer("k cache", n64 * k_row as u64 * f, ACT_USAGE);
            let v_cache = self.new_buffer("v cache", n64 * v_row as u64 * f, ACT_USAGE);
            rms(&mut plan, &layer.attn_norm);
            observe(
                &plan,
                &mut observes,
                &xnorm,
                c.n_embd,
                vec![
                    layer.wq.name.clone(),
                    layer.wk.name.clone(),
                    layer.wv.name.clone(),
                ],
            );
            linear(&mut plan, &layer.wq, &xnorm, &q, q_width, 0);
            // Keys and values land straight in the cache, at row pos0 + t.
            linear(&mut plan, &layer.wk, &xnorm, &k_cache, k_row, k_row);
            linear(&mut plan, &layer.wv, &xnorm, &v_cache, v_row, v_row);
            rope(&mut plan, &q, c.n_head, q_width, 0);
            rope(&mut plan, &k_cache, c.n_head_kv, k_row, k_row);
            plan.push(PlannedStep {
                kernel: Kernel::Attention,
                params: StepParams {
                    x_stride: u(q_width),
                    y_stride: u(a_width),
                    ..base
                },
                inputs: [Some(q.clone()), Some(k_cache), Some(v_cache)],
                out: attn.clone(),
                grid: Grid::Heads { n_head: c.n_head },
            });
            observe(
                &plan,
                &mut observes,
                &attn,
                a_width,
                vec![layer.wo.name.clone()],
            );
            linear(&mut plan, &layer.wo, &attn, &delta, c.n_embd, 0);
            residual(&mut plan);
            rms(&mut plan, &layer.ffn_norm);
            observe(
                &plan,
                &mut observes,
                &xnorm,
                c.n_embd,
                vec![layer.ffn_gate.name.clone(), layer.ffn_up.name.clone()],
            );
            linear(&mut plan, &layer.ffn_gate, &xnorm, &gate, c.n_ff, 0);
            linear(&mut plan, &layer.ffn_up, &xnorm, &up, c.n_ff, 0);
            plan.push(PlannedStep {
                kernel: Kernel::Swiglu,
                params: StepParams {
                    rows: u(c.n_ff),
                    x_stride: u(c.n_ff),
                    y_stride: u(c.n_ff),
                    ..base
                },
                inputs: [Some(gate.clone()), None, None],
                out: up.clone(),
                grid: Grid::Stride { per_token: c.n_ff },
            });
            observe(
                &plan,
                &mut observes,
                &up,
                c.n_ff,
                vec![layer.ffn_down.name.clone()],
            );
            linear(&mut plan, &layer.ffn_down, &up, &delta, c.n_embd, 0);
            residual(&mut plan);
        }
        rms(&mut plan, &self.output_norm);
        observe(
            &plan,
            &mut observes,
            &xnorm,
            c.n_embd,
            vec![out_m.name.clone()],
        );
        for (ch, part) in out_m.chunks.iter().zip(&logits_parts) {
            plan.push(PlannedStep {
                kernel: Kernel::Matmul,
                params: StepParams {
                    rows: u(ch.rows),
                    cols: u(c.n_embd),
                    x_stride: u(c.n_embd),
                    y_stride: u(ch.rows),
                    ..base
                },
                inputs: [Some(ch.buffer.clone()), Some(xnorm.clone()), None],
                out: part.buffer.clone(),
                grid: Grid::Tiles { rows: ch.rows },
            });
            if let Some(b) = &out_m.bias {
                plan.push(PlannedStep {
                    kernel: Kernel::Add,
                    params: StepParams {
                        rows: u(ch.rows),
                        x_base: u(ch.row0),
                        x_stride: 0,
                        y_stride: u(ch.rows),
                        ..base
                    },
                    inputs: [Some(b.clone()), None, None],
                    out: part.buffer.clone(),
                    grid: Grid::Stride { per_token: ch.rows },
                });
            }
        }

        // All static parameters in one uniform buffer, a 256-byte slot per step.
        let mut param_bytes =
            vec![0u8; (plan.len() as u64 * PARAM_STRIDE).max(PARAM_STRIDE) as usize];
        for (i, p) in plan.iter().enumerate() {
            let at = i * PARAM_STRIDE as usize;
            param_bytes[at..at + std::mem::size_of::<StepParams>()]
                .copy_from_slice(bytemuck::bytes_of(&p.params));
        }
        let params = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("step params"),
                contents: &param_bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut steps = Vec::with_capacity(plan.len() + observes.len());
        let mut observes = observes.into_iter().peekable();
        for (i, p) in plan.iter().enumerate() {
            while let Some((_, obs)) = observes.next_if(|(at, _)| *at == i) {
                steps.push(obs);
            }
            let buf = |b: &Option<wgpu::Buffer>| b.as_ref().unwrap_or(&self.dummy).clone();
            let [a, b, cc] = &p.inputs;
            let (a, b, cc) = (buf(a), buf(b), buf(cc));
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(p.kernel.entry()),
                layout: &self.bind_layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &params,
                            offset: i as u64 * PARAM_STRIDE,
                            size: wgpu::BufferSize::new(std::mem::size_of::<StepParams>() as u64),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: call.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: a.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: b.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: cc.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 5,
                        resource: p.out.as_entire_binding(),
                    },
                ],
            });
            steps.push(Step::Dispatch {
                kernel: p.kernel,
                group,
                grid: p.grid,
            });
        }
        steps.extend(observes.map(|(_, s)| s));
        Ok(Scratch {
            max_tokens: t,
            max_ctx: n_ctx,
            tokens,
            call,
            rope_table,
            rope_rows: 0,
            logits_parts,
            logits_read,
            observe_read,
            steps,
        })
    }

    /// Write the RoPE table rows of positions up to `n_ctx` not written yet: (cos, sin) of
    /// freq_scale·(pos·inv_freq[i]), the CPU path's expression and rounding.
    fn fill_rope_table(&self, s: &mut Scratch, n_ctx: usize) {
        let c = &self.config;
        if c.n_rot == 0 || s.rope_rows >= n_ctx {
            return;
        }
        let mut table = Vec::with_capacity((n_ctx - s.rope_rows) * c.n_rot);
        for p in s.rope_rows..n_ctx {
            let pos = p as f32;
            for &f in &self.rope_inv_freq {
                let theta = c.rope_freq_scale * (pos * f);
                let (sin, cos) = theta.sin_cos();
                table.push(cos);
                table.push(sin);
            }
        }
        self.queue.write_buffer(
            &s.rope_table,
            (s.rope_rows * c.n_rot * 4) as u64,
            bytemuck::cast_slice(&table),
        );
        s.rope_rows = n_ctx;
    }

    fn grid(&self, grid: Grid, n: usize) -> (u32, u32, u32) {
        let n32 = n as u32;
        match grid {
            Grid::PerToken => (n32, 1, 1),
            Grid::Tiles { rows } => (rows.div_ceil(TILE) as u32, n.div_ceil(TILE) as u32, 1),
            Grid::Heads { n_head } => (n_head as u32, n32, 1),
            Grid::Stride { per_token } => {
                let groups = (n * per_token).div_ceil(WG).max(1) as u32;
                (groups.min(self.max_workgroups).min(1 << 14), 1, 1)
            }
        }
    }

    /// Map `bytes` of `buf` (everything submitted so far having run) and return them as f32.
    fn read_back(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<f32>> {
        let (tx, rx) = mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| RuntimeError::gpu(format!("waiting for the GPU: {e}")))?;
        rx.recv()
            .map_err(|_| RuntimeError::gpu("GPU read-back callback dropped"))?
            .map_err(|e| RuntimeError::gpu(format!("mapping GPU results: {e}")))?;
        let out = {
            let view = buf
                .get_mapped_range(0..bytes)
                .map_err(|e| RuntimeError::gpu(format!("mapping GPU results: {e}")))?;
            view.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        buf.unmap();
        Ok(out)
    }

    /// One forward call: `tokens` at positions pos0.. (their keys and values join the cache);
    /// returns their logits, tokens × n_vocab.
    fn forward_call(
        &self,
        s: &Scratch,
        tokens: &[u32],
        pos0: usize,
        mut observer: Option<&mut dyn MatmulObserver>,
    ) -> Result<Vec<f32>> {
        let n = tokens.len();
        let nv = self.config.n_vocab;
        let ids: Vec<f32> = tokens.iter().map(|&t| t as f32).collect();
        self.queue
            .write_buffer(&s.tokens, 0, bytemuck::cast_slice(&ids));
        let call = CallParams {
            n_tokens: n as u32,
            pos0: pos0 as u32,
            ..Default::default()
        };
        self.queue
            .write_buffer(&s.call, 0, bytemuck::bytes_of(&call));
        let new_encoder = || {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("qforge forward"),
                })
        };
        let mut encoder = new_encoder();
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        for step in &s.steps {
            match step {
                Step::Dispatch {
                    kernel,
                    group,
                    grid,
                } => {
                    let p = pass.get_or_insert_with(|| {
                        encoder
                            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                                label: Some("qforge forward"),
                                timestamp_writes: None,
                            })
                            .forget_lifetime()
                    });
                    let ix = Kernel::ALL.iter().position(|k| k == kernel).unwrap();
                    p.set_pipeline(&self.pipelines[ix]);
                    p.set_bind_group(0, group, &[]);
                    let (x, y, z) = self.grid(*grid, n);
                    p.dispatch_workgroups(x, y, z);
                }
                Step::Observe { src, width, names } => {
                    let Some(obs) = observer.as_mut() else {
                        continue;
                    };
                    drop(pass.take());
                    let bytes = (n * width * 4) as u64;
                    encoder.copy_buffer_to_buffer(src, 0, &s.observe_read, 0, bytes);
                    let done = std::mem::replace(&mut encoder, new_encoder());
                    self.queue.submit([done.finish()]);
                    let x = self.read_back(&s.observe_read, bytes)?;
                    for name in names {
                        obs.observe(name, &x, n, *width);
                    }
                }
            }
        }
        drop(pass.take());
        for part in &s.logits_parts {
            encoder.copy_buffer_to_buffer(
                &part.buffer,
                0,
                &s.logits_read,
                (n * part.row0 * 4) as u64,
                (n * part.rows * 4) as u64,
            );
        }
        self.queue.submit([encoder.finish()]);
        let raw = self.read_back(&s.logits_read, (n * nv * 4) as u64)?;
        if s.logits_parts.len() == 1 {
            return Ok(raw);
        }
        // Each part holds tokens × its rows; interleave them back into tokens × n_vocab.
        let mut logits = vec![0f32; n * nv];
        for part in &s.logits_parts {
            let src = &raw[n * part.row0..n * (part.row0 + part.rows)];
            for (t, row) in src.chunks_exact(part.rows).enumerate() {
                logits[t * nv + part.row0..t * nv + part.row0 + part.rows].copy_from_slice(row);
            }
        }
        Ok(logits)
    }
}

/// Upload `m` as f32 in chunks of whole rows no larger than `limit` bytes.
fn upload_matrix(
    device: &wgpu::Device,
    m: &Matrix,
    bias: Option<wgpu::Buffer>,
    limit: u64,
) -> Result<GpuMatrix> {
    let row_bytes = (m.cols * 4) as u64;
    let per_chunk = (limit / row_bytes.max(1)) as usize;
    if per_chunk == 0 {
        return Err(RuntimeError::tensor(
            m.name.as_str(),
            format!(
                "a row of {row_bytes} bytes exceeds the adapter's storage binding limit of {limit} bytes"
            ),
        ));
    }
    let mut chunks = Vec::new();
    let mut buf = Vec::new();
    let mut row0 = 0;
    while row0 < m.rows {
        let rows = per_chunk.min(m.rows - row0);
        let size = padded(rows as u64 * row_bytes);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&m.name),
            size,
            usage: WEIGHT_USAGE,
            mapped_at_creation: true,
        });
        {
            let mut view = buffer.get_mapped_range_mut(..).map_err(|e| {
                RuntimeError::tensor(m.name.as_str(), format!("mapping the weight buffer: {e}"))
            })?;
            let mut w = view.slice(..);
            for r in 0..rows {
                let vals = m.row(row0 + r, &mut buf);
                let at = r * row_bytes as usize;
                w.slice(at..at + row_bytes as usize)
                    .copy_from_slice(bytemuck::cast_slice(vals));
            }
        }
        buffer.unmap();
        chunks.push(WeightChunk { row0, rows, buffer });
        row0 += rows;
    }
    Ok(GpuMatrix {
        name: m.name.clone(),
        rows: m.rows,
        cols: m.cols,
        chunks,
        bias,
    })
}

impl CausalLm for GpuLlama {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn eval_sequence(
        &self,
        tokens: &[u32],
        n_ubatch: usize,
        mut observer: Option<&mut dyn MatmulObserver>,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(RuntimeError::TokenOutOfRange {
                token: bad,
                n_vocab: c.n_vocab,
            });
        }
        let n_ctx = tokens.len();
        self.check_context(n_ctx)?;
        let ubatch = n_ubatch.max(1).min(n_ctx);
        let cap = self.max_tokens_per_call();
        // Splitting a micro-batch changes no logit (every kernel treats tokens independently)
        // but would change what an observer sees, so with one it is an error instead.
        let per_call = if ubatch > cap {
            if observer.is_some() {
                return Err(RuntimeError::unsupported(format!(
                    "micro-batches of {ubatch} tokens exceed what '{}' binds at once ({cap} \
                     tokens): use a micro-batch of at most {cap}",
                    self.adapter
                )));
            }
            cap
        } else {
            ubatch
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (want_t, want_ctx) = match &*state {
            Some(s) if s.max_tokens >= per_call && s.max_ctx >= n_ctx => (0, 0),
            Some(s) => (s.max_tokens.max(per_call), s.max_ctx.max(n_ctx)),
            None => (per_call, n_ctx),
        };
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = (|| -> Result<Vec<f32>> {
            if want_t > 0 {
                *state = None;
                *state = Some(self.build_scratch(want_t, want_ctx)?);
            }
            let s = state.as_mut().unwrap();
            self.fill_rope_table(s, n_ctx);
            let mut logits = Vec::with_capacity(n_ctx * c.n_vocab);
            let mut pos = 0;
            for piece in tokens.chunks(ubatch) {
                for call in piece.chunks(per_call) {
                    let obs = observer
                        .as_mut()
                        .map(|o| &mut **o as &mut dyn MatmulObserver);
                    logits.extend(self.forward_call(s, call, pos, obs)?);
                    pos += call.len();
                }
            }
            Ok(logits)
        })();
        let verr = pollster::block_on(validation.pop());
        let oerr = pollster::block_on(oom.pop());
        if let Some(e) = oerr.or(verr) {
            // A failed run may have left the scratch half-built or the cache half-written.
            *state = None;
            return Err(RuntimeError::gpu(format!(
                "GPU forward pass on '{}' failed: {e}",
                self.adapter
            )));
        }
        result.map_err(|e| RuntimeError::GpuPass {
            adapter: self.adapter.clone(),
            source: Box::new(e),
        })
    }
}
