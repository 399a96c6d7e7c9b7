//! Every bad input is refused with an error naming the file and the module or tensor, and
//! leaves no output behind (not even a temporary file).

use crate::support;

use std::path::{Path, PathBuf};

use crate::support::list_files;
use crate::support::rng::Rng;
use crate::support::synthetic::{lora_config, write_adapter, write_base, T};
use qforge::formats::gguf::{GgufWriter, Metadata, Value};
use qforge::formats::safetensors::Dtype;
use qforge::lora::{
    lora_to_gguf, merge_lora_gguf, merge_lora_hf, AdapterSpec, GgufAdapterSpec, LoraOutType,
    MergeOptions,
};
use qforge::quant::GgmlType;

const Q: &str = "model.layers.0.self_attn.q_proj";
const V: &str = "model.layers.0.self_attn.v_proj";
const OUT: usize = 16;
const IN: usize = 16;
const R: usize = 2;

fn llama_config() -> serde_json::Value {
    serde_json::json!({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "hidden_size": 16})
}

/// A base with q_proj and v_proj (F16), and the factors of a valid adapter for q_proj.
fn setup(tag: &str) -> (PathBuf, T, T) {
    let tmp = support::temp_dir(tag);
    let mut rng = Rng::new(99);
    write_base(
        &tmp.join("base"),
        &llama_config(),
        &[
            T::new(
                &format!("{Q}.weight"),
                Dtype::F16,
                &[OUT, IN],
                rng.vec(OUT * IN, 1.0),
            ),
            T::new(
                &format!("{V}.weight"),
                Dtype::F16,
                &[OUT, IN],
                rng.vec(OUT * IN, 1.0),
            ),
        ],
    );
    let a = T::new(
        &format!("base_model.model.{Q}.lora_A.weight"),
        Dtype::F32,
        &[R, IN],
        rng.vec(R * IN, 0.5),
    );
    let b = T::new(
        &format!("base_model.model.{Q}.lora_B.weight"),
        Dtype::F32,
        &[OUT, R],
        rng.vec(OUT * R, 0.5),
    );
    (tmp, a, b)
}

/// Run an HF merge that must fail; check the message and that nothing was written.
fn hf_refuses(tmp: &Path, must_contain: &[&str]) -> String {
    let before = list_files(tmp);
    let out = tmp.join("out");
    let err = merge_lora_hf(
        &tmp.join("base"),
        &[AdapterSpec::new(tmp.join("ad"), 1.0)],
        &out,
        &MergeOptions::default(),
    )
    .expect_err("the merge must be refused")
    .to_string();
    eprintln!("refused: {err}");
    for s in must_contain {
        assert!(err.contains(s), "error lacks '{s}': {err}");
    }
    assert!(!out.exists(), "output left behind for: {err}");
    assert_eq!(list_files(tmp), before, "files left behind for: {err}");
    err
}

fn adapter(tmp: &Path, config: serde_json::Value, tensors: &[T]) {
    let _ = std::fs::remove_dir_all(tmp.join("ad"));
    write_adapter(&tmp.join("ad"), &config, tensors);
}

#[test]
fn module_missing_from_the_base_is_another_base() {
    let (tmp, mut a, mut b) = setup("lora-bad-module");
    a.name = a.name.replace("layers.0", "layers.5");
    b.name = b.name.replace("layers.0", "layers.5");
    adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a, b]);
    hf_refuses(
        &tmp,
        &[
            "adapter_model.safetensors",
            "model.layers.5.self_attn.q_proj",
            "another base",
        ],
    );
}

#[test]
fn wrong_shape_is_refused() {
    let (tmp, _, b) = setup("lora-bad-shape");
    let a = T::new(
        &format!("base_model.model.{Q}.lora_A.weight"),
        Dtype::F32,
        &[R, IN + 3],
        vec![0.1; R * (IN + 3)],
    );
    adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a, b]);
    hf_refuses(
        &tmp,
        &["adapter_model.safetensors", Q, "[16, 16]", "[16, 19]"],
    );
}

#[test]
fn missing_b_is_refused() {
    let (tmp, a, _) = setup("lora-bad-missing-b");
    adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a]);
    hf_refuses(&tmp, &["adapter_model.safetensors", Q, "no lora_B"]);
}

#[test]
fn inconsistent_rank_is_refused() {
    let (tmp, a, _) = setup("lora-bad-rank");
    let b3 = T::new(
        &format!("base_model.model.{Q}.lora_B.weight"),
        Dtype::F32,
        &[OUT, 3],
        vec![0.1; OUT * 3],
    );
    adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a.clone(), b3]);
    hf_refuses(
        &tmp,
        &[
            "adapter_model.safetensors",
            Q,
            "inconsistent rank",
            "A has rank 2, B has rank 3",
        ],
    );
    // Factors agree with each other but not with the config's r.
    let (_, _, b) = setup("lora-bad-rank");
    adapter(&tmp, lora_config(4, 4.0, &["q_proj"]), &[a, b]);
    hf_refuses(&tmp, &[Q, "r = 4"]);
}

#[test]
fn nan_and_inf_are_refused() {
    for (bad, word) in [(f32::NAN, "NaN"), (f32::NEG_INFINITY, "inf")] {
        let (tmp, a, mut b) = setup("lora-bad-nan");
        b.values[5] = bad;
        let b_name = b.name.clone();
        adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a, b]);
        hf_refuses(
            &tmp,
            &["adapter_model.safetensors", &b_name, word, "element 5"],
        );
    }
}

#[test]
fn dora_and_other_peft_types_are_refused() {
    let (tmp, a, b) = setup("lora-bad-dora");
    let mut cfg = lora_config(R, 4.0, &["q_proj"]);
    cfg["use_dora"] = true.into();
    adapter(&tmp, cfg, &[a.clone(), b.clone()]);
    hf_refuses(&tmp, &["adapter_config.json", "DoRA"]);
    // A magnitude vector betrays DoRA even when the config does not say so.
    let mag = T::new(
        &format!("base_model.model.{Q}.lora_magnitude_vector"),
        Dtype::F32,
        &[OUT],
        vec![1.0; OUT],
    );
    adapter(
        &tmp,
        lora_config(R, 4.0, &["q_proj"]),
        &[a.clone(), b.clone(), mag],
    );
    hf_refuses(&tmp, &["adapter_model.safetensors", "DoRA"]);
    let mut cfg = lora_config(R, 4.0, &["q_proj"]);
    cfg["peft_type"] = "IA3".into();
    adapter(&tmp, cfg, &[a, b]);
    hf_refuses(&tmp, &["adapter_config.json", "IA3", "only LORA"]);
}

#[test]
fn config_and_weights_that_disagree_are_refused() {
    let (tmp, a, b) = setup("lora-bad-untargeted");
    adapter(
        &tmp,
        lora_config(R, 4.0, &["v_proj"]),
        &[a.clone(), b.clone()],
    );
    hf_refuses(&tmp, &["adapter_model.safetensors", Q, "target_modules"]);
    // A full tensor nobody asked to save.
    let extra = T::new(
        "base_model.model.model.layers.0.self_attn.v_proj.weight",
        Dtype::F32,
        &[OUT, IN],
        vec![0.0; OUT * IN],
    );
    adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a, b, extra]);
    hf_refuses(
        &tmp,
        &[
            "adapter_model.safetensors",
            "unexpected tensor",
            "v_proj.weight",
        ],
    );
    // A broken config.
    std::fs::write(
        tmp.join("ad/adapter_config.json"),
        "{\"peft_type\": \"LORA\", \"r\": 2",
    )
    .unwrap();
    hf_refuses(&tmp, &["adapter_config.json", "bad adapter config"]);
}

#[test]
fn pickled_weights_are_refused() {
    let (tmp, _, _) = setup("lora-bad-pickle");
    std::fs::create_dir_all(tmp.join("ad")).unwrap();
    std::fs::write(
        tmp.join("ad/adapter_config.json"),
        lora_config(R, 4.0, &["q_proj"]).to_string(),
    )
    .unwrap();
    std::fs::write(tmp.join("ad/adapter_model.bin"), b"\x80\x02pickle").unwrap();
    hf_refuses(&tmp, &["adapter_model.bin", "pickle"]);
}

/// An overflow found while the output is being written still leaves nothing behind.
#[test]
fn overflow_while_writing_leaves_nothing() {
    let (tmp, a, _) = setup("lora-bad-overflow");
    let b = T::new(
        &format!("base_model.model.{Q}.lora_B.weight"),
        Dtype::F32,
        &[OUT, R],
        vec![3.0e4; OUT * R],
    );
    let a = T::new(&a.name, Dtype::F32, &[R, IN], vec![3.0e4; R * IN]);
    adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a, b]);
    hf_refuses(
        &tmp,
        &[
            "model.safetensors",
            &format!("{Q}.weight"),
            "non-finite",
            "F16",
        ],
    );
}

#[test]
fn a_used_output_directory_is_refused_and_left_alone() {
    let (tmp, a, b) = setup("lora-bad-outdir");
    adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a, b]);
    std::fs::create_dir_all(tmp.join("out")).unwrap();
    std::fs::write(tmp.join("out/keep.txt"), "mine").unwrap();
    let err = merge_lora_hf(
        &tmp.join("base"),
        &[AdapterSpec::new(tmp.join("ad"), 1.0)],
        &tmp.join("out"),
        &MergeOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(list_files(&tmp.join("out")), ["keep.txt"]);
    // An empty one is fine.
    std::fs::remove_file(tmp.join("out/keep.txt")).unwrap();
    merge_lora_hf(
        &tmp.join("base"),
        &[AdapterSpec::new(tmp.join("ad"), 1.0)],
        &tmp.join("out"),
        &MergeOptions::default(),
    )
    .unwrap();
    assert!(tmp.join("out/model.safetensors").is_file());
}

#[test]
fn adapter_specs_parse_dir_and_scale() {
    assert_eq!(
        AdapterSpec::parse("ad/x:0.5").unwrap(),
        AdapterSpec::new("ad/x", 0.5)
    );
    assert_eq!(
        AdapterSpec::parse("ad/x").unwrap(),
        AdapterSpec::new("ad/x", 1.0)
    );
    assert_eq!(
        AdapterSpec::parse("C:\\ad").unwrap(),
        AdapterSpec::new("C:\\ad", 1.0)
    );
    assert!(AdapterSpec::parse("ad:inf")
        .unwrap_err()
        .to_string()
        .contains("finite"));
}

/// lora_to_gguf refusals leave no file either.
#[test]
fn gguf_conversion_refusals_leave_no_file() {
    let (tmp, a, b) = setup("lora-bad-to-gguf");
    let mut cfg = lora_config(R, 4.0, &["q_proj"]);
    cfg["use_rslora"] = true.into();
    adapter(&tmp, cfg, &[a.clone(), b.clone()]);
    let before = list_files(&tmp);
    let out = tmp.join("a.gguf");
    let err = lora_to_gguf(&tmp.join("ad"), &tmp.join("base"), &out, LoraOutType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rsLoRA") && err.contains("adapter_config.json"),
        "{err}"
    );
    assert_eq!(list_files(&tmp), before);
    // A base of another architecture.
    adapter(&tmp, lora_config(R, 4.0, &["q_proj"]), &[a, b]);
    std::fs::write(
        tmp.join("base/config.json"),
        r#"{"architectures": ["GPT2LMHeadModel"]}"#,
    )
    .unwrap();
    let before = list_files(&tmp);
    let err = lora_to_gguf(&tmp.join("ad"), &tmp.join("base"), &out, LoraOutType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GPT2LMHeadModel") && err.contains("not supported"),
        "{err}"
    );
    assert_eq!(list_files(&tmp), before);
}

/// A tensor of a hand-made GGUF file: name, ne, F32 values.
type GgufTensor<'a> = (&'a str, Vec<u64>, Vec<f32>);
/// A refusal case: what, adapter KV, adapter tensors, words the error must contain.
type Case<'a> = (
    &'a str,
    Vec<(&'a str, Value)>,
    Vec<GgufTensor<'a>>,
    Vec<&'a str>,
);

/// A GGUF adapter file with the given KV and F32 tensors (name, ne, values).
fn write_gguf(path: &Path, kv: &[(&str, Value)], tensors: &[GgufTensor]) {
    let mut md = Metadata::new();
    for (k, v) in kv {
        md.set(k, v.clone());
    }
    let infos: Vec<(String, GgmlType, Vec<u64>)> = tensors
        .iter()
        .map(|(n, ne, _)| (n.to_string(), GgmlType::F32, ne.clone()))
        .collect();
    let mut w = GgufWriter::create(path, &md, &infos).unwrap();
    for (_, _, v) in tensors {
        w.write_tensor(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
            .unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn gguf_merge_refusals_leave_no_file() {
    let tmp = support::temp_dir("lora-bad-gguf-merge");
    let arch = ("general.architecture", Value::Str("llama".into()));
    write_gguf(
        &tmp.join("base.gguf"),
        std::slice::from_ref(&arch),
        &[("blk.0.attn_q.weight", vec![8, 4], vec![0.5; 32])],
    );
    let adapter_kv = vec![
        arch.clone(),
        ("general.type", Value::Str("adapter".into())),
        ("adapter.type", Value::Str("lora".into())),
        ("adapter.lora.alpha", Value::F32(2.0)),
    ];
    let a = ("blk.0.attn_q.weight.lora_a", vec![8, 2], vec![0.1; 16]);
    let b = ("blk.0.attn_q.weight.lora_b", vec![2, 4], vec![0.1; 8]);
    let cases: Vec<Case> = vec![
        (
            "another base",
            adapter_kv.clone(),
            vec![
                ("blk.7.attn_q.weight.lora_a", vec![8, 2], vec![0.1; 16]),
                ("blk.7.attn_q.weight.lora_b", vec![2, 4], vec![0.1; 8]),
            ],
            vec!["blk.7.attn_q.weight", "another base"],
        ),
        (
            "shape",
            adapter_kv.clone(),
            vec![
                a.clone(),
                ("blk.0.attn_q.weight.lora_b", vec![2, 5], vec![0.1; 10]),
            ],
            vec!["blk.0.attn_q.weight.lora_a", "do not fit"],
        ),
        (
            "missing b",
            adapter_kv.clone(),
            vec![a.clone()],
            vec!["blk.0.attn_q.weight.lora_a", "no partner"],
        ),
        (
            "not an adapter",
            vec![arch.clone(), ("general.type", Value::Str("model".into()))],
            vec![a.clone(), b.clone()],
            vec!["general.type", "model"],
        ),
        (
            "other arch",
            {
                let mut kv = adapter_kv.clone();
                kv[0] = ("general.architecture", Value::Str("gemma".into()));
                kv
            },
            vec![a.clone(), b.clone()],
            vec!["gemma", "llama"],
        ),
    ];
    for (what, kv, tensors, words) in cases {
        let ad = tmp.join("ad.gguf");
        let _ = std::fs::remove_file(&ad);
        write_gguf(&ad, &kv, &tensors);
        let before = list_files(&tmp);
        let out = tmp.join("merged.gguf");
        let err = merge_lora_gguf(
            &tmp.join("base.gguf"),
            &[GgufAdapterSpec::new(&ad, 1.0)],
            &out,
            &MergeOptions::default(),
        )
        .expect_err(what)
        .to_string();
        assert!(err.contains("ad.gguf"), "{what}: {err}");
        for w in words {
            assert!(err.contains(w), "{what}: error lacks '{w}': {err}");
        }
        assert_eq!(list_files(&tmp), before, "{what}: files left behind");
    }
}
