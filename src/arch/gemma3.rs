//! Gemma 3: `Gemma3Model` in llama.cpp's `conversion/gemma.py` (Gemma3ForCausalLM, and the
//! text weights of Gemma3ForConditionalGeneration as the converter writes them without
//! `--mmproj`), GGUF architecture `gemma3`, graph `src/models/gemma3.cpp`: Gemma 2's block with
//! per-head Q/K norms, no attention soft-capping, a sliding-window RoPE base, and the
//! embedding cut to the tokenizer's size.

use std::path::Path;

use serde_json::Value as Json;

use super::{ArchError, Architecture, ConfigDefault, ConvertQuirks, Hparams, VocabStyle};
use crate::formats::gguf_kv::KvList;

/// The Gemma 3 family.
pub const GEMMA3: Architecture = Architecture {
    hf_classes: &["Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"],
    hf_class_aliases: &[],
    config_defaults: &[("gemma3_text", GEMMA3_TEXT_DEFAULTS), ("gemma3", &[])],
    gguf_arch: "gemma3",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[],
    vocab: VocabStyle::Gemma3,
    write_hparams,
    refuse_features,
    block: None,
    quirks: ConvertQuirks {
        norm_plus_one: true,
        drops_lm_head: false,
        truncates_embedding: true,
        own_parameters: None,
        ignores_head_dim: false,
        qk_norm_spans_heads: false,
        drops_zero_biases: false,
        name_replacements: &[],
        unsupported_tensors: &[],
        text_configs: &[("gemma3", "gemma3_text")],
    },
};

/// `MODEL_TENSORS[MODEL_ARCH.GEMMA3]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT",
    "OUTPUT_NORM",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_Q_NORM",
    "ATTN_K",
    "ATTN_K_NORM",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
    "ATTN_NORM",
    "ATTN_POST_NORM",
    "FFN_PRE_NORM",
    "FFN_POST_NORM",
];

/// Gemma 2's per-block weights plus the Q/K norms (`llama_model_gemma3::load_arch_tensors`).
const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "ATTN_POST_NORM",
    "ATTN_Q_NORM",
    "ATTN_K_NORM",
    "FFN_PRE_NORM",
    "FFN_GATE",
    "FFN_UP",
    "FFN_DOWN",
    "FFN_POST_NORM",
];

/// transformers' `Gemma3TextConfig` defaults (4.57), which also fill a `gemma3` config's
/// `text_config`.
const GEMMA3_TEXT_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(262208.0)),
    ("hidden_size", Some(2304.0)),
    ("intermediate_size", Some(9216.0)),
    ("num_hidden_layers", Some(26.0)),
    ("num_attention_heads", Some(8.0)),
    ("num_key_value_heads", Some(4.0)),
    ("head_dim", Some(256.0)),
    ("max_position_embeddings", Some(131072.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("rope_theta", Some(1_000_000.0)),
    ("query_pre_attn_scalar", Some(256.0)),
    ("sliding_window", Some(4096.0)),
    ("rope_local_base_freq", Some(10000.0)),
];

/// The converter asserts that Gemma 3 has no attention soft-capping; a checkpoint that sets
/// one is not a Gemma 3 the graph runs.
fn refuse_features(_dir: &Path, hp: &Hparams) -> Result<(), ArchError> {
    if let Some(v) = hp.get("attn_logit_softcapping") {
        return Err(hp.bad(format!(
            "'attn_logit_softcapping' is {v}, but Gemma 3 has no attention soft-capping \
             (llama.cpp's converter stops on it too)"
        )));
    }
    Ok(())
}

/// `Gemma3Model.set_gguf_parameters`' additions after `TextModel`'s: several keys written
/// again with the class's defaults (in place), the final soft-capping when set, and the
/// sliding window unless every layer is global (`sliding_window_pattern == 1`).
fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    let key = |k: &str| format!("gemma3.{k}");
    let u32_or = |k: &str, d: u32| hp.find_u32(&[k]).map(|v| v.unwrap_or(d));
    let f64_or = |k: &str, d: f64| hp.find_f64(&[k]).map(|v| v.unwrap_or(d));
    kv.add_u32(
        &key("context_length"),
        u32_or("max_position_embeddings", 131072)?,
    );
    kv.add_u32(
        &key("attention.head_count"),
        u32_or("num_attention_heads", 8)?,
    );
    kv.add_f32(
        &key("attention.layer_norm_rms_epsilon"),
        f64_or("rms_norm_eps", 1e-6)?,
    );
    let head_dim = u32_or("head_dim", 256)?;
    kv.add_u32(&key("attention.key_length"), head_dim);
    kv.add_u32(&key("attention.value_length"), head_dim);
    let rope = hp.rope_parameters()?;
    let theta = match rope.get("rope_theta").filter(|v| !v.is_null()) {
        None => 1_000_000.0,
        Some(v) => v.as_f64().ok_or_else(|| {
            hp.bad::<ArchError>(format!("'rope_theta' must be a number, got {v}"))
        })?,
    };
    kv.add_f32(&key("rope.freq_base"), theta);
    // Python truthiness: 0 and 0.0 write nothing.
    if let Some(cap) = hp.find_f64(&["final_logit_softcapping"])? {
        if cap != 0.0 {
            kv.add_f32(&key("final_logit_softcapping"), cap);
        }
    }
    let every_layer_global = hp.get("sliding_window_pattern").and_then(Json::as_f64) == Some(1.0);
    if !every_layer_global {
        kv.add_u32(
            &key("attention.sliding_window"),
            hp.require_u32(&["sliding_window"])?,
        );
    }
    kv.add_u32(
        &key("attention.head_count_kv"),
        u32_or("num_key_value_heads", 4)?,
    );
    Ok(())
}
