//! What the eval commands (imatrix, perplexity, sweep) share: loading the model on a device,
//! reading the evaluation text, thread count, progress display.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};

use qforge::convert::checkpoint::{HfModel, HfOptions};
use qforge::convert::encode::OutType;
use qforge::eval::ChunkProgress;
use qforge::gpu::DeviceSpec;
use qforge::pipeline::DeviceChoice;
use qforge::runtime::forward::{CausalLm, LlamaModel};

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EvalDevice {
    Cpu,
    Gpu,
    /// The GPU when a forward pass exists for it, else the CPU.
    Auto,
}

/// Load MODEL (a GGUF file or a Hugging Face directory) for evaluation on `device`. The one
/// place that chooses the forward-pass implementation: `gpu` uses the GPU twin
/// (`gpu::forward::GpuLlama`) or fails saying why; `auto` uses it on a hardware GPU and the CPU
/// otherwise (software adapters such as lavapipe are slower than the CPU path), saying which.
pub fn load_causal_lm(model: &Path, device: EvalDevice) -> Result<Box<dyn CausalLm>> {
    let cpu_model = load_cpu_model(model)?;
    let spec = device.spec();
    if spec == DeviceSpec::Cpu {
        return Ok(Box::new(cpu_model));
    }
    // The library's one device policy decides (and says when it falls back).
    let choice = DeviceChoice::select(spec)?;
    let (lm, adapter) = choice
        .place_causal_lm(cpu_model)
        .with_context(|| format!("loading {}", model.display()))?;
    if let Some(name) = adapter {
        eprintln!("qforge: running the model on {name}");
    }
    Ok(lm)
}

impl EvalDevice {
    /// The adapter choice this means for `gpu::device::select`.
    pub fn spec(self) -> DeviceSpec {
        match self {
            EvalDevice::Cpu => DeviceSpec::Cpu,
            EvalDevice::Gpu => DeviceSpec::Gpu,
            EvalDevice::Auto => DeviceSpec::Auto,
        }
    }
}

/// The CPU model: a GGUF file memory-mapped and dequantized, or a Hugging Face checkpoint
/// converted in memory at F32 (its exact weights; no temporary GGUF).
pub fn load_cpu_model(model: &Path) -> Result<LlamaModel> {
    if model.is_dir() {
        let hf = HfModel::open(
            model,
            &HfOptions {
                outtype: OutType::F32,
                model_name: None,
            },
        )?;
        return Ok(LlamaModel::from_source(&hf)?);
    }
    if !model.exists() {
        bail!("{}: no such model file or directory", model.display());
    }
    Ok(LlamaModel::load(model)?)
}

/// The evaluation text, refusing a missing or empty file up front.
pub fn read_text(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if text.is_empty() {
        bail!("{}: the text file is empty", path.display());
    }
    Ok(text)
}

/// Size the global rayon pool (0 = one thread per core). Must run before any parallel work.
pub fn set_threads(threads: usize) -> Result<()> {
    let threads = super::limits::cap_threads(threads, "--threads");
    qforge::threads::set_global(threads).context("setting the thread count")
}

/// Per-chunk progress: a bar with ETA when stderr is a terminal, else nothing (the caller's
/// llama.cpp-style `[i]ppl` line is the log).
pub struct ChunkBar {
    bar: Option<ProgressBar>,
}

impl ChunkBar {
    pub fn new(total: usize, what: &str) -> ChunkBar {
        if !std::io::stderr().is_terminal() {
            return ChunkBar { bar: None };
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} chunks, ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(500));
        ChunkBar { bar: Some(bar) }
    }

    pub fn update(&self, p: &ChunkProgress) {
        if let Some(b) = &self.bar {
            b.set_position(p.done as u64);
            b.set_message(format!("PPL {:.4}", p.ppl));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
