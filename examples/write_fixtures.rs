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
//! - `cargo run --release --example write_fixtures -- tiny-moe OUT`: a small mixture-of-experts
//!   llama (2 layers, 2 experts, F16 weights, ~130 KB) that llama-quantize accepts, for the
//!   MXFP4_MOE golden in tests/data/moe/ (its README has the commands).
//! - `cargo run --release --example write_fixtures -- nvfp4-tensors OUT`: a llama-arch GGUF
//!   holding one NVFP4 tensor whose 256 scales take every byte value, for the NVFP4 read golden
//!   in tests/data/nvfp4/ (qforge cannot write NVFP4; this writes the blocks directly).
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

/// A mixture-of-experts llama small enough to commit: [`SyntheticLlama::tiny`]'s attention and
/// embeddings at width 64 with an FFN of 64, each layer's FFN replaced by `llama.expert_count` = 2
/// experts (`ffn_{gate,up,down}_exps`, 3-D) and a router (`ffn_gate_inp`, F32), in the order
/// convert_hf_to_gguf.py writes a Mixtral. Values are seeded, so the file is reproducible.
fn tiny_moe(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use qforge::formats::gguf::Value;
    use qforge::quant::f32_to_f16;
    use qforge::rng::Rng;
    const N_EXPERT: u64 = 2;
    let mut base = SyntheticLlama::tiny(GgmlType::F16, 11);
    base.n_ff = 64;
    let mut md = base.metadata();
    md.set("general.name", Value::Str("qforge tiny moe".into()));
    md.set("llama.expert_count", Value::U32(N_EXPERT as u32));
    md.set("llama.expert_used_count", Value::U32(1));
    let (embd, ff) = (base.n_embd, base.n_ff);
    let mut tensors: Vec<(String, GgmlType, Vec<u64>)> = Vec::new();
    for (name, ne) in base.tensors() {
        let ty = if ne.len() == 1 {
            GgmlType::F32
        } else {
            GgmlType::F16
        };
        match name.strip_suffix(".ffn_down.weight") {
            Some(blk) => {
                tensors.push((
                    format!("{blk}.ffn_gate_inp.weight"),
                    GgmlType::F32,
                    vec![embd, N_EXPERT],
                ));
                tensors.push((
                    format!("{blk}.ffn_down_exps.weight"),
                    ty,
                    vec![ff, embd, N_EXPERT],
                ));
                tensors.push((
                    format!("{blk}.ffn_gate_exps.weight"),
                    ty,
                    vec![embd, ff, N_EXPERT],
                ));
                tensors.push((
                    format!("{blk}.ffn_up_exps.weight"),
                    ty,
                    vec![embd, ff, N_EXPERT],
                ));
            }
            None if name.contains(".ffn_gate.") || name.contains(".ffn_up.") => {}
            None => tensors.push((name, ty, ne)),
        }
    }
    let mut w = GgufWriter::create(out, &md, &tensors)?;
    let mut rng = Rng::new(0x6d6f65);
    for (name, ty, ne) in &tensors {
        let n: u64 = ne.iter().product();
        let norm = name.ends_with("_norm.weight");
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                let g = rng.normal();
                if norm {
                    1.0 + 0.1 * g
                } else {
                    0.05 * g
                }
            })
            .collect();
        let bytes: Vec<u8> = if *ty == GgmlType::F32 {
            vals.iter().flat_map(|v| v.to_le_bytes()).collect()
        } else {
            vals.iter()
                .flat_map(|v| f32_to_f16(*v).to_le_bytes())
                .collect()
        };
        w.write_tensor(&bytes)?;
    }
    w.finish()?;
    println!("wrote {}", out.display());
    Ok(())
}

/// One NVFP4 tensor of 64 rows × 64 (one block a row): block b's four scale bytes are
/// 4b..4b+4, so every UE4M3 byte occurs once (0x00 and 0x7F, which read as 0, and the top-bit
/// set ones included), and the codes are seeded random.
fn nvfp4_tensors(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use qforge::formats::gguf::Value;
    use qforge::rng::Rng;
    let mut md = SyntheticLlama::tiny(GgmlType::F16, 1).metadata();
    md.retain(|k| !k.starts_with("tokenizer."));
    md.set("general.name", Value::Str("qforge nvfp4 tensors".into()));
    let tensors = vec![(
        "blk.0.nvfp4.weight".to_string(),
        GgmlType::NVFP4,
        vec![64u64, 64],
    )];
    let mut rng = Rng::new(0x006e_7666_7034);
    let mut bytes = Vec::with_capacity(64 * 36);
    for b in 0..64u32 {
        for s in 0..4 {
            bytes.push((4 * b + s) as u8);
        }
        for _ in 0..32 {
            bytes.push(rng.next_u64() as u8);
        }
    }
    let mut w = GgufWriter::create(out, &md, &tensors)?;
    w.write_tensor(&bytes)?;
    w.finish()?;
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
        ["tiny-moe", out] => tiny_moe(Path::new(out)),
        ["nvfp4-tensors", out] => nvfp4_tensors(Path::new(out)),
        _ => {
            eprintln!(
                "usage: write_fixtures arch-checkpoints DIR | moe-memory-checkpoint DIR | \
                 benchmark-model [OUT] | tiny-moe OUT | nvfp4-tensors OUT"
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
