//! EXAONE 4.0: `Exaone4Model` in llama.cpp's `conversion/exaone.py` (Exaone4ForCausalLM), GGUF
//! architecture `exaone4`, graph `src/models/exaone4.cpp`: post-attention / post-FFN norms
//! only, per-head Q/K norms, a sliding window with a per-layer pattern, llama3 RoPE factors,
//! byte-level BPE vocabulary.

use std::path::Path;

use serde_json::Value as Json;

use super::{
    ArchError, Architecture, ConfigDefault, ConvertQuirks, GeneratedTensor, Hparams, VocabStyle,
};
use crate::formats::gguf::{Value, ValueType};
use crate::formats::gguf_kv::KvList;

/// The EXAONE 4.0 family.
pub const EXAONE4: Architecture = Architecture {
    hf_classes: &["Exaone4ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("exaone4", EXAONE4_DEFAULTS)],
    gguf_arch: "exaone4",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[GeneratedTensor::Llama3RopeFreqs],
    vocab: VocabStyle::Gpt2,
    write_hparams,
    refuse_features,
    block: None,
    quirks: ConvertQuirks::NONE,
};

/// `MODEL_TENSORS[MODEL_ARCH.EXAONE4]` (gguf-py constants.py), without the next-token
/// prediction (MTP) kinds, which the dense model has none of.
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "OUTPUT",
    "ROPE_FREQS",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_Q_NORM",
    "ATTN_K",
    "ATTN_K_NORM",
    "ATTN_V",
    "ATTN_OUT",
    "ATTN_POST_NORM",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
    "FFN_POST_NORM",
];

/// The per-block weights exaone4's loader requires (`llama_model_exaone4::load_arch_tensors`).
const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "ATTN_Q_NORM",
    "ATTN_K_NORM",
    "ATTN_POST_NORM",
    "FFN_GATE",
    "FFN_UP",
    "FFN_DOWN",
    "FFN_POST_NORM",
];

/// transformers' `Exaone4Config` defaults (4.57; no `head_dim`).
const EXAONE4_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(102400.0)),
    ("hidden_size", Some(4096.0)),
    ("intermediate_size", Some(16384.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", Some(32.0)),
    ("max_position_embeddings", Some(2048.0)),
    ("rms_norm_eps", Some(1e-5)),
    ("rope_theta", Some(10000.0)),
    ("sliding_window", Some(4096.0)),
    ("sliding_window_pattern", Some(4.0)),
];

/// Configs whose transformers reading qforge does not reproduce: llama3 RoPE without an
/// explicit `factor` (Exaone4Model's default, 16, is not llama's), and no `layer_types` with a
/// pattern transformers cannot expand (a string, or no sliding window).
fn refuse_features(_dir: &Path, hp: &Hparams) -> Result<(), ArchError> {
    let rope = hp.rope_parameters()?;
    let llama3 = rope
        .get("rope_type")
        .and_then(Json::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("llama3"));
    if llama3 && rope.get("factor").is_none_or(Json::is_null) {
        return Err(ArchError::NotSupported {
            path: hp.path().to_path_buf(),
            what: "llama3 RoPE scaling without a 'factor' in an EXAONE 4 model".into(),
        });
    }
    if hp.get("layer_types").is_none() {
        let int_pattern = hp.get("sliding_window_pattern").is_some_and(Json::is_u64);
        if hp.get("sliding_window").is_none() || !int_pattern {
            return Err(ArchError::NotSupported {
                path: hp.path().to_path_buf(),
                what: "an EXAONE 4 layer pattern without 'layer_types' (other than a sliding \
                       window every n-th layer)"
                    .into(),
            });
        }
    }
    Ok(())
}

/// `Exaone4Model.set_gguf_parameters`' additions: the vocabulary size, and with a sliding
/// window the window and which layers use it (`layer_types`, which Exaone4Config derives from
/// an integer `sliding_window_pattern`: every n-th layer global).
fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    kv.add_u32("exaone4.vocab_size", hp.require_u32(&["vocab_size"])?);
    if hp.get("sliding_window").is_none() {
        return Ok(());
    }
    kv.add_u32(
        "exaone4.attention.sliding_window",
        hp.require_u32(&["sliding_window"])?,
    );
    let n_layer = hp.require_u32(&["num_hidden_layers"])?;
    let pattern: Vec<bool> = match hp.get("layer_types") {
        Some(Json::Array(types)) => types
            .iter()
            .map(|t| t.as_str() == Some("sliding_attention"))
            .collect(),
        Some(v) => return Err(hp.bad(format!("'layer_types' must be a list, got {v}"))),
        None => {
            let every = hp.require_u32(&["sliding_window_pattern"])?;
            if every == 0 {
                return Err(hp.bad("'sliding_window_pattern' is 0".into()));
            }
            (0..n_layer).map(|i| (i + 1) % every != 0).collect()
        }
    };
    kv.add_array(
        "exaone4.attention.sliding_window_pattern",
        ValueType::Bool,
        pattern.into_iter().map(Value::Bool).collect(),
    );
    Ok(())
}
