//! Qwen2: `Qwen2Model` in llama.cpp's `conversion/qwen.py` (Qwen2ForCausalLM), GGUF
//! architecture `qwen2`, graph `src/models/qwen2.cpp`.

use std::path::Path;

use super::{
    no_extra_hparams, ArchError, Architecture, Block, ConfigDefault, ConvertQuirks, Ffn, Hparams,
    Norm, Rope, VocabStyle,
};

/// The Qwen2 family.
pub const QWEN2: Architecture = Architecture {
    hf_classes: &["Qwen2ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("qwen2", QWEN2_DEFAULTS)],
    gguf_arch: "qwen2",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: super::llama::REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[],
    vocab: VocabStyle::Qwen2,
    write_hparams: no_extra_hparams,
    refuse_features,
    block: Some(Block {
        norm: Norm::Rms,
        rope: Rope::Neox,
        qkv_bias: true,
        qk_norm: false,
        ffn: Ffn::SwiGlu,
    }),
    quirks: ConvertQuirks::NONE,
};

/// `MODEL_TENSORS[MODEL_ARCH.QWEN2]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "OUTPUT",
    "ROPE_FREQS",
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

/// transformers' `Qwen2Config` defaults.
const QWEN2_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(151936.0)),
    ("hidden_size", Some(4096.0)),
    ("intermediate_size", Some(22016.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", Some(32.0)),
    ("max_position_embeddings", Some(32768.0)),
    ("rms_norm_eps", Some(1e-6)),
];

/// A hook for families that refuse nothing.
pub(super) fn no_refusals(_: &Path, _: &Hparams) -> Result<(), ArchError> {
    Ok(())
}

/// Sentence-transformers pooling heads and classifier pooling convert to other architectures.
pub(super) fn refuse_features(dir: &Path, hp: &Hparams) -> Result<(), ArchError> {
    let modules = dir.join("modules.json");
    if modules.is_file() {
        let text = std::fs::read_to_string(&modules).unwrap_or_default();
        if text.contains("Pooling") {
            return Err(ArchError::NotSupported {
                path: modules,
                what: "a sentence-transformers pooling model".into(),
            });
        }
    }
    if hp.get("classifier_pooling").is_some() {
        return Err(ArchError::NotSupported {
            path: hp.path().to_path_buf(),
            what: "classifier pooling".into(),
        });
    }
    Ok(())
}
