//! The architecture registry: everything that differs between model families, one file per
//! family. A family is an [`Architecture`] value — its Hugging Face class names and
//! `model_type`s with transformers' config defaults, its GGUF name, the tensor kinds it has
//! (gguf-py's `MODEL_TENSORS`), the converter's transforms for it (Q/K permutation, renames,
//! generated tensors), its own hyper-parameter keys and refusals, its vocabulary style, and the
//! block description the runtime executes. The `convert` and `runtime` modules read these
//! values; neither matches on a family by name.
//!
//! Adding a family = one file here listed in [`ARCHITECTURES`], plus its goldens.

pub mod cohere2;
pub mod config;
pub mod ernie4_5;
pub mod exaone4;
pub mod experts;
pub mod gemma2;
pub mod gemma3;
pub mod granite;
pub mod llama;
pub mod mixtral;
pub mod olmo2;
pub mod phi3;
pub mod qwen2;
pub mod qwen2moe;
pub mod qwen3;
pub mod qwen3moe;
pub mod smollm3;
pub mod tensor_kinds;
pub mod transforms;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::arch::tensor_kinds::{TensorKind, TENSOR_KINDS};
use crate::formats::gguf_kv::KvList;

pub use config::Hparams;

/// Errors of the registry's config readers and family hooks; each names config.json.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// config.json is missing, unreadable, or holds an impossible value.
    #[error("{path}: {what}")]
    Config {
        /// The config file (or model directory).
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A feature the converter handles for this family that qforge does not (yet).
    #[error("{path}: {what} is not supported yet")]
    NotSupported {
        /// The file that asks for it.
        path: PathBuf,
        /// The feature.
        what: String,
    },
}

/// How a family's vocabulary is written (the converter's `set_vocab`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabStyle {
    /// `LlamaModel.set_vocab`: SentencePiece `tokenizer.model` first, else BPE / llama-hf.
    Llama,
    /// `Qwen2Model.set_vocab`: BPE from tokenizer.json, SentencePiece if `tokenizer.model`.
    Qwen2,
    /// `Gemma2Model.set_vocab`: `_set_vocab_sentencepiece`, then `add_space_prefix = false`.
    Gemma2,
    /// `Gemma3Model.set_vocab`: as [`VocabStyle::Gemma2`] when `tokenizer.model` exists, else
    /// byte-level BPE from tokenizer.json.
    Gemma3,
    /// `Phi3MiniModel.set_vocab`: its own SentencePiece reading (added tokens from
    /// tokenizer_config.json and tokenizer.json), or GPT-2 BPE for a `GPT2Tokenizer` (Phi-4).
    Phi3,
    /// `TextModel.set_vocab`: `_set_vocab_gpt2`, byte-level BPE from tokenizer.json only.
    Gpt2,
    /// `Ernie4_5Model.set_vocab`: `_set_vocab_sentencepiece`, then tokenizer_config.json's
    /// `add_prefix_space` when it has one.
    Ernie4_5,
}

/// Tensors the converter computes rather than reads (`generate_extra_tensors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratedTensor {
    /// `rope_freqs.weight` for `rope_type: llama3` (Llama 3.1+), first in the file.
    Llama3RopeFreqs,
    /// `rope_factors_long.weight` / `rope_factors_short.weight` of LongRoPE (Phi-3), first in
    /// the file, with `rope.scaling.attn_factor` written as they are made.
    LongRopeFactors,
}

/// Normalization of a block (what the runtime applies before attention and FFN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// RMSNorm with a learned scale, eps from `attention.layer_norm_rms_epsilon`.
    Rms,
}

/// RoPE layout (llama.cpp's `LLAMA_ROPE_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rope {
    /// Adjacent pairs rotate (`LLAMA_ROPE_TYPE_NORM`; llama's permuted Q/K).
    Norm,
    /// The two halves of each head rotate (`LLAMA_ROPE_TYPE_NEOX`).
    Neox,
}

/// The feed-forward network of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ffn {
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu,
}

/// What one transformer block computes, as the runtime executes it (llama.cpp's graph builder
/// for the architecture, `src/models/<arch>.cpp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Normalization before attention and before the FFN (pre-norm residual blocks).
    pub norm: Norm,
    /// RoPE layout.
    pub rope: Rope,
    /// Q, K and V projections carry biases.
    pub qkv_bias: bool,
    /// Per-head RMSNorm of Q and K before RoPE.
    pub qk_norm: bool,
    /// The feed-forward network.
    pub ffn: Ffn,
}

/// transformers' default for one config key: a value, or `None` where it is derived when
/// absent (`num_key_value_heads` = heads, `head_dim` = hidden / heads).
pub type ConfigDefault = (&'static str, Option<f64>);

/// Everything family-specific, for one model family (one converter class of llama.cpp's).
pub struct Architecture {
    /// Hugging Face `architectures[0]` names handled (`ModelBase.register`), as messages list
    /// them.
    pub hf_classes: &'static [&'static str],
    /// Further accepted spellings, not listed in messages (e.g. `LLaMAForCausalLM`).
    pub hf_class_aliases: &'static [&'static str],
    /// `model_type`s with transformers' config defaults for the keys the converter reads.
    pub config_defaults: &'static [(&'static str, &'static [ConfigDefault])],
    /// `general.architecture`.
    pub gguf_arch: &'static str,
    /// Tensor kinds of the GGUF architecture (`MODEL_TENSORS[arch]`).
    pub tensor_kinds: &'static [&'static str],
    /// Per-block kinds llama.cpp's loader requires; a checkpoint missing one is refused.
    pub required_block_kinds: &'static [&'static str],
    /// q_proj/k_proj rows are permuted for ggml's RoPE (`LlamaModel.permute`).
    pub permutes_qk: bool,
    /// `text_model.` is stripped from checkpoint names (`LlamaModel.filter_tensors`).
    pub strips_text_model_prefix: bool,
    /// Tensors the converter generates for this family (when the config asks for them).
    pub generated: &'static [GeneratedTensor],
    /// How the vocabulary is written.
    pub vocab: VocabStyle,
    /// The family's own hyper-parameter keys, written after the common ones
    /// (the class's `set_gguf_parameters` additions).
    pub write_hparams: fn(&Hparams, &mut KvList) -> Result<(), ArchError>,
    /// Checkpoints of this family the converter handles differently (draft models, rerankers,
    /// pooling heads): refused rather than written wrongly.
    pub refuse_features: fn(&Path, &Hparams) -> Result<(), ArchError>,
    /// What the runtime executes per block; `None` when the runtime does not run the family.
    pub block: Option<Block>,
    /// The converter's per-family tensor and parameter quirks beyond the common path.
    pub quirks: ConvertQuirks,
}

/// A family's own `set_gguf_parameters` that replaces `TextModel.set_gguf_parameters`
/// entirely (it writes `general.file_type`, given here, where the class writes it).
pub type OwnParameters = fn(&Hparams, u32, &mut KvList) -> Result<(), ArchError>;

/// What a family's converter class does differently from `TextModel` for tensors and
/// parameters; [`ConvertQuirks::NONE`] for families that do nothing special.
#[derive(Clone, Copy)]
pub struct ConvertQuirks {
    /// Checkpoint tensors whose name ends in `norm.weight` get 1 added (Gemma's RMSNorm scales
    /// by `1 + weight`), computed as torch does: in f16 for F16 checkpoints, else in f32.
    pub norm_plus_one: bool,
    /// `lm_head.weight` is dropped (`filter_tensors` of Gemma2: the head is the embedding).
    pub drops_lm_head: bool,
    /// `embed_tokens` rows past the vocabulary's token count are dropped (Gemma3).
    pub truncates_embedding: bool,
    /// The class's `set_gguf_parameters` does not call `TextModel`'s: this writes them all.
    pub own_parameters: Option<OwnParameters>,
    /// `head_dim` is dropped from the config before anything reads it (Granite pops it).
    pub ignores_head_dim: bool,
    /// Per-head Q/K norms span all heads (`[n_head · head_dim]`, OLMo 2), not one head.
    pub qk_norm_spans_heads: bool,
    /// `.bias` tensors are dropped, each checked to be all zero (Cohere2's runtime has none).
    pub drops_zero_biases: bool,
    /// Substring replacements of checkpoint names, before anything else (the class's
    /// `filter_tensors`; ERNIE's `ernie.` → `model.`).
    pub name_replacements: &'static [(&'static str, &'static str)],
    /// Checkpoint names (substrings) the converter transforms in ways qforge does not yet:
    /// refused as "not supported yet" with the description given.
    pub unsupported_tensors: &'static [(&'static str, &'static str)],
    /// `(model_type, text model_type)` of configs whose `text_config` the converter lifts to
    /// the top level (`TextModel.__init__`): the text part takes the second type's defaults.
    pub text_configs: &'static [(&'static str, &'static str)],
}

impl ConvertQuirks {
    /// No quirks: the common `TextModel` path.
    pub const NONE: ConvertQuirks = ConvertQuirks {
        norm_plus_one: false,
        drops_lm_head: false,
        truncates_embedding: false,
        own_parameters: None,
        ignores_head_dim: false,
        qk_norm_spans_heads: false,
        drops_zero_biases: false,
        name_replacements: &[],
        unsupported_tensors: &[],
        text_configs: &[],
    };
}

/// Every registered family, in lookup order.
pub const ARCHITECTURES: &[&Architecture] = &[
    &llama::LLAMA,
    &qwen2::QWEN2,
    &qwen3::QWEN3,
    &mixtral::MIXTRAL,
    &qwen2moe::QWEN2MOE,
    &qwen3moe::QWEN3MOE,
    &gemma2::GEMMA2,
    &gemma3::GEMMA3,
    &phi3::PHI3,
    &smollm3::SMOLLM3,
    &granite::GRANITE,
    &olmo2::OLMO2,
    &exaone4::EXAONE4,
    &ernie4_5::ERNIE4_5,
    &cohere2::COHERE2,
];

impl Architecture {
    /// The family that converts Hugging Face class `name` (`architectures[0]`).
    pub fn for_hf_class(name: &str) -> Option<&'static Architecture> {
        ARCHITECTURES
            .iter()
            .copied()
            .find(|a| a.hf_classes.contains(&name) || a.hf_class_aliases.contains(&name))
    }

    /// The family whose GGUF `general.architecture` is `name`.
    pub fn for_gguf_arch(name: &str) -> Option<&'static Architecture> {
        ARCHITECTURES.iter().copied().find(|a| a.gguf_arch == name)
    }

    /// Every Hugging Face class name qforge converts, for messages.
    pub fn supported_hf_classes() -> Vec<&'static str> {
        ARCHITECTURES
            .iter()
            .flat_map(|a| a.hf_classes.iter().copied())
            .collect()
    }
}

/// transformers' defaults for `model_type`, from whichever family declares it.
pub fn config_defaults(model_type: &str) -> Option<&'static [ConfigDefault]> {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.config_defaults.iter())
        .find(|(t, _)| *t == model_type)
        .map(|(_, d)| *d)
}

/// The text `model_type` whose defaults apply to the `text_config` of a `model_type` config,
/// from whichever family declares it.
pub fn text_config_model_type(model_type: &str) -> Option<&'static str> {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.quirks.text_configs.iter())
        .find(|(t, _)| *t == model_type)
        .map(|(_, inner)| *inner)
}

/// A hook for families with nothing to add or refuse.
pub fn no_extra_hparams(_: &Hparams, _: &mut KvList) -> Result<(), ArchError> {
    Ok(())
}

/// A mapped tensor: its kind (`MODEL_TENSOR` name), block, and GGUF name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedName {
    /// The `MODEL_TENSOR` kind, e.g. `ATTN_Q`.
    pub kind: &'static str,
    /// The block (layer) number of a per-block tensor.
    pub bid: Option<usize>,
    /// The GGUF tensor name, suffix included.
    pub name: String,
}

/// gguf-py's `TensorNameMap` for one architecture and block count.
pub struct TensorNameMap {
    map: HashMap<String, (&'static TensorKind, Option<usize>, String)>,
}

impl TensorNameMap {
    /// The map for `arch`'s tensor kinds over `n_blocks` blocks.
    pub fn new(arch: &Architecture, n_blocks: usize) -> TensorNameMap {
        let kinds = arch.tensor_kinds;
        let mut map = HashMap::new();
        let wanted = |k: &TensorKind| kinds.contains(&k.kind);
        for k in TENSOR_KINDS.iter().filter(|k| !k.per_block && wanted(k)) {
            map.insert(k.gguf.to_string(), (k, None, k.gguf.to_string()));
            for alias in k.aliases {
                map.insert(alias.to_string(), (k, None, k.gguf.to_string()));
            }
        }
        for bid in 0..n_blocks {
            for k in TENSOR_KINDS.iter().filter(|k| k.per_block && wanted(k)) {
                let name = k.gguf.replace("{bid}", &bid.to_string());
                map.insert(name.clone(), (k, Some(bid), name.clone()));
                for alias in k.aliases {
                    map.insert(
                        alias.replace("{bid}", &bid.to_string()),
                        (k, Some(bid), name.clone()),
                    );
                }
            }
        }
        TensorNameMap { map }
    }

    /// `map_tensor_name(name)` with suffixes `.weight` and `.bias`.
    pub fn map(&self, name: &str) -> Option<MappedName> {
        let found = |key: &str, suffix: &str| {
            self.map.get(key).map(|(k, bid, n)| MappedName {
                kind: k.kind,
                bid: *bid,
                name: format!("{n}{suffix}"),
            })
        };
        if let Some(m) = found(name, "") {
            return Some(m);
        }
        for suffix in [".weight", ".bias"] {
            if let Some(stem) = name.strip_suffix(suffix) {
                if let Some(m) = found(stem, suffix) {
                    return Some(m);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_names_map_like_the_converter() {
        let m = TensorNameMap::new(&llama::LLAMA, 2);
        let map = |n: &str| m.map(n).map(|x| x.name);
        assert_eq!(
            map("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(map("lm_head.weight").as_deref(), Some("output.weight"));
        assert_eq!(
            map("model.norm.weight").as_deref(),
            Some("output_norm.weight")
        );
        assert_eq!(
            map("model.layers.1.self_attn.o_proj.weight").as_deref(),
            Some("blk.1.attn_output.weight")
        );
        assert_eq!(
            map("model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blk.0.ffn_norm.weight")
        );
        assert_eq!(
            map("model.layers.1.mlp.down_proj.weight").as_deref(),
            Some("blk.1.ffn_down.weight")
        );
        assert_eq!(
            map("model.layers.0.self_attn.q_proj.bias").as_deref(),
            Some("blk.0.attn_q.bias")
        );
        // Past the block count, and norms the architecture lacks, do not map.
        assert_eq!(map("model.layers.2.self_attn.q_proj.weight"), None);
        assert_eq!(map("model.layers.0.self_attn.q_norm.weight"), None);
    }

    #[test]
    fn qwen3_has_qk_norms() {
        let m = TensorNameMap::new(&qwen3::QWEN3, 1);
        assert_eq!(
            m.map("model.layers.0.self_attn.k_norm.weight")
                .map(|x| x.name)
                .as_deref(),
            Some("blk.0.attn_k_norm.weight")
        );
    }
}
