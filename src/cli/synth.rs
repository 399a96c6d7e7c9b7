//! `qforge synth`: write a random llama GGUF of a chosen size (benchmarks, tests, demos).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use qforge::quant::GgmlType;
use qforge::runtime::synthetic::SyntheticLlama;

#[derive(Args)]
pub struct SynthArgs {
    /// Output .gguf path.
    output: PathBuf,
    #[arg(long, default_value_t = 4)]
    layers: u32,
    #[arg(long, default_value_t = 256)]
    embd: u64,
    #[arg(long, default_value_t = 768)]
    ff: u64,
    #[arg(long, default_value_t = 8)]
    heads: u32,
    #[arg(long, default_value_t = 4)]
    kv_heads: u32,
    #[arg(long, default_value_t = 1024)]
    vocab: u64,
    /// Type of the 2-D weights: f32, f16 or bf16.
    #[arg(long, default_value = "f16")]
    weight_type: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(a: SynthArgs) -> Result<()> {
    let weight_type = match a.weight_type.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        other => bail!("--weight-type {other}: use f32, f16 or bf16"),
    };
    if a.heads == 0
        || a.kv_heads == 0
        || !a.heads.is_multiple_of(a.kv_heads)
        || !a.embd.is_multiple_of(a.heads as u64)
    {
        bail!("heads must divide the embedding width and be a multiple of kv-heads");
    }
    let m = SyntheticLlama {
        n_layer: a.layers,
        n_embd: a.embd,
        n_ff: a.ff,
        n_head: a.heads,
        n_head_kv: a.kv_heads,
        n_vocab: a.vocab,
        weight_type,
        seed: a.seed,
    };
    m.write_gguf(&a.output)?;
    let n: u64 = m
        .tensors()
        .iter()
        .map(|(_, ne)| ne.iter().product::<u64>())
        .sum();
    println!(
        "wrote {} ({:.1}M parameters)",
        a.output.display(),
        n as f64 / 1e6
    );
    Ok(())
}
