//! merge_lora_hf on small random models against the contract written as a plain loop
//! (`support::synthetic::contract_merge`): odd shapes, rank 1, several adapters with scales, every
//! base dtype, fan_in_fan_out, rsLoRA, embeddings, modules_to_save, sharded checkpoints.

use crate::support;

use std::path::Path;

use crate::support::rng::Rng;
use crate::support::synthetic::{contract_merge, lora_config, write_adapter, write_base, T};
use qforge::formats::safetensors::{Checkpoint, Dtype, SafetensorsFile};
use qforge::lora::merge::transpose;
use qforge::lora::{merge_lora_hf, AdapterSpec, MergeOptions};
use qforge::quant::{f32_to_bf16, f32_to_f16};

fn round_to(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| f32_to_f16(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| f32_to_bf16(*x).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    }
}

fn merged_bytes(out: &Path, name: &str) -> Vec<u8> {
    let ck = Checkpoint::open_dir(out).unwrap();
    let loc = ck.find(name).unwrap_or_else(|| panic!("{name} missing"));
    ck.file(loc).data(ck.tensor(loc)).to_vec()
}

fn base_config() -> serde_json::Value {
    serde_json::json!({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 1,
        "num_attention_heads": 1, "hidden_size": 53})
}

/// Two adapters (rank 1 in F32, rank 3 in F16 with scale 0.7) on tensors of odd shapes, for
/// every base dtype; an untouched tensor stays byte-identical.
#[test]
fn odd_shapes_rank_one_and_two_adapters_follow_the_contract() {
    for (seed, dtype) in [(1u64, Dtype::BF16), (2, Dtype::F16), (3, Dtype::F32)] {
        let tmp = support::temp_dir(&format!("lora-contract-{seed}"));
        let mut rng = Rng::new(seed);
        let q = "model.layers.0.self_attn.q_proj";
        let d = "model.layers.0.mlp.down_proj";
        let (q_out, q_in, d_out, d_in) = (37, 53, 13, 7);
        let base = [
            T::new(
                &format!("{q}.weight"),
                dtype,
                &[q_out, q_in],
                rng.vec(q_out * q_in, 0.5),
            ),
            T::new(
                &format!("{d}.weight"),
                dtype,
                &[d_out, d_in],
                rng.vec(d_out * d_in, 2.0),
            ),
            T::new("model.norm.weight", dtype, &[q_in], rng.vec(q_in, 1.0)),
        ];
        write_base(&tmp.join("base"), &base_config(), &base);

        // Adapter 1: rank 1, F32, q_proj only.
        let a1 = T::new(
            &format!("base_model.model.{q}.lora_A.weight"),
            Dtype::F32,
            &[1, q_in],
            rng.vec(q_in, 0.3),
        );
        let b1 = T::new(
            &format!("base_model.model.{q}.lora_B.weight"),
            Dtype::F32,
            &[q_out, 1],
            rng.vec(q_out, 0.3),
        );
        write_adapter(
            &tmp.join("ad1"),
            &lora_config(1, 3.0, &["q_proj"]),
            &[a1, b1],
        );
        // Adapter 2: rank 3, F16 factors, q_proj and down_proj, extra scale 0.7.
        let r = 3;
        let tensors2 = vec![
            T::new(
                &format!("base_model.model.{q}.lora_A.weight"),
                Dtype::F16,
                &[r, q_in],
                rng.vec(r * q_in, 0.2),
            ),
            T::new(
                &format!("base_model.model.{q}.lora_B.weight"),
                Dtype::F16,
                &[q_out, r],
                rng.vec(q_out * r, 0.2),
            ),
            T::new(
                &format!("base_model.model.{d}.lora_A.weight"),
                Dtype::F16,
                &[r, d_in],
                rng.vec(r * d_in, 0.2),
            ),
            T::new(
                &format!("base_model.model.{d}.lora_B.weight"),
                Dtype::F16,
                &[d_out, r],
                rng.vec(d_out * r, 0.2),
            ),
        ];
        write_adapter(
            &tmp.join("ad2"),
            &lora_config(r, 5.0, &["q_proj", "down_proj"]),
            &tensors2,
        );

        let out = tmp.join("out");
        let report = merge_lora_hf(
            &tmp.join("base"),
            &[
                AdapterSpec::new(tmp.join("ad1"), 1.0),
                AdapterSpec::new(tmp.join("ad2"), 0.7),
            ],
            &out,
            &MergeOptions {
                threads: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((report.merged, report.copied), (2, 1));

        // The contract by hand: scales in f64 rounded once, adapters folded in order, one
        // final rounding.
        let s1 = (1.0f64 * 3.0 / 1.0) as f32;
        let s2 = (0.7f32 as f64 * 5.0 / 3.0) as f32;
        let wq = base[0].stored();
        let ad1 = SafetensorsFile::open(tmp.join("ad1/adapter_model.safetensors")).unwrap();
        let ad2 = SafetensorsFile::open(tmp.join("ad2/adapter_model.safetensors")).unwrap();
        let read = |f: &SafetensorsFile, n: &str| {
            let t = f.tensor(n).unwrap();
            let mut v = vec![0f32; t.n_elements()];
            f.read_f32(t, 0, &mut v).unwrap();
            v
        };
        let qa = |k: &str| format!("base_model.model.{q}.lora_{k}.weight");
        let da = |k: &str| format!("base_model.model.{d}.lora_{k}.weight");
        let step1 = contract_merge(
            &wq,
            &read(&ad1, &qa("A")),
            &read(&ad1, &qa("B")),
            q_out,
            q_in,
            1,
            s1,
        );
        let want_q = contract_merge(
            &step1,
            &read(&ad2, &qa("A")),
            &read(&ad2, &qa("B")),
            q_out,
            q_in,
            r,
            s2,
        );
        assert_eq!(
            merged_bytes(&out, &format!("{q}.weight")),
            round_to(dtype, &want_q),
            "{dtype:?} q_proj"
        );
        let want_d = contract_merge(
            &base[1].stored(),
            &read(&ad2, &da("A")),
            &read(&ad2, &da("B")),
            d_out,
            d_in,
            r,
            s2,
        );
        assert_eq!(
            merged_bytes(&out, &format!("{d}.weight")),
            round_to(dtype, &want_d),
            "{dtype:?} down_proj"
        );
        assert_eq!(
            merged_bytes(&out, "model.norm.weight"),
            support::synthetic::encode(dtype, &base[2].values)
        );
        // Thread count never changes bytes.
        let out1 = tmp.join("out1");
        merge_lora_hf(
            &tmp.join("base"),
            &[
                AdapterSpec::new(tmp.join("ad1"), 1.0),
                AdapterSpec::new(tmp.join("ad2"), 0.7),
            ],
            &out1,
            &MergeOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read(out.join("model.safetensors")).unwrap(),
            std::fs::read(out1.join("model.safetensors")).unwrap()
        );
    }
}

/// fan_in_fan_out: the base stores W as [in, out] (GPT-2 Conv1D); the same element formula
/// lands at the transposed position.
#[test]
fn fan_in_fan_out_updates_the_transposed_weight() {
    let tmp = support::temp_dir("lora-fifo");
    let mut rng = Rng::new(7);
    let (inn, out_f, r) = (19, 45, 2);
    let m = "transformer.h.0.attn.c_attn";
    let w_t = T::new(
        &format!("{m}.weight"),
        Dtype::F32,
        &[inn, out_f],
        rng.vec(inn * out_f, 1.0),
    );
    write_base(
        &tmp.join("base"),
        &base_config(),
        std::slice::from_ref(&w_t),
    );
    let a = rng.vec(r * inn, 0.5);
    let b = rng.vec(out_f * r, 0.5);
    let mut cfg = lora_config(r, 4.0, &["c_attn"]);
    cfg["fan_in_fan_out"] = true.into();
    write_adapter(
        &tmp.join("ad"),
        &cfg,
        &[
            T::new(
                &format!("base_model.model.{m}.lora_A.weight"),
                Dtype::F32,
                &[r, inn],
                a.clone(),
            ),
            T::new(
                &format!("base_model.model.{m}.lora_B.weight"),
                Dtype::F32,
                &[out_f, r],
                b.clone(),
            ),
        ],
    );
    merge_lora_hf(
        &tmp.join("base"),
        &[AdapterSpec::new(tmp.join("ad"), 1.0)],
        &tmp.join("out"),
        &MergeOptions::default(),
    )
    .unwrap();
    let w = transpose(&w_t.values, inn); // [out, in]
    let want = transpose(&contract_merge(&w, &a, &b, out_f, inn, r, 2.0), out_f);
    assert_eq!(
        merged_bytes(&tmp.join("out"), &format!("{m}.weight")),
        round_to(Dtype::F32, &want)
    );

    // Without fan_in_fan_out the shapes do not fit, and the error says so.
    let mut cfg = lora_config(r, 4.0, &["c_attn"]);
    cfg["fan_in_fan_out"] = false.into();
    std::fs::write(tmp.join("ad/adapter_config.json"), cfg.to_string()).unwrap();
    let e = merge_lora_hf(
        &tmp.join("base"),
        &[AdapterSpec::new(tmp.join("ad"), 1.0)],
        &tmp.join("out2"),
        &MergeOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("c_attn") && e.contains("[19, 45]"), "{e}");
    assert!(!tmp.join("out2").exists());
}

/// rsLoRA scales by alpha/√r instead of alpha/r.
#[test]
fn rslora_scales_by_the_square_root_of_the_rank() {
    let tmp = support::temp_dir("lora-rslora");
    let mut rng = Rng::new(11);
    let (o, i, r) = (8, 12, 4);
    let m = "model.layers.0.self_attn.v_proj";
    let w = T::new(
        &format!("{m}.weight"),
        Dtype::BF16,
        &[o, i],
        rng.vec(o * i, 1.0),
    );
    write_base(&tmp.join("base"), &base_config(), std::slice::from_ref(&w));
    let a = rng.vec(r * i, 0.5);
    let b = rng.vec(o * r, 0.5);
    let tensors = [
        T::new(
            &format!("base_model.model.{m}.lora_A.weight"),
            Dtype::F32,
            &[r, i],
            a.clone(),
        ),
        T::new(
            &format!("base_model.model.{m}.lora_B.weight"),
            Dtype::F32,
            &[o, r],
            b.clone(),
        ),
    ];
    for (rslora, scale) in [(true, 7.0 / 2.0f32), (false, 7.0 / 4.0)] {
        let mut cfg = lora_config(r, 7.0, &["v_proj"]);
        cfg["use_rslora"] = rslora.into();
        let ad = tmp.join(format!("ad-{rslora}"));
        write_adapter(&ad, &cfg, &tensors);
        let out = tmp.join(format!("out-{rslora}"));
        merge_lora_hf(
            &tmp.join("base"),
            &[AdapterSpec::new(&ad, 1.0)],
            &out,
            &MergeOptions::default(),
        )
        .unwrap();
        let want = contract_merge(&w.stored(), &a, &b, o, i, r, scale);
        assert_eq!(
            merged_bytes(&out, &format!("{m}.weight")),
            round_to(Dtype::BF16, &want),
            "rslora {rslora}"
        );
    }
}

/// Embeddings (lora_embedding_A [r, vocab], lora_embedding_B [hidden, r]) update
/// W [vocab, hidden] by (B·A)ᵀ; modules_to_save replaces a tensor, rounded to the base dtype.
#[test]
fn embeddings_and_modules_to_save() {
    let tmp = support::temp_dir("lora-embed");
    let mut rng = Rng::new(13);
    let (vocab, hidden, r) = (23, 10, 3);
    let emb = T::new(
        "model.embed_tokens.weight",
        Dtype::BF16,
        &[vocab, hidden],
        rng.vec(vocab * hidden, 1.0),
    );
    let head = T::new(
        "lm_head.weight",
        Dtype::BF16,
        &[vocab, hidden],
        rng.vec(vocab * hidden, 1.0),
    );
    write_base(&tmp.join("base"), &base_config(), &[emb.clone(), head]);
    let a = rng.vec(r * vocab, 0.5);
    let b = rng.vec(hidden * r, 0.5);
    let new_head = rng.vec(vocab * hidden, 1.0);
    let mut cfg = lora_config(r, 3.0, &["embed_tokens"]);
    cfg["modules_to_save"] = serde_json::json!(["lm_head"]);
    write_adapter(
        &tmp.join("ad"),
        &cfg,
        &[
            T::new(
                "base_model.model.model.embed_tokens.lora_embedding_A",
                Dtype::F32,
                &[r, vocab],
                a.clone(),
            ),
            T::new(
                "base_model.model.model.embed_tokens.lora_embedding_B",
                Dtype::F32,
                &[hidden, r],
                b.clone(),
            ),
            T::new(
                "base_model.model.lm_head.weight",
                Dtype::F32,
                &[vocab, hidden],
                new_head.clone(),
            ),
        ],
    );
    let out = tmp.join("out");
    let report = merge_lora_hf(
        &tmp.join("base"),
        &[AdapterSpec::new(tmp.join("ad"), 1.0)],
        &out,
        &MergeOptions::default(),
    )
    .unwrap();
    assert_eq!((report.merged, report.replaced), (1, 1));
    let wt = transpose(&emb.stored(), vocab); // [hidden, vocab]
    let want = transpose(&contract_merge(&wt, &a, &b, hidden, vocab, r, 1.0), hidden);
    assert_eq!(
        merged_bytes(&out, "model.embed_tokens.weight"),
        round_to(Dtype::BF16, &want)
    );
    assert_eq!(
        merged_bytes(&out, "lm_head.weight"),
        round_to(Dtype::BF16, &new_head)
    );
}

/// A sharded base: the same shard files, the index and side files copied, stale weight files
/// left out.
#[test]
fn sharded_checkpoint_keeps_its_shards_index_and_side_files() {
    let tmp = support::temp_dir("lora-shards");
    let base = tmp.join("base");
    std::fs::create_dir_all(&base).unwrap();
    let mut rng = Rng::new(17);
    let m = "model.layers.0.mlp.up_proj";
    let w = T::new(
        &format!("{m}.weight"),
        Dtype::F16,
        &[24, 16],
        rng.vec(24 * 16, 1.0),
    );
    let other = T::new("model.norm.weight", Dtype::F16, &[16], rng.vec(16, 1.0));
    support::synthetic::write_safetensors(
        &base.join("model-00001-of-00002.safetensors"),
        std::slice::from_ref(&other),
    );
    support::synthetic::write_safetensors(
        &base.join("model-00002-of-00002.safetensors"),
        std::slice::from_ref(&w),
    );
    let index = serde_json::json!({"metadata": {"total_size": 24 * 16 * 2 + 32},
        "weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                       format!("{m}.weight"): "model-00002-of-00002.safetensors"}});
    std::fs::write(base.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(base.join("config.json"), base_config().to_string()).unwrap();
    std::fs::write(base.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(base.join("pytorch_model.bin"), "stale weights").unwrap();
    let r = 2;
    let a = rng.vec(r * 16, 0.5);
    let b = rng.vec(24 * r, 0.5);
    write_adapter(
        &tmp.join("ad"),
        &lora_config(r, 2.0, &["up_proj"]),
        &[
            T::new(
                &format!("base_model.model.{m}.lora_A.weight"),
                Dtype::F32,
                &[r, 16],
                a.clone(),
            ),
            T::new(
                &format!("base_model.model.{m}.lora_B.weight"),
                Dtype::F32,
                &[24, r],
                b.clone(),
            ),
        ],
    );
    let out = tmp.join("nested/out");
    let report = merge_lora_hf(
        &base,
        &[AdapterSpec::new(tmp.join("ad"), 1.0)],
        &out,
        &MergeOptions::default(),
    )
    .unwrap();
    assert_eq!(
        support::list_files(&out),
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );
    assert_eq!(report.files.len(), 5);
    assert_eq!(
        std::fs::read(out.join("model.safetensors.index.json")).unwrap(),
        std::fs::read(base.join("model.safetensors.index.json")).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("model-00001-of-00002.safetensors")).unwrap(),
        std::fs::read(base.join("model-00001-of-00002.safetensors")).unwrap()
    );
    let want = contract_merge(&w.stored(), &a, &b, 24, 16, r, 1.0);
    assert_eq!(
        merged_bytes(&out, &format!("{m}.weight")),
        round_to(Dtype::F16, &want)
    );
}
