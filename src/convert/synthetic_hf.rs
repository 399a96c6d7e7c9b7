//! Small Hugging Face checkpoints of the architectures `qforge convert` handles, generated
//! bit-for-bit reproducibly, so converter goldens need only the (tiny) expected output committed,
//! never the checkpoint.
//!
//! Every value comes from integer arithmetic on SplitMix64 output (a 24-bit integer times a
//! power of two), never from `ln`/`cos`: those come from the platform's libm and could differ
//! in the last bit between machines, which would change a golden's hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::json;

use crate::convert::synthetic_dense;
use crate::formats::safetensors::{Dtype, SafetensorsError, SafetensorsWriter};
use crate::quant::{f32_to_bf16, f32_to_f16};
use crate::rng::Rng;

/// Errors writing a synthetic checkpoint ([`SyntheticHf::write`]).
#[derive(Debug, thiserror::Error)]
pub enum SyntheticHfError {
    /// Creating the directory, writing a JSON file or copying a tokenizer file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// `creating`, `writing` or `copying`.
        action: &'static str,
        /// The directory or file (for a copy, the one copied from).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing model.safetensors failed.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// The preset's dtype is not one the generator writes.
    #[error("synthetic checkpoints in {dtype:?} are not supported")]
    UnsupportedDtype {
        /// The dtype asked for.
        dtype: Dtype,
    },
}

/// Which kind of checkpoint: the architecture and the config.json quirks of its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfFlavor {
    /// `MistralForCausalLM`, Mistral-Nemo style: `head_dim` wider than hidden / heads, a
    /// sliding window, SentencePiece vocabulary.
    Mistral,
    /// `Qwen2ForCausalLM`: Q/K/V biases, tied embeddings, byte-level BPE vocabulary.
    Qwen2,
    /// `Qwen3ForCausalLM`: per-head Q/K RMS norms, explicit `head_dim`, tied embeddings,
    /// byte-level BPE vocabulary.
    Qwen3,
    /// `LlamaForCausalLM` with Llama 3.1 `rope_scaling` (`rope_type: llama3`), SentencePiece
    /// vocabulary.
    Llama3,
    /// `Gemma2ForCausalLM` (see [`crate::convert::synthetic_dense`]).
    Gemma2,
    /// `Gemma3ForCausalLM`, text only.
    Gemma3,
    /// `Gemma3ForConditionalGeneration`: text under `text_config`, plus vision tensors.
    Gemma3Mm,
    /// `Phi3ForCausalLM`: fused `qkv_proj` / `gate_up_proj`, LongRoPE factors.
    Phi3,
    /// `SmolLM3ForCausalLM`: a llama under another name, byte-level BPE vocabulary.
    SmolLm3,
    /// `GraniteForCausalLM`: a llama with µP multipliers, byte-level BPE vocabulary.
    Granite,
    /// `Olmo2ForCausalLM`: post-norms only, whole-projection Q/K norms, BPE vocabulary.
    Olmo2,
    /// `Exaone4ForCausalLM`: post-norms, per-head Q/K norms, sliding-window layer pattern,
    /// llama3 RoPE factors, BPE vocabulary.
    Exaone4,
    /// `Ernie4_5ForCausalLM`: llama's layout without the permutation, SentencePiece vocabulary.
    Ernie4_5,
    /// `Cohere2ForCausalLM`: one LayerNorm per block, tied, BPE vocabulary.
    Cohere2,
    /// `MixtralForCausalLM`: 8 experts per layer (`block_sparse_moe.experts.N.w1/w2/w3`) and a
    /// router, SentencePiece vocabulary, weights in two shards.
    Mixtral,
    /// `Qwen2MoeForCausalLM`: Q/K/V biases, 4 routed experts plus a gated shared expert,
    /// byte-level BPE vocabulary.
    Qwen2Moe,
    /// `Qwen3MoeForCausalLM`: per-head Q/K norms, 6 routed experts, tied embeddings, byte-level
    /// BPE vocabulary.
    Qwen3Moe,
}

/// The mixture-of-experts part of a flavor's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeShape {
    /// Experts per layer.
    pub n_expert: usize,
    /// Experts used per token.
    pub n_expert_used: usize,
    /// Rows of each expert's gate/up matrix (Mixtral: the checkpoint's `ff`, its
    /// `intermediate_size`).
    pub expert_ff: usize,
    /// Rows of the shared expert's gate/up matrix, if the family has one.
    pub shared_ff: Option<usize>,
}

impl HfFlavor {
    /// Every flavor, in the order goldens list them.
    pub const ALL: [HfFlavor; 17] = [
        HfFlavor::Mistral,
        HfFlavor::Qwen2,
        HfFlavor::Qwen3,
        HfFlavor::Llama3,
        HfFlavor::Mixtral,
        HfFlavor::Qwen2Moe,
        HfFlavor::Qwen3Moe,
        HfFlavor::Gemma2,
        HfFlavor::Gemma3,
        HfFlavor::Gemma3Mm,
        HfFlavor::Phi3,
        HfFlavor::SmolLm3,
        HfFlavor::Granite,
        HfFlavor::Olmo2,
        HfFlavor::Exaone4,
        HfFlavor::Ernie4_5,
        HfFlavor::Cohere2,
    ];

    /// Short name: the golden folder and the checkpoint directory's suffix.
    pub fn name(self) -> &'static str {
        match self {
            HfFlavor::Mistral => "mistral",
            HfFlavor::Qwen2 => "qwen2",
            HfFlavor::Qwen3 => "qwen3",
            HfFlavor::Llama3 => "llama3",
            HfFlavor::Mixtral => "mixtral",
            HfFlavor::Qwen2Moe => "qwen2moe",
            HfFlavor::Qwen3Moe => "qwen3moe",
            HfFlavor::Gemma2 => "gemma2",
            HfFlavor::Gemma3 => "gemma3",
            HfFlavor::Gemma3Mm => "gemma3mm",
            HfFlavor::Phi3 => "phi3",
            HfFlavor::SmolLm3 => "smollm3",
            HfFlavor::Granite => "granite",
            HfFlavor::Olmo2 => "olmo2",
            HfFlavor::Exaone4 => "exaone4",
            HfFlavor::Ernie4_5 => "ernie4_5",
            HfFlavor::Cohere2 => "cohere2",
        }
    }

    /// The flavor [`HfFlavor::name`] calls `s`.
    pub fn parse(s: &str) -> Option<HfFlavor> {
        HfFlavor::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Whether the vocabulary is byte-level BPE (`tokenizer.json`) rather than SentencePiece.
    pub fn uses_bpe(self) -> bool {
        matches!(
            self,
            HfFlavor::Qwen2 | HfFlavor::Qwen3 | HfFlavor::Qwen2Moe | HfFlavor::Qwen3Moe
        ) || synthetic_dense::uses_bpe(self)
    }

    /// The experts of the mixture-of-experts flavors.
    pub fn moe(self) -> Option<MoeShape> {
        let shape = |n_expert, n_expert_used, expert_ff, shared_ff| MoeShape {
            n_expert,
            n_expert_used,
            expert_ff,
            shared_ff,
        };
        match self {
            HfFlavor::Mixtral => Some(shape(8, 2, 128, None)),
            HfFlavor::Qwen2Moe => Some(shape(4, 2, 256, Some(256))),
            HfFlavor::Qwen3Moe => Some(shape(6, 2, 256, None)),
            _ => None,
        }
    }

    /// How many safetensors shards the checkpoint is split into (1: one model.safetensors).
    pub fn shards(self) -> usize {
        match self {
            HfFlavor::Mixtral => 2,
            _ => 1,
        }
    }
}

/// The shape and storage of a generated checkpoint.
#[derive(Clone, Debug)]
pub struct SyntheticHf {
    /// Architecture and config.json quirks.
    pub flavor: HfFlavor,
    /// Transformer blocks (`num_hidden_layers`).
    pub n_layer: usize,
    /// Hidden width (`hidden_size`).
    pub hidden: usize,
    /// Feed-forward width (`intermediate_size`).
    pub ff: usize,
    /// Query heads (`num_attention_heads`).
    pub n_head: usize,
    /// Key/value heads (`num_key_value_heads`).
    pub n_head_kv: usize,
    /// Per-head width; written to config.json only when it differs from hidden / heads or the
    /// family always writes it (Qwen3).
    pub head_dim: usize,
    /// Must match the tokenizer the checkpoint is given (512 for tiny-llama's SentencePiece
    /// model, 49152 for tiny-bpe's byte-level BPE).
    pub vocab: usize,
    /// Whether the output head is the token embedding (`tie_word_embeddings`).
    pub tied: bool,
    /// Storage type of every tensor in model.safetensors.
    pub dtype: Dtype,
    /// Seed of every generated value.
    pub seed: u64,
}

impl SyntheticHf {
    /// The checkpoint each golden under tests/data/convert_arch/ was made from.
    pub fn preset(flavor: HfFlavor) -> SyntheticHf {
        if let Some(m) = synthetic_dense::preset(flavor) {
            return m;
        }
        match flavor {
            HfFlavor::Mistral => SyntheticHf {
                flavor,
                n_layer: 2,
                hidden: 64,
                ff: 160,
                n_head: 4,
                n_head_kv: 2,
                head_dim: 32,
                vocab: 512,
                tied: false,
                dtype: Dtype::F32,
                seed: 0x6d69_7374,
            },
            HfFlavor::Qwen2 => SyntheticHf {
                flavor,
                n_layer: 2,
                hidden: 64,
                ff: 128,
                n_head: 4,
                n_head_kv: 2,
                head_dim: 16,
                vocab: 49152,
                tied: true,
                dtype: Dtype::BF16,
                seed: 0x7177_6e32,
            },
            HfFlavor::Qwen3 => SyntheticHf {
                flavor,
                n_layer: 2,
                hidden: 64,
                ff: 96,
                n_head: 4,
                n_head_kv: 2,
                head_dim: 32,
                vocab: 49152,
                tied: true,
                dtype: Dtype::F16,
                seed: 0x7177_6e33,
            },
            HfFlavor::Llama3 => SyntheticHf {
                flavor,
                n_layer: 2,
                hidden: 128,
                ff: 256,
                n_head: 4,
                n_head_kv: 2,
                head_dim: 32,
                vocab: 512,
                tied: true,
                dtype: Dtype::BF16,
                seed: 0x6c6c_3033,
            },
            HfFlavor::Mixtral => SyntheticHf {
                flavor,
                n_layer: 2,
                hidden: 256,
                ff: 128,
                n_head: 4,
                n_head_kv: 2,
                head_dim: 64,
                vocab: 512,
                tied: false,
                dtype: Dtype::BF16,
                seed: 0x6d69_7874,
            },
            HfFlavor::Qwen2Moe => SyntheticHf {
                flavor,
                n_layer: 2,
                hidden: 64,
                ff: 192,
                n_head: 4,
                n_head_kv: 2,
                head_dim: 16,
                vocab: 49152,
                tied: false,
                dtype: Dtype::F16,
                seed: 0x7132_6d65,
            },
            HfFlavor::Qwen3Moe => SyntheticHf {
                flavor,
                n_layer: 2,
                hidden: 64,
                ff: 192,
                n_head: 4,
                n_head_kv: 2,
                head_dim: 32,
                vocab: 49152,
                tied: true,
                dtype: Dtype::F32,
                seed: 0x7133_6d65,
            },
            other => unreachable!("{other:?} has its preset in synthetic_dense"),
        }
    }

    /// The directory name the checkpoint is written under: the converter derives
    /// `general.name` and friends from it, so goldens depend on it.
    pub fn dir_name(&self) -> String {
        format!("tiny-{}", self.flavor.name())
    }

    fn torch_dtype(&self) -> &'static str {
        match self.dtype {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            _ => "bfloat16",
        }
    }

    /// config.json, shaped like the family's published configs.
    pub fn config(&self) -> serde_json::Value {
        if let Some(c) = synthetic_dense::config(self, self.torch_dtype()) {
            return c;
        }
        let mut c = json!({
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "initializer_range": 0.02,
            "intermediate_size": self.ff,
            "num_attention_heads": self.n_head,
            "num_hidden_layers": self.n_layer,
            "num_key_value_heads": self.n_head_kv,
            "tie_word_embeddings": self.tied,
            "torch_dtype": self.torch_dtype(),
            "transformers_version": "4.57.6",
            "use_cache": true,
            "vocab_size": self.vocab,
        });
        let extra = match self.flavor {
            HfFlavor::Mistral => json!({
                "architectures": ["MistralForCausalLM"],
                "model_type": "mistral",
                "attention_dropout": 0.0,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "head_dim": self.head_dim,
                "max_position_embeddings": 131072,
                "rms_norm_eps": 1e-5,
                "rope_theta": 1000000.0,
                "sliding_window": 4096,
            }),
            HfFlavor::Qwen2 => json!({
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "attention_dropout": 0.0,
                "bos_token_id": 0,
                "eos_token_id": 2,
                "max_position_embeddings": 32768,
                "max_window_layers": 21,
                "rms_norm_eps": 1e-6,
                "rope_scaling": null,
                "rope_theta": 1000000.0,
                "sliding_window": 32768,
                "use_sliding_window": false,
            }),
            HfFlavor::Qwen3 => json!({
                "architectures": ["Qwen3ForCausalLM"],
                "model_type": "qwen3",
                "attention_bias": false,
                "attention_dropout": 0.0,
                "bos_token_id": 0,
                "eos_token_id": 2,
                "head_dim": self.head_dim,
                "max_position_embeddings": 40960,
                "max_window_layers": 28,
                "rms_norm_eps": 1e-6,
                "rope_scaling": null,
                "rope_theta": 1000000.0,
                "sliding_window": null,
                "use_sliding_window": false,
            }),
            HfFlavor::Llama3 => json!({
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "attention_bias": false,
                "attention_dropout": 0.0,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "max_position_embeddings": 131072,
                "mlp_bias": false,
                "pretraining_tp": 1,
                "rms_norm_eps": 1e-5,
                // Llama 3.1's scheme; high_freq_factor is raised from 4 so that several
                // frequencies land in the smoothly interpolated band, not just one.
                "rope_scaling": {
                    "factor": 32.0,
                    "high_freq_factor": 16.0,
                    "low_freq_factor": 1.0,
                    "original_max_position_embeddings": 8192,
                    "rope_type": "llama3"
                },
                "rope_theta": 500000.0,
            }),
            HfFlavor::Mixtral => json!({
                "architectures": ["MixtralForCausalLM"],
                "model_type": "mixtral",
                "attention_dropout": 0.0,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "max_position_embeddings": 32768,
                "num_experts_per_tok": 2,
                "num_local_experts": 8,
                "output_router_logits": false,
                "rms_norm_eps": 1e-5,
                "rope_theta": 1000000.0,
                "router_aux_loss_coef": 0.02,
                "sliding_window": null,
            }),
            HfFlavor::Qwen2Moe => json!({
                "architectures": ["Qwen2MoeForCausalLM"],
                "model_type": "qwen2_moe",
                "attention_dropout": 0.0,
                "bos_token_id": 0,
                "eos_token_id": 2,
                "decoder_sparse_step": 1,
                "max_position_embeddings": 8192,
                "max_window_layers": 21,
                "mlp_only_layers": [],
                "moe_intermediate_size": 256,
                "norm_topk_prob": false,
                "num_experts": 4,
                "num_experts_per_tok": 2,
                "output_router_logits": false,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0,
                "router_aux_loss_coef": 0.001,
                "shared_expert_intermediate_size": 256,
                "sliding_window": 8192,
                "use_sliding_window": false,
            }),
            HfFlavor::Qwen3Moe => json!({
                "architectures": ["Qwen3MoeForCausalLM"],
                "model_type": "qwen3_moe",
                "attention_bias": false,
                "attention_dropout": 0.0,
                "bos_token_id": 0,
                "eos_token_id": 2,
                "decoder_sparse_step": 1,
                "head_dim": self.head_dim,
                "max_position_embeddings": 40960,
                "max_window_layers": 48,
                "mlp_only_layers": [],
                "moe_intermediate_size": 256,
                "norm_topk_prob": true,
                "num_experts": 6,
                "num_experts_per_tok": 2,
                "output_router_logits": false,
                "rms_norm_eps": 1e-6,
                "rope_scaling": null,
                "rope_theta": 1000000.0,
                "router_aux_loss_coef": 0.001,
                "sliding_window": null,
                "use_sliding_window": false,
            }),
            other => unreachable!("{other:?} has its config in synthetic_dense"),
        };
        let (serde_json::Value::Object(c_map), serde_json::Value::Object(e)) = (&mut c, extra)
        else {
            unreachable!("both are objects")
        };
        c_map.extend(e);
        c
    }

    /// tokenizer_config.json for the BPE flavors, Qwen2.5's with tiny-bpe's token strings
    /// (no BOS, `<|im_end|>` ends a turn, `<|endoftext|>` pads).
    fn bpe_tokenizer_config() -> serde_json::Value {
        json!({
            "add_bos_token": false,
            "add_prefix_space": false,
            "bos_token": null,
            "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
            "clean_up_tokenization_spaces": false,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 32768,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": false,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": null
        })
    }

    /// Tensor names and PyTorch shapes, in the order a `save_pretrained` module walk gives.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        if let Some(v) = synthetic_dense::tensors(self) {
            return v;
        }
        let (h, q, kv) = (
            self.hidden,
            self.n_head * self.head_dim,
            self.n_head_kv * self.head_dim,
        );
        let mut v = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.n_layer {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let qkv_bias = matches!(self.flavor, HfFlavor::Qwen2 | HfFlavor::Qwen2Moe);
            let qk_norm = matches!(self.flavor, HfFlavor::Qwen3 | HfFlavor::Qwen3Moe);
            v.push((p("self_attn.q_proj.weight"), vec![q, h]));
            if qkv_bias {
                v.push((p("self_attn.q_proj.bias"), vec![q]));
            }
            v.push((p("self_attn.k_proj.weight"), vec![kv, h]));
            if qkv_bias {
                v.push((p("self_attn.k_proj.bias"), vec![kv]));
            }
            v.push((p("self_attn.v_proj.weight"), vec![kv, h]));
            if qkv_bias {
                v.push((p("self_attn.v_proj.bias"), vec![kv]));
            }
            v.push((p("self_attn.o_proj.weight"), vec![h, q]));
            if qk_norm {
                v.push((p("self_attn.q_norm.weight"), vec![self.head_dim]));
                v.push((p("self_attn.k_norm.weight"), vec![self.head_dim]));
            }
            match (self.flavor, self.flavor.moe()) {
                (HfFlavor::Mixtral, Some(m)) => {
                    // Mixtral's experts are `intermediate_size` wide.
                    v.push((p("block_sparse_moe.gate.weight"), vec![m.n_expert, h]));
                    for x in 0..m.n_expert {
                        let e = |w: &str| p(&format!("block_sparse_moe.experts.{x}.{w}.weight"));
                        v.push((e("w1"), vec![self.ff, h]));
                        v.push((e("w2"), vec![h, self.ff]));
                        v.push((e("w3"), vec![self.ff, h]));
                    }
                }
                (_, Some(m)) => {
                    v.push((p("mlp.gate.weight"), vec![m.n_expert, h]));
                    for x in 0..m.n_expert {
                        let e = |w: &str| p(&format!("mlp.experts.{x}.{w}.weight"));
                        v.push((e("gate_proj"), vec![m.expert_ff, h]));
                        v.push((e("up_proj"), vec![m.expert_ff, h]));
                        v.push((e("down_proj"), vec![h, m.expert_ff]));
                    }
                    if let Some(sff) = m.shared_ff {
                        v.push((p("mlp.shared_expert.gate_proj.weight"), vec![sff, h]));
                        v.push((p("mlp.shared_expert.up_proj.weight"), vec![sff, h]));
                        v.push((p("mlp.shared_expert.down_proj.weight"), vec![h, sff]));
                        v.push((p("mlp.shared_expert_gate.weight"), vec![1, h]));
                    }
                }
                _ => {
                    v.push((p("mlp.gate_proj.weight"), vec![self.ff, h]));
                    v.push((p("mlp.up_proj.weight"), vec![self.ff, h]));
                    v.push((p("mlp.down_proj.weight"), vec![h, self.ff]));
                }
            }
            v.push((p("input_layernorm.weight"), vec![h]));
            v.push((p("post_attention_layernorm.weight"), vec![h]));
        }
        v.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tied {
            v.push(("lm_head.weight".to_string(), vec![self.vocab, h]));
        }
        v
    }

    /// Values of tensor `index` (of [`SyntheticHf::tensors`]), `n` of them: norm weights near
    /// 1, biases and matrices centred on 0 over a wide range of magnitudes (down to where f16
    /// goes subnormal) with rare large outliers — the cases where type conversions round.
    pub fn values(&self, index: usize, n: usize) -> Vec<f32> {
        const CHUNK: usize = 1 << 14;
        let name = &self.tensors()[index].0;
        let is_norm =
            name.ends_with("norm.weight") && !synthetic_dense::norms_are_offsets(self.flavor);
        let is_bias = name.ends_with(".bias");
        let seed = self.seed ^ (index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut out = vec![0f32; n];
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut rng = Rng::new(seed.wrapping_add((c as u64).wrapping_mul(0x9e37_79b9)));
                for v in chunk {
                    let bits = rng.next_u64();
                    // A signed 24-bit integer: exact in f32.
                    let m = ((bits >> 40) as i64 - (1 << 23)) as f32;
                    *v = if is_norm {
                        1.0 + m * pow2(-27)
                    } else {
                        let shift = (bits & 7) as i32;
                        let outlier = (bits >> 3) & 511 == 0;
                        let scale = pow2(-27 - shift + if outlier { 6 } else { 0 });
                        let x = m * scale;
                        if is_bias {
                            x * 4.0
                        } else {
                            x
                        }
                    };
                }
            });
        out
    }

    /// Write config.json, model.safetensors and the tokenizer files into `dir` (created if
    /// needed). `tokenizer_dir` supplies the vocabulary: a directory with `tokenizer.model`
    /// and `tokenizer_config.json` (SentencePiece flavors, e.g. tiny-llama) or with a byte-level
    /// BPE `tokenizer.json` (BPE flavors, e.g. tiny-bpe).
    pub fn write(&self, dir: &Path, tokenizer_dir: &Path) -> Result<(), SyntheticHfError> {
        std::fs::create_dir_all(dir).map_err(|source| SyntheticHfError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let write_json = |name: &str, v: &serde_json::Value| -> Result<(), SyntheticHfError> {
            let path = dir.join(name);
            let mut text = serde_json::to_string_pretty(v).expect("serializes");
            text.push('\n');
            std::fs::write(&path, text).map_err(|source| SyntheticHfError::Io {
                action: "writing",
                path,
                source,
            })
        };
        write_json("config.json", &self.config())?;
        let copy = |name: &str| -> Result<(), SyntheticHfError> {
            let from = tokenizer_dir.join(name);
            std::fs::copy(&from, dir.join(name)).map_err(|source| SyntheticHfError::Io {
                action: "copying",
                path: from,
                source,
            })?;
            Ok(())
        };
        if self.flavor.uses_bpe() {
            copy("tokenizer.json")?;
            write_json("tokenizer_config.json", &Self::bpe_tokenizer_config())?;
        } else {
            copy("tokenizer.model")?;
            copy("tokenizer_config.json")?;
        }

        let tensors = self.tensors();
        let n_shards = self.flavor.shards();
        if n_shards == 1 {
            return self.write_shard(&dir.join("model.safetensors"), &tensors, 0..tensors.len());
        }
        // Shards as save_pretrained names them, tensors split in module order, with the index
        // that maps each tensor to its shard.
        let per_shard = tensors.len().div_ceil(n_shards);
        let mut weight_map = serde_json::Map::new();
        let mut total_size = 0usize;
        for k in 0..n_shards {
            let file = format!("model-{:05}-of-{n_shards:05}.safetensors", k + 1);
            let range = k * per_shard..((k + 1) * per_shard).min(tensors.len());
            for (name, shape) in &tensors[range.clone()] {
                weight_map.insert(name.clone(), json!(file));
                total_size += shape.iter().product::<usize>() * self.dtype_size()?;
            }
            self.write_shard(&dir.join(&file), &tensors, range)?;
        }
        write_json(
            "model.safetensors.index.json",
            &json!({"metadata": {"total_size": total_size}, "weight_map": weight_map}),
        )
    }

    fn dtype_size(&self) -> Result<usize, SyntheticHfError> {
        match self.dtype {
            Dtype::F32 => Ok(4),
            Dtype::F16 | Dtype::BF16 => Ok(2),
            other => Err(SyntheticHfError::UnsupportedDtype { dtype: other }),
        }
    }

    /// Write tensors `range` of `tensors` (the whole list, so each keeps its seed) to `path`.
    fn write_shard(
        &self,
        path: &Path,
        tensors: &[(String, Vec<usize>)],
        range: std::ops::Range<usize>,
    ) -> Result<(), SyntheticHfError> {
        let specs: Vec<(String, Dtype, Vec<usize>)> = tensors[range.clone()]
            .iter()
            .map(|(n, s)| (n.clone(), self.dtype, s.clone()))
            .collect();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let mut w = SafetensorsWriter::create(path, &specs, Some(&meta))?;
        for i in range {
            let vals = self.values(i, tensors[i].1.iter().product());
            let bytes: Vec<u8> = match self.dtype {
                Dtype::F32 => vals.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F16 => vals
                    .iter()
                    .flat_map(|x| f32_to_f16(*x).to_le_bytes())
                    .collect(),
                Dtype::BF16 => vals
                    .iter()
                    .flat_map(|x| f32_to_bf16(*x).to_le_bytes())
                    .collect(),
                other => return Err(SyntheticHfError::UnsupportedDtype { dtype: other }),
            };
            w.write_tensor(&bytes)?;
        }
        w.finish()?;
        Ok(())
    }
}

/// 2^e for exponents in f32's normal range, exactly.
fn pow2(e: i32) -> f32 {
    debug_assert!((-126..=127).contains(&e));
    f32::from_bits(((127 + e) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_reproducible_and_spread() {
        let m = SyntheticHf::preset(HfFlavor::Qwen2);
        let a = m.values(1, 5000);
        assert_eq!(a, m.values(1, 5000));
        assert_ne!(a, m.values(2, 5000));
        let max = a.iter().fold(0f32, |acc, x| acc.max(x.abs()));
        let min = a.iter().fold(1f32, |acc, x| acc.min(x.abs()));
        assert!(max > 0.5 && min < 1e-5, "range {min}..{max}");
    }

    #[test]
    fn shapes_follow_the_flavor() {
        let q3 = SyntheticHf::preset(HfFlavor::Qwen3).tensors();
        assert!(q3
            .iter()
            .any(|(n, s)| n.ends_with("q_norm.weight") && s == &vec![32]));
        assert!(!q3.iter().any(|(n, _)| n == "lm_head.weight"));
        let q2 = SyntheticHf::preset(HfFlavor::Qwen2).tensors();
        assert_eq!(q2.iter().filter(|(n, _)| n.ends_with(".bias")).count(), 6);
        let m = SyntheticHf::preset(HfFlavor::Mistral);
        assert_eq!(
            m.config()["architectures"][0].as_str(),
            Some("MistralForCausalLM")
        );
        assert!(m.tensors().iter().any(|(n, _)| n == "lm_head.weight"));
    }
}
