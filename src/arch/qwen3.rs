//! Qwen3: `Qwen3Model` in llama.cpp's `conversion/qwen.py` (Qwen3ForCausalLM), GGUF
//! architecture `qwen3`, graph `src/models/qwen3.cpp`: Qwen2 without the Q/K/V biases and with
//! per-head RMSNorm of Q and K.

use std::path::Path;

use serde_json::Value as Json;

use super::{
    no_extra_hparams, ArchError, Architecture, Block, ConfigDefault, ConvertQuirks, Ffn, Hparams,
    Norm, Rope, VocabStyle,
};

/// The Qwen3 family.
pub const QWEN3: Architecture = Architecture {
    hf_classes: &["Qwen3ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("qwen3", QWEN3_DEFAULTS)],
    gguf_arch: "qwen3",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[],
    vocab: VocabStyle::Qwen2,
    write_hparams: no_extra_hparams,
    refuse_features,
    block: Some(Block {
        norm: Norm::Rms,
        rope: Rope::Neox,
        qkv_bias: false,
        qk_norm: true,
        ffn: Ffn::SwiGlu,
    }),
    quirks: ConvertQuirks::NONE,
};

/// `MODEL_TENSORS[MODEL_ARCH.QWEN3]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "OUTPUT",
    "ROPE_FREQS",
    "ATTN_NORM",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_Q_NORM",
    "ATTN_K",
    "ATTN_K_NORM",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
];

/// llama's per-block weights plus the per-head Q/K norms qwen3's loader requires.
const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_GATE",
    "FFN_UP",
    "FFN_DOWN",
    "ATTN_Q_NORM",
    "ATTN_K_NORM",
];

/// transformers' `Qwen3Config` defaults.
const QWEN3_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(151936.0)),
    ("hidden_size", Some(4096.0)),
    ("intermediate_size", Some(22016.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", Some(32.0)),
    ("max_position_embeddings", Some(32768.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("head_dim", Some(128.0)),
];

/// Qwen2's refusals, and the Qwen3 rerankers (`Qwen3Model.__init__` detects them by the model
/// card's heading or the model's name and converts them as classifiers).
fn refuse_features(dir: &Path, hp: &Hparams) -> Result<(), ArchError> {
    super::qwen2::refuse_features(dir, hp)?;
    let readme = std::fs::read_to_string(dir.join("README.md"))
        .unwrap_or_default()
        .to_lowercase();
    // `Path(dir).name`, empty for `.`.
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let text = |k: &str| {
        hp.get(k)
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_lowercase()
    };
    let hints = [dir_name, text("_name_or_path"), text("model_type")];
    if readme.contains("# qwen3-reranker")
        || readme.contains("# qwen3-vl-reranker")
        || hints
            .iter()
            .any(|h| h.contains("qwen3-reranker") || h.contains("qwen3-vl-reranker"))
    {
        return Err(ArchError::NotSupported {
            path: dir.to_path_buf(),
            what: "a Qwen3 reranker".into(),
        });
    }
    Ok(())
}
