//! Unit tests of the type rules: use_more_bits, ordering, the `--tensor-type` overrides (parsing,
//! regex semantics, precedence, counters), `--prune-layers` remapping, option parsing and the
//! architecture special cases. Expected values are derived by hand from llama-quant.cpp.

use crate::support;

use crate::support::golden;
use qforge::formats::gguf::{GgufFile, Metadata, Value, ValueType};
use qforge::quant::rules::{
    allows_quantization, fallback_type, output_order_key, parse_prune_layers, parse_tensor_type,
    parse_tensor_type_file, plan, plan_types, sort_for_output, use_more_bits, LayerRemap,
    ModelInfo, RuleError, TensorPlan, TypeOptions,
};
use qforge::quant::{FileType, GgmlType};

type TensorList = Vec<(String, GgmlType, Vec<u64>)>;

fn tiny_llama() -> (ModelInfo, TensorList) {
    let f = GgufFile::open(golden("tiny-llama.f16.gguf")).unwrap();
    let model = qforge::pipeline::quantize::model_info_from_metadata(&f.metadata).unwrap();
    let list = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    (model, list)
}

fn type_of(plan: &[TensorPlan], name: &str) -> GgmlType {
    plan.iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} not planned"))
        .new_type
}

fn model(arch: &str, n_layer: u32, n_head: u32, n_head_kv: u32, n_expert: u32) -> ModelInfo {
    ModelInfo {
        arch: arch.into(),
        n_layer,
        n_layer_nextn: 0,
        n_head,
        n_head_kv,
        n_expert,
    }
}

fn t(name: &str, ty: GgmlType, ne: &[u64]) -> (String, GgmlType, Vec<u64>) {
    (name.to_string(), ty, ne.to_vec())
}

#[test]
fn use_more_bits_picks_the_ends_and_every_third_layer() {
    // n = 8: n/8 = 1, 7n/8 = 7 → layer 0, layer 7, and (i - 1) % 3 == 2 → 3, 6.
    let picked: Vec<i32> = (0..8).filter(|&i| use_more_bits(i, 8)).collect();
    assert_eq!(picked, vec![0, 3, 6, 7]);
    // n = 32: 0..4 and 28..32, and (i - 4) % 3 == 2 → 6, 9, …, 27.
    let picked: Vec<i32> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
    let mut expected: Vec<i32> = (0..4).chain(28..32).collect();
    expected.extend((6..28).step_by(3));
    expected.sort();
    assert_eq!(picked, expected);
    // n < 8: n/8 = 0, so i >= 7n/8 or i % 3 == 2.
    let picked: Vec<i32> = (0..6).filter(|&i| use_more_bits(i, 6)).collect();
    assert_eq!(picked, vec![2, 5]);
}

#[test]
fn output_order_is_layer_then_name() {
    let names = [
        "blk.10.attn_q.weight",
        "blk.2.ffn_up.weight",
        "output.weight",
        "blk.2.attn_q.weight",
        "token_embd.weight",
        "blk.x.weight",
        "blk.1.z",
        "output_norm.weight",
    ];
    let order: Vec<&str> = sort_for_output(&names)
        .into_iter()
        .map(|i| names[i])
        .collect();
    assert_eq!(
        order,
        vec![
            "blk.x.weight",
            "output.weight",
            "output_norm.weight",
            "token_embd.weight",
            "blk.1.z",
            "blk.2.attn_q.weight",
            "blk.2.ffn_up.weight",
            "blk.10.attn_q.weight",
        ]
    );
    // sscanf("blk.%d.") semantics: whitespace and a sign are accepted, the dot is not required.
    assert_eq!(output_order_key("blk. 3x").0, 3);
    assert_eq!(output_order_key("blk.-2.a").0, -2);
    assert_eq!(output_order_key("v.blk.3.a").0, -1);
}

#[test]
fn tensor_type_arguments_parse_like_quantize_cpp() {
    assert_eq!(
        parse_tensor_type("ATTN_V=Q8_0").unwrap(),
        ("attn_v".to_string(), GgmlType::Q8_0)
    );
    // The whole pattern is lowercased, escapes included: \D becomes \d.
    assert_eq!(
        parse_tensor_type(r"blk\.\D=q4_k").unwrap().0,
        r"blk\.\d".to_string()
    );
    // Split at the first '='.
    assert!(matches!(
        parse_tensor_type("a=b=c"),
        Err(RuleError::UnknownType(s)) if s == "b=c"
    ));
    assert!(matches!(
        parse_tensor_type("=q4_0"),
        Err(RuleError::BadTensorTypeArg { .. })
    ));
    assert!(matches!(
        parse_tensor_type("ffn="),
        Err(RuleError::BadTensorTypeArg { .. })
    ));
    assert!(matches!(
        parse_tensor_type("ffn"),
        Err(RuleError::BadTensorTypeArg { .. })
    ));

    let dir = support::temp_dir("rules-ttfile");
    let path = dir.join("types.txt");
    std::fs::write(&path, "ffn_up=q5_k \n\tATTN_.*=Q6_K\r\n\n  token_embd=q8_0").unwrap();
    assert_eq!(
        parse_tensor_type_file(&path).unwrap(),
        vec![
            ("ffn_up".to_string(), GgmlType::Q5_K),
            ("attn_.*".to_string(), GgmlType::Q6_K),
            ("token_embd".to_string(), GgmlType::Q8_0),
        ]
    );
    std::fs::write(&path, "ffn_up=q5_k nonsense").unwrap();
    assert!(parse_tensor_type_file(&path).is_err());
    assert!(matches!(
        parse_tensor_type_file(&dir.join("missing.txt")),
        Err(RuleError::TensorTypeFile { .. })
    ));
}

#[test]
fn overrides_search_unanchored_and_the_first_match_wins() {
    let (model, tensors) = tiny_llama();
    let mut opts = TypeOptions::new(FileType::Q4_K_M);
    opts.tensor_types = vec![
        parse_tensor_type(r"^blk\.0\.=q8_0").unwrap(),
        parse_tensor_type("attn=q5_0").unwrap(),
        parse_tensor_type("attn_q=q4_1").unwrap(), // shadowed by "attn"
        parse_tensor_type("FFN_GATE=iq4_nl").unwrap(),
    ];
    let p = plan_types(&model, &tensors, &opts).unwrap();
    assert_eq!(type_of(&p, "blk.0.attn_q.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&p, "blk.0.ffn_gate.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&p, "blk.1.attn_q.weight"), GgmlType::Q5_0);
    assert_eq!(type_of(&p, "blk.5.attn_v.weight"), GgmlType::Q5_0);
    assert_eq!(type_of(&p, "blk.3.ffn_gate.weight"), GgmlType::IQ4_NL);
    // Not matched: the mix rules. blk.0.ffn_down was overridden, so the ffn_down counter starts
    // at blk.1: use_more_bits(i, 8) picks i = 0, 3 → blk.1 and blk.4 (not blk.0 and blk.3).
    assert_eq!(type_of(&p, "blk.1.ffn_down.weight"), GgmlType::Q6_K);
    assert_eq!(type_of(&p, "blk.3.ffn_down.weight"), GgmlType::Q4_K);
    assert_eq!(type_of(&p, "blk.4.ffn_down.weight"), GgmlType::Q6_K);
    // Norms are never quantized even when a pattern matches them.
    assert_eq!(type_of(&p, "blk.0.attn_norm.weight"), GgmlType::F32);
    // The output tensor follows its rule unless a pattern matches it.
    assert_eq!(type_of(&p, "output.weight"), GgmlType::Q6_K);
}

#[test]
fn an_overridden_tensor_does_not_advance_the_mix_counters() {
    // Q3_K_M gives attn_v Q5_K while the attn_v counter is below 2, Q4_K after. Overriding
    // blk.0.attn_v skips the rules for it, so blk.1 and blk.2 see counter values 0 and 1.
    let (model, tensors) = tiny_llama();
    let plain = plan_types(&model, &tensors, &TypeOptions::new(FileType::Q3_K_M)).unwrap();
    let v = |p: &[TensorPlan], l: u32| type_of(p, &format!("blk.{l}.attn_v.weight"));
    assert_eq!(
        (v(&plain, 0), v(&plain, 1), v(&plain, 2)),
        (GgmlType::Q5_K, GgmlType::Q5_K, GgmlType::Q4_K)
    );
    let mut opts = TypeOptions::new(FileType::Q3_K_M);
    opts.tensor_types = vec![parse_tensor_type(r"blk\.0\.attn_v=q8_0").unwrap()];
    let p = plan_types(&model, &tensors, &opts).unwrap();
    assert_eq!(
        (v(&p, 0), v(&p, 1), v(&p, 2), v(&p, 3)),
        (
            GgmlType::Q8_0,
            GgmlType::Q5_K,
            GgmlType::Q5_K,
            GgmlType::Q4_K
        )
    );
}

#[test]
fn overrides_apply_with_pure_and_are_ignored_by_float_mixes() {
    let (model, tensors) = tiny_llama();
    let mut opts = TypeOptions::new(FileType::Q4_0);
    opts.pure = true;
    opts.tensor_types = vec![parse_tensor_type("ffn_down=q8_0").unwrap()];
    let p = plan_types(&model, &tensors, &opts).unwrap();
    assert_eq!(type_of(&p, "blk.0.ffn_down.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&p, "blk.0.attn_v.weight"), GgmlType::Q4_0);
    assert_eq!(type_of(&p, "output.weight"), GgmlType::Q4_0);

    // With an unquantized default type llama.cpp never looks at the patterns.
    let mut opts = TypeOptions::new(FileType::BF16);
    opts.tensor_types = vec![parse_tensor_type("ffn_down=q8_0").unwrap()];
    let p = plan_types(&model, &tensors, &opts).unwrap();
    assert_eq!(type_of(&p, "blk.0.ffn_down.weight"), GgmlType::BF16);
}

#[test]
fn the_fallback_applies_after_an_override() {
    let m = model("llama", 1, 4, 4, 0);
    let tensors = vec![
        t("blk.0.alpha.weight", GgmlType::F32, &[64, 4]),
        t("blk.0.beta.weight", GgmlType::F32, &[100, 4]),
        t("blk.0.gamma.weight", GgmlType::F32, &[96, 4]),
    ];
    let mut opts = TypeOptions::new(FileType::Q8_0);
    opts.tensor_types = vec![
        parse_tensor_type("alpha=q4_k").unwrap(),
        parse_tensor_type("beta=q6_k").unwrap(),
        parse_tensor_type("gamma=iq2_xxs").unwrap(),
    ];
    let p = plan(&m, &tensors, &opts).unwrap();
    let got: Vec<(GgmlType, bool)> = p.tensors.iter().map(|t| (t.new_type, t.fallback)).collect();
    assert_eq!(
        got,
        vec![
            (GgmlType::Q5_0, true),
            (GgmlType::F16, true),
            (GgmlType::IQ4_NL, true)
        ]
    );
    assert_eq!(p.n_fallback, 3);
    // A 32-block type has nothing smaller: F16. A 64/128-block type without a rule is an error.
    assert_eq!(
        fallback_type("x", 100, GgmlType::Q8_0).unwrap(),
        (GgmlType::F16, true)
    );
    assert_eq!(
        fallback_type("x", 256, GgmlType::Q4_K).unwrap(),
        (GgmlType::Q4_K, false)
    );
    assert!(matches!(
        fallback_type("x", 96, GgmlType::NVFP4),
        Err(RuleError::NoFallback { .. })
    ));
}

#[test]
fn explicit_embedding_and_output_types_take_no_fallback() {
    let m = model("llama", 1, 4, 4, 0);
    let tensors = vec![
        t("token_embd.weight", GgmlType::F16, &[64, 512]),
        t("output.weight", GgmlType::F16, &[64, 512]),
    ];
    let mut opts = TypeOptions::new(FileType::Q4_K_M);
    opts.output_tensor_type = Some(GgmlType::Q8_0);
    opts.token_embedding_type = Some(GgmlType::Q6_K);
    // Q6_K cannot block rows of 64: llama.cpp would fail while writing, we refuse up front.
    assert!(matches!(
        plan_types(&m, &tensors, &opts),
        Err(RuleError::IncompatibleType { ref tensor, .. }) if tensor == "token_embd.weight"
    ));
    opts.token_embedding_type = Some(GgmlType::Q4_0);
    let p = plan_types(&m, &tensors, &opts).unwrap();
    assert_eq!(type_of(&p, "token_embd.weight"), GgmlType::Q4_0);
    assert_eq!(type_of(&p, "output.weight"), GgmlType::Q8_0);
}

#[test]
fn per_layer_token_embd_can_be_named_by_a_pattern() {
    let m = model("gemma3n", 1, 4, 4, 0);
    let tensors = vec![
        t("output.weight", GgmlType::F16, &[256, 512]),
        t("per_layer_token_embd.weight", GgmlType::F16, &[256, 512]),
        t("token_embd.weight", GgmlType::F16, &[256, 512]),
    ];
    let mut opts = TypeOptions::new(FileType::Q4_K_M);
    opts.token_embedding_type = Some(GgmlType::Q5_K);
    let p = plan_types(&m, &tensors, &opts).unwrap();
    assert_eq!(type_of(&p, "per_layer_token_embd.weight"), GgmlType::Q5_K);
    opts.tensor_types = vec![parse_tensor_type("per_layer=q8_0").unwrap()];
    let p = plan_types(&m, &tensors, &opts).unwrap();
    assert_eq!(type_of(&p, "per_layer_token_embd.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&p, "token_embd.weight"), GgmlType::Q5_K);
}

#[test]
fn unsupported_patterns_are_refused_by_name() {
    let (model, tensors) = tiny_llama();
    for pattern in ["attn(?!_q)=q8_0", r"(a)\1=q8_0", "attn_[v=q8_0"] {
        let mut opts = TypeOptions::new(FileType::Q4_K_M);
        opts.tensor_types = vec![parse_tensor_type(pattern).unwrap()];
        let err = plan_types(&model, &tensors, &opts).unwrap_err();
        assert!(
            matches!(err, RuleError::BadPattern { .. }),
            "{pattern}: {err}"
        );
    }
}

#[test]
fn prune_layer_lists_parse_like_stoi() {
    assert_eq!(parse_prune_layers("3,1,1, 2").unwrap(), vec![1, 2, 3]);
    assert_eq!(parse_prune_layers("2x").unwrap(), vec![2]);
    for bad in ["-1", "", "a", "1,", "1,,2", "99999999999"] {
        assert!(
            matches!(parse_prune_layers(bad), Err(RuleError::BadPruneId(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn pruning_renumbers_layers_and_maps_imatrix_names_back() {
    let mut r = LayerRemap::new(&[2, 5]);
    let mut got = Vec::new();
    for l in 0..8 {
        got.push(r.remap(&format!("blk.{l}.attn_q.weight")).unwrap());
    }
    let expected: Vec<Option<String>> = [
        Some(0),
        Some(1),
        None,
        Some(2),
        Some(3),
        None,
        Some(4),
        Some(5),
    ]
    .iter()
    .map(|o| o.map(|l| format!("blk.{l}.attn_q.weight")))
    .collect();
    assert_eq!(got, expected);
    assert_eq!(r.block_count(), Some(6));
    assert_eq!(
        r.remap("output.weight").unwrap().as_deref(),
        Some("output.weight")
    );
    assert_eq!(
        r.imatrix_name("blk.4.ffn_up.weight").unwrap(),
        "blk.6.ffn_up.weight"
    );
    assert_eq!(
        r.imatrix_name("blk.1.ffn_up.weight").unwrap(),
        "blk.1.ffn_up.weight"
    );
    assert!(matches!(
        r.imatrix_name("blk.9.ffn_up.weight"),
        Err(RuleError::ImatrixRemap(_))
    ));

    // Pruning layer 0: everything moves down by one.
    let mut r = LayerRemap::new(&[0]);
    assert_eq!(r.remap("blk.0.a").unwrap(), None);
    assert_eq!(r.remap("blk.1.a").unwrap().as_deref(), Some("blk.0.a"));
    assert_eq!(r.remap("blk.2.a").unwrap().as_deref(), Some("blk.1.a"));
    assert_eq!(r.block_count(), Some(2));
    // No pruning: names untouched, no block count.
    let mut r = LayerRemap::new(&[]);
    assert_eq!(r.remap("blk.3.a").unwrap().as_deref(), Some("blk.3.a"));
    assert_eq!(r.block_count(), None);
}

#[test]
fn a_pruned_plan_keeps_the_original_block_count_for_its_counters() {
    // tiny-llama (8 layers) without layers 2 and 5, Q4_K_M. attn_v is counted over the 6 kept
    // tensors: use_more_bits(i, 6) picks i = 2, 5 (new layers 2 and 5). ffn_down compares with
    // the loaded block count, 8: use_more_bits(i, 8) picks i = 0 and 3 among i = 0..6.
    let (model, tensors) = tiny_llama();
    let mut opts = TypeOptions::new(FileType::Q4_K_M);
    opts.prune_layers = parse_prune_layers("5,2").unwrap();
    let p = plan(&model, &tensors, &opts).unwrap();
    assert_eq!(p.block_count, Some(6));
    assert_eq!(p.tensors.len(), tensors.len() - 2 * 9);
    assert!(!p.tensors.iter().any(|t| t.name.starts_with("blk.6.")));
    for l in 0..6 {
        let v = type_of(&p.tensors, &format!("blk.{l}.attn_v.weight"));
        let d = type_of(&p.tensors, &format!("blk.{l}.ffn_down.weight"));
        let v_more = l == 2 || l == 5;
        let d_more = l == 0 || l == 3;
        assert_eq!(
            v,
            if v_more {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            },
            "attn_v {l}"
        );
        assert_eq!(
            d,
            if d_more {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            },
            "ffn_down {l}"
        );
    }
    let t3 = p
        .tensors
        .iter()
        .find(|t| t.name == "blk.3.ffn_up.weight")
        .unwrap();
    assert_eq!(t3.source_name, "blk.4.ffn_up.weight");
    assert_eq!(t3.imatrix_name, "blk.4.ffn_up.weight");
    assert_eq!(tensors[t3.source_index].0, "blk.4.ffn_up.weight");
}

#[test]
fn which_tensors_may_be_quantized() {
    let opts = TypeOptions::new(FileType::Q4_0);
    let ok = |name: &str, ne: &[u64]| allows_quantization(name, ne, "llama", &opts);
    assert!(ok("blk.0.attn_q.weight", &[64, 64]));
    assert!(
        !ok("blk.0.attn_q.weight", &[64, 1, 1]),
        "1-D by ggml's count"
    );
    assert!(ok("blk.0.ffn_up_exps.weight", &[64, 1, 8]), "3-D experts");
    assert!(!ok("blk.0.attn_q.bias", &[64, 64]));
    assert!(!ok("blk.0.attn_norm.weight", &[64, 64]));
    assert!(!ok("blk.0.ffn_gate_inp.weight", &[64, 8]));
    assert!(!ok("position_embd.weight", &[64, 64]));
    assert!(!ok("token_types.weight", &[64, 2]));
    assert!(!ok("blk.0.ssm_conv1d.weight", &[4, 64]));
    assert!(!ok("v.patch_embd.weight", &[64, 64]));
    // size_t arithmetic in llama.cpp lets any 5-byte name through.
    assert!(ok("abcde", &[64, 64]));
    assert!(!ok("abcd", &[64, 64]));
    assert!(!allows_quantization(
        "blk.0.hc_x.weight",
        &[64, 64],
        "glm5-next",
        &opts
    ));
    let mut leave = TypeOptions::new(FileType::Q4_0);
    leave.leave_output_tensor = true;
    assert!(!allows_quantization(
        "output.weight",
        &[64, 64],
        "llama",
        &leave
    ));
    assert!(allows_quantization(
        "token_embd.weight",
        &[64, 64],
        "llama",
        &leave
    ));
}

#[test]
fn model_info_reads_arrays_defaults_and_the_70b_rule() {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::Str("llama".into()));
    assert!(matches!(
        qforge::pipeline::quantize::model_info_from_metadata(&md),
        Err(RuleError::MissingKey { ref key }) if key == "llama.block_count"
    ));
    md.set("llama.block_count", Value::U32(80));
    md.set(
        "llama.attention.head_count",
        Value::Array(ValueType::U32, vec![Value::U32(64); 80]),
    );
    let m = qforge::pipeline::quantize::model_info_from_metadata(&md).unwrap();
    assert_eq!((m.n_head, m.n_head_kv, m.n_expert), (64, 64, 0));
    assert!(!m.is_70b(), "equal head counts: 65B");
    md.set("llama.attention.head_count_kv", Value::U32(8));
    let m = qforge::pipeline::quantize::model_info_from_metadata(&md).unwrap();
    assert_eq!(m.n_gqa(), 8);
    assert!(m.is_70b());

    // The 70B rule raises Q3_K/Q4_K attn_v to Q5_K.
    let tensors = vec![t("blk.0.attn_v.weight", GgmlType::F16, &[8192, 1024])];
    let p = plan_types(&m, &tensors, &TypeOptions::new(FileType::Q3_K_S)).unwrap();
    assert_eq!(p[0].new_type, GgmlType::Q5_K);

    md.set("llama.block_count", Value::U32(0));
    assert!(matches!(
        qforge::pipeline::quantize::model_info_from_metadata(&md),
        Err(RuleError::BadMetadata { .. })
    ));
}

#[test]
fn expert_models_read_the_layer_from_the_name() {
    // With 8 experts: attn_v → Q8_0, attn_k → Q8_0; ffn_down layer from the name.
    let m = model("llama", 8, 32, 8, 8);
    let tensors = vec![
        t("blk.0.attn_k.weight", GgmlType::F16, &[256, 256]),
        t("blk.0.attn_v.weight", GgmlType::F16, &[256, 256]),
        t("blk.0.attn_output.weight", GgmlType::F16, &[256, 256]),
        t("blk.0.ffn_down_exps.weight", GgmlType::F16, &[256, 256, 8]),
        t("blk.3.ffn_down_exps.weight", GgmlType::F16, &[256, 256, 8]),
        t("blk.4.ffn_down_exps.weight", GgmlType::F16, &[256, 256, 8]),
    ];
    let p = plan_types(&m, &tensors, &TypeOptions::new(FileType::Q4_K_M)).unwrap();
    assert_eq!(type_of(&p, "blk.0.attn_k.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&p, "blk.0.attn_v.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&p, "blk.0.attn_output.weight"), GgmlType::Q5_K);
    // Layers 0 and 3 (not 1 and 2, which the counter would say) get more bits.
    assert_eq!(type_of(&p, "blk.0.ffn_down_exps.weight"), GgmlType::Q6_K);
    assert_eq!(type_of(&p, "blk.3.ffn_down_exps.weight"), GgmlType::Q6_K);
    assert_eq!(type_of(&p, "blk.4.ffn_down_exps.weight"), GgmlType::Q4_K);

    let bad = vec![t(
        "blk.9.ffn_down_exps.weight",
        GgmlType::F16,
        &[256, 256, 8],
    )];
    assert!(matches!(
        plan_types(&m, &bad, &TypeOptions::new(FileType::Q4_K_M)),
        Err(RuleError::BadLayer { layer: Some(9), .. })
    ));

    // MXFP4_MOE: 3-D expert tensors to MXFP4, other matrices to Q8_0, output to Q8_0.
    let moe = vec![
        t("output.weight", GgmlType::F16, &[256, 512]),
        t("blk.0.attn_q.weight", GgmlType::F16, &[256, 256]),
        t("blk.0.ffn_up_exps.weight", GgmlType::F16, &[256, 512, 8]),
    ];
    let p = plan_types(&m, &moe, &TypeOptions::new(FileType::MXFP4_MOE)).unwrap();
    assert_eq!(type_of(&p, "output.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&p, "blk.0.attn_q.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&p, "blk.0.ffn_up_exps.weight"), GgmlType::MXFP4);
}

#[test]
fn falcon_output_is_q8_0_and_its_ffn_down_uses_its_own_table() {
    let m = model("falcon", 16, 32, 32, 0);
    let mut tensors = vec![t("output.weight", GgmlType::F16, &[256, 512])];
    for l in 0..16 {
        tensors.push(t(
            &format!("blk.{l}.ffn_down.weight"),
            GgmlType::F16,
            &[256, 256],
        ));
    }
    let p = plan_types(&m, &tensors, &TypeOptions::new(FileType::Q4_K_M)).unwrap();
    assert_eq!(type_of(&p, "output.weight"), GgmlType::Q8_0);
    // i < n/16 = 1 → Q6_K; use_more_bits(i, 16) → Q5_K; else Q4_K.
    for l in 0..16 {
        let expected = if l < 1 {
            GgmlType::Q6_K
        } else if use_more_bits(l, 16) {
            GgmlType::Q5_K
        } else {
            GgmlType::Q4_K
        };
        assert_eq!(
            type_of(&p, &format!("blk.{l}.ffn_down.weight")),
            expected,
            "layer {l}"
        );
    }
}
