//! The converter's tensor transforms that families opt into through their registry entry:
//! checkpoint-name filtering and renames, and the Q/K row permutation llama-style RoPE needs.
//! Shared by `convert` (whole checkpoints) and `lora` (adapter matrices), so both apply the
//! same rule.

use super::Architecture;

/// `filter_tensors` of TextModel and its bases: renames, and multimodal tensors dropped.
pub fn filter_name(arch: &Architecture, name: &str) -> Option<String> {
    let mut name = name.to_string();
    for (from, to) in arch.quirks.name_replacements {
        if name.contains(from) {
            name = name.replace(from, to);
        }
    }
    if arch.strips_text_model_prefix && name.contains("text_model.") {
        name = name.replace("text_model.", "");
    }
    let multimodal = [
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
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || [
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
        ]
        .iter()
        .any(|p| name.contains(p));
    if multimodal {
        return None;
    }
    if name.ends_with("e_score_correction_bias") {
        name = name.replace("e_score_correction_bias", "e_score_correction.bias");
    }
    if name.contains("language_model.") {
        name = name.replace("language_model.", "");
    }
    Some(name)
}

/// The head count by which the converter permutes a tensor's rows (`LlamaModel.modify_tensors`):
/// queries by `n_head`, keys by `n_head_kv`; `None` for every other tensor (and for families
/// that do not permute).
pub fn qk_permute_heads(
    arch: &Architecture,
    name: &str,
    n_head: usize,
    n_head_kv: usize,
) -> Option<usize> {
    if !arch.permutes_qk {
        None
    } else if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
        Some(n_head)
    } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
        Some(n_head_kv)
    } else {
        None
    }
}

/// `LlamaModel.permute`: within each of `heads` groups of rows, the two halves are interleaved
/// (output row `2i + j` of a head is input row `j·half + i`). Returns the input row of output
/// row `r` for a tensor of `rows` rows.
pub fn permuted_source_row(r: usize, rows: usize, heads: usize) -> usize {
    let per_head = rows / heads;
    let half = per_head / 2;
    let (h, within) = (r / per_head, r % per_head);
    let (i, j) = (within / 2, within % 2);
    h * per_head + j * half + i
}

/// [`permuted_source_row`] applied to a row-major `[rows, cols]` matrix. `None` when the rows
/// do not split into `heads` even halves.
pub fn permute_rows(m: &[f32], cols: usize, heads: usize) -> Option<Vec<f32>> {
    let rows = m.len() / cols.max(1);
    if heads == 0 || !rows.is_multiple_of(heads * 2) {
        return None;
    }
    let mut out = vec![0f32; m.len()];
    for (r, dst) in out.chunks_exact_mut(cols.max(1)).enumerate() {
        let src = permuted_source_row(r, rows, heads);
        dst.copy_from_slice(&m[src * cols..(src + 1) * cols]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{llama::LLAMA, qwen2::QWEN2};

    #[test]
    fn permutation_interleaves_half_heads() {
        // 2 heads of 4 rows, 1 column: rows 0..8.
        let m: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let p = permute_rows(&m, 1, 2).unwrap();
        assert_eq!(p, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(permute_rows(&m, 1, 3).is_none());
    }

    #[test]
    fn only_permuting_families_permute() {
        let q = "model.layers.0.self_attn.q_proj.weight";
        assert_eq!(qk_permute_heads(&LLAMA, q, 8, 2), Some(8));
        assert_eq!(
            qk_permute_heads(&LLAMA, "model.layers.0.self_attn.k_proj.bias", 8, 2),
            Some(2)
        );
        assert_eq!(qk_permute_heads(&QWEN2, q, 8, 2), None);
    }

    #[test]
    fn filter_drops_towers_and_strips_prefixes() {
        assert_eq!(filter_name(&LLAMA, "model.vision_tower.x.weight"), None);
        assert_eq!(
            filter_name(&LLAMA, "text_model.model.norm.weight").as_deref(),
            Some("model.norm.weight")
        );
        assert_eq!(
            filter_name(&QWEN2, "text_model.model.norm.weight").as_deref(),
            Some("text_model.model.norm.weight")
        );
    }
}
