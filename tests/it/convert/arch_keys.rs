//! Mistral, Qwen2 and Qwen3 checkpoints made here (small random weights, tiny-llama's
//! SentencePiece tokenizer). Byte-for-byte goldens from llama.cpp's converter for these
//! architectures are in tests/data/convert_arch (tests/it/convert/arch_golden.rs); these tests check, per
//! class — architecture keys, which keys are (not) written, tensor names and types, the Q/K
//! permutation of Llama-class models only, and that data is carried exactly.

use crate::support;

use std::path::PathBuf;

use crate::support::rng::Rng;
use qforge::formats::gguf::{GgufFile, Value};
use qforge::formats::safetensors::{Dtype, SafetensorsWriter};
use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

/// Deterministic values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    Rng::new(seed).vec(n, 1.0)
}

struct Made {
    dir: PathBuf,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// A checkpoint directory named `name` with `config` and F32 `tensors`.
fn make(tag: &str, name: &str, config: serde_json::Value, tensors: &[(&str, Vec<usize>)]) -> Made {
    let root = support::temp_dir(&format!("arch-{tag}"));
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    for f in ["tokenizer.model", "tokenizer_config.json"] {
        std::fs::write(
            dir.join(f),
            std::fs::read(support::golden(&format!("tiny-llama/{f}"))).unwrap(),
        )
        .unwrap();
    }
    let mut made = Vec::new();
    for (i, (n, shape)) in tensors.iter().enumerate() {
        let count: usize = shape.iter().product();
        made.push((n.to_string(), shape.clone(), values(i as u64 + 7, count)));
    }
    let specs: Vec<_> = made
        .iter()
        .map(|(n, s, _)| (n.clone(), Dtype::F32, s.clone()))
        .collect();
    let mut w = SafetensorsWriter::create(dir.join("model.safetensors"), &specs, None).unwrap();
    for (_, _, v) in &made {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor(&bytes).unwrap();
    }
    w.finish().unwrap();
    Made { dir, tensors: made }
}

fn layer_tensors(
    n_layers: usize,
    hidden: usize,
    q_rows: usize,
    kv_rows: usize,
    ff: usize,
    extra: &[(&str, Vec<usize>)],
) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![
        ("model.embed_tokens.weight".to_string(), vec![512, hidden]),
        ("model.norm.weight".to_string(), vec![hidden]),
    ];
    for l in 0..n_layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("input_layernorm.weight", vec![hidden]),
            ("post_attention_layernorm.weight", vec![hidden]),
            ("self_attn.q_proj.weight", vec![q_rows, hidden]),
            ("self_attn.k_proj.weight", vec![kv_rows, hidden]),
            ("self_attn.v_proj.weight", vec![kv_rows, hidden]),
            ("self_attn.o_proj.weight", vec![hidden, q_rows]),
            ("mlp.gate_proj.weight", vec![ff, hidden]),
            ("mlp.up_proj.weight", vec![ff, hidden]),
            ("mlp.down_proj.weight", vec![hidden, ff]),
        ] {
            v.push((format!("{p}.{n}"), s));
        }
        for (n, s) in extra {
            v.push((format!("{p}.{n}"), s.clone()));
        }
    }
    v
}

fn run(made: &Made, outtype: OutType) -> GgufFile {
    let out = made.dir.parent().unwrap().join("out.gguf");
    let opts = ConvertOptions {
        outtype,
        ..Default::default()
    };
    convert(&made.dir, &out, &opts).unwrap();
    GgufFile::open(&out).unwrap()
}

fn u32_of(f: &GgufFile, key: &str) -> Option<u64> {
    f.metadata.get_u64(key)
}

fn f32_data(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
    assert_eq!(t.ty.name(), "F32", "{name}");
    f.tensor_data(t)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn source<'a>(made: &'a Made, name: &str) -> &'a [f32] {
    &made.tensors.iter().find(|t| t.0 == name).unwrap().2
}

/// Rows of a [rows, cols] matrix reordered as LlamaModel.permute does, computed through the
/// reshape (heads, 2, half, cols) → swap axes 1 and 2.
fn permute_reference(x: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = Vec::with_capacity(x.len());
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src_row = (h * 2 + j) * half + i;
                out.extend_from_slice(&x[src_row * cols..(src_row + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn mistral_is_llama_with_permuted_qk_and_mistral_defaults() {
    let (hidden, heads, kv_heads, hd, ff) = (64, 4, 2, 16, 128);
    let config = serde_json::json!({
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": 512,
        "rope_theta": 1000000.0,
        "sliding_window": 4096,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32"
    });
    let mut tensors = layer_tensors(2, hidden, heads * hd, kv_heads * hd, ff, &[]);
    tensors.push(("lm_head.weight".to_string(), vec![512, hidden]));
    let tensors: Vec<(&str, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    let made = make("mistral", "tiny-mistral", config, &tensors);
    let f = run(&made, OutType::F32);

    assert_eq!(f.metadata.get_str("general.architecture"), Some("llama"));
    assert_eq!(f.metadata.get_str("general.name"), Some("Tiny Mistral"));
    // MistralConfig's default context, and head_dim derived from hidden/heads.
    assert_eq!(u32_of(&f, "llama.context_length"), Some(131072));
    assert_eq!(u32_of(&f, "llama.attention.key_length"), Some(hd as u64));
    assert_eq!(u32_of(&f, "llama.rope.dimension_count"), Some(hd as u64));
    assert_eq!(u32_of(&f, "llama.vocab_size"), Some(512));
    assert_eq!(
        f.metadata.get("llama.rope.freq_base"),
        Some(&Value::F32(1e6))
    );
    assert_eq!(
        f.metadata.get("llama.attention.layer_norm_rms_epsilon"),
        Some(&Value::F32(1e-6))
    );
    assert_eq!(u32_of(&f, "general.file_type"), Some(0));
    assert_eq!(f.metadata.get_str("tokenizer.ggml.model"), Some("llama"));

    // Tensor order: shard order, names sorted; lm_head first.
    let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names[0], "output.weight");
    assert_eq!(names[1], "token_embd.weight");
    assert_eq!(names.len(), 3 + 2 * 9);

    let q = f32_data(&f, "blk.1.attn_q.weight");
    let q_src = source(&made, "model.layers.1.self_attn.q_proj.weight");
    assert_eq!(q, permute_reference(q_src, heads * hd, hidden, heads));
    assert_ne!(q, q_src);
    let k = f32_data(&f, "blk.0.attn_k.weight");
    assert_eq!(
        k,
        permute_reference(
            source(&made, "model.layers.0.self_attn.k_proj.weight"),
            kv_heads * hd,
            hidden,
            kv_heads
        )
    );
    // Other tensors are carried as they are.
    assert_eq!(
        f32_data(&f, "blk.0.attn_v.weight"),
        source(&made, "model.layers.0.self_attn.v_proj.weight")
    );
    assert_eq!(
        f.tensor("blk.0.ffn_down.weight").unwrap().ne,
        vec![ff as u64, hidden as u64]
    );
}

#[test]
fn qwen2_keeps_qk_order_writes_biases_as_f32_and_no_llama_keys() {
    let (hidden, heads, kv_heads, ff) = (64, 4, 2, 128);
    let hd = hidden / heads;
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": 1,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": 512,
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true,
        "use_sliding_window": false
    });
    let extra = [
        ("self_attn.q_proj.bias", vec![heads * hd]),
        ("self_attn.k_proj.bias", vec![kv_heads * hd]),
        ("self_attn.v_proj.bias", vec![kv_heads * hd]),
    ];
    let tensors = layer_tensors(1, hidden, heads * hd, kv_heads * hd, ff, &extra);
    let tensors: Vec<(&str, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    let made = make("qwen2", "tiny-qwen2", config, &tensors);
    let f = run(&made, OutType::F16);

    assert_eq!(f.metadata.get_str("general.architecture"), Some("qwen2"));
    let keys: Vec<&str> = f.metadata.iter().map(|(k, _)| k).take(14).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.type",
            "general.name",
            "general.size_label",
            "qwen2.block_count",
            "qwen2.context_length",
            "qwen2.embedding_length",
            "qwen2.feed_forward_length",
            "qwen2.attention.head_count",
            "qwen2.attention.head_count_kv",
            "qwen2.rope.freq_base",
            "qwen2.attention.layer_norm_rms_epsilon",
            "general.file_type",
            "general.quantization_version",
        ]
    );
    // Qwen2Config has no head_dim: no key/value length, and Qwen2 writes no vocab size or
    // rope dimension count.
    assert!(f.metadata.get("qwen2.attention.key_length").is_none());
    assert!(f.metadata.get("qwen2.vocab_size").is_none());
    assert!(f.metadata.get("qwen2.rope.dimension_count").is_none());

    // No permutation for Qwen2; F16 is round-to-nearest-even of the source.
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ty.name(), "F16");
    let got: Vec<u16> = f
        .tensor_data(q)
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let want: Vec<u16> = source(&made, "model.layers.0.self_attn.q_proj.weight")
        .iter()
        .map(|v| half::f16::from_f32(*v).to_bits())
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        f32_data(&f, "blk.0.attn_q.bias"),
        source(&made, "model.layers.0.self_attn.q_proj.bias")
    );
    assert!(f.tensor("output.weight").is_none());
}

#[test]
fn qwen3_qk_norms_stay_f32_and_head_dim_comes_from_config() {
    let (hidden, heads, kv_heads, hd, ff) = (64, 4, 2, 32, 128);
    let config = serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": 1,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hd,
        "vocab_size": 512,
        "max_position_embeddings": 40960,
        "rope_theta": 1000000,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true
    });
    let extra = [
        ("self_attn.q_norm.weight", vec![hd]),
        ("self_attn.k_norm.weight", vec![hd]),
    ];
    let tensors = layer_tensors(1, hidden, heads * hd, kv_heads * hd, ff, &extra);
    let tensors: Vec<(&str, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    let made = make("qwen3", "tiny-qwen3", config, &tensors);
    let f = run(&made, OutType::Q8_0);

    assert_eq!(f.metadata.get_str("general.architecture"), Some("qwen3"));
    assert_eq!(u32_of(&f, "qwen3.attention.key_length"), Some(hd as u64));
    assert_eq!(u32_of(&f, "qwen3.context_length"), Some(40960));
    assert_eq!(u32_of(&f, "general.file_type"), Some(7));
    assert_eq!(
        f32_data(&f, "blk.0.attn_q_norm.weight"),
        source(&made, "model.layers.0.self_attn.q_norm.weight")
    );
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().ty.name(), "Q8_0");
    assert_eq!(
        f.tensor("blk.0.attn_q.weight").unwrap().ne,
        vec![hidden as u64, (heads * hd) as u64]
    );
}

#[test]
fn q8_0_falls_back_to_f16_for_rows_not_a_multiple_of_32() {
    let (hidden, heads, ff) = (48, 3, 80);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": 1,
        "num_attention_heads": heads,
        "vocab_size": 512
    });
    let tensors = layer_tensors(1, hidden, hidden, hidden, ff, &[]);
    let tensors: Vec<(&str, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    let made = make("fallback", "odd-llama", config, &tensors);
    let f = run(&made, OutType::Q8_0);
    // Rows of 48 and 80 cannot be blocked by 32: F16, as gguf-py's QuantError fallback.
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().ty.name(), "F16");
    assert_eq!(f.tensor("blk.0.ffn_down.weight").unwrap().ty.name(), "F16");
    assert_eq!(f.tensor("blk.0.attn_norm.weight").unwrap().ty.name(), "F32");
    // LlamaConfig defaults: context 2048, eps 1e-6, key_length derived.
    assert_eq!(u32_of(&f, "llama.context_length"), Some(2048));
    assert_eq!(u32_of(&f, "llama.attention.key_length"), Some(16));
}

#[test]
fn qwen2_with_a_byte_level_bpe_tokenizer() {
    let (hidden, heads, ff) = (32, 2, 64);
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": 1,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "vocab_size": 49152,
        "tie_word_embeddings": true
    });
    let mut tensors = layer_tensors(1, hidden, hidden, hidden, ff, &[]);
    tensors[0].1 = vec![49152, hidden];
    let tensors: Vec<(&str, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    let made = make("qwen2-bpe", "tiny-qwen2-bpe", config, &tensors);
    std::fs::remove_file(made.dir.join("tokenizer.model")).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::write(
            made.dir.join(f),
            std::fs::read(support::golden(&format!("tiny-bpe/{f}"))).unwrap(),
        )
        .unwrap();
    }
    let f = run(&made, OutType::BF16);
    assert_eq!(f.metadata.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(f.metadata.get_str("tokenizer.ggml.pre"), Some("smollm"));
    match f.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(_, items)) => assert_eq!(items.len(), 49152),
        other => panic!("tokens: {other:?}"),
    }
    assert_eq!(u32_of(&f, "tokenizer.ggml.eos_token_id"), Some(2));
    assert_eq!(f.tensor("token_embd.weight").unwrap().ty.name(), "BF16");
}
