//! SmolLM3: `SmolLM3Model` in llama.cpp's `conversion/llama.py` (SmolLM3ForCausalLM), a
//! `LlamaModel` under GGUF architecture `smollm3` (graph `src/models/smollm3.cpp`): llama's
//! tensors, Q/K permutation, vocabulary and keys.

use super::{Architecture, ConfigDefault, ConvertQuirks, GeneratedTensor, Hparams, VocabStyle};
use crate::arch::ArchError;
use crate::formats::gguf_kv::KvList;

/// The SmolLM3 family.
pub const SMOLLM3: Architecture = Architecture {
    hf_classes: &["SmolLM3ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("smollm3", SMOLLM3_DEFAULTS)],
    gguf_arch: "smollm3",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: super::llama::REQUIRED_BLOCK_KINDS,
    permutes_qk: true,
    strips_text_model_prefix: true,
    generated: &[GeneratedTensor::Llama3RopeFreqs],
    vocab: VocabStyle::Llama,
    write_hparams,
    refuse_features: super::llama::refuse_features,
    block: None,
    quirks: ConvertQuirks::NONE,
};

/// `MODEL_TENSORS[MODEL_ARCH.SMOLLM3]` (gguf-py constants.py).
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
    "ATTN_ROT_EMBD",
    "FFN_NORM",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
];

/// transformers' `SmolLM3Config` defaults (4.57; no `head_dim`).
const SMOLLM3_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(128256.0)),
    ("hidden_size", Some(2048.0)),
    ("intermediate_size", Some(11008.0)),
    ("num_hidden_layers", Some(36.0)),
    ("num_attention_heads", Some(16.0)),
    ("num_key_value_heads", Some(4.0)),
    ("max_position_embeddings", Some(32768.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("rope_theta", Some(2_000_000.0)),
];

/// `LlamaModel.set_gguf_parameters`' additions, under `smollm3.`.
fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    super::llama::write_llama_hparams("smollm3", hp, kv)
}
