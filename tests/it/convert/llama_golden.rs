//! `qforge convert` against llama.cpp's convert_hf_to_gguf.py: whole-file identity with the
//! golden manifests for tiny-llama (SentencePiece, BF16, one file) and tiny-bpe (byte-level
//! BPE, F16, two shards, tied embeddings).

use crate::support;

use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

fn check(model: &str, outtype: &str, manifest: &str) {
    let dir = support::temp_dir(&format!("convert-{model}-{outtype}"));
    let out = dir.join("out.gguf");
    let opts = ConvertOptions {
        outtype: OutType::parse(outtype).unwrap(),
        ..Default::default()
    };
    let report = convert(&support::golden(model), &out, &opts).unwrap();
    assert_eq!(report.output, out);
    support::assert_matches_manifest(&out, &support::Manifest::load(manifest));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiny_llama_f32() {
    check("tiny-llama", "f32", "convert/f32.json");
}

#[test]
fn tiny_llama_f16() {
    check("tiny-llama", "f16", "convert/f16.json");
}

#[test]
fn tiny_llama_bf16() {
    check("tiny-llama", "bf16", "convert/bf16.json");
}

#[test]
fn tiny_llama_q8_0() {
    check("tiny-llama", "q8_0", "convert/q8_0.json");
}

#[test]
fn tiny_bpe_f32() {
    check("tiny-bpe", "f32", "convert-bpe/f32.json");
}

#[test]
fn tiny_bpe_f16() {
    check("tiny-bpe", "f16", "convert-bpe/f16.json");
}

#[test]
fn tiny_bpe_bf16() {
    check("tiny-bpe", "bf16", "convert-bpe/bf16.json");
}

#[test]
fn tiny_bpe_q8_0() {
    check("tiny-bpe", "q8_0", "convert-bpe/q8_0.json");
}

/// `auto` picks bf16 for the BF16 checkpoint and f16 for the F16 one, as the script does.
#[test]
fn auto_follows_the_checkpoint_dtype() {
    check("tiny-llama", "auto", "convert/bf16.json");
    check("tiny-bpe", "auto", "convert-bpe/f16.json");
}

/// The bytes do not depend on the number of threads.
#[test]
fn one_thread_gives_the_same_file() {
    let dir = support::temp_dir("convert-threads");
    let out = dir.join("one.gguf");
    let opts = ConvertOptions {
        outtype: OutType::Q8_0,
        threads: Some(1),
        ..Default::default()
    };
    convert(&support::golden("tiny-llama"), &out, &opts).unwrap();
    support::assert_matches_manifest(&out, &support::Manifest::load("convert/q8_0.json"));
    let _ = std::fs::remove_dir_all(&dir);
}
