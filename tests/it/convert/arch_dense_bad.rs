//! Broken Gemma 2 / Gemma 3 / Phi-3 / SmolLM3 / Granite / OLMo 2 / EXAONE 4 /
//! ERNIE 4.5 / Command R7B checkpoints (the presets of tests/it/convert/arch_golden.rs, then
//! damaged): one clear error naming the file, no output file. Also: the runtime refuses the
//! families it does not run, naming the architecture.

use super::arch_bad_checkpoints::{assert_names, checkpoint, edit_config, fails, rewrite_weights};
use qforge::convert::synthetic_hf::HfFlavor;
use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

#[test]
fn gemma2_sliding_window_not_an_integer() {
    // Gemma2Model writes hparams["sliding_window"] as a uint32 (the converter stops on a
    // string too).
    let dir = checkpoint(HfFlavor::Gemma2, "g2-window");
    edit_config(&dir, |c| c["sliding_window"] = serde_json::json!("4096"));
    let err = fails(&dir);
    assert_names(&err, &["config.json", "sliding_window"]);
}

#[test]
fn gemma3_with_attention_soft_capping() {
    // The converter asserts Gemma 3 has none.
    let dir = checkpoint(HfFlavor::Gemma3, "g3-softcap");
    edit_config(&dir, |c| {
        c["attn_logit_softcapping"] = serde_json::json!(50.0)
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "attn_logit_softcapping"]);
}

#[test]
fn gemma3mm_text_config_without_hidden_size() {
    // Gemma3TextConfig's default width (2304) then disagrees with the weights.
    let dir = checkpoint(HfFlavor::Gemma3Mm, "g3mm-hidden");
    edit_config(&dir, |c| {
        c["text_config"]
            .as_object_mut()
            .unwrap()
            .remove("hidden_size");
    });
    let err = fails(&dir);
    assert_names(
        &err,
        &["model.safetensors", "disagrees with config.json", "2304"],
    );
}

#[test]
fn gemma3_without_a_post_feedforward_norm() {
    let dir = checkpoint(HfFlavor::Gemma3, "g3-nopostffw");
    rewrite_weights(&dir, |e| {
        e.retain(|e| e.name != "model.layers.1.post_feedforward_layernorm.weight")
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "ffn_post_norm", "layer 1"]);
}

#[test]
fn phi3_longrope_factors_of_the_wrong_length() {
    // 8 rotated pairs per head; the converter raises ValueError on 7 factors.
    let dir = checkpoint(HfFlavor::Phi3, "phi3-factors");
    edit_config(&dir, |c| {
        c["rope_scaling"]["long_factor"]
            .as_array_mut()
            .unwrap()
            .pop();
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "long_factor has 7"]);
}

#[test]
fn phi3_without_a_fused_qkv() {
    let dir = checkpoint(HfFlavor::Phi3, "phi3-noqkv");
    rewrite_weights(&dir, |e| {
        e.retain(|e| e.name != "model.layers.0.self_attn.qkv_proj.weight")
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "attn_qkv", "layer 0"]);
}

#[test]
fn smollm3_without_vocab_size() {
    // SmolLM3Config's default (128256 tokens) then disagrees with the embedding.
    let dir = checkpoint(HfFlavor::SmolLm3, "smollm3-vocab");
    edit_config(&dir, |c| {
        c.as_object_mut().unwrap().remove("vocab_size");
    });
    let err = fails(&dir);
    assert_names(
        &err,
        &[
            "model.safetensors",
            "embed_tokens",
            "disagrees with config.json",
            "128256",
        ],
    );
}

#[test]
fn granite_multiplier_not_a_number() {
    let dir = checkpoint(HfFlavor::Granite, "granite-mult");
    edit_config(&dir, |c| {
        c["embedding_multiplier"] = serde_json::json!("12")
    });
    let err = fails(&dir);
    assert_names(
        &err,
        &["config.json", "embedding_multiplier", "must be a number"],
    );
}

#[test]
fn olmo2_k_norm_one_head_wide() {
    // OLMo 2 normalizes the whole K projection (64 wide here), not one head (16).
    let dir = checkpoint(HfFlavor::Olmo2, "olmo2-knorm");
    let name = "model.layers.0.self_attn.k_norm.weight";
    rewrite_weights(&dir, |e| {
        super::arch_bad_checkpoints::truncate_rows(e, name, 16)
    });
    let err = fails(&dir);
    assert_names(&err, &["model.safetensors", name, "[16]", "[64]"]);
}

#[test]
fn exaone4_layer_types_not_a_list() {
    let dir = checkpoint(HfFlavor::Exaone4, "exaone4-types");
    edit_config(&dir, |c| c["layer_types"] = serde_json::json!("LLLG"));
    let err = fails(&dir);
    assert_names(&err, &["config.json", "'layer_types' must be a list"]);
}

#[test]
fn exaone4_llama3_rope_without_a_factor() {
    // Exaone4Model's default factor (16) is not llama's (8): refused, not guessed.
    let dir = checkpoint(HfFlavor::Exaone4, "exaone4-factor");
    edit_config(&dir, |c| {
        c["rope_scaling"].as_object_mut().unwrap().remove("factor");
    });
    let err = fails(&dir);
    assert_names(
        &err,
        &["config.json", "llama3 RoPE scaling without a 'factor'"],
    );
}

#[test]
fn ernie4_5_fused_qkv_is_not_written_fused() {
    // The converter splits a fused qkv_proj into attn_q/k/v; qforge refuses rather than write
    // it fused.
    let dir = checkpoint(HfFlavor::Ernie4_5, "ernie-qkv");
    rewrite_weights(&dir, |e| {
        for x in e.iter_mut() {
            x.name = x.name.replace("self_attn.q_proj", "self_attn.qkv_proj");
        }
    });
    let err = fails(&dir);
    assert_names(
        &err,
        &["model.safetensors", "qkv_proj", "not supported yet"],
    );
}

#[test]
fn cohere2_without_rotary_pct() {
    // Cohere2Model reads hparams["rotary_pct"], which Cohere2Config has no default for.
    let dir = checkpoint(HfFlavor::Cohere2, "cohere2-rot");
    edit_config(&dir, |c| {
        c.as_object_mut().unwrap().remove("rotary_pct");
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "missing 'rotary_pct'"]);
}

#[test]
fn cohere2_nonzero_bias() {
    let dir = checkpoint(HfFlavor::Cohere2, "cohere2-bias");
    rewrite_weights(&dir, |e| {
        let w = e
            .iter()
            .position(|x| x.name == "model.layers.0.self_attn.q_proj.weight")
            .unwrap();
        let rows = e[w].shape[0];
        let elem = e[w].bytes.len() / (rows * e[w].shape[1]);
        let bias = super::arch_bad_checkpoints::Entry {
            name: "model.layers.0.self_attn.q_proj.bias".into(),
            shape: vec![rows],
            bytes: e[w].bytes[..rows * elem].to_vec(),
        };
        e.push(bias);
    });
    let err = fails(&dir);
    assert_names(&err, &["model.safetensors", "q_proj.bias", "not zero"]);
}

#[test]
fn runtime_refuses_gemma_naming_the_architecture() {
    let dir = checkpoint(HfFlavor::Gemma3, "g3-runtime");
    let out = dir.parent().unwrap().join("g3.f16.gguf");
    let opts = ConvertOptions {
        outtype: OutType::F16,
        ..Default::default()
    };
    convert(&dir, &out, &opts).unwrap();
    let err = match qforge::runtime::forward::LlamaModel::load(&out) {
        Ok(_) => panic!("the runtime loaded a gemma3 model"),
        Err(e) => format!("{:#}", anyhow::Error::from(e)),
    };
    assert!(
        err.contains("'gemma3'") && err.contains("not supported yet"),
        "{err}"
    );
}
