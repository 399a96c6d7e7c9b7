//! config.json and generation_config.json: the hyper-parameters the converter reads back into
//! the same `<arch>.*` keys, with every key the converter would otherwise default written out.

use serde_json::{json, Map, Value as Json};

use super::tokenizer::Tokenizer;
use super::weights::WeightPlan;
use super::{f32_json, ExportError, Meta, SUPPORTED};
use crate::convert::checkpoint::llama3_rope_factors;

/// The two JSON files.
pub struct HfConfig {
    pub config: Json,
    pub generation: Json,
}

/// generation_config.json keys for the GGUF's `general.sampling.*` keys (gguf-py's reading of
/// generation_config.json, inverted).
const SAMPLING: &[(&str, &str)] = &[
    ("general.sampling.sequence", "sequence"),
    ("general.sampling.top_k", "top_k"),
    ("general.sampling.top_p", "top_p"),
    ("general.sampling.min_p", "min_p"),
    ("general.sampling.xtc_probability", "xtc_probability"),
    ("general.sampling.xtc_threshold", "xtc_threshold"),
    ("general.sampling.temp", "temperature"),
    ("general.sampling.penalty_last_n", "penalty_last_n"),
    ("general.sampling.penalty_repeat", "repetition_penalty"),
    ("general.sampling.mirostat", "mirostat"),
    ("general.sampling.mirostat_tau", "mirostat_tau"),
    ("general.sampling.mirostat_eta", "mirostat_eta"),
];

/// Recover llama3 RoPE scaling parameters from the converter's `rope_freqs` factors: the factor
/// is the largest one; low/high frequency factors and the original context are searched over
/// the values published configurations use, and accepted only when they give the same bits.
fn llama3_parameters(freqs: &[f32], base: f32, head_dim: u32) -> Option<(f64, f64, f64, f64)> {
    let factor = freqs.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let lows = [1.0, 0.5, 2.0, 4.0, 0.25, 8.0];
    let highs = [4.0, 1.0, 2.0, 8.0, 16.0, 32.0, 64.0, 0.5];
    let originals = [
        8192.0, 4096.0, 2048.0, 16384.0, 32768.0, 65536.0, 131072.0, 1024.0, 512.0,
    ];
    for &original in &originals {
        for &low in &lows {
            for &high in &highs {
                if low == high {
                    continue;
                }
                let f = llama3_rope_factors(base as f64, head_dim, factor, low, high, original);
                if f.len() == freqs.len()
                    && f.iter().zip(freqs).all(|(a, b)| a.to_bits() == b.to_bits())
                {
                    return Some((factor, low, high, original));
                }
            }
        }
    }
    None
}

/// Build config.json and generation_config.json.
pub fn build(
    meta: &Meta<'_>,
    arch: &str,
    plan: &WeightPlan,
    tok: &Tokenizer,
) -> Result<HfConfig, ExportError> {
    let (_, class, model_type) = SUPPORTED
        .iter()
        .find(|(a, _, _)| *a == arch)
        .expect("checked by the caller");
    let key = |k: &str| format!("{arch}.{k}");
    let mut c = Map::new();
    c.insert("architectures".into(), json!([class]));
    c.insert("model_type".into(), json!(model_type));
    let ints = [
        ("hidden_size", "embedding_length"),
        ("intermediate_size", "feed_forward_length"),
        ("num_hidden_layers", "block_count"),
        ("num_attention_heads", "attention.head_count"),
        ("num_key_value_heads", "attention.head_count_kv"),
        ("max_position_embeddings", "context_length"),
    ];
    for (hf, gg) in ints {
        if let Some(v) = meta.uint(&key(gg))? {
            c.insert(hf.into(), json!(v));
        }
    }
    meta.require_uint(&key("block_count"))?;
    // head_dim: the converter writes key_length from it (and llama's default derives it, so a
    // llama file always has it).
    let head_dim = meta.uint(&key("attention.key_length"))?;
    if let Some(hd) = head_dim {
        if meta.uint(&key("attention.value_length"))? != Some(hd) {
            return Err(meta.bad(
                &key("attention.value_length"),
                "differs from key_length (no config key gives both)",
            ));
        }
        c.insert("head_dim".into(), json!(hd));
    }
    if let Some(eps) = meta.float(&key("attention.layer_norm_rms_epsilon"))? {
        c.insert("rms_norm_eps".into(), f32_json(eps));
    }
    let base = meta.float(&key("rope.freq_base"))?;
    if let Some(theta) = base {
        c.insert("rope_theta".into(), f32_json(theta));
    }
    let vocab = match meta.uint(&key("vocab_size"))? {
        Some(v) => v as usize,
        None => tok.n_tokens,
    };
    c.insert("vocab_size".into(), json!(vocab));
    c.insert("hidden_act".into(), json!("silu"));
    c.insert("tie_word_embeddings".into(), json!(!plan.has_output));
    if arch == "llama" {
        c.insert("attention_bias".into(), json!(plan.attention_bias));
        c.insert("mlp_bias".into(), json!(false));
    }

    // RoPE scaling.
    let scaling = meta.str(&key("rope.scaling.type"))?;
    match (scaling, &plan.rope_freqs) {
        (Some(_), Some(_)) => {
            return Err(meta.bad(
                &key("rope.scaling.type"),
                "both a scaling type and rope_freqs",
            ))
        }
        (Some("linear"), None) => {
            let f = meta
                .float(&key("rope.scaling.factor"))?
                .ok_or_else(|| meta.bad(&key("rope.scaling.factor"), "missing"))?;
            c.insert(
                "rope_scaling".into(),
                json!({"rope_type": "linear", "factor": f32_json(f)}),
            );
        }
        (Some("yarn"), None) => {
            let mut r = Map::new();
            r.insert("rope_type".into(), json!("yarn"));
            let f = meta
                .float(&key("rope.scaling.factor"))?
                .ok_or_else(|| meta.bad(&key("rope.scaling.factor"), "missing"))?;
            r.insert("factor".into(), f32_json(f));
            let orig = meta.require_uint(&key("rope.scaling.original_context_length"))?;
            r.insert("original_max_position_embeddings".into(), json!(orig));
            for (gg, hf) in [
                ("rope.scaling.yarn_ext_factor", "extrapolation_factor"),
                ("rope.scaling.yarn_attn_factor", "attention_factor"),
                ("rope.scaling.yarn_beta_fast", "beta_fast"),
                ("rope.scaling.yarn_beta_slow", "beta_slow"),
            ] {
                if let Some(v) = meta.float(&key(gg))? {
                    r.insert(hf.into(), f32_json(v));
                }
            }
            c.insert("rope_scaling".into(), Json::Object(r));
        }
        (Some(other), None) => {
            return Err(super::ExportError::NotSupported {
                path: meta.path().to_path_buf(),
                what: format!("RoPE scaling type '{other}'"),
            })
        }
        (None, Some(freqs)) => {
            let hd = head_dim.ok_or_else(|| meta.bad(&key("attention.key_length"), "missing"))?;
            let theta = base.unwrap_or(10000.0);
            let (factor, low, high, original) = llama3_parameters(freqs, theta, hd as u32)
                .ok_or_else(|| ExportError::Tensor {
                    path: meta.path().to_path_buf(),
                    tensor: "rope_freqs.weight".into(),
                    what: "no llama3 RoPE scaling parameters reproduce these factors".into(),
                })?;
            c.insert(
                "rope_scaling".into(),
                json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": original as u64,
                }),
            );
        }
        (None, None) => {}
    }
    for (typ, id) in &tok.config_ids {
        c.insert(format!("{typ}_token_id"), json!(id));
    }
    c.insert("torch_dtype".into(), json!(plan.torch_dtype.torch_name()));

    // generation_config.json: the special ids transformers generates with, and sampling.
    let mut g = Map::new();
    for (typ, id) in tok.all_ids.iter() {
        if typ == "bos" || typ == "eos" || typ == "pad" {
            g.insert(format!("{typ}_token_id"), json!(id));
        }
    }
    for (gg, hf) in SAMPLING {
        match meta.get(gg) {
            None => {}
            Some(crate::formats::gguf::Value::Str(s)) => {
                g.insert(hf.to_string(), json!(s));
            }
            Some(crate::formats::gguf::Value::F32(v)) => {
                g.insert(hf.to_string(), f32_json(*v));
            }
            Some(crate::formats::gguf::Value::I32(v)) => {
                g.insert(hf.to_string(), json!(v));
            }
            Some(_) => return Err(meta.bad(gg, "has an unexpected type")),
        }
    }
    Ok(HfConfig {
        config: Json::Object(c),
        generation: Json::Object(g),
    })
}
