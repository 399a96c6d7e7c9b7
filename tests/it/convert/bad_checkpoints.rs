//! Broken checkpoints: each must fail with one clear error naming the file (and tensor), and
//! leave no output file behind.

use crate::support;

use std::path::{Path, PathBuf};

use qforge::formats::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter};
use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

/// A writable copy of a golden model directory.
fn copy_model(name: &str, tag: &str) -> PathBuf {
    let root = support::temp_dir(&format!("bad-{tag}"));
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(support::golden(name)).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        std::fs::write(dir.join(e.file_name()), bytes).unwrap();
    }
    dir
}

/// Convert `dir` expecting failure; return the message after checking no file was left.
fn fails(dir: &Path) -> String {
    let out_dir = dir.parent().unwrap().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("model.gguf");
    let opts = ConvertOptions {
        outtype: OutType::F16,
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

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn missing_config() {
    let dir = copy_model("tiny-llama", "noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = fails(&dir);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn corrupt_config() {
    let dir = copy_model("tiny-llama", "corruptconfig");
    std::fs::write(
        dir.join("config.json"),
        b"{\"architectures\": [\"LlamaForCausalLM\"],",
    )
    .unwrap();
    let err = fails(&dir);
    assert!(
        err.contains("config.json") && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = copy_model("tiny-llama", "arch");
    edit_config(&dir, |c| {
        c["architectures"] = serde_json::json!(["GPT2LMHeadModel"])
    });
    let err = fails(&dir);
    assert!(
        err.contains("GPT2LMHeadModel") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn shape_disagreeing_with_config_names_file_and_tensor() {
    let dir = copy_model("tiny-llama", "shape");
    edit_config(&dir, |c| c["intermediate_size"] = serde_json::json!(640));
    let err = fails(&dir);
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("model.layers.0.mlp.down_proj.weight"), "{err}");
    assert!(err.contains("640"), "{err}");
}

#[test]
fn more_layers_in_config_than_in_checkpoint() {
    let dir = copy_model("tiny-llama", "layers");
    edit_config(&dir, |c| c["num_hidden_layers"] = serde_json::json!(9));
    let err = fails(&dir);
    assert!(
        err.contains("config.json") && err.contains("layer 8"),
        "{err}"
    );
}

#[test]
fn float_where_an_integer_belongs() {
    let dir = copy_model("tiny-llama", "float");
    edit_config(&dir, |c| c["hidden_size"] = serde_json::json!(256.0));
    let err = fails(&dir);
    assert!(
        err.contains("config.json") && err.contains("hidden_size"),
        "{err}"
    );
}

#[test]
fn missing_shard_is_named() {
    let dir = copy_model("tiny-bpe", "shard");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = fails(&dir);
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn index_listing_a_tensor_no_shard_has() {
    let dir = copy_model("tiny-bpe", "index");
    let p = dir.join("model.safetensors.index.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["weight_map"]["model.layers.9.mlp.up_proj.weight"] =
        serde_json::json!("model-00002-of-00002.safetensors");
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = fails(&dir);
    assert!(
        err.contains("model.safetensors.index.json")
            && err.contains("model.layers.9.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn truncated_weights() {
    let dir = copy_model("tiny-llama", "trunc");
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    let err = fails(&dir);
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn unsupported_dtype_names_file_and_tensor() {
    let dir = copy_model("tiny-llama", "dtype");
    let p = dir.join("model.safetensors");
    let src = SafetensorsFile::open(support::golden("tiny-llama/model.safetensors")).unwrap();
    // Same bytes, but model.norm.weight declared I16 (same size as its BF16 data).
    let specs: Vec<_> = src
        .tensors()
        .iter()
        .map(|t| {
            let dtype = if t.name == "model.norm.weight" {
                Dtype::I16
            } else {
                t.dtype
            };
            (t.name.clone(), dtype, t.shape.clone())
        })
        .collect();
    std::fs::remove_file(&p).unwrap();
    let mut w = SafetensorsWriter::create(&p, &specs, None).unwrap();
    for t in src.tensors() {
        w.write_tensor(src.data(t)).unwrap();
    }
    w.finish().unwrap();
    let err = fails(&dir);
    assert!(
        err.contains("model.safetensors")
            && err.contains("model.norm.weight")
            && err.contains("I16"),
        "{err}"
    );
}

#[test]
fn no_tokenizer() {
    let dir = copy_model("tiny-llama", "notok");
    std::fs::remove_file(dir.join("tokenizer.model")).unwrap();
    let err = fails(&dir);
    assert!(err.contains("tokenizer"), "{err}");
}

#[test]
fn corrupt_sentencepiece_model() {
    let dir = copy_model("tiny-llama", "badspm");
    let p = dir.join("tokenizer.model");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2 + 3]).unwrap();
    let err = fails(&dir);
    assert!(err.contains("tokenizer.model"), "{err}");
}

#[test]
fn no_weights() {
    let dir = copy_model("tiny-llama", "noweights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = fails(&dir);
    assert!(err.contains("no safetensors weights"), "{err}");
}

/// An existing output file is left untouched when the conversion fails.
#[test]
fn failure_keeps_an_existing_output() {
    let dir = copy_model("tiny-llama", "keep");
    std::fs::remove_file(dir.join("tokenizer.model")).unwrap();
    let out = dir.parent().unwrap().join("existing.gguf");
    std::fs::write(&out, b"previous").unwrap();
    assert!(convert(&dir, &out, &ConvertOptions::default()).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
}
