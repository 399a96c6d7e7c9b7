//! A minimal HF → GGUF mapping for `LlamaForCausalLM` (and Mistral, the same architecture):
//! tensor names, the converter's name filter, and the Q/K head permutation.
//!
//! Private stand-in: the `convert` helper is writing the full architecture table in
//! `src/model/`; the lead should replace this file with it once it lands.

use std::path::Path;

use super::LoraError;

/// What the conversion needs from the base model's `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LlamaConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
}

/// HF architecture names converted by llama.cpp's `LlamaModel` that this mapping covers.
const ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM"];

impl LlamaConfig {
    /// Read `base_dir/config.json`; refuse architectures this mapping does not cover.
    pub fn load(base_dir: &Path) -> Result<LlamaConfig, LoraError> {
        let path = base_dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(LoraError::io(&path))?;
        let bad = |what: String| LoraError::BaseConfig {
            path: path.clone(),
            what,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let arch = json
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .ok_or_else(|| bad("no 'architectures' list".into()))?;
        if !ARCHITECTURES.contains(&arch) {
            return Err(LoraError::NotSupported {
                path: path.clone(),
                what: format!(
                    "converting adapters for architecture '{arch}' (supported: {})",
                    ARCHITECTURES.join(", ")
                ),
            });
        }
        let num = |keys: &[&str]| -> Option<usize> {
            keys.iter()
                .find_map(|k| json.get(*k).and_then(|v| v.as_u64()))
                .map(|v| v as usize)
        };
        let n_layer = num(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
            .ok_or_else(|| bad("no num_hidden_layers".into()))?;
        let n_head = num(&["n_heads", "num_attention_heads"])
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("no num_attention_heads".into()))?;
        let n_head_kv = num(&["n_kv_heads", "num_key_value_heads"])
            .filter(|&n| n > 0)
            .unwrap_or(n_head);
        Ok(LlamaConfig {
            n_layer,
            n_head,
            n_head_kv,
        })
    }
}

/// The converter's tensor-name filter (`LlamaModel` → `TextModel` → `ModelBase`
/// `filter_tensors`): `None` for names it drops (vision / audio towers).
pub(crate) fn filter_name(name: &str) -> Option<String> {
    let name = name.replace("text_model.", "");
    const PREFIXES: &[&str] = &[
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const INFIXES: &[&str] = &[
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
    ];
    if PREFIXES.iter().any(|p| name.starts_with(p)) || INFIXES.iter().any(|i| name.contains(i)) {
        return None;
    }
    let name = if name.ends_with("e_score_correction_bias") {
        name.replace("e_score_correction_bias", "e_score_correction.bias")
    } else {
        name
    };
    Some(name.replace("language_model.", ""))
}

/// The GGUF name of a llama HF tensor name (with its `.weight` / `.bias` suffix), or `None`.
pub(crate) fn gguf_name(name: &str, n_layer: usize) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let mapped = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => {
            let rest = stem.strip_prefix("model.layers.")?;
            let (bid, part) = rest.split_once('.')?;
            let bid: usize = bid.parse().ok().filter(|&b| b < n_layer)?;
            let g = match part {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                _ => return None,
            };
            format!("blk.{bid}.{g}")
        }
    };
    Some(format!("{mapped}.{suffix}"))
}

/// The head count by which the converter permutes a tensor's rows (`LlamaModel.permute`):
/// queries by n_head, keys by n_head_kv; `None` for every other tensor.
pub(crate) fn permute_heads(hf_name: &str, cfg: &LlamaConfig) -> Option<usize> {
    if hf_name.ends_with("q_proj.weight") || hf_name.ends_with("q_proj.bias") {
        Some(cfg.n_head)
    } else if hf_name.ends_with("k_proj.weight") || hf_name.ends_with("k_proj.bias") {
        Some(cfg.n_head_kv)
    } else {
        None
    }
}

/// Reorder the rows of a row-major `[rows, cols]` matrix the way the converter does for RoPE:
/// within each head, the two halves of the rows interleave (new row h·hd + 2j + i is old row
/// h·hd + i·hd/2 + j). `None` when the rows do not split into `heads` even halves.
pub(crate) fn permute_rows(m: &[f32], cols: usize, heads: usize) -> Option<Vec<f32>> {
    let rows = m.len() / cols.max(1);
    if heads == 0 || !rows.is_multiple_of(heads * 2) {
        return None;
    }
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; m.len()];
    for h in 0..heads {
        for j in 0..half {
            for i in 0..2 {
                let new = h * hd + 2 * j + i;
                let old = h * hd + i * half + j;
                out[new * cols..(new + 1) * cols].copy_from_slice(&m[old * cols..(old + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_the_converter() {
        assert_eq!(
            gguf_name("model.layers.3.self_attn.o_proj.weight", 8).as_deref(),
            Some("blk.3.attn_output.weight")
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight", 8).as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_name("model.layers.8.mlp.up_proj.weight", 8), None);
        assert_eq!(filter_name("model.vision_tower.x.weight"), None);
    }

    #[test]
    fn permutation_interleaves_half_heads() {
        // 2 heads of 4 rows, 1 column: rows 0..8.
        let m: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let p = permute_rows(&m, 1, 2).unwrap();
        assert_eq!(p, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(permute_rows(&m, 1, 3).is_none());
    }
}
