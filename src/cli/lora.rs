//! `qforge merge-lora` and `qforge lora-to-gguf`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;

use qforge::lora::{
    lora_to_gguf, merge_lora_gguf, merge_lora_hf, AdapterSpec, GgufAdapterSpec, LoraOutType,
    MergeOptions,
};

#[derive(Args)]
pub struct MergeLoraArgs {
    /// Base model: a Hugging Face directory, or a .gguf file (llama-export-lora's job).
    #[arg(long)]
    base: PathBuf,
    /// ADAPTER[:SCALE]: a PEFT adapter directory (HF base) or a GGUF adapter (GGUF base).
    #[arg(long, required = true)]
    lora: Vec<String>,
    /// Output directory (HF base) or .gguf file (GGUF base).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Where to run: cpu (the GPU merge kernel is not supported yet).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn merge(a: MergeLoraArgs) -> Result<()> {
    if !matches!(a.device.as_str(), "cpu" | "auto") {
        bail!(
            "--device {}: merging LoRA on the GPU is not supported yet",
            a.device
        );
    }
    let options = MergeOptions { threads: a.threads };
    if a.base.is_dir() {
        let adapters = a
            .lora
            .iter()
            .map(|s| AdapterSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let r = merge_lora_hf(&a.base, &adapters, &a.output, &options)?;
        println!("{r:?}");
    } else {
        let adapters = a
            .lora
            .iter()
            .map(|s| GgufAdapterSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let r = merge_lora_gguf(&a.base, &adapters, &a.output, &options)?;
        println!("{r:?}");
    }
    println!("wrote {}", a.output.display());
    Ok(())
}

#[derive(Args)]
pub struct LoraToGgufArgs {
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
    adapter_dir: PathBuf,
    /// The Hugging Face base model directory the adapter was trained on.
    #[arg(long)]
    base: PathBuf,
    /// Output .gguf (default: ADAPTER_DIR/ggml-adapter-model.gguf).
    #[arg(short = 'o', long = "outfile")]
    outfile: Option<PathBuf>,
    /// f32, f16, bf16 or q8_0.
    #[arg(long, default_value = "f16")]
    outtype: String,
}

pub fn to_gguf(a: LoraToGgufArgs) -> Result<()> {
    let outtype: LoraOutType = a.outtype.parse().map_err(|e: String| anyhow!(e))?;
    let out = a
        .outfile
        .unwrap_or_else(|| a.adapter_dir.join("ggml-adapter-model.gguf"));
    lora_to_gguf(&a.adapter_dir, &a.base, &out, outtype)?;
    println!("wrote {}", out.display());
    Ok(())
}
