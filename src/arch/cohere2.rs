//! Command R7B: `Cohere2Model` in llama.cpp's `conversion/command_r.py` (Cohere2ForCausalLM),
//! GGUF architecture `cohere2`, graph `src/models/cohere2.cpp`: one LayerNorm per block
//! (attention and FFN in parallel), a head tied to the embedding, partial RoPE, a logit scale
//! and a sliding window; all-zero biases are dropped (as `Cohere2Model.modify_tensors` does
//! under `--no-lazy`; in its default lazy mode the script stops on any bias).

use super::{ArchError, Architecture, ConfigDefault, ConvertQuirks, Hparams, VocabStyle};
use crate::formats::gguf_kv::KvList;

/// The Command R7B family.
pub const COHERE2: Architecture = Architecture {
    hf_classes: &["Cohere2ForCausalLM"],
    hf_class_aliases: &[],
    config_defaults: &[("cohere2", COHERE2_DEFAULTS)],
    gguf_arch: "cohere2",
    tensor_kinds: TENSOR_KINDS,
    required_block_kinds: REQUIRED_BLOCK_KINDS,
    permutes_qk: false,
    strips_text_model_prefix: false,
    generated: &[],
    vocab: VocabStyle::Gpt2,
    write_hparams,
    refuse_features: super::qwen2::no_refusals,
    block: None,
    quirks: ConvertQuirks {
        drops_zero_biases: true,
        ..ConvertQuirks::NONE
    },
};

/// `MODEL_TENSORS[MODEL_ARCH.COHERE2]` (gguf-py constants.py).
const TENSOR_KINDS: &[&str] = &[
    "TOKEN_EMBD",
    "OUTPUT_NORM",
    "ATTN_NORM",
    "ATTN_QKV",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_GATE",
    "FFN_DOWN",
    "FFN_UP",
];

/// The per-block weights cohere2's loader requires (`llama_model_cohere2::load_arch_tensors`).
const REQUIRED_BLOCK_KINDS: &[&str] = &[
    "ATTN_NORM",
    "ATTN_Q",
    "ATTN_K",
    "ATTN_V",
    "ATTN_OUT",
    "FFN_GATE",
    "FFN_UP",
    "FFN_DOWN",
];

/// transformers' `Cohere2Config` defaults (4.57; `head_dim` is hidden / heads unless given).
const COHERE2_DEFAULTS: &[ConfigDefault] = &[
    ("vocab_size", Some(256000.0)),
    ("hidden_size", Some(8192.0)),
    ("intermediate_size", Some(22528.0)),
    ("num_hidden_layers", Some(40.0)),
    ("num_attention_heads", Some(64.0)),
    ("num_key_value_heads", None),
    ("head_dim", None),
    ("max_position_embeddings", Some(8192.0)),
    ("layer_norm_eps", Some(1e-5)),
    ("rope_theta", Some(10000.0)),
    ("logit_scale", Some(0.0625)),
    ("sliding_window", Some(4096.0)),
];

/// `Cohere2Model.set_gguf_parameters`' additions: logit scale, sliding window, vocabulary
/// size, `int(rotary_pct · head width)` rotated dimensions (`rotary_pct` is required: no
/// config default), and RoPE scaling type `none`.
fn write_hparams(hp: &Hparams, kv: &mut KvList) -> Result<(), ArchError> {
    let key = |k: &str| format!("cohere2.{k}");
    kv.add_f32(&key("logit_scale"), hp.require_f64(&["logit_scale"])?);
    kv.add_u32(
        &key("attention.sliding_window"),
        hp.require_u32(&["sliding_window"])?,
    );
    kv.add_u32(&key("vocab_size"), hp.require_u32(&["vocab_size"])?);
    let pct = hp.require_f64(&["rotary_pct"])?;
    let hidden = hp.require_u32(&["hidden_size"])?;
    let heads = hp.require_u32(&["num_attention_heads"])?;
    if heads == 0 {
        return Err(hp.bad("num_attention_heads is 0".into()));
    }
    let head_width = (hidden / heads) as f64;
    kv.add_u32(&key("rope.dimension_count"), (pct * head_width) as u32);
    kv.add_str(&key("rope.scaling.type"), "none");
    Ok(())
}
