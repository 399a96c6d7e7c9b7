//! Qwen3-MoE: `Qwen3MoeModel` in llama.cpp's `conversion/qwen.py` (Qwen3MoeForCausalLM), GGUF
//! architecture `qwen3moe`: Qwen3's attention (per-head Q/K RMS norms, no biases) with
//! Qwen2-MoE's routed experts, stacked the same way, and no shared expert. The runtime does not
//! execute it (`block: None`; llama.cpp's graph is `src/models/qwen3moe.cpp`).

use std::path::Path;

use super::{ArchError, Architecture, ConfigDefault, ConvertQuirks, Hparams, VocabStyle};
use crate::formats::gguf_kv::KvList;

/// The Qwen3-MoE family (its experts: [`super::qwen2moe::EXPERTS`]).
pub const QWEN3MOE: Architecture = Architecture {
    hf_classes: &["Qwen3MoeForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("qwen3_moe", QWEN3MOE_DEFAULTS)],
    gguf_arch: "qwen3moe",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[],
    vocab: VocabStyle::Gpt2,
    write_hparams,
    refuse_features,
    block: None,
    quirks: ConvertQuirks::NONE,
};

/// `MODEL_TENSORS[MODEL_ARCH.QWEN3MOE]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "OUTPUT",
    "ATTN_NORM",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_Q_NORM",
    "ATTN_K",
    "ATTN_K_NORM",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_GATE_INP",
    "FFN_GATE_EXP",
    "FFN_DOWN_EXP",
    "FFN_UP_EXP",
];

/// The per-block weights `src/models/qwen3moe.cpp` creates as required.
const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "ATTN_Q_NORM",
    "ATTN_K_NORM",
    "FFN_NORM",
    "FFN_GATE_INP",
    "FFN_GATE_EXP",
    "FFN_DOWN_EXP",
    "FFN_UP_EXP",
];

/// transformers' `Qwen3MoeConfig` defaults.
const QWEN3MOE_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(151936.0)),
    ("hidden_size", Some(2048.0)),
    ("intermediate_size", Some(6144.0)),
    ("num_hidden_layers", Some(24.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", Some(4.0)),
    ("max_position_embeddings", Some(32768.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("moe_intermediate_size", Some(768.0)),
    ("num_experts_per_tok", Some(8.0)),
    ("num_experts", Some(128.0)),
];

/// `Qwen2MoeModel.set_gguf_parameters`' additions, which Qwen3-MoE inherits.
fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    super::qwen2moe::write_expert_widths("qwen3moe", hp, kv)
}

/// Qwen2's refusals (Qwen3MoeModel adds none of Qwen3's reranker handling).
fn refuse_features(dir: &Path, hp: &Hparams) -> Result<(), ArchError> {
    super::qwen2::refuse_features(dir, hp)
}
