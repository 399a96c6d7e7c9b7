//! The Hugging Face architectures qforge converts, and the checkpoint → GGUF tensor names of
//! each, as llama.cpp's converter maps them (`ModelBase.register`, `TensorNameMap`).

use std::collections::HashMap;

use crate::model::tensor_names::{TensorKind, LLAMA_KINDS, QWEN2_KINDS, QWEN3_KINDS, TENSOR_KINDS};

/// The converter class that handles a checkpoint (`conversion/llama.py`, `qwen.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelClass {
    /// `LlamaModel`: LlamaForCausalLM, LLaMAForCausalLM, MistralForCausalLM → `llama`, with
    /// the Q/K rows permuted for ggml's RoPE.
    Llama,
    /// `Qwen2Model`: Qwen2ForCausalLM → `qwen2`.
    Qwen2,
    /// `Qwen3Model`: Qwen3ForCausalLM → `qwen3`.
    Qwen3,
}

impl ModelClass {
    /// The class for `architectures[0]` of config.json, if qforge supports it.
    pub fn from_hf_architecture(name: &str) -> Option<ModelClass> {
        match name {
            "LlamaForCausalLM" | "LLaMAForCausalLM" | "MistralForCausalLM" => {
                Some(ModelClass::Llama)
            }
            "Qwen2ForCausalLM" => Some(ModelClass::Qwen2),
            "Qwen3ForCausalLM" => Some(ModelClass::Qwen3),
            _ => None,
        }
    }

    /// The architectures qforge converts, for messages.
    pub const SUPPORTED: &'static [&'static str] = &[
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
    ];

    /// `general.architecture`.
    pub fn gguf_arch(self) -> &'static str {
        match self {
            ModelClass::Llama => "llama",
            ModelClass::Qwen2 => "qwen2",
            ModelClass::Qwen3 => "qwen3",
        }
    }

    /// Whether q_proj/k_proj rows are permuted (`LlamaModel.undo_permute`).
    pub fn permutes_qk(self) -> bool {
        self == ModelClass::Llama
    }

    fn kinds(self) -> &'static [&'static str] {
        match self {
            ModelClass::Llama => LLAMA_KINDS,
            ModelClass::Qwen2 => QWEN2_KINDS,
            ModelClass::Qwen3 => QWEN3_KINDS,
        }
    }
}

/// A mapped tensor: its kind (`MODEL_TENSOR` name), block, and GGUF name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedName {
    pub kind: &'static str,
    pub bid: Option<usize>,
    pub name: String,
}

/// gguf-py's `TensorNameMap` for one architecture and block count.
pub struct TensorNameMap {
    map: HashMap<String, (&'static TensorKind, Option<usize>, String)>,
}

impl TensorNameMap {
    pub fn new(class: ModelClass, n_blocks: usize) -> TensorNameMap {
        let kinds = class.kinds();
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
        let m = TensorNameMap::new(ModelClass::Llama, 2);
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
        let m = TensorNameMap::new(ModelClass::Qwen3, 1);
        assert_eq!(
            m.map("model.layers.0.self_attn.k_norm.weight")
                .map(|x| x.name)
                .as_deref(),
            Some("blk.0.attn_k_norm.weight")
        );
    }
}
