//! ERNIE 4.5 (dense): `Ernie4_5Model` in llama.cpp's `conversion/ernie.py`
//! (Ernie4_5ForCausalLM, Ernie4_5_ForCausalLM), GGUF architecture `ernie4_5`, graph
//! `src/models/ernie4-5.cpp`: llama's block without the Q/K permutation, `ernie.` names read
//! as `model.`, SentencePiece vocabulary.

use super::{no_extra_hparams, Architecture, ConfigDefault, ConvertQuirks, VocabStyle};

/// The ERNIE 4.5 family.
pub const ERNIE4_5: Architecture = Architecture {
    hf_classes: &["Ernie4_5ForCausalLM", "Ernie4_5_ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("ernie4_5", ERNIE4_5_DEFAULTS)],
    gguf_arch: "ernie4_5",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: super::llama::REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[],
    vocab: VocabStyle::Ernie4_5,
    write_hparams: no_extra_hparams,
    refuse_features: super::qwen2::no_refusals,
    block: None,
    quirks: ConvertQuirks {
        name_replacements: &[("ernie.", "model.")],
        unsupported_tensors: &[
            ("qkv_proj", "a fused qkv_proj (the converter splits it)"),
            (
                "up_gate_proj",
                "a fused up_gate_proj (the converter splits it)",
            ),
        ],
        ..ConvertQuirks::NONE
    },
};

/// `MODEL_TENSORS[MODEL_ARCH.ERNIE4_5]` (gguf-py constants.py).
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

/// transformers' `Ernie4_5Config` defaults (4.57).
const ERNIE4_5_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(103424.0)),
    ("hidden_size", Some(1024.0)),
    ("intermediate_size", Some(3072.0)),
    ("num_hidden_layers", Some(18.0)),
    ("num_attention_heads", Some(16.0)),
    ("num_key_value_heads", Some(2.0)),
    ("max_position_embeddings", Some(131072.0)),
    ("rms_norm_eps", Some(1e-5)),
    ("rope_theta", Some(500000.0)),
    ("head_dim", Some(128.0)),
];
