//! `qforge merge-lora` and `qforge lora-to-gguf`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;

use qforge::formats::same_file::{check_file_output, check_output, JobInput};
use qforge::gpu::DeviceSpec;
use qforge::lora::{
    lora_to_gguf, merge_lora_gguf, merge_lora_hf, AdapterSpec, GgufAdapterSpec, LoraOutType,
    MergeDevice, MergeOptions,
};
use qforge::pipeline::{Backend, DeviceChoice};

#[derive(Args)]
pub struct MergeLoraArgs {
    /// Base model: a Hugging Face directory, or a .gguf file (llama-export-lora's job); local or
    /// on the Hub (ORG/NAME[@REV], hf://ORG/NAME[@REV]/FILE.gguf).
    #[arg(long)]
    base: PathBuf,
    /// ADAPTER[:SCALE]: a PEFT adapter directory (HF base) or a GGUF adapter (GGUF base), local
    /// or on the Hub (ORG/NAME[@REV], hf://ORG/NAME[@REV]/FILE.gguf).
    #[arg(long, required = true)]
    lora: Vec<String>,
    /// Output directory (HF base) or .gguf file (GGUF base).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Where to merge: auto (a hardware GPU if usable, else the CPU), cpu, gpu or gpu:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// The merge device for `--device`: `cpu` → the CPU; `gpu`/`gpu:N` → that GPU (its merge
/// kernel self-checked) or an error; `auto` → a hardware GPU whose kernel passes, else the CPU.
/// `backend`, when the job already selected one for quantizing, is reused so one job runs on
/// one device.
pub fn merge_device(spec: DeviceSpec, backend: Option<&Backend>) -> Result<MergeDevice> {
    let choice = match backend {
        Some(b) => DeviceChoice::with_context(spec, b.gpu_context()),
        None => DeviceChoice::select(spec)?,
    };
    let device = choice.merge_device()?;
    eprintln!("qforge: merging LoRA on {}", device.describe());
    Ok(device)
}

pub fn merge(mut a: MergeLoraArgs) -> Result<()> {
    let base = super::pull::local_model(&a.base)?;
    a.base = base.path.clone();
    let spec: DeviceSpec = a.device.parse()?;
    let options = MergeOptions {
        threads: super::limits::cap_threads(a.threads, "--threads"),
        device: merge_device(spec, None)?,
    };
    if a.base.is_dir() {
        let mut adapters = a
            .lora
            .iter()
            .map(|s| AdapterSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let _pulled = super::pull::local_models(adapters.iter_mut().map(|s| &mut s.dir))?;
        let mut inputs = vec![JobInput::new(&a.base, "base")];
        inputs.extend(adapters.iter().map(|s| JobInput::new(&s.dir, "adapter")));
        check_output(&a.output, &inputs)?;
        // The merged directory replaces only a missing or empty one: say so before the work.
        if std::fs::read_dir(&a.output).is_ok_and(|mut d| d.next().is_some()) {
            anyhow::bail!(
                "{}: the output directory exists and is not empty; give a new or empty directory",
                a.output.display()
            );
        }
        let r = merge_lora_hf(&a.base, &adapters, &a.output, &options)?;
        println!("{r:?}");
    } else {
        let mut adapters = a
            .lora
            .iter()
            .map(|s| GgufAdapterSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let _pulled = super::pull::local_models(adapters.iter_mut().map(|s| &mut s.path))?;
        let mut inputs = vec![JobInput::new(&a.base, "base")];
        inputs.extend(adapters.iter().map(|s| JobInput::new(&s.path, "adapter")));
        check_file_output(&a.output, &inputs)?;
        let r = merge_lora_gguf(&a.base, &adapters, &a.output, &options)?;
        println!("{r:?}");
    }
    println!("wrote {}", a.output.display());
    Ok(())
}

#[derive(Args)]
pub struct LoraToGgufArgs {
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors), or ORG/NAME[@REV]
    /// on the Hub (the output then defaults to the current folder).
    adapter_dir: PathBuf,
    /// The Hugging Face base model directory the adapter was trained on (or ORG/NAME[@REV]).
    #[arg(long)]
    base: PathBuf,
    /// Output .gguf (default: ADAPTER_DIR/ggml-adapter-model.gguf).
    #[arg(short = 'o', long = "outfile")]
    outfile: Option<PathBuf>,
    /// f32, f16, bf16 or q8_0.
    #[arg(long, default_value = "f16")]
    outtype: String,
}

pub fn to_gguf(mut a: LoraToGgufArgs) -> Result<()> {
    let (adapter, base) = (
        super::pull::local_model(&a.adapter_dir)?,
        super::pull::local_model(&a.base)?,
    );
    (a.adapter_dir, a.base) = (adapter.path.clone(), base.path.clone());
    let outtype: LoraOutType = a.outtype.parse().map_err(|e: String| anyhow!(e))?;
    let out = a.outfile.unwrap_or_else(|| match adapter.from_hub {
        true => PathBuf::from("ggml-adapter-model.gguf"),
        false => a.adapter_dir.join("ggml-adapter-model.gguf"),
    });
    check_file_output(
        &out,
        &[
            JobInput::new(&a.adapter_dir, "adapter"),
            JobInput::new(&a.base, "base"),
        ],
    )?;
    lora_to_gguf(&a.adapter_dir, &a.base, &out, outtype)?;
    println!("wrote {}", out.display());
    Ok(())
}
