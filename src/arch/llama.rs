//! The llama family: `LlamaModel` in llama.cpp's `conversion/llama.py` (LlamaForCausalLM,
//! MistralForCausalLM), GGUF architecture `llama`, graph `src/models/llama.cpp`.

use std::path::Path;

use super::{
    ArchError, Architecture, Block, ConfigDefault, ConvertQuirks, Ffn, GeneratedTensor, Hparams,
    Norm, Rope, VocabStyle,
};
use crate::formats::gguf_kv::KvList;

/// The llama family.
pub const LLAMA: Architecture = Architecture {
    hf_classes: &["LlamaForCausalLM", "MistralForCausalLM"],
    hf_class_aliases: &["LLaMAForCausalLM"],
    config_defaults: &[("llama", LLAMA_DEFAULTS), ("mistral", MISTRAL_DEFAULTS)],
    gguf_arch: "llama",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: true,
    strips_text_model_prefix: true,
    generated: &[GeneratedTensor::Llama3RopeFreqs],
    vocab: VocabStyle::Llama,
    write_hparams,
    refuse_features,
    block: Some(Block {
        norm: Norm::Rms,
        rope: Rope::Norm,
        qkv_bias: false,
        qk_norm: false,
        ffn: Ffn::SwiGlu,
    }),
    quirks: ConvertQuirks::NONE,
};

/// `MODEL_TENSORS[MODEL_ARCH.LLAMA]` (gguf-py constants.py).
pub(super) const TENSOR_KINDS: &[&str] = &[
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
    "FFN_GATE_INP",
    "FFN_NORM",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
    "FFN_GATE_EXP",
    "FFN_DOWN_EXP",
    "FFN_UP_EXP",
];

/// The per-block weights llama.cpp's llama loader requires (`llama_model::load_tensors`).
pub(super) const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_NORM",
    "FFN_GATE",
    "FFN_UP",
    "FFN_DOWN",
];

/// transformers' `LlamaConfig` defaults.
const LLAMA_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(32000.0)),
    ("hidden_size", Some(4096.0)),
    ("intermediate_size", Some(11008.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", None),
    ("max_position_embeddings", Some(2048.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("head_dim", None),
];

/// transformers' `MistralConfig` defaults.
const MISTRAL_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(32000.0)),
    ("hidden_size", Some(4096.0)),
    ("intermediate_size", Some(14336.0)),
    ("num_hidden_layers", Some(32.0)),
    ("num_attention_heads", Some(32.0)),
    ("num_key_value_heads", Some(8.0)),
    ("max_position_embeddings", Some(131072.0)),
    ("rms_norm_eps", Some(1e-6)),
    ("head_dim", None),
];

/// `LlamaModel.set_gguf_parameters`' additions: the vocabulary size and the RoPE width.
pub(super) fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    write_llama_hparams("llama", hp, kv)
}

/// [`write_hparams`] under another GGUF architecture: the additions of `LlamaModel`'s
/// subclasses (SmolLM3, Granite) that keep its `set_gguf_parameters`.
pub(super) fn write_llama_hparams(
    arch: &str,
    hp: &Hparams,
    kv: &mut KvList,
) -> Result<(), ArchError> {
    let key = |k: &str| format!("{arch}.{k}");
    kv.add_u32(&key("vocab_size"), hp.require_u32(&["vocab_size"])?);
    let rope_dim = match hp.find_u32(&["head_dim"])? {
        Some(d) => d,
        None => {
            let h = hp.require_u32(&["hidden_size"])?;
            let n = hp.require_u32(&["num_attention_heads"])?;
            if n == 0 {
                return Err(hp.bad("num_attention_heads is 0".into()));
            }
            h / n
        }
    };
    kv.add_u32(&key("rope.dimension_count"), rope_dim);
    Ok(())
}

/// An EAGLE-3 draft model (one layer with a draft vocabulary) converts differently.
pub(super) fn refuse_features(_dir: &Path, hp: &Hparams) -> Result<(), ArchError> {
    if hp.get("draft_vocab_size").is_some() && hp.find_u32(&["num_hidden_layers"])? == Some(1) {
        return Err(ArchError::NotSupported {
            path: hp.path().to_path_buf(),
            what: "an EAGLE-3 draft model".into(),
        });
    }
    Ok(())
}
