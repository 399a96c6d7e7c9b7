//! OLMo 2: `Olmo2Model` in llama.cpp's `conversion/olmo.py` (Olmo2ForCausalLM), GGUF
//! architecture `olmo2`, graph `src/models/olmo2.cpp`: norms after attention and after the FFN
//! only, Q/K RMS norms over the whole projection, byte-level BPE vocabulary.

use std::path::Path;

use super::{ArchError, Architecture, ConfigDefault, ConvertQuirks, Hparams, VocabStyle};
use crate::formats::gguf::{Value, ValueType};
use crate::formats::gguf_kv::KvList;
use serde_json::Value as Json;

/// The OLMo 2 family.
pub const OLMO2: Architecture = Architecture {
    hf_classes: &["Olmo2ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("olmo2", OLMO2_DEFAULTS)],
    gguf_arch: "olmo2",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[],
    vocab: VocabStyle::Gpt2,
    write_hparams,
    refuse_features: no_refusals,
    block: None,
    quirks: ConvertQuirks {
        qk_norm_spans_heads: true,
        ..ConvertQuirks::NONE
    },
};

/// `MODEL_TENSORS[MODEL_ARCH.OLMO2]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "OUTPUT",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "ATTN_POST_NORM",
    "ATTN_Q_NORM",
    "ATTN_K_NORM",
    "FFN_POST_NORM",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
];

/// The per-block weights olmo2's loader requires (`llama_model_olmo2::load_arch_tensors`).
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

/// transformers' `Olmo2Config` defaults (4.57; no `head_dim`, no sliding window).
const OLMO2_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(50304.0)),
    ("hidden_size", Some(4096.0)),
    ("intermediate_size", Some(11008.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", None),
    ("max_position_embeddings", Some(2048.0)),
    ("rms_norm_eps", Some(1e-5)),
    ("rope_theta", Some(10000.0)),
];

fn no_refusals(_: &Path, _: &Hparams) -> Result<(), ArchError> {
    Ok(())
}

/// `Olmo2Model.set_gguf_parameters`' additions: with a `sliding_window` key (OLMo 3 style),
/// the window and the per-layer pattern (from `layer_types`, else every 4th layer global).
fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    if hp.get("sliding_window").is_none() {
        return Ok(());
    }
    kv.add_u32(
        "olmo2.attention.sliding_window",
        hp.require_u32(&["sliding_window"])?,
    );
    let pattern: Vec<bool> = match hp.get("layer_types") {
        Some(Json::Array(types)) => types
            .iter()
            .map(|t| t.as_str() == Some("sliding_attention"))
            .collect(),
        Some(v) => return Err(hp.bad(format!("'layer_types' must be a list, got {v}"))),
        None => (0..hp.require_u32(&["num_hidden_layers"])?)
            .map(|i| (i + 1) % 4 != 0)
            .collect(),
    };
    kv.add_array(
        "olmo2.attention.sliding_window_pattern",
        ValueType::Bool,
        pattern.into_iter().map(Value::Bool).collect(),
    );
    Ok(())
}
