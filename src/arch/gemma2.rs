//! Gemma 2: `Gemma2Model` in llama.cpp's `conversion/gemma.py` (Gemma2ForCausalLM), GGUF
//! architecture `gemma2`, graph `src/models/gemma2.cpp`: RMSNorm weights stored as offsets
//! from 1, norms after attention and after the FFN as well as before, logit soft-capping, and
//! a head tied to the embedding (a shipped `lm_head.weight` is dropped).

use std::path::Path;

use super::{ArchError, Architecture, ConfigDefault, ConvertQuirks, Hparams, VocabStyle};
use crate::formats::gguf_kv::KvList;

/// The Gemma 2 family.
pub const GEMMA2: Architecture = Architecture {
    hf_classes: &["Gemma2ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("gemma2", GEMMA2_DEFAULTS)],
    gguf_arch: "gemma2",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[],
    vocab: VocabStyle::Gemma2,
    write_hparams: super::no_extra_hparams,
    refuse_features: no_refusals,
    block: None,
    quirks: ConvertQuirks {
        norm_plus_one: true,
        drops_lm_head: true,
        truncates_embedding: false,
        own_parameters: Some(write_parameters),
        ignores_head_dim: false,
        qk_norm_spans_heads: false,
        drops_zero_biases: false,
        name_replacements: &[],
        unsupported_tensors: &[],
        text_configs: &[],
    },
};

/// `MODEL_TENSORS[MODEL_ARCH.GEMMA2]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
    "ATTN_NORM",
    "ATTN_POST_NORM",
    "FFN_PRE_NORM",
    "FFN_POST_NORM",
];

/// The per-block weights gemma2's loader requires (`llama_model_gemma2::load_arch_tensors`).
pub(super) const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "ATTN_POST_NORM",
    "FFN_PRE_NORM",
    "FFN_GATE",
    "FFN_UP",
    "FFN_DOWN",
    "FFN_POST_NORM",
];

/// transformers' `Gemma2Config` defaults (4.57).
const GEMMA2_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(256000.0)),
    ("hidden_size", Some(2304.0)),
    ("intermediate_size", Some(9216.0)),
    ("num_hidden_layers", Some(26.0)),
    ("num_attention_heads", Some(8.0)),
    ("num_key_value_heads", Some(4.0)),
    ("head_dim", Some(256.0)),
    ("max_position_embeddings", Some(8192.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("rope_theta", Some(10000.0)),
    ("query_pre_attn_scalar", Some(256.0)),
    ("sliding_window", Some(4096.0)),
    ("final_logit_softcapping", Some(30.0)),
    ("attn_logit_softcapping", Some(50.0)),
];

fn no_refusals(_: &Path, _: &Hparams) -> Result<(), ArchError> {
    Ok(())
}

/// `Gemma2Model.set_gguf_parameters`, which replaces `TextModel`'s: its own key order, no RoPE
/// keys, both soft-capping values and the sliding window, each required.
fn write_parameters(hp: &Hparams, file_type: u32, kv: &mut KvList) -> Result<(), ArchError> {
    let key = |k: &str| format!("gemma2.{k}");
    let n_head = hp.require_u32(&["num_attention_heads"])?;
    kv.add_u32(
        &key("context_length"),
        hp.require_u32(&["max_position_embeddings"])?,
    );
    kv.add_u32(&key("embedding_length"), hp.require_u32(&["hidden_size"])?);
    kv.add_u32(
        &key("block_count"),
        hp.require_u32(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?,
    );
    kv.add_u32(
        &key("feed_forward_length"),
        hp.require_u32(&["intermediate_size"])?,
    );
    kv.add_u32(&key("attention.head_count"), n_head);
    let n_kv = hp.find_u32(&["num_key_value_heads"])?.unwrap_or(n_head);
    kv.add_u32(&key("attention.head_count_kv"), n_kv);
    kv.add_f32(
        &key("attention.layer_norm_rms_epsilon"),
        hp.require_f64(&["rms_norm_eps"])?,
    );
    let head_dim = hp.require_u32(&["head_dim"])?;
    kv.add_u32(&key("attention.key_length"), head_dim);
    kv.add_u32(&key("attention.value_length"), head_dim);
    kv.add_u32("general.file_type", file_type);
    kv.add_f32(
        &key("attn_logit_softcapping"),
        hp.require_f64(&["attn_logit_softcapping"])?,
    );
    kv.add_f32(
        &key("final_logit_softcapping"),
        hp.require_f64(&["final_logit_softcapping"])?,
    );
    kv.add_u32(
        &key("attention.sliding_window"),
        hp.require_u32(&["sliding_window"])?,
    );
    Ok(())
}
