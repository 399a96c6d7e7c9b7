//! Metadata pieces against gguf-py itself. The expected key lists below were printed by
//! gguf-py (llama.cpp 0c1e57098: `SpecialVocab.add_to_gguf` and
//! `Metadata.load(...).set_gguf_meta_model`) for the same inputs these tests build; gguf-py runs
//! without torch, the full converter does not.

use crate::support;

use std::path::PathBuf;

use qforge::convert::vocab::special::SpecialVocab;
use qforge::formats::gguf::{GgufFile, Metadata, Value, ValueType};
use qforge::formats::gguf_kv::KvList;
use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

fn strs(v: &[&str]) -> Value {
    Value::Array(ValueType::Str, v.iter().map(|x| s(x)).collect())
}

fn assert_keys(got: &[(String, Value)], want: &[(&str, Value)]) {
    let got_keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let want_keys: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
    assert_eq!(got_keys, want_keys);
    for ((k, g), (_, w)) in got.iter().zip(want) {
        assert_eq!(g, w, "{k}");
    }
}

fn entries(m: &Metadata) -> Vec<(String, Value)> {
    m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// TemplateProcessing inside a Sequence post-processor, merges as pairs with a space, a
/// Lowercase normalizer, a chat template, and an eos_token_id list in config.json.
#[test]
fn special_vocab_matches_gguf_py() {
    let dir = support::temp_dir("meta-special");
    let bos = serde_json::json!({"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}});
    let tok = serde_json::json!({
        "added_tokens": [
            {"id": 0, "content": "<|begin_of_text|>", "special": true},
            {"id": 1, "content": "<|end_of_text|>", "special": true},
            {"id": 2, "content": "<|eot_id|>", "special": true}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Lowercase"}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel"},
            {"type": "TemplateProcessing",
             "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}]}
        ]},
        "model": {"type": "BPE", "merges": [["a b", "c"], ["d", "e"]], "vocab": {}}
    });
    let template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": template}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({"bos_token_id": 0, "eos_token_id": [1, 2], "pad_token_id": null})
            .to_string(),
    )
    .unwrap();
    let sv = SpecialVocab::load(&dir, true, None, None).unwrap();
    let mut kv = KvList::new();
    sv.write(&mut kv);
    assert_keys(
        &entries(&kv.into_metadata()),
        &[
            ("tokenizer.ggml.merges", strs(&["a\u{120}b c", "d e"])),
            ("tokenizer.ggml.bos_token_id", Value::U32(0)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
            ("tokenizer.ggml.add_sep_token", Value::Bool(false)),
            ("tokenizer.chat_template", s(template)),
            ("tokenizer.ggml.normalizer.lowercase", Value::Bool(true)),
        ],
    );
}

/// A model card (YAML front matter), generation_config.json and a Hugging Face style
/// directory name.
#[test]
fn general_keys_match_gguf_py() {
    let root = support::temp_dir("meta-card");
    let dir: PathBuf = root.join("Acme-Widget-1.1B-Chat-v0.3");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(support::golden("tiny-llama")).unwrap() {
        let e = e.unwrap();
        std::fs::write(dir.join(e.file_name()), std::fs::read(e.path()).unwrap()).unwrap();
    }
    std::fs::write(
        dir.join("README.md"),
        "---\nlicense: apache-2.0\nlanguage:\n- en\n- no\ntags:\n- text-generation\n- tiny\n\
         base_model: meta-llama/Llama-3.2-1B\ndatasets:\n- HuggingFaceFW/fineweb\n\
         pipeline_tag: text-generation\nauthor: Someone\n---\n# Widget\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "do_sample": true}"#,
    )
    .unwrap();
    let out = root.join("out.gguf");
    let opts = ConvertOptions {
        outtype: OutType::F16,
        ..Default::default()
    };
    convert(&dir, &out, &opts).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let general: Vec<(String, Value)> = entries(&f.metadata)
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("general.")
                && !matches!(
                    k.as_str(),
                    "general.architecture"
                        | "general.type"
                        | "general.file_type"
                        | "general.quantization_version"
                )
        })
        .collect();
    assert_keys(
        &general,
        &[
            ("general.sampling.top_k", Value::I32(40)),
            ("general.sampling.top_p", Value::F32(0.9)),
            ("general.sampling.temp", Value::F32(0.7)),
            ("general.sampling.penalty_repeat", Value::F32(1.1)),
            ("general.name", s("Acme Widget 1.1B Chat v0.3")),
            ("general.author", s("Someone")),
            ("general.version", s("v0.3")),
            ("general.finetune", s("1.1b-Chat")),
            ("general.basename", s("Acme-Widget")),
            ("general.size_label", s("4.7M")),
            ("general.license", s("apache-2.0")),
            ("general.base_model.count", Value::U32(1)),
            ("general.base_model.0.name", s("Llama 3.2 1B")),
            ("general.base_model.0.organization", s("Meta Llama")),
            (
                "general.base_model.0.repo_url",
                s("https://huggingface.co/meta-llama/Llama-3.2-1B"),
            ),
            ("general.dataset.count", Value::U32(1)),
            ("general.dataset.0.name", s("Fineweb")),
            ("general.dataset.0.organization", s("HuggingFaceFW")),
            (
                "general.dataset.0.repo_url",
                s("https://huggingface.co/HuggingFaceFW/fineweb"),
            ),
            (
                "general.tags",
                strs(&["text-generation", "tiny", "text-generation"]),
            ),
            ("general.languages", strs(&["en", "no"])),
        ],
    );
    let _ = std::fs::remove_dir_all(&root);
}
