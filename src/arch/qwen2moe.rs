//! Qwen2-MoE: `Qwen2MoeModel` in llama.cpp's `conversion/qwen.py` (Qwen2MoeForCausalLM), GGUF
//! architecture `qwen2moe`: Qwen2's attention (Q/K/V biases) with routed experts
//! (`mlp.experts.N.{gate,up,down}_proj`, stacked per layer), a router `mlp.gate` and one shared
//! expert (`mlp.shared_expert.*`) scaled by `mlp.shared_expert_gate`. The runtime does not
//! execute it (`block: None`; llama.cpp's graph is `src/models/qwen2moe.cpp`).

use std::path::Path;

use super::experts::ExpertLayout;
use super::{ArchError, Architecture, ConfigDefault, ConvertQuirks, Hparams, VocabStyle};
use crate::formats::gguf_kv::KvList;

/// The Qwen2-MoE family.
pub const QWEN2MOE: Architecture = Architecture {
    hf_classes: &["Qwen2MoeForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("qwen2_moe", QWEN2MOE_DEFAULTS)],
    gguf_arch: "qwen2moe",
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

/// How Qwen2-MoE and Qwen3-MoE checkpoints store experts (`Qwen2MoeModel.modify_tensors`).
pub const EXPERTS: ExpertLayout = ExpertLayout {
    count_keys: &["num_local_experts", "num_experts"],
    used_count_keys: &[
        "num_experts_per_tok",
        "num_experts_per_token",
        "top_k_experts",
    ],
    marker: "experts",
    expert_name: "model.layers.{bid}.mlp.experts.{xid}.{proj}.weight",
    projections: &["down_proj", "gate_proj", "up_proj"],
    stacked_name: "model.layers.{bid}.mlp.experts.{proj}.weight",
    ff_keys: &["moe_intermediate_size"],
    down_projection: "down_proj",
};

/// `MODEL_TENSORS[MODEL_ARCH.QWEN2MOE]` (gguf-py constants.py).
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
    "FFN_GATE_INP",
    "FFN_GATE_EXP",
    "FFN_DOWN_EXP",
    "FFN_UP_EXP",
    "FFN_GATE_INP_SHEXP",
    "FFN_GATE_SHEXP",
    "FFN_DOWN_SHEXP",
    "FFN_UP_SHEXP",
];

/// The per-block weights `src/models/qwen2moe.cpp` creates as required.
const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_GATE_INP",
    "FFN_GATE_EXP",
    "FFN_DOWN_EXP",
    "FFN_UP_EXP",
    "FFN_GATE_INP_SHEXP",
    "FFN_GATE_SHEXP",
    "FFN_DOWN_SHEXP",
    "FFN_UP_SHEXP",
];

/// transformers' `Qwen2MoeConfig` defaults.
const QWEN2MOE_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(151936.0)),
    ("hidden_size", Some(2048.0)),
    ("intermediate_size", Some(5632.0)),
    ("num_hidden_layers", Some(24.0)),
    ("num_attention_heads", Some(16.0)),
    ("num_key_value_heads", Some(16.0)),
    ("max_position_embeddings", Some(32768.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("moe_intermediate_size", Some(1408.0)),
    ("shared_expert_intermediate_size", Some(5632.0)),
    ("num_experts_per_tok", Some(4.0)),
    ("num_experts", Some(60.0)),
];

/// `Qwen2MoeModel.set_gguf_parameters`' additions: the expert and shared-expert widths.
fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    write_expert_widths("qwen2moe", hp, kv)
}

/// The expert widths `Qwen2MoeModel.set_gguf_parameters` writes (inherited by Qwen3-MoE), under
/// `gguf_arch`.
pub(super) fn write_expert_widths(
    gguf_arch: &str,
    hp: &Hparams,
    kv: &mut KvList,
) -> Result<(), ArchError> {
    let key = |k: &str| format!("{gguf_arch}.{k}");
    if let Some(v) = hp.find_u32(&["moe_intermediate_size"])? {
        kv.add_u32(&key("expert_feed_forward_length"), v);
    }
    if let Some(v) = hp.find_u32(&["shared_expert_intermediate_size"])? {
        kv.add_u32(&key("expert_shared_feed_forward_length"), v);
    }
    Ok(())
}

/// Qwen2's refusals (sentence-transformers pooling heads, classifier pooling).
fn refuse_features(dir: &Path, hp: &Hparams) -> Result<(), ArchError> {
    super::qwen2::refuse_features(dir, hp)
}
