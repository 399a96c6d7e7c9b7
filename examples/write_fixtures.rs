//! Writes the inputs that goldens and benchmarks are made from; not a test, so it lives outside
//! the test suite.
//!
//! - `cargo run --release --example write_fixtures -- arch-checkpoints DIR`: every preset
//!   synthetic checkpoint (Mistral, Qwen2, Qwen3, Llama-3) under DIR, for
//!   tests/data/convert_arch/make_goldens.sh (which converts them with llama.cpp).
//! - `cargo run --release --example write_fixtures -- moe-memory-checkpoint DIR`: a ~700 MB
//!   BF16 Mixtral (4 layers of 8 experts 1024×3584, two shards) under DIR/tiny-mixtral, to
//!   compare the peak memory of `qforge convert` and `convert_hf_to_gguf.py` on a MoE model.
//! - `cargo run --release --example write_fixtures -- benchmark-model [OUT]`: the ~190 MB model
//!   used to compare `qforge imatrix` / `qforge perplexity` with llama-imatrix /
//!   llama-perplexity (a random llama with SmolLM2's real 49152-token BPE vocabulary, so both
//!   tools tokenize the same text); OUT defaults to the system temp dir.
//!
//! The shared goldens are read from `../shared` beside the checkout (override with QFORGE_SHARED).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use qforge::convert::checkpoint::{HfModel, HfOptions};
use qforge::convert::encode::OutType;
use qforge::convert::synthetic_hf::{HfFlavor, SyntheticHf};
use qforge::formats::gguf::{GgufFile, GgufWriter};
use qforge::formats::tensor_source::TensorSource;
use qforge::quant::GgmlType;
use qforge::runtime::synthetic::SyntheticLlama;

/// `rel` under the shared golden folder.
fn golden(rel: &str) -> PathBuf {
    let shared = std::env::var("QFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("golden").join(rel)
}

/// Every preset checkpoint under `root`, tokenizer files copied from the shared goldens.
fn arch_checkpoints(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    for flavor in HfFlavor::ALL {
        let m = SyntheticHf::preset(flavor);
        let dir = root.join(m.dir_name());
        let tokenizer = golden(if flavor.uses_bpe() {
            "tiny-bpe"
        } else {
            "tiny-llama"
        });
        m.write(&dir, &tokenizer)?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}

/// A Mixtral large enough that one layer's stacked experts (59 MB per projection in F16) stand
/// out against the whole model (700 MB), for peak-memory comparisons.
fn moe_memory_checkpoint(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let m = SyntheticHf {
        n_layer: 4,
        hidden: 1024,
        ff: 3584,
        n_head: 8,
        n_head_kv: 2,
        head_dim: 128,
        ..SyntheticHf::preset(HfFlavor::Mixtral)
    };
    let dir = root.join(m.dir_name());
    m.write(&dir, &golden("tiny-llama"))?;
    println!("wrote {}", dir.display());
    Ok(())
}

/// The benchmark model: a random 8-layer llama whose tokenizer.* keys come from tiny-bpe.
fn benchmark_model(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let donor = HfModel::open(
        &golden("tiny-bpe"),
        &HfOptions {
            outtype: OutType::F32,
            model_name: None,
        },
    )?;
    let vocab = match donor.metadata().get("tokenizer.ggml.tokens") {
        Some(qforge::formats::gguf::Value::Array(_, t)) => t.len() as u64,
        _ => return Err("tiny-bpe has no vocabulary".into()),
    };
    let m = SyntheticLlama {
        n_layer: 8,
        n_embd: 512,
        n_ff: 1536,
        n_head: 8,
        n_head_kv: 4,
        n_vocab: vocab,
        weight_type: GgmlType::F16,
        seed: 7,
    };
    let raw = out.with_extension("raw.gguf");
    m.write_gguf(&raw)?;
    let f = GgufFile::open(&raw)?;
    let mut md = f.metadata.clone();
    md.retain(|k| !k.starts_with("tokenizer."));
    for (k, v) in donor.metadata().iter() {
        if k.starts_with("tokenizer.") {
            md.set(k, v.clone());
        }
    }
    let infos: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let mut w = GgufWriter::create(out, &md, &infos)?;
    for t in &f.tensors {
        w.write_tensor(f.tensor_data(t))?;
    }
    w.finish()?;
    std::fs::remove_file(raw).ok();
    println!("wrote {}", out.display());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["arch-checkpoints", dir] => arch_checkpoints(Path::new(dir)),
        ["moe-memory-checkpoint", dir] => moe_memory_checkpoint(Path::new(dir)),
        ["benchmark-model"] => benchmark_model(&std::env::temp_dir().join("qforge-bench.f16.gguf")),
        ["benchmark-model", out] => benchmark_model(Path::new(out)),
        _ => {
            eprintln!(
                "usage: write_fixtures arch-checkpoints DIR | moe-memory-checkpoint DIR | \
                 benchmark-model [OUT]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("write_fixtures: {e}");
            ExitCode::FAILURE
        }
    }
}
