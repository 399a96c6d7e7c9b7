//! Phi-3 (Phi-3, Phi-3.5, Phi-4 text): `Phi3MiniModel` in llama.cpp's `conversion/phi.py`
//! (Phi3ForCausalLM), GGUF architecture `phi3`, graph `src/models/phi3.cpp`: Q/K/V fused in one
//! `qkv_proj` and gate/up in one `gate_up_proj`, both kept fused; LongRoPE factors written as
//! the `rope_factors_long` / `rope_factors_short` tensors.

use std::path::Path;

use super::{
    ArchError, Architecture, ConfigDefault, ConvertQuirks, GeneratedTensor, Hparams, VocabStyle,
};
use crate::formats::gguf_kv::KvList;
use serde_json::Value as Json;

/// The Phi-3 family.
pub const PHI3: Architecture = Architecture {
    hf_classes: &["Phi3ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("phi3", PHI3_DEFAULTS)],
    gguf_arch: "phi3",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[GeneratedTensor::LongRopeFactors],
    vocab: VocabStyle::Phi3,
    write_hparams: super::no_extra_hparams,
    refuse_features: no_refusals,
    block: None,
    quirks: ConvertQuirks {
        norm_plus_one: false,
        drops_lm_head: false,
        truncates_embedding: false,
        own_parameters: Some(write_parameters),
        ignores_head_dim: false,
        qk_norm_spans_heads: false,
        drops_zero_biases: false,
        name_replacements: &[],
        unsupported_tensors: &[],
        text_configs: &[],
    },
};

/// `MODEL_TENSORS[MODEL_ARCH.PHI3]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "OUTPUT",
    "ROPE_FACTORS_LONG",
    "ROPE_FACTORS_SHORT",
    "ATTN_NORM",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_DOWN",
    "FFN_UP",
];

/// The per-block weights of phi3's loader, fused Q/K/V as Phi-3 ships it
/// (`llama_model_phi3::load_arch_tensors`).
const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_QKV",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_UP",
    "FFN_DOWN",
];

/// transformers' `Phi3Config` defaults (4.57).
const PHI3_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(32064.0)),
    ("hidden_size", Some(3072.0)),
    ("intermediate_size", Some(8192.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", None),
    ("max_position_embeddings", Some(4096.0)),
    ("original_max_position_embeddings", Some(4096.0)),
    ("rms_norm_eps", Some(1e-5)),
    ("rope_theta", Some(10000.0)),
    ("partial_rotary_factor", Some(1.0)),
];

fn no_refusals(_: &Path, _: &Hparams) -> Result<(), ArchError> {
    Ok(())
}

/// Leading dimensions of a head that RoPE rotates: `int(partial_rotary_factor · n_embd) //
/// n_head` (`Phi3MiniModel.set_gguf_parameters`).
pub fn rope_dims(hp: &Hparams) -> Result<u32, ArchError> {
    let n_embd = hp.require_u32(&["hidden_size", "n_embd"])?;
    let n_head = hp.require_u32(&["num_attention_heads", "n_head"])?;
    if n_head == 0 {
        return Err(hp.bad("num_attention_heads is 0".into()));
    }
    let rope = hp.rope_parameters()?;
    let pct = match rope.get("partial_rotary_factor").filter(|v| !v.is_null()) {
        None => 1.0,
        Some(v) => v.as_f64().ok_or_else(|| {
            hp.bad::<ArchError>(format!("'partial_rotary_factor' must be a number, got {v}"))
        })?,
    };
    Ok(((pct * n_embd as f64) as u64 / n_head as u64) as u32)
}

/// `rope_parameters["original_max_position_embeddings"]`, which the class requires.
pub fn original_context(hp: &Hparams) -> Result<u32, ArchError> {
    let rope = hp.rope_parameters()?;
    match rope.get("original_max_position_embeddings") {
        Some(Json::Number(n)) if n.as_u64().is_some_and(|v| v <= u32::MAX as u64) => {
            Ok(n.as_u64().expect("checked") as u32)
        }
        Some(v) => Err(hp.bad(format!(
            "'original_max_position_embeddings' must be an unsigned 32-bit integer, got {v}"
        ))),
        None => Err(hp.bad("missing 'original_max_position_embeddings'".into())),
    }
}

/// `Phi3MiniModel.set_gguf_parameters`, which replaces `TextModel`'s.
fn write_parameters(hp: &Hparams, file_type: u32, kv: &mut KvList) -> Result<(), ArchError> {
    let key = |k: &str| format!("phi3.{k}");
    let n_embd = hp.require_u32(&["hidden_size", "n_embd"])?;
    let n_head = hp.require_u32(&["num_attention_heads", "n_head"])?;
    let n_head_kv = hp.require_u32(&["num_key_value_heads", "n_head_kv"])?;
    let rms_eps = hp.require_f64(&["rms_norm_eps"])?;
    let max_pos = hp.require_u32(&["n_positions", "max_position_embeddings"])?;
    let orig = original_context(hp)?;
    let rope_dims = rope_dims(hp)?;
    kv.add_u32(&key("context_length"), max_pos);
    kv.add_u32(&key("rope.scaling.original_context_length"), orig);
    kv.add_u32(&key("embedding_length"), n_embd);
    kv.add_u32(
        &key("feed_forward_length"),
        hp.require_u32(&["intermediate_size"])?,
    );
    kv.add_u32(
        &key("block_count"),
        hp.require_u32(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?,
    );
    kv.add_u32(&key("attention.head_count"), n_head);
    kv.add_u32(&key("attention.head_count_kv"), n_head_kv);
    kv.add_f32(&key("attention.layer_norm_rms_epsilon"), rms_eps);
    kv.add_u32(&key("rope.dimension_count"), rope_dims);
    let rope = hp.rope_parameters()?;
    let theta = rope
        .get("rope_theta")
        .filter(|v| !v.is_null())
        .ok_or_else(|| hp.bad::<ArchError>("missing 'rope_theta'".into()))?;
    let theta = theta.as_f64().ok_or_else(|| {
        hp.bad::<ArchError>(format!("'rope_theta' must be a number, got {theta}"))
    })?;
    kv.add_f32(&key("rope.freq_base"), theta);
    kv.add_u32("general.file_type", file_type);
    // Zero tells Phi-4 (no sliding window) from the other Phi-3 models.
    kv.add_u32(
        &key("attention.sliding_window"),
        hp.find_u32(&["sliding_window"])?.unwrap_or(0),
    );
    Ok(())
}
