//! Mixtral: `LlamaModel` in llama.cpp's `conversion/llama.py` (MixtralForCausalLM), GGUF
//! architecture `llama` with experts: each layer's `block_sparse_moe.experts.N.w1/w2/w3` are
//! stacked into `ffn_gate_exps` / `ffn_down_exps` / `ffn_up_exps`, the router
//! `block_sparse_moe.gate` becomes `ffn_gate_inp` (kept F32). The runtime does not execute it
//! (`block: None`; llama.cpp's graph is `src/models/llama.cpp` with its MoE branch).

use super::experts::ExpertLayout;
use super::{Architecture, ConfigDefault, ConvertQuirks, GeneratedTensor, VocabStyle};

/// The Mixtral family.
pub const MIXTRAL: Architecture = Architecture {
    hf_classes: &["MixtralForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("mixtral", MIXTRAL_DEFAULTS)],
    gguf_arch: "llama",
    tensor_kinds: super::llama::TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: true,
    strips_text_model_prefix: true,
    generated: &[GeneratedTensor::Llama3RopeFreqs],
    vocab: VocabStyle::Llama,
    write_hparams: super::llama::write_hparams,
    refuse_features: super::llama::refuse_features,
    block: None,
    quirks: ConvertQuirks::NONE,
};

/// How Mixtral checkpoints store experts (`LlamaModel.modify_tensors`' `_experts`).
pub const EXPERTS: ExpertLayout = ExpertLayout {
    count_keys: &["num_local_experts"],
    used_count_keys: &[
        "num_experts_per_tok",
        "num_experts_per_token",
        "top_k_experts",
    ],
    marker: "block_sparse_moe.experts",
    expert_name: "model.layers.{bid}.block_sparse_moe.experts.{xid}.{proj}.weight",
    projections: &["w1", "w2", "w3"],
    stacked_name: "layers.{bid}.feed_forward.experts.{proj}.weight",
    ff_keys: &["intermediate_size"],
    down_projection: "w2",
};

/// What llama.cpp's llama loader requires of a layer when `expert_count` > 0
/// (`src/models/llama.cpp`: the router and the stacked experts instead of the dense FFN).
const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_GATE_INP",
    "FFN_DOWN_EXP",
    "FFN_UP_EXP",
];

/// transformers' `MixtralConfig` defaults.
const MIXTRAL_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(32000.0)),
    ("hidden_size", Some(4096.0)),
    ("intermediate_size", Some(14336.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", Some(8.0)),
    ("max_position_embeddings", Some(131072.0)),
    ("rms_norm_eps", Some(1e-5)),
    ("num_experts_per_tok", Some(2.0)),
    ("num_local_experts", Some(8.0)),
    ("rope_theta", Some(1000000.0)),
];
