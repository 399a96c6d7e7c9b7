//! lora_to_gguf beyond the f32 golden: the other outtypes, the authorship keys a model card
//! brings, and a cross-check of the whole GGUF path against the Hugging Face merge on a random
//! llama: PEFT adapter → GGUF adapter → merged into a GGUF base must give exactly the tensors
//! the HF merge gives, after the converter's renaming and Q/K permutation.

use crate::support;

use std::path::Path;

use crate::support::rng::Rng;
use crate::support::synthetic::{lora_config, write_adapter, write_base, T};
use qforge::formats::gguf::{GgufFile, GgufWriter, Metadata, Value, ValueType};
use qforge::formats::safetensors::{Checkpoint, Dtype};
use qforge::lora::{
    lora_to_gguf, merge_lora_gguf, merge_lora_hf, AdapterSpec, GgufAdapterSpec, LoraOutType,
    MergeOptions,
};
use qforge::quant::{self, f32_to_bf16, f32_to_f16, GgmlType};

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// f16 / bf16 / q8_0 of the golden adapter: same keys and tensor order as the f32 golden, each
/// tensor the f32 golden's values converted (Q8_0 rows that are not whole blocks fall back to
/// F16, as gguf-py does: lora_b has rows of r = 8).
#[test]
fn other_outtypes_convert_the_f32_values() {
    let tmp = support::temp_dir("lora-outtypes");
    let golden = GgufFile::open(support::golden("lora/lora.f32.gguf")).unwrap();
    for outtype in [LoraOutType::F16, LoraOutType::BF16, LoraOutType::Q8_0] {
        let out = tmp.join(format!("{outtype:?}.gguf"));
        let res = lora_to_gguf(
            &support::golden("lora/adapter"),
            &support::golden("tiny-llama"),
            &out,
            outtype,
        );
        if outtype == LoraOutType::Q8_0 && quant::quantizer(GgmlType::Q8_0).is_none() {
            let e = res.unwrap_err().to_string();
            assert!(e.contains("Q8_0") && e.contains("not supported"), "{e}");
            assert!(!out.exists());
            continue;
        }
        res.unwrap();
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.metadata, golden.metadata);
        assert_eq!(f.tensors.len(), golden.tensors.len());
        for (t, g) in f.tensors.iter().zip(&golden.tensors) {
            assert_eq!((&t.name, &t.ne), (&g.name, &g.ne));
            let v = f32s(golden.tensor_data(g));
            let want: Vec<u8> = match (outtype, t.name.ends_with(".lora_b")) {
                (LoraOutType::BF16, _) => v
                    .iter()
                    .flat_map(|x| f32_to_bf16(*x).to_le_bytes())
                    .collect(),
                (LoraOutType::F16, _) | (LoraOutType::Q8_0, true) => v
                    .iter()
                    .flat_map(|x| f32_to_f16(*x).to_le_bytes())
                    .collect(),
                (LoraOutType::Q8_0, false) => {
                    let row = g.ne[0] as usize;
                    let mut b =
                        vec![0u8; quant::row_bytes(GgmlType::Q8_0, row).unwrap() * v.len() / row];
                    quant::quantize_rows(GgmlType::Q8_0, &v, row, None, &mut b).unwrap();
                    b
                }
                (LoraOutType::F32, _) => unreachable!(),
            };
            let ty = if outtype == LoraOutType::Q8_0 && t.name.ends_with(".lora_b") {
                GgmlType::F16
            } else {
                match outtype {
                    LoraOutType::F16 => GgmlType::F16,
                    LoraOutType::BF16 => GgmlType::BF16,
                    _ => GgmlType::Q8_0,
                }
            };
            assert_eq!(t.ty, ty, "{}", t.name);
            assert_eq!(f.tensor_data(t), &want[..], "{} {outtype:?}", t.name);
        }
    }
}

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const FFN: usize = 96;
const VOCAB: usize = 40;
const LAYERS: usize = 2;

fn llama_config() -> serde_json::Value {
    serde_json::json!({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "hidden_size": HIDDEN,
        "intermediate_size": FFN, "vocab_size": VOCAB, "tie_word_embeddings": false})
}

/// The llama's HF tensors: (HF name, GGUF name, [rows, cols]).
fn llama_layout() -> Vec<(String, String, Vec<usize>)> {
    let mut v = vec![
        (
            "model.embed_tokens.weight".to_string(),
            "token_embd.weight".to_string(),
            vec![VOCAB, HIDDEN],
        ),
        (
            "model.norm.weight".into(),
            "output_norm.weight".into(),
            vec![HIDDEN],
        ),
        (
            "lm_head.weight".into(),
            "output.weight".into(),
            vec![VOCAB, HIDDEN],
        ),
    ];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        let g = format!("blk.{l}");
        for (hf, gg, shape) in [
            ("self_attn.q_proj", "attn_q", vec![HEADS * HEAD_DIM, HIDDEN]),
            (
                "self_attn.k_proj",
                "attn_k",
                vec![KV_HEADS * HEAD_DIM, HIDDEN],
            ),
            (
                "self_attn.v_proj",
                "attn_v",
                vec![KV_HEADS * HEAD_DIM, HIDDEN],
            ),
            (
                "self_attn.o_proj",
                "attn_output",
                vec![HIDDEN, HEADS * HEAD_DIM],
            ),
            ("mlp.gate_proj", "ffn_gate", vec![FFN, HIDDEN]),
            ("mlp.up_proj", "ffn_up", vec![FFN, HIDDEN]),
            ("mlp.down_proj", "ffn_down", vec![HIDDEN, FFN]),
            ("input_layernorm", "attn_norm", vec![HIDDEN]),
            ("post_attention_layernorm", "ffn_norm", vec![HIDDEN]),
        ] {
            v.push((
                format!("{p}.{hf}.weight"),
                format!("{g}.{gg}.weight"),
                shape,
            ));
        }
    }
    v
}

/// The converter's RoPE row order, written independently: for each head, rows
/// [0, half, 1, half+1, …] of the original.
fn rope_permute(m: &[f32], cols: usize, heads: usize) -> Vec<f32> {
    let rows = m.len() / cols;
    let hd = rows / heads;
    let mut out = Vec::with_capacity(m.len());
    for h in 0..heads {
        for j in 0..hd / 2 {
            for half in [0, hd / 2] {
                let r = h * hd + half + j;
                out.extend_from_slice(&m[r * cols..(r + 1) * cols]);
            }
        }
    }
    out
}

fn heads_for(hf: &str) -> Option<usize> {
    if hf.contains("q_proj") {
        Some(HEADS)
    } else if hf.contains("k_proj") {
        Some(KV_HEADS)
    } else {
        None
    }
}

/// An F32 GGUF base holding the same weights as the HF base, as the converter lays them out.
fn write_gguf_base(path: &Path, tensors: &[(String, String, Vec<usize>, Vec<f32>)]) {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::Str("llama".into()));
    md.set("general.file_type", Value::U32(0));
    let infos: Vec<(String, GgmlType, Vec<u64>)> = tensors
        .iter()
        .map(|(_, g, shape, _)| {
            (
                g.clone(),
                GgmlType::F32,
                shape.iter().rev().map(|&d| d as u64).collect(),
            )
        })
        .collect();
    let mut w = GgufWriter::create(path, &md, &infos).unwrap();
    for (hf, _, shape, v) in tensors {
        let v = match heads_for(hf) {
            Some(h) => rope_permute(v, shape[1], h),
            None => v.clone(),
        };
        w.write_tensor(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
            .unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn gguf_path_agrees_with_the_hf_merge_and_reads_the_model_card() {
    let tmp = support::temp_dir("lora-crosscheck");
    let mut rng = Rng::new(2024);
    let layout = llama_layout();
    let weights: Vec<(String, String, Vec<usize>, Vec<f32>)> = layout
        .into_iter()
        .map(|(hf, g, shape)| {
            let n = shape.iter().product();
            (hf, g, shape, rng.vec(n, 0.5))
        })
        .collect();
    let base_tensors: Vec<T> = weights
        .iter()
        .map(|(hf, _, shape, v)| T::new(hf, Dtype::F32, shape, v.clone()))
        .collect();
    write_base(&tmp.join("base"), &llama_config(), &base_tensors);
    write_gguf_base(&tmp.join("base.gguf"), &weights);

    // An adapter on every projection of both layers (rank 3) and on the embedding (rank 2).
    let r = 3;
    let mut tensors = Vec::new();
    for (hf, _, shape, _) in &weights {
        let module = hf.strip_suffix(".weight").unwrap();
        if module.ends_with("_proj") {
            let (o, i) = (shape[0], shape[1]);
            tensors.push(T::new(
                &format!("base_model.model.{module}.lora_A.weight"),
                Dtype::F32,
                &[r, i],
                rng.vec(r * i, 0.4),
            ));
            tensors.push(T::new(
                &format!("base_model.model.{module}.lora_B.weight"),
                Dtype::F32,
                &[o, r],
                rng.vec(o * r, 0.4),
            ));
        }
    }
    let re = 2;
    tensors.push(T::new(
        "base_model.model.model.embed_tokens.lora_embedding_A",
        Dtype::F32,
        &[re, VOCAB],
        rng.vec(re * VOCAB, 0.4),
    ));
    tensors.push(T::new(
        "base_model.model.model.embed_tokens.lora_embedding_B",
        Dtype::F32,
        &[HIDDEN, re],
        rng.vec(HIDDEN * re, 0.4),
    ));
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let targets = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "embed_tokens",
    ];
    // Rank 3 everywhere but the embedding, whose rank comes from rank_pattern.
    let mut cfg = lora_config(r, 6.0, &targets);
    cfg["rank_pattern"] = serde_json::json!({"embed_tokens": re});
    let ad = tmp.join("my-llama-7b-lora");
    write_adapter(&ad, &cfg, &tensors);
    std::fs::write(
        ad.join("README.md"),
        "---\nbase_model: meta-llama/Llama-3.2-1B\nlibrary_name: peft\npipeline_tag: text-generation\nlicense:\n- apache-2.0\n- mit\nlanguage: [en, fr]\ndatasets:\n  - tatsu-lab/alpaca\n  - https://huggingface.co/datasets/foo\ntags:\n- base_model:adapter:meta-llama/Llama-3.2-1B\n- lora\n- transformers\nmodel-index:\n- name: x\n  results: []\n---\n\n# Model Card for Model ID\n",
    )
    .unwrap();

    // HF merge, and the GGUF path at the same user scale.
    let scale = 0.75f32;
    merge_lora_hf(
        &tmp.join("base"),
        &[AdapterSpec::new(&ad, scale)],
        &tmp.join("hf-out"),
        &MergeOptions::default(),
    )
    .unwrap();
    lora_to_gguf(
        &ad,
        &tmp.join("base"),
        &tmp.join("ad.gguf"),
        LoraOutType::F32,
    )
    .unwrap();
    let report = merge_lora_gguf(
        &tmp.join("base.gguf"),
        &[GgufAdapterSpec::new(tmp.join("ad.gguf"), scale)],
        &tmp.join("merged.gguf"),
        &MergeOptions::default(),
    )
    .unwrap();
    assert_eq!(report.merged, 7 * LAYERS + 1);

    // The model card's keys, in gguf-py's order; values as gguf-py's Metadata computes them
    // for this card and directory name.
    let adapter_gguf = GgufFile::open(tmp.join("ad.gguf")).unwrap();
    let keys: Vec<&str> = adapter_gguf.metadata.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.type",
            "adapter.type",
            "general.name",
            "general.basename",
            "general.size_label",
            "general.license",
            "general.base_model.count",
            "general.base_model.0.name",
            "general.base_model.0.organization",
            "general.base_model.0.repo_url",
            "general.dataset.count",
            "general.dataset.0.name",
            "general.dataset.0.organization",
            "general.dataset.0.repo_url",
            "general.dataset.1.name",
            "general.dataset.1.organization",
            "general.dataset.1.repo_url",
            "general.tags",
            "general.languages",
            "adapter.lora.alpha",
            "general.quantization_version"
        ]
    );
    let s = |k: &str| adapter_gguf.metadata.get_str(k).unwrap().to_string();
    assert_eq!(s("general.name"), "My Llama 7b Lora");
    assert_eq!(s("general.basename"), "my-llama");
    assert_eq!(s("general.size_label"), "7B");
    assert_eq!(s("general.license"), "apache-2.0,mit");
    assert_eq!(s("general.base_model.0.name"), "Llama 3.2 1B");
    assert_eq!(s("general.base_model.0.organization"), "Meta Llama");
    assert_eq!(s("general.dataset.0.name"), "Alpaca");
    assert_eq!(s("general.dataset.0.organization"), "Tatsu Lab");
    assert_eq!(s("general.dataset.1.name"), "Foo");
    assert_eq!(s("general.dataset.1.organization"), "Datasets");
    assert_eq!(
        s("general.dataset.1.repo_url"),
        "https://huggingface.co/datasets/foo"
    );
    let strs = |k: &str| match adapter_gguf.metadata.get(k).unwrap() {
        Value::Array(ValueType::Str, v) => v
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        strs("general.tags"),
        [
            "base_model:adapter:meta-llama/Llama-3.2-1B",
            "lora",
            "transformers",
            "text-generation"
        ]
    );
    assert_eq!(strs("general.languages"), ["en", "fr"]);
    // The embedding's lora_a is Aᵀ (ne [r, vocab]).
    let ea = adapter_gguf.tensor("token_embd.weight.lora_a").unwrap();
    assert_eq!(ea.ne, [re as u64, VOCAB as u64]);

    // Every tensor of the GGUF merge equals the HF merge's, renamed and permuted. The scales
    // agree exactly here (0.75·6/3 and 0.75·6/2 are exact in f32 and f64).
    let hf = Checkpoint::open_dir(tmp.join("hf-out")).unwrap();
    let merged = GgufFile::open(tmp.join("merged.gguf")).unwrap();
    assert_eq!(
        merged.metadata.get("general.file_type"),
        Some(&Value::U32(1))
    );
    for (hf_name, g_name, shape, _) in &weights {
        let loc = hf.find(hf_name).unwrap();
        let mut v = f32s(hf.file(loc).data(hf.tensor(loc)));
        if let Some(h) = heads_for(hf_name) {
            v = rope_permute(&v, shape[1], h);
        }
        let t = merged.tensor(g_name).unwrap();
        assert_eq!(t.ty, GgmlType::F32);
        assert_eq!(f32s(merged.tensor_data(t)), v, "{g_name}");
    }
    // And the embedding really changed (the check above is not vacuous).
    let before = &weights
        .iter()
        .find(|w| w.1 == "token_embd.weight")
        .unwrap()
        .3;
    let after = f32s(merged.tensor_data(merged.tensor("token_embd.weight").unwrap()));
    assert_ne!(&after, before);
}
