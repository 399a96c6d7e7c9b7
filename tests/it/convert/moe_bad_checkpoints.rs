//! Broken mixture-of-experts checkpoints (the Mixtral, Qwen2-MoE and Qwen3-MoE presets of
//! tests/it/convert/arch_golden.rs, then damaged): the expert count, the experts used per token,
//! a missing, surplus or misshapen expert. Each conversion must fail with one error naming the
//! file (and tensor) at fault and leave no output file; and the runtime refuses the families it
//! does not execute.

use super::arch_bad_checkpoints::{
    assert_names, checkpoint, edit_config, fails, rewrite_weights, truncate_rows,
};

use qforge::convert::synthetic_hf::HfFlavor;
use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

#[test]
fn qwen2moe_without_expert_count_takes_transformers_default_and_misses_experts() {
    // Qwen2MoeConfig's default is 60 experts; the checkpoint holds 4, so the converter never
    // collects a layer's set ("Unprocessed experts").
    let dir = checkpoint(HfFlavor::Qwen2Moe, "q2m-count");
    edit_config(&dir, |c| {
        c.as_object_mut().unwrap().remove("num_experts");
    });
    let err = fails(&dir);
    assert_names(
        &err,
        &[
            "config.json",
            "'num_experts' is 60",
            "transformers' default",
            "model.layers.0.mlp.experts.4.down_proj.weight",
        ],
    );
}

#[test]
fn qwen3moe_raw_config_without_expert_count() {
    // Without a model_type there are no transformers defaults: nothing says how many experts
    // to stack.
    let dir = checkpoint(HfFlavor::Qwen3Moe, "q3m-count");
    edit_config(&dir, |c| {
        let m = c.as_object_mut().unwrap();
        m.remove("model_type");
        m.remove("num_experts");
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "no expert count", "num_experts"]);
}

#[test]
fn qwen3moe_raw_config_without_experts_per_token() {
    let dir = checkpoint(HfFlavor::Qwen3Moe, "q3m-used");
    edit_config(&dir, |c| {
        let m = c.as_object_mut().unwrap();
        m.remove("model_type");
        m.remove("num_experts_per_tok");
    });
    let err = fails(&dir);
    assert_names(&err, &["config.json", "num_experts_per_tok", "per token"]);
}

#[test]
fn mixtral_declaring_more_experts_than_it_holds() {
    let dir = checkpoint(HfFlavor::Mixtral, "mix-count");
    edit_config(&dir, |c| c["num_local_experts"] = serde_json::json!(9));
    let err = fails(&dir);
    assert_names(
        &err,
        &[
            "config.json",
            "'num_local_experts' is 9",
            "model.layers.0.block_sparse_moe.experts.8.w1.weight",
        ],
    );
    assert!(!err.contains("default"), "{err}");
}

#[test]
fn mixtral_declaring_fewer_experts_than_it_holds() {
    let dir = checkpoint(HfFlavor::Mixtral, "mix-fewer");
    edit_config(&dir, |c| c["num_local_experts"] = serde_json::json!(6));
    let err = fails(&dir);
    assert_names(
        &err,
        &[
            "model-0000",
            ".safetensors",
            "block_sparse_moe.experts.6.",
            "expert 6, but config.json declares 6 experts",
        ],
    );
}

#[test]
fn qwen2moe_expert_tensor_missing() {
    let dir = checkpoint(HfFlavor::Qwen2Moe, "q2m-missing");
    let name = "model.layers.1.mlp.experts.2.up_proj.weight";
    rewrite_weights(&dir, |e| e.retain(|e| e.name != name));
    let err = fails(&dir);
    assert_names(&err, &["config.json", "'num_experts' is 4", name]);
}

#[test]
fn qwen2moe_expert_with_the_wrong_shape() {
    let dir = checkpoint(HfFlavor::Qwen2Moe, "q2m-shape");
    let name = "model.layers.0.mlp.experts.3.gate_proj.weight";
    rewrite_weights(&dir, |e| truncate_rows(e, name, 128));
    let err = fails(&dir);
    assert_names(&err, &["model.safetensors", name, "[128, 64]", "[256, 64]"]);
}

#[test]
fn qwen3moe_experts_disagreeing_with_moe_intermediate_size() {
    // Every expert consistent with the others but not with config.json.
    let dir = checkpoint(HfFlavor::Qwen3Moe, "q3m-ff");
    edit_config(&dir, |c| {
        c["moe_intermediate_size"] = serde_json::json!(128)
    });
    let err = fails(&dir);
    assert_names(
        &err,
        &[
            "model.safetensors",
            "model.layers.0.mlp.experts.0.",
            "disagrees with config.json",
        ],
    );
}

#[test]
fn qwen2moe_router_of_the_wrong_width() {
    let dir = checkpoint(HfFlavor::Qwen2Moe, "q2m-router");
    let name = "model.layers.1.mlp.gate.weight";
    rewrite_weights(&dir, |e| truncate_rows(e, name, 3));
    let err = fails(&dir);
    assert_names(&err, &["model.safetensors", name, "[3, 64]", "[4, 64]"]);
}

#[test]
fn qwen2moe_fused_experts_are_not_supported_yet() {
    // transformers 5 saves all experts of a layer as one `mlp.experts.gate_up_proj`.
    let dir = checkpoint(HfFlavor::Qwen2Moe, "q2m-fused");
    rewrite_weights(&dir, |e| {
        let mut fused = Vec::new();
        for x in 0..4 {
            for p in ["gate_proj", "up_proj"] {
                let name = format!("model.layers.0.mlp.experts.{x}.{p}.weight");
                let i = e.iter().position(|t| t.name == name).unwrap();
                fused.extend(e.remove(i).bytes);
            }
        }
        e.push(super::arch_bad_checkpoints::Entry {
            name: "model.layers.0.mlp.experts.gate_up_proj".into(),
            shape: vec![4, 512, 64],
            bytes: fused,
        });
    });
    let err = fails(&dir);
    assert_names(
        &err,
        &[
            "model.safetensors",
            "model.layers.0.mlp.experts.gate_up_proj",
            "not supported yet",
        ],
    );
}

#[test]
fn the_runtime_refuses_moe_models() {
    // imatrix and perplexity load models through the runtime, which does not run experts.
    for (flavor, what) in [
        (HfFlavor::Mixtral, "mixture-of-experts"),
        (HfFlavor::Qwen2Moe, "qwen2moe"),
    ] {
        let dir = checkpoint(flavor, "runtime");
        let out = dir.parent().unwrap().join("moe.gguf");
        let opts = ConvertOptions {
            outtype: OutType::F16,
            ..Default::default()
        };
        convert(&dir, &out, &opts).unwrap();
        let err = match qforge::runtime::forward::LlamaModel::load(&out) {
            Ok(_) => panic!("{}: the runtime loaded a MoE model", flavor.name()),
            Err(e) => format!("{:#}", anyhow::Error::from(e)),
        };
        assert_names(&err, &[what, "not supported yet"]);
    }
}
