//! The config.json and tensor list of the dense families beyond llama/qwen among the
//! [`SyntheticHf`] presets (Gemma 2, Gemma 3 text-only and multimodal, Phi-3, SmolLM3, Granite, OLMo 2, EXAONE 4), shaped like the
//! families' published checkpoints; [`SyntheticHf`] generates the values.

use serde_json::{json, Value as Json};

use crate::convert::synthetic_hf::{HfFlavor, SyntheticHf};
use crate::formats::safetensors::Dtype;

/// The preset of a flavor this module describes.
pub(crate) fn preset(flavor: HfFlavor) -> Option<SyntheticHf> {
    let base = |n_layer, hidden, ff, n_head, n_head_kv, head_dim, tied, dtype, seed| SyntheticHf {
        flavor,
        n_layer,
        hidden,
        ff,
        n_head,
        n_head_kv,
        head_dim,
        vocab: 512,
        tied,
        dtype,
        seed,
    };
    Some(match flavor {
        // An lm_head.weight the converter drops; stored as F16, so the +1 of the norms is
        // rounded to half precision.
        HfFlavor::Gemma2 => base(2, 64, 160, 4, 2, 16, false, Dtype::F16, 0x6765_6d32),
        // head_dim 32: Q rows (128) differ from the width (64).
        HfFlavor::Gemma3 => base(2, 64, 96, 4, 2, 32, true, Dtype::BF16, 0x6765_6d33),
        HfFlavor::Gemma3Mm => base(2, 64, 128, 2, 1, 32, true, Dtype::F32, 0x6765_6d6d),
        HfFlavor::Phi3 => base(2, 64, 96, 4, 2, 16, false, Dtype::BF16, 0x7068_6933),
        // The BPE flavors: tiny-bpe's 49152 tokens.
        HfFlavor::SmolLm3 => SyntheticHf {
            vocab: 49152,
            ..base(2, 64, 128, 4, 2, 16, true, Dtype::BF16, 0x736d_6c33)
        },
        HfFlavor::Granite => SyntheticHf {
            vocab: 49152,
            ..base(2, 64, 160, 4, 1, 16, true, Dtype::F16, 0x6772_616e)
        },
        HfFlavor::Olmo2 => SyntheticHf {
            vocab: 49152,
            ..base(2, 64, 96, 4, 4, 16, false, Dtype::F32, 0x6f6c_6d32)
        },
        // head_dim 32: Q rows (128) differ from the width (64).
        HfFlavor::Ernie4_5 => base(2, 64, 160, 4, 2, 32, true, Dtype::F16, 0x6572_6e34),
        HfFlavor::Cohere2 => SyntheticHf {
            vocab: 49152,
            ..base(2, 64, 128, 4, 2, 16, true, Dtype::BF16, 0x636f_6832)
        },
        // Four layers: three sliding-window, one global.
        HfFlavor::Exaone4 => SyntheticHf {
            vocab: 49152,
            ..base(4, 64, 128, 4, 2, 16, true, Dtype::BF16, 0x6578_6134)
        },
        _ => return None,
    })
}

/// Rows of the embedding beyond `vocab_size`: Gemma 3's converter keeps only the
/// vocabulary's, so the text-only preset ships a few more.
pub(crate) fn extra_embedding_rows(flavor: HfFlavor) -> usize {
    match flavor {
        HfFlavor::Gemma3 => 8,
        _ => 0,
    }
}

/// The text model's keys of a Gemma config.
fn gemma_text_config(m: &SyntheticHf, model_type: &str) -> Json {
    json!({
        "model_type": model_type,
        "attention_bias": false,
        "attention_dropout": 0.0,
        "head_dim": m.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": m.hidden,
        "initializer_range": 0.02,
        "intermediate_size": m.ff,
        "num_attention_heads": m.n_head,
        "num_hidden_layers": m.n_layer,
        "num_key_value_heads": m.n_head_kv,
        "rms_norm_eps": 1e-6,
        "use_cache": true,
        "vocab_size": m.vocab,
    })
}

fn merge(into: &mut Json, from: Json) {
    if let (Json::Object(a), Json::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// config.json of a flavor this module describes.
pub(crate) fn config(m: &SyntheticHf, torch_dtype: &str) -> Option<Json> {
    let common = json!({
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": torch_dtype,
        "transformers_version": "4.57.6",
    });
    let mut c = match m.flavor {
        HfFlavor::Gemma2 => {
            let mut c = gemma_text_config(m, "gemma2");
            merge(
                &mut c,
                json!({
                    "architectures": ["Gemma2ForCausalLM"],
                    "attn_logit_softcapping": 50.0,
                    "cache_implementation": "hybrid",
                    "final_logit_softcapping": 30.0,
                    "max_position_embeddings": 8192,
                    "query_pre_attn_scalar": 16,
                    "rope_theta": 10000.0,
                    "sliding_window": 4096,
                    "tie_word_embeddings": m.tied,
                }),
            );
            c
        }
        HfFlavor::Gemma3 => {
            let mut c = gemma_text_config(m, "gemma3_text");
            merge(
                &mut c,
                json!({
                    "architectures": ["Gemma3ForCausalLM"],
                    "attn_logit_softcapping": null,
                    "cache_implementation": "hybrid",
                    "final_logit_softcapping": null,
                    "max_position_embeddings": 32768,
                    "query_pre_attn_scalar": 256,
                    "rope_local_base_freq": 10000.0,
                    "rope_scaling": null,
                    "rope_theta": 1000000.0,
                    "sliding_window": 512,
                    "sliding_window_pattern": 6,
                }),
            );
            c
        }
        // Gemma 3 4B's layout: the text model under text_config (linear RoPE scaling, a final
        // soft-cap), a SigLIP tower and projector the text conversion leaves out.
        HfFlavor::Gemma3Mm => {
            let mut text = gemma_text_config(m, "gemma3_text");
            merge(
                &mut text,
                json!({
                    "final_logit_softcapping": 30.0,
                    "max_position_embeddings": 131072,
                    "query_pre_attn_scalar": 256,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024,
                }),
            );
            json!({
                "architectures": ["Gemma3ForConditionalGeneration"],
                "model_type": "gemma3",
                "boi_token_index": 255999,
                "eoi_token_index": 256000,
                "image_token_index": 262144,
                "initializer_range": 0.02,
                "mm_tokens_per_image": 256,
                "text_config": text,
                "vision_config": {
                    "model_type": "siglip_vision_model",
                    "hidden_size": 32,
                    "image_size": 32,
                    "intermediate_size": 64,
                    "num_attention_heads": 2,
                    "num_hidden_layers": 1,
                    "patch_size": 16,
                    "vision_use_head": false
                },
            })
        }
        // Phi-3-mini-128k's layout: LongRoPE over a 4096-token original context, a sliding
        // window, an untied head.
        HfFlavor::Phi3 => json!({
            "architectures": ["Phi3ForCausalLM"],
            "model_type": "phi3",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "embd_pdrop": 0.0,
            "hidden_act": "silu",
            "hidden_size": m.hidden,
            "initializer_range": 0.02,
            "intermediate_size": m.ff,
            "max_position_embeddings": 131072,
            "num_attention_heads": m.n_head,
            "num_hidden_layers": m.n_layer,
            "num_key_value_heads": m.n_head_kv,
            "original_max_position_embeddings": 4096,
            "resid_pdrop": 0.0,
            "rms_norm_eps": 1e-5,
            "rope_scaling": {
                "long_factor": [1.0, 1.03, 1.1, 1.35, 2.7, 7.65, 19.8, 42.9],
                "short_factor": [1.0, 1.0, 1.01, 1.02, 1.05, 1.1, 1.19, 1.3],
                "type": "longrope"
            },
            "rope_theta": 10000.0,
            "sliding_window": 262144,
            "tie_word_embeddings": m.tied,
            "use_cache": true,
            "vocab_size": m.vocab,
        }),
        HfFlavor::SmolLm3 => json!({
            "architectures": ["SmolLM3ForCausalLM"],
            "model_type": "smollm3",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "hidden_act": "silu",
            "hidden_size": m.hidden,
            "initializer_range": 0.02,
            "intermediate_size": m.ff,
            "max_position_embeddings": 65536,
            "mlp_bias": false,
            "no_rope_layer_interval": 4,
            "no_rope_layers": [1, 0],
            "num_attention_heads": m.n_head,
            "num_hidden_layers": m.n_layer,
            "num_key_value_heads": m.n_head_kv,
            "rms_norm_eps": 1e-6,
            "rope_scaling": null,
            "rope_theta": 5000000.0,
            "sliding_window": null,
            "tie_word_embeddings": m.tied,
            "use_sliding_window": false,
            "vocab_size": m.vocab,
        }),
        // Granite 3.3's multipliers.
        HfFlavor::Granite => json!({
            "architectures": ["GraniteForCausalLM"],
            "model_type": "granite",
            "attention_bias": false,
            "attention_dropout": 0.1,
            "attention_multiplier": 0.015625,
            "embedding_multiplier": 12.0,
            "hidden_act": "silu",
            "hidden_size": m.hidden,
            "initializer_range": 0.02,
            "intermediate_size": m.ff,
            "logits_scaling": 8.0,
            "max_position_embeddings": 131072,
            "mlp_bias": false,
            "num_attention_heads": m.n_head,
            "num_hidden_layers": m.n_layer,
            "num_key_value_heads": m.n_head_kv,
            "residual_multiplier": 0.22,
            "rms_norm_eps": 1e-5,
            "rope_scaling": null,
            "rope_theta": 10000000.0,
            "tie_word_embeddings": m.tied,
            "vocab_size": m.vocab,
        }),
        HfFlavor::Olmo2 => json!({
            "architectures": ["Olmo2ForCausalLM"],
            "model_type": "olmo2",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "hidden_act": "silu",
            "hidden_size": m.hidden,
            "initializer_range": 0.02,
            "intermediate_size": m.ff,
            "max_position_embeddings": 4096,
            "num_attention_heads": m.n_head,
            "num_hidden_layers": m.n_layer,
            "num_key_value_heads": m.n_head_kv,
            "rms_norm_eps": 1e-6,
            "rope_scaling": null,
            "rope_theta": 500000.0,
            "tie_word_embeddings": m.tied,
            "vocab_size": m.vocab,
        }),
        HfFlavor::Ernie4_5 => json!({
            "architectures": ["Ernie4_5ForCausalLM"],
            "model_type": "ernie4_5",
            "head_dim": m.head_dim,
            "hidden_act": "silu",
            "hidden_size": m.hidden,
            "intermediate_size": m.ff,
            "max_position_embeddings": 131072,
            "num_attention_heads": m.n_head,
            "num_hidden_layers": m.n_layer,
            "num_key_value_heads": m.n_head_kv,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "tie_word_embeddings": m.tied,
            "use_bias": false,
            "vocab_size": m.vocab,
        }),
        // Command R7B's layout: sliding window 4096 on three of four layers, logit scale.
        HfFlavor::Cohere2 => json!({
            "architectures": ["Cohere2ForCausalLM"],
            "model_type": "cohere2",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "hidden_act": "silu",
            "hidden_size": m.hidden,
            "initializer_range": 0.02,
            "intermediate_size": m.ff,
            "layer_norm_eps": 1e-5,
            "logit_scale": 0.25,
            "max_position_embeddings": 8192,
            "num_attention_heads": m.n_head,
            "num_hidden_layers": m.n_layer,
            "num_key_value_heads": m.n_head_kv,
            "rope_theta": 50000.0,
            "rotary_pct": 1.0,
            "sliding_window": 4096,
            "sliding_window_pattern": 4,
            "tie_word_embeddings": m.tied,
            "vocab_size": m.vocab,
        }),
        // EXAONE 4.0's layout: llama3 RoPE scaling, explicit layer types ("LLLG").
        HfFlavor::Exaone4 => json!({
            "architectures": ["Exaone4ForCausalLM"],
            "model_type": "exaone4",
            "attention_dropout": 0.0,
            "head_dim": m.head_dim,
            "hidden_act": "silu",
            "hidden_size": m.hidden,
            "initializer_range": 0.02,
            "intermediate_size": m.ff,
            "layer_types": (0..m.n_layer)
                .map(|i| if (i + 1) % 4 == 0 { "full_attention" } else { "sliding_attention" })
                .collect::<Vec<_>>(),
            "max_position_embeddings": 131072,
            "num_attention_heads": m.n_head,
            "num_hidden_layers": m.n_layer,
            "num_key_value_heads": m.n_head_kv,
            "rms_norm_eps": 1e-5,
            "rope_scaling": {
                "factor": 16.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3"
            },
            "rope_theta": 1000000.0,
            "sliding_window": 4096,
            "sliding_window_pattern": "LLLG",
            "tie_word_embeddings": m.tied,
            "vocab_size": m.vocab,
        }),
        _ => return None,
    };
    merge(&mut c, common);
    Some(c)
}

/// Tensor names and PyTorch shapes of a flavor this module describes.
pub(crate) fn tensors(m: &SyntheticHf) -> Option<Vec<(String, Vec<usize>)>> {
    match m.flavor {
        HfFlavor::Phi3 => return Some(phi3_tensors(m)),
        HfFlavor::Olmo2 => return Some(olmo2_tensors(m)),
        HfFlavor::Exaone4 => return Some(exaone4_tensors(m)),
        HfFlavor::Cohere2 => return Some(cohere2_tensors(m)),
        _ => {}
    }
    let prefix = match m.flavor {
        HfFlavor::Gemma2 | HfFlavor::Gemma3 => "model.",
        HfFlavor::Gemma3Mm => "model.language_model.",
        _ => return None,
    };
    let (h, q, kv) = (m.hidden, m.n_head * m.head_dim, m.n_head_kv * m.head_dim);
    let qk_norm = m.flavor != HfFlavor::Gemma2;
    let rows = m.vocab + extra_embedding_rows(m.flavor);
    let mut v = vec![(format!("{prefix}embed_tokens.weight"), vec![rows, h])];
    for l in 0..m.n_layer {
        let p = |s: &str| format!("{prefix}layers.{l}.{s}");
        v.push((p("input_layernorm.weight"), vec![h]));
        v.push((p("self_attn.q_proj.weight"), vec![q, h]));
        v.push((p("self_attn.k_proj.weight"), vec![kv, h]));
        v.push((p("self_attn.v_proj.weight"), vec![kv, h]));
        v.push((p("self_attn.o_proj.weight"), vec![h, q]));
        if qk_norm {
            v.push((p("self_attn.q_norm.weight"), vec![m.head_dim]));
            v.push((p("self_attn.k_norm.weight"), vec![m.head_dim]));
        }
        v.push((p("post_attention_layernorm.weight"), vec![h]));
        v.push((p("pre_feedforward_layernorm.weight"), vec![h]));
        v.push((p("mlp.gate_proj.weight"), vec![m.ff, h]));
        v.push((p("mlp.up_proj.weight"), vec![m.ff, h]));
        v.push((p("mlp.down_proj.weight"), vec![h, m.ff]));
        v.push((p("post_feedforward_layernorm.weight"), vec![h]));
    }
    v.push((format!("{prefix}norm.weight"), vec![h]));
    if m.flavor == HfFlavor::Gemma3Mm {
        // A sliver of the vision tower and projector, which a text conversion drops.
        let vt = "model.vision_tower.vision_model.";
        v.push((
            format!("{vt}embeddings.patch_embedding.weight"),
            vec![32, 3, 16, 16],
        ));
        v.push((
            format!("{vt}encoder.layers.0.self_attn.q_proj.weight"),
            vec![32, 32],
        ));
        v.push((format!("{vt}post_layernorm.weight"), vec![32]));
        v.push((
            "model.multi_modal_projector.mm_input_projection_weight".into(),
            vec![32, h],
        ));
        v.push((
            "model.multi_modal_projector.mm_soft_emb_norm.weight".into(),
            vec![32],
        ));
    }
    if !m.tied {
        v.push(("lm_head.weight".to_string(), vec![m.vocab, h]));
    }
    Some(v)
}

/// Gemma stores RMSNorm weights as offsets from 1 (the model scales by `1 + w`): values
/// near 0, not near 1.
pub(crate) fn norms_are_offsets(flavor: HfFlavor) -> bool {
    matches!(
        flavor,
        HfFlavor::Gemma2 | HfFlavor::Gemma3 | HfFlavor::Gemma3Mm
    )
}

/// Phi-3's tensors: Q/K/V in one `qkv_proj`, gate and up in one `gate_up_proj`.
fn phi3_tensors(m: &SyntheticHf) -> Vec<(String, Vec<usize>)> {
    let (h, q, kv) = (m.hidden, m.n_head * m.head_dim, m.n_head_kv * m.head_dim);
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![m.vocab, h])];
    for l in 0..m.n_layer {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        v.push((p("self_attn.qkv_proj.weight"), vec![q + 2 * kv, h]));
        v.push((p("self_attn.o_proj.weight"), vec![h, q]));
        v.push((p("mlp.gate_up_proj.weight"), vec![2 * m.ff, h]));
        v.push((p("mlp.down_proj.weight"), vec![h, m.ff]));
        v.push((p("input_layernorm.weight"), vec![h]));
        v.push((p("post_attention_layernorm.weight"), vec![h]));
    }
    v.push(("model.norm.weight".to_string(), vec![h]));
    if !m.tied {
        v.push(("lm_head.weight".to_string(), vec![m.vocab, h]));
    }
    v
}

/// OLMo 2's tensors: no pre-norms; Q/K norms as wide as their projections.
fn olmo2_tensors(m: &SyntheticHf) -> Vec<(String, Vec<usize>)> {
    let (h, q, kv) = (m.hidden, m.n_head * m.head_dim, m.n_head_kv * m.head_dim);
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![m.vocab, h])];
    for l in 0..m.n_layer {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        v.push((p("self_attn.q_proj.weight"), vec![q, h]));
        v.push((p("self_attn.k_proj.weight"), vec![kv, h]));
        v.push((p("self_attn.v_proj.weight"), vec![kv, h]));
        v.push((p("self_attn.o_proj.weight"), vec![h, q]));
        v.push((p("self_attn.q_norm.weight"), vec![q]));
        v.push((p("self_attn.k_norm.weight"), vec![kv]));
        v.push((p("mlp.gate_proj.weight"), vec![m.ff, h]));
        v.push((p("mlp.up_proj.weight"), vec![m.ff, h]));
        v.push((p("mlp.down_proj.weight"), vec![h, m.ff]));
        v.push((p("post_attention_layernorm.weight"), vec![h]));
        v.push((p("post_feedforward_layernorm.weight"), vec![h]));
    }
    v.push(("model.norm.weight".to_string(), vec![h]));
    if !m.tied {
        v.push(("lm_head.weight".to_string(), vec![m.vocab, h]));
    }
    v
}

/// EXAONE 4's tensors: OLMo 2's layout with per-head Q/K norms.
fn exaone4_tensors(m: &SyntheticHf) -> Vec<(String, Vec<usize>)> {
    let mut v = olmo2_tensors(m);
    for (name, shape) in &mut v {
        if name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight") {
            *shape = vec![m.head_dim];
        }
    }
    v
}

/// Command R7B's tensors: one `input_layernorm` per block, no biases (the converter's lazy
/// mode stops on any `.bias`; `--no-lazy` drops all-zero ones, as qforge does).
fn cohere2_tensors(m: &SyntheticHf) -> Vec<(String, Vec<usize>)> {
    let (h, q, kv) = (m.hidden, m.n_head * m.head_dim, m.n_head_kv * m.head_dim);
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![m.vocab, h])];
    for l in 0..m.n_layer {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        v.push((p("input_layernorm.weight"), vec![h]));
        v.push((p("self_attn.q_proj.weight"), vec![q, h]));
        v.push((p("self_attn.k_proj.weight"), vec![kv, h]));
        v.push((p("self_attn.v_proj.weight"), vec![kv, h]));
        v.push((p("self_attn.o_proj.weight"), vec![h, q]));
        v.push((p("mlp.gate_proj.weight"), vec![m.ff, h]));
        v.push((p("mlp.up_proj.weight"), vec![m.ff, h]));
        v.push((p("mlp.down_proj.weight"), vec![h, m.ff]));
    }
    v.push(("model.norm.weight".to_string(), vec![h]));
    v
}

/// Whether a flavor of this module takes tiny-bpe's byte-level BPE vocabulary.
pub(crate) fn uses_bpe(flavor: HfFlavor) -> bool {
    matches!(
        flavor,
        HfFlavor::SmolLm3
            | HfFlavor::Granite
            | HfFlavor::Olmo2
            | HfFlavor::Exaone4
            | HfFlavor::Cohere2
    )
}
