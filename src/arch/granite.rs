//! Granite (3.x dense): `GraniteModel` in llama.cpp's `conversion/granite.py`
//! (GraniteForCausalLM), a `LlamaModel` under GGUF architecture `granite` (graph
//! `src/models/granite.cpp`): llama's tensors and Q/K permutation, `head_dim` ignored, and the
//! four µP multipliers written as scales.

use std::path::Path;

use serde_json::Value as Json;

use super::{ArchError, Architecture, ConfigDefault, ConvertQuirks, Hparams, VocabStyle};
use crate::formats::gguf_kv::KvList;

/// The Granite family.
pub const GRANITE: Architecture = Architecture {
    hf_classes: &["GraniteForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("granite", GRANITE_DEFAULTS)],
    gguf_arch: "granite",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: super::llama::REQUIRED_BLOCK_KINDS,
    permutes_qk: true,
    strips_text_model_prefix: true,
    generated: &[],
    vocab: VocabStyle::Llama,
    write_hparams,
    refuse_features,
    block: None,
    quirks: ConvertQuirks {
        ignores_head_dim: true,
        ..ConvertQuirks::NONE
    },
};

/// `MODEL_TENSORS[MODEL_ARCH.GRANITE]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "OUTPUT",
    "ATTN_NORM",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
];

/// transformers' `GraniteConfig` defaults (4.57; no `head_dim`).
const GRANITE_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(32000.0)),
    ("hidden_size", Some(4096.0)),
    ("intermediate_size", Some(11008.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", None),
    ("max_position_embeddings", Some(2048.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("rope_theta", Some(10000.0)),
    ("embedding_multiplier", Some(1.0)),
    ("logits_scaling", Some(1.0)),
    ("residual_multiplier", Some(1.0)),
    ("attention_multiplier", Some(1.0)),
];

/// llama's refusals; and llama3 RoPE scaling, whose `rope_freqs` tensor granite has no slot
/// for (the converter stops on it).
fn refuse_features(dir: &Path, hp: &Hparams) -> Result<(), ArchError> {
    super::llama::refuse_features(dir, hp)?;
    let rope = hp.rope_parameters()?;
    let rope_type = rope.get("rope_type").and_then(Json::as_str).unwrap_or("");
    if rope_type.eq_ignore_ascii_case("llama3") {
        return Err(ArchError::NotSupported {
            path: hp.path().to_path_buf(),
            what: "llama3 RoPE scaling in a Granite model".into(),
        });
    }
    Ok(())
}

/// `LlamaModel`'s additions under `granite.`, then the multipliers that are set (Python
/// truthiness: 0 writes nothing).
fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    super::llama::write_llama_hparams("granite", hp, kv)?;
    for (from, to) in [
        ("attention_multiplier", "attention.scale"),
        ("embedding_multiplier", "embedding_scale"),
        ("residual_multiplier", "residual_scale"),
        ("logits_scaling", "logit_scale"),
    ] {
        if let Some(v) = hp.find_f64(&[from])? {
            if v != 0.0 {
                kv.add_f32(&format!("granite.{to}"), v);
            }
        }
    }
    Ok(())
}
