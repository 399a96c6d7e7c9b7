//! `qforge export MODEL.gguf -o DIR`: a Hugging Face directory from a GGUF model.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use qforge::export::{export, ExportDtype, ExportEvent, ExportOptions};

#[derive(Args)]
pub struct ExportArgs {
    /// The GGUF model (llama, mistral, qwen2, qwen3).
    model: PathBuf,
    /// Output directory (must not exist, or be empty).
    #[arg(short = 'o', long = "outdir")]
    out: PathBuf,
    /// Dtype of every tensor: f32, f16 or bf16. Default: each F32/F16/BF16 tensor keeps its type,
    /// quantized tensors are dequantized to f32 (both lossless).
    #[arg(long)]
    outtype: Option<String>,
    /// Largest safetensors shard, e.g. 5GB, 500MB, 2GiB, or bytes.
    #[arg(long, default_value = "5GB")]
    max_shard_size: String,
}

/// "5GB", "500MB", "2GiB", "1000" → bytes (transformers' units: KB/MB/GB decimal, KiB/… binary).
fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v >= 1.0 && v.is_finite()).then_some(v as u64)
}

pub fn run(a: ExportArgs) -> Result<()> {
    let dtype = match &a.outtype {
        None => None,
        Some(s) => match ExportDtype::parse(s) {
            Some(d) => Some(d),
            None => bail!("--outtype '{s}': expected f32, f16 or bf16"),
        },
    };
    let max_shard_size = parse_size(&a.max_shard_size).with_context(|| {
        format!(
            "--max-shard-size '{}': expected a size like 5GB or 500MB",
            a.max_shard_size
        )
    })?;
    let opts = ExportOptions {
        dtype,
        max_shard_size,
    };
    let mut tensors = 0usize;
    let report = export(&a.model, &a.out, &opts, &mut |e| {
        if let ExportEvent::Tensor { total, .. } = e {
            tensors = *total;
        }
    })?;
    eprintln!(
        "qforge: exported {} tensors of {} into {} ({} shard{}): {}",
        tensors.max(report.tensors),
        a.model.display(),
        a.out.display(),
        report.shards,
        if report.shards == 1 { "" } else { "s" },
        report.files.join(", ")
    );
    Ok(())
}
