//! merge_lora_gguf against llama-export-lora's output (tiny-llama.f16.gguf + lora.f32.gguf, at
//! scale 1 and 0.5).
//!
//! The golden README allows 1 f16 ulp here, in case llama.cpp's matmul sums in another order.
//! For these goldens it does not: emulating candidate orders against the manifest hashes, only
//! the sequential k-ordered sum without FMA (qforge's contract) reproduces all 56 merged tensors
//! (sequential FMA matched 8, an AVX2 tree 6, an f64 sum 9). So the test asserts whole-file
//! equality, which is stronger than "within 1 ulp"; the manifests hold only hashes, so on a
//! mismatch it can name the differing tensors but not count elements.

use crate::support;

use qforge::formats::gguf::GgufFile;
use qforge::lora::{merge_lora_gguf, GgufAdapterSpec, MergeOptions};

fn check(scale: f32, manifest: &str, tag: &str) {
    let tmp = support::temp_dir(tag);
    let out = tmp.join("merged.gguf");
    let report = merge_lora_gguf(
        &support::golden("tiny-llama.f16.gguf"),
        &[GgufAdapterSpec::new(
            support::golden("lora/lora.f32.gguf"),
            scale,
        )],
        &out,
        &MergeOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.merged, 56);
    assert!(report.ignored.is_empty());
    let m = support::Manifest::load(manifest);
    // Count merged tensors whose bytes differ from export-lora's (by hash).
    let f = GgufFile::open(&out).unwrap();
    let differing: Vec<&str> = f
        .tensors
        .iter()
        .zip(m.tensors())
        .filter(|(t, e)| support::sha256_hex(f.tensor_data(t)) != e.sha256)
        .map(|(t, _)| t.name.as_str())
        .collect();
    println!(
        "{manifest}: {} tensors ({} merged), {} differ from llama-export-lora",
        f.tensors.len(),
        report.merged,
        differing.len()
    );
    support::assert_matches_manifest(&out, &m);
}

#[test]
fn export_lora_is_reproduced_byte_for_byte() {
    check(1.0, "lora/export-lora.json", "lora-export");
}

#[test]
fn export_lora_scaled_is_reproduced_byte_for_byte() {
    check(0.5, "lora/export-lora-scaled.json", "lora-export-scaled");
}
