//! Broken Mistral, Qwen2, Qwen3 and Llama 3 checkpoints (the synthetic presets of
//! tests/it/convert/arch_golden.rs, then damaged): each conversion must fail with an error naming the
//! file (and the tensor, when one is at fault), and leave no output file.

use crate::support;

use std::path::{Path, PathBuf};

use qforge::convert::synthetic_hf::{HfFlavor, SyntheticHf};
use qforge::formats::safetensors::{SafetensorsFile, SafetensorsWriter};
use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

/// A fresh preset checkpoint of `flavor` in its own folder.
pub(super) fn checkpoint(flavor: HfFlavor, tag: &str) -> PathBuf {
    let root = support::temp_dir(&format!("c2bad-{tag}"));
    let m = SyntheticHf::preset(flavor);
    let dir = root.join(m.dir_name());
    let tokenizer = support::golden(if flavor.uses_bpe() {
        "tiny-bpe"
    } else {
        "tiny-llama"
    });
    m.write(&dir, &tokenizer).unwrap();
    dir
}

/// A tensor of model.safetensors as the rewrite callback sees it.
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) shape: Vec<usize>,
    pub(super) bytes: Vec<u8>,
}

/// Rewrite `dir/model.safetensors` through `edit` (which may change, drop or add entries).
pub(super) fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<Entry>)) {
    let path = dir.join("model.safetensors");
    let (dtype, mut entries) = {
        let f = SafetensorsFile::open(&path).unwrap();
        let dtype = f.tensors()[0].dtype;
        let entries: Vec<Entry> = f
            .tensors()
            .iter()
            .map(|t| Entry {
                name: t.name.clone(),
                shape: t.shape.clone(),
                bytes: f.data(t).to_vec(),
            })
            .collect();
        (dtype, entries)
    };
    edit(&mut entries);
    let specs: Vec<_> = entries
        .iter()
        .map(|e| (e.name.clone(), dtype, e.shape.clone()))
        .collect();
    let mut w = SafetensorsWriter::create(&path, &specs, None).unwrap();
    for e in &entries {
        w.write_tensor(&e.bytes).unwrap();
    }
    w.finish().unwrap();
}

/// Keep the first `n` rows (elements, for 1-D) of tensor `name`.
pub(super) fn truncate_rows(entries: &mut [Entry], name: &str, n: usize) {
    let e = entries.iter_mut().find(|e| e.name == name).unwrap();
    let row_bytes = e.bytes.len() / e.shape[0];
    e.shape[0] = n;
    e.bytes.truncate(n * row_bytes);
}

pub(super) fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Convert `dir` expecting failure; return the message after checking no file was left.
pub(super) fn fails(dir: &Path) -> String {
    let out_dir = dir.parent().unwrap().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("model.gguf");
    let opts = ConvertOptions {
        outtype: OutType::Q8_0,
        ..Default::default()
    };
    let err = match convert(dir, &out, &opts) {
        Ok(_) => panic!("conversion of {} succeeded", dir.display()),
        Err(e) => format!("{:#}", anyhow::Error::from(e)),
    };
    eprintln!("{}: {err}", dir.display());
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?} ({err})");
    err
}

pub(super) fn assert_names(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "'{p}' missing from: {err}");
    }
}

#[test]
fn qwen2_bias_shorter_than_its_projection() {
    let dir = checkpoint(HfFlavor::Qwen2, "qbias");
    let name = "model.layers.1.self_attn.q_proj.bias";
    rewrite_weights(&dir, |e| truncate_rows(e, name, 48));
    let err = fails(&dir);
    assert_names(&err, &["model.safetensors", name, "[48]", "[64]"]);
}

#[test]
fn qwen2_kv_heads_in_config_disagree_with_k_proj() {
    let dir = checkpoint(HfFlavor::Qwen2, "kvheads");
    edit_config(&dir, |c| c["num_key_value_heads"] = serde_json::json!(4));
    let err = fails(&dir);
    assert_names(
        &err,
        &["model.safetensors", "self_attn.k_proj", "config.json"],
    );
}

#[test]
fn qwen3_k_norm_of_the_wrong_width() {
    let dir = checkpoint(HfFlavor::Qwen3, "knorm");
    let name = "model.layers.0.self_attn.k_norm.weight";
    rewrite_weights(&dir, |e| truncate_rows(e, name, 16));
    let err = fails(&dir);
    assert_names(&err, &["model.safetensors", name, "[16]", "[32]"]);
}

#[test]
fn qwen3_without_a_q_norm() {
    let dir = checkpoint(HfFlavor::Qwen3, "noqnorm");
    rewrite_weights(&dir, |e| {
        e.retain(|e| e.name != "model.layers.1.self_attn.q_norm.weight")
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "attn_q_norm", "layer 1"]);
}

#[test]
fn qwen3_head_dim_disagreeing_with_the_projections() {
    // Without head_dim Qwen3Config's default is 128, not hidden / heads.
    let dir = checkpoint(HfFlavor::Qwen3, "qwen3-headdim");
    edit_config(&dir, |c| {
        c.as_object_mut().unwrap().remove("head_dim");
    });
    let err = fails(&dir);
    assert_names(&err, &["model.safetensors", "self_attn.", "config.json"]);
}

#[test]
fn mistral_head_dim_disagreeing_with_q_proj() {
    let dir = checkpoint(HfFlavor::Mistral, "mistral-headdim");
    edit_config(&dir, |c| c["head_dim"] = serde_json::json!(16));
    let err = fails(&dir);
    assert_names(
        &err,
        &[
            "model.safetensors",
            "self_attn.",
            "disagrees with config.json",
        ],
    );
}

#[test]
fn mistral_odd_rows_cannot_be_permuted() {
    // 4 heads of 32 rows, less one row: the Q permutation has no halves to interleave.
    let dir = checkpoint(HfFlavor::Mistral, "oddrows");
    let name = "model.layers.0.self_attn.q_proj.weight";
    rewrite_weights(&dir, |e| truncate_rows(e, name, 127));
    let err = fails(&dir);
    assert_names(&err, &["model.safetensors", name]);
}

#[test]
fn mistral_missing_lm_head_when_untied() {
    // Untied Mistral without lm_head: the converter writes no output tensor and llama.cpp
    // falls back to the embeddings: it must convert, to the same bytes.
    let dir = checkpoint(HfFlavor::Mistral, "nohead");
    rewrite_weights(&dir, |e| e.retain(|e| e.name != "lm_head.weight"));
    let out = dir.parent().unwrap().join("ok.gguf");
    convert(
        &dir,
        &out,
        &ConvertOptions {
            outtype: OutType::F16,
            ..Default::default()
        },
    )
    .unwrap();
    // sha256 of convert_hf_to_gguf.py --outtype f16 of the same checkpoint (lm_head.weight
    // removed with safetensors.torch, folder tiny-mistral), llama.cpp 0c1e57098.
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        support::sha256_hex(&bytes),
        "97acb4e3767b99ed2baa8715d1348b99383dd20a6873475a8212f7aef651df00"
    );
    let f = qforge::formats::gguf::GgufFile::open(&out).unwrap();
    assert!(f.tensor("output.weight").is_none());
}

#[test]
fn llama3_rope_factor_that_is_not_a_number() {
    let dir = checkpoint(HfFlavor::Llama3, "ropefactor");
    edit_config(&dir, |c| {
        c["rope_scaling"]["factor"] = serde_json::json!("32")
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "factor"]);
}

#[test]
fn llama3_zero_low_freq_factor() {
    let dir = checkpoint(HfFlavor::Llama3, "ropezero");
    edit_config(&dir, |c| {
        c["rope_scaling"]["low_freq_factor"] = serde_json::json!(0.0)
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "low/high_freq_factor"]);
}

#[test]
fn llama3_embedding_wider_than_config() {
    let dir = checkpoint(HfFlavor::Llama3, "embd");
    edit_config(&dir, |c| c["hidden_size"] = serde_json::json!(96));
    let err = fails(&dir);
    assert_names(
        &err,
        &[
            "model.safetensors",
            "model.embed_tokens.weight",
            "[512, 128]",
        ],
    );
}
