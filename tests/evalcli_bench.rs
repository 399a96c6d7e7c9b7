//! Not a test: `cargo test --test evalcli_bench -- --ignored` writes the benchmark model used to
//! compare `qforge imatrix` / `qforge perplexity` with llama-imatrix / llama-perplexity
//! (a random llama with SmolLM2's real 49152-token BPE vocabulary, so both tools tokenize the
//! same text). QFORGE_BENCH_MODEL names the output (default: the system temp dir).

mod common;

use qforge::convert::checkpoint::{HfModel, HfOptions};
use qforge::convert::encode::OutType;
use qforge::formats::gguf::{GgufFile, GgufWriter};
use qforge::formats::tensor_source::TensorSource;
use qforge::quant::GgmlType;
use qforge::runtime::synthetic::SyntheticLlama;

#[test]
#[ignore = "writes a ~190 MB benchmark model"]
fn write_benchmark_model() {
    let out = std::env::var("QFORGE_BENCH_MODEL").map_or_else(
        |_| std::env::temp_dir().join("qforge-bench.f16.gguf"),
        std::path::PathBuf::from,
    );
    let donor = HfModel::open(
        &common::golden("tiny-bpe"),
        &HfOptions {
            outtype: OutType::F32,
            model_name: None,
        },
    )
    .unwrap();
    let vocab = match donor.metadata().get("tokenizer.ggml.tokens") {
        Some(qforge::formats::gguf::Value::Array(_, t)) => t.len() as u64,
        _ => panic!("no vocabulary"),
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
    m.write_gguf(&raw).unwrap();
    let f = GgufFile::open(&raw).unwrap();
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
    let mut w = GgufWriter::create(&out, &md, &infos).unwrap();
    for t in &f.tensors {
        w.write_tensor(f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
    std::fs::remove_file(raw).ok();
    eprintln!("wrote {}", out.display());
}
