//! `qforge bench`: MB/s of f32 input per type on the CPU path and the GPU path, measured in the
//! same run on the same generated tensor, with their ratio; then the LoRA merge's GFLOP/s on
//! both (the same tensor as W). On a GPU, `host` and `device` split the best run's wall time:
//! the calling thread's own work (copying rows in and bytes out, recording) and the time it sat
//! in submission or blocked on the device. A large `device` share means the kernels, not host
//! overhead, set the pace.

use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Args;

use qforge::gpu::DeviceSpec;
use qforge::lora::merge::LowRankUpdate;
use qforge::lora::MergeDevice;
use qforge::pipeline::Backend;
use qforge::quant::{self, GgmlType};
use qforge::rng::Rng;

#[derive(Args)]
pub struct BenchArgs {
    /// Types to measure (comma-separated ggml type names; default: every type with a CPU
    /// quantizer). Types that require an importance matrix are measured with a generated one.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// GPU to compare with: gpu, gpu:N, or cpu (CPU only).
    #[arg(long, default_value = "gpu")]
    device: String,
    /// Size of the generated tensor in MiB of f32.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Repetitions (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also measure with (generated) importance weights.
    #[arg(long)]
    imatrix: bool,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Rank of the LoRA merge measured after the types (0: skip it).
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    /// Tokens of the forward-pass line (a generated 4-layer llama, CPU vs GPU); 0 skips it.
    #[arg(long, default_value_t = 256)]
    forward_tokens: usize,
}

/// Best GFLOP/s of merging a rank-`rank` update into `w` (rows of N_PER_ROW, rounded to F16)
/// on `device`: 2·rank flops per element for B·A, plus the scale multiply and the add.
fn best_merge_gflops(
    device: &MergeDevice,
    w: &[f32],
    update: &LowRankUpdate,
    reps: usize,
    threads: usize,
) -> Result<f64> {
    let pool = qforge::threads::pool(threads)?;
    let mut out = vec![0u8; w.len() * 2];
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        pool.install(|| device.merge_rounded(GgmlType::F16, w, N_PER_ROW, 0, &[update], &mut out))
            .map_err(|e| anyhow!("{:?}", e))?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let flops = w.len() as f64 * (2.0 * update.rank as f64 + 2.0);
    Ok(flops / 1e9 / best)
}

const N_PER_ROW: usize = 4096;

/// The best run's MB/s and, on a GPU, the shares of its wall time the calling thread spent on
/// host work (filling, recording, draining) and on the device's run (submitting, waiting).
fn best_mb_s(
    backend: &Backend,
    ty: GgmlType,
    x: &[f32],
    qw: Option<&[f32]>,
    reps: usize,
) -> Result<(f64, Option<(f64, f64)>)> {
    let mut out = vec![0u8; quant::row_bytes(ty, N_PER_ROW)? * (x.len() / N_PER_ROW)];
    let ctx = backend.gpu_context();
    let ctx = ctx.as_deref();
    let mut best = f64::MAX;
    let mut shares = None;
    for _ in 0..reps.max(1) {
        if let Some(c) = ctx {
            c.take_host_times();
        }
        let t = Instant::now();
        backend.quantize_rows(ty, x, N_PER_ROW, qw, |_| 0, &mut out)?;
        let secs = t.elapsed().as_secs_f64();
        if secs < best {
            best = secs;
            shares = ctx.map(|c| {
                let h = c.take_host_times();
                (
                    h.host_work().as_secs_f64() / secs,
                    h.device().as_secs_f64() / secs,
                )
            });
        }
    }
    Ok(((x.len() * 4) as f64 / 1e6 / best, shares))
}

pub fn run(a: BenchArgs) -> Result<()> {
    let rows = (a.mib << 20) / (N_PER_ROW * 4);
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..rows * N_PER_ROW).map(|_| 0.02 * rng.normal()).collect();
    let qw: Vec<f32> = (0..N_PER_ROW)
        .map(|_| rng.uniform_nonzero() as f32)
        .collect();
    let cpu = Backend::cpu(a.threads);
    let spec: DeviceSpec = a.device.parse()?;
    let gpu = match spec {
        DeviceSpec::Cpu => None,
        s => Some(Backend::select(s, a.threads, 0.0)?),
    };
    println!(
        "input: {} MiB of f32, rows of {N_PER_ROW}; CPU: {}",
        a.mib,
        cpu.describe()
    );
    if let Some(g) = &gpu {
        println!("GPU: {}", g.describe());
    }
    println!(
        "{:<8} {:>8} {:>12} {:>12} {:>9} {:>6} {:>6}",
        "type", "imatrix", "CPU MB/s", "GPU MB/s", "GPU/CPU", "host", "device"
    );
    let types = if a.types.is_empty() {
        qforge::pipeline::bench::cpu_types()
    } else {
        a.types
            .iter()
            .map(|name| GgmlType::from_name(name).ok_or_else(|| anyhow!("unknown type {name}")))
            .collect::<Result<Vec<_>>>()?
    };
    for ty in types {
        let required = quant::requires_imatrix(ty);
        for with_im in [false, true] {
            let wanted = if with_im {
                required || (a.imatrix && ty.is_quantized())
            } else {
                !required
            };
            if !wanted {
                continue;
            }
            if !with_im && quant::needs_weights(ty) {
                // IQ2_XXS / IQ2_XS cannot quantize without importance weights.
                if !a.imatrix {
                    println!("{:<8} needs --imatrix", ty.name());
                }
                continue;
            }
            let qw = with_im.then_some(qw.as_slice());
            let (c, _) = best_mb_s(&cpu, ty, &x, qw, a.reps)?;
            let g = match &gpu {
                Some(g) => match best_mb_s(g, ty, &x, qw, a.reps) {
                    Ok((v, shares)) => {
                        let shares = shares.map_or(String::new(), |(host, device)| {
                            format!(" {:>5.0}% {:>5.0}%", 100.0 * host, 100.0 * device)
                        });
                        format!("{v:>12.1} {:>9.2}{shares}", v / c)
                    }
                    Err(e) => format!("  {e}"),
                },
                None => String::new(),
            };
            println!(
                "{:<8} {:>8} {:>12.1} {g}",
                ty.name(),
                match (with_im, required) {
                    (true, true) => "required",
                    (true, false) => "yes",
                    _ => "no",
                },
                c
            );
        }
    }
    if a.lora_rank > 0 {
        // The same tensor as W [rows, N_PER_ROW] of a LoRA merge, rounded to F16.
        let r = a.lora_rank;
        let update = LowRankUpdate::out_in(
            (0..rows * r).map(|_| 0.01 * rng.normal()).collect(),
            (0..r * N_PER_ROW).map(|_| 0.01 * rng.normal()).collect(),
            r,
            2.0,
        );
        let threads = if a.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            a.threads
        };
        let c = best_merge_gflops(&MergeDevice::Cpu, &x, &update, a.reps, threads)?;
        let g = match gpu.as_ref().and_then(|g| g.gpu_context()) {
            Some(ctx) => match MergeDevice::open(Some(ctx), true) {
                Ok(d) => match best_merge_gflops(&d, &x, &update, a.reps, threads) {
                    Ok(v) => format!("{v:>12.2} {:>9.2}", v / c),
                    Err(e) => format!("  {e}"),
                },
                Err(e) => format!("  {e}"),
            },
            None => String::new(),
        };
        println!(
            "{:<17} {:>12} {:>12} {:>9}",
            "LoRA merge", "CPU GFLOP/s", "GPU GFLOP/s", "GPU/CPU"
        );
        println!("{:<17} {c:>12.2} {g}", format!("rank {r} → F16"));
    }
    if a.forward_tokens > 0 {
        bench_forward(&gpu, a.forward_tokens, a.reps)?;
    }
    Ok(())
}

/// Tokens per second of one forward pass over `n` tokens (one micro-batch) of the default
/// synthetic llama, on the CPU and on the GPU when there is one.
fn bench_forward(gpu: &Option<Backend>, n: usize, reps: usize) -> Result<()> {
    use qforge::runtime::forward::{CausalLm, LlamaModel};
    use qforge::runtime::gpu_forward::GpuLlama;
    use qforge::runtime::synthetic::SyntheticLlama;

    let s = SyntheticLlama::default();
    let dir = std::env::temp_dir().join(format!("qforge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("synthetic.gguf");
    s.write_gguf(&path)?;
    let model = LlamaModel::load(&path);
    std::fs::remove_dir_all(&dir).ok();
    let model = model?;
    let tokens: Vec<u32> = (0..n)
        .map(|i| (i * 7919 % s.n_vocab as usize) as u32)
        .collect();
    let tok_s = |m: &dyn CausalLm| -> Result<f64> {
        let mut best = f64::MAX;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            m.eval_sequence(&tokens, n, None)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(n as f64 / best)
    };
    let c = tok_s(&model)?;
    let g = match gpu {
        Some(Backend::Gpu { gpu, .. }) => {
            match GpuLlama::new(gpu.context(), &model)
                .map_err(anyhow::Error::from)
                .and_then(|g| tok_s(&g))
            {
                Ok(v) => format!("{v:>12.1} {:>9.2}", v / c),
                Err(e) => format!("  {e:#}"),
            }
        }
        _ => String::new(),
    };
    println!(
        "{:<8} {:>8} {:>12} {:>12} {:>9}",
        "forward", "", "CPU tok/s", "GPU tok/s", "GPU/CPU"
    );
    println!(
        "{:<17} {c:>12.1} {g}    ({} layers, {} wide, {n} tokens)",
        "llama", s.n_layer, s.n_embd
    );
    Ok(())
}
