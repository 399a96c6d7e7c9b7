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
    check_size(&m)?;
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

/// The generator holds one whole tensor in memory (f32) while it writes it: refuse shapes whose
/// largest tensor would not fit in a sane amount of memory, and layer counts no loader takes,
/// before asking the allocator for terabytes.
fn check_size(m: &SyntheticLlama) -> Result<()> {
    const MAX_TENSOR_ELEMENTS: u64 = 1 << 31; // 8 GiB of f32
    const MAX_LAYERS: u32 = 512; // llama.cpp's LLAMA_MAX_LAYERS
    if m.n_layer == 0 || m.n_layer > MAX_LAYERS {
        bail!("--layers {}: use 1..={MAX_LAYERS}", m.n_layer);
    }
    for (name, ne) in m.tensors() {
        let n = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        match n {
            Some(n) if n > 0 && n <= MAX_TENSOR_ELEMENTS => {}
            _ => bail!(
                "tensor '{name}' {ne:?} would have {} elements; synth generates at most \
                 {MAX_TENSOR_ELEMENTS} per tensor (8 GiB in memory)",
                n.map_or("more than 2^64".to_string(), |n| n.to_string())
            ),
        }
    }
    Ok(())
}
