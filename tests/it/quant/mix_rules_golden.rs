//! The type rules against every tensor list llama-quantize wrote in the golden set: the mixes of
//! tiny-llama (with and without imatrix, with options, requantized), the tied-embedding BPE model,
//! and `--pure` on the adversarial tensors (fallbacks for rows of 384, 96 and 100 elements).

use std::path::Path;

use crate::support::{golden, Manifest};
use qforge::formats::gguf::{GgufFile, Metadata, Value};
use qforge::ggml::ftype::QuantTarget;
use qforge::quant::rules::{
    parse_tensor_type, plan, plan_types, ModelInfo, RuleError, TensorPlan, TypeOptions,
};
use qforge::quant::{self, FileType, GgmlType};

type TensorList = Vec<(String, GgmlType, Vec<u64>)>;

fn gguf_tensors(rel: &str) -> (ModelInfo, TensorList) {
    let f = GgufFile::open(golden(rel)).unwrap();
    let model = qforge::pipeline::quantize::model_info_from_metadata(&f.metadata).unwrap();
    let list = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    (model, list)
}

/// A manifest's tensors as (name, type, shape) in file order.
fn manifest_tensors(m: &Manifest) -> TensorList {
    m.tensors()
        .into_iter()
        .map(|t| {
            let ty = GgmlType::from_name(&t.ty).unwrap_or_else(|| panic!("type {}", t.ty));
            (t.name, ty, t.shape)
        })
        .collect()
}

/// The scalar keys of a manifest, enough for [`ModelInfo::from_metadata`].
fn manifest_metadata(m: &Manifest) -> Metadata {
    let mut md = Metadata::new();
    for kv in m.json["kv"].as_array().unwrap() {
        let key = kv["key"].as_str().unwrap();
        let v = &kv["value"];
        match kv["type"][0].as_str().unwrap() {
            "UINT32" => md.set(key, Value::U32(v.as_u64().unwrap() as u32)),
            "STRING" => md.set(key, Value::Str(v.as_str().unwrap().to_string())),
            _ => {}
        }
    }
    md
}

fn ftype_of(stem: &str) -> FileType {
    match QuantTarget::parse(stem.split('.').next().unwrap()) {
        Some(QuantTarget::Mix(f)) => f,
        other => panic!("{stem}: not a mix ({other:?})"),
    }
}

fn assert_plan_matches(what: &str, plan: &[TensorPlan], expected: &TensorList) {
    let got: TensorList = plan
        .iter()
        .map(|p| (p.name.clone(), p.new_type, p.ne.clone()))
        .collect();
    if got != *expected {
        let mut diffs = Vec::new();
        for (g, e) in got.iter().zip(expected) {
            if g != e {
                diffs.push(format!("{} {} (expected {} {})", g.0, g.1, e.0, e.1));
            }
        }
        panic!(
            "{what}: {} tensors planned, {} expected; differences:\n  {}",
            got.len(),
            expected.len(),
            diffs.join("\n  ")
        );
    }
}

/// The options each tiny-llama manifest was made with (golden/manifest.json "commands").
fn tiny_llama_options(stem: &str, imatrix: bool) -> TypeOptions {
    let mut opts = TypeOptions::new(ftype_of(stem));
    opts.has_imatrix = imatrix;
    match stem.split_once('.').map(|s| s.1) {
        None => {}
        Some("opts-a") => {
            opts.output_tensor_type = Some(GgmlType::Q8_0);
            opts.token_embedding_type = Some(GgmlType::Q4_K);
            opts.tensor_types = vec![
                parse_tensor_type("ffn_up=q5_k").unwrap(),
                parse_tensor_type("attn_.*=q6_k").unwrap(),
            ];
        }
        Some("opts-b") => opts.leave_output_tensor = true,
        Some("requant-from-Q8_0") => {}
        Some(other) => panic!("{stem}: unknown golden variant '{other}': add its options here"),
    }
    opts
}

fn json_stems(dir: &Path) -> Vec<String> {
    let mut stems: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    stems
}

#[test]
fn every_tiny_llama_mix_matches_llama_quantize() {
    let (model, f16_tensors) = gguf_tensors("tiny-llama.f16.gguf");
    // The requantization input: what the Q8_0 mix makes of the f16 file.
    let q8_plan = plan_types(&model, &f16_tensors, &TypeOptions::new(FileType::Q8_0)).unwrap();
    let q8_tensors: TensorList = q8_plan
        .iter()
        .map(|p| (p.name.clone(), p.new_type, p.ne.clone()))
        .collect();

    let mut checked = 0;
    // The shared goldens, then the mixes made in this checkout (tests/data/mixes-imatrix).
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for (root, dir, imatrix) in [
        (golden(""), "mixes", false),
        (golden(""), "mixes-imatrix", true),
        (local, "mixes-imatrix", true),
    ] {
        for stem in json_stems(&root.join(dir)) {
            let m = Manifest::load_path(&root.join(dir).join(format!("{stem}.json")));
            let opts = tiny_llama_options(&stem, imatrix);
            let input = if stem.ends_with("requant-from-Q8_0") {
                &q8_tensors
            } else {
                &f16_tensors
            };
            let p = plan(&model, input, &opts).unwrap_or_else(|e| panic!("{dir}/{stem}: {e}"));
            assert_plan_matches(&format!("{dir}/{stem}"), &p.tensors, &manifest_tensors(&m));
            assert_eq!(p.block_count, None);
            assert_eq!(
                p.n_fallback, 0,
                "{dir}/{stem}: tiny-llama rows all divide by 256"
            );
            for t in &p.tensors {
                assert_eq!(t.quantize, t.new_type != t.current_type);
                assert_eq!(t.imatrix_name, t.name);
            }
            checked += 1;
        }
    }
    assert!(checked >= 36, "only {checked} manifests found");
}

#[test]
fn tied_embeddings_follow_the_output_rules() {
    // tiny-bpe has no output.weight: token_embd takes the output tensor's rule (Q8_0, as its
    // rows of 64 cannot hold a 256 block) and the other 64-wide tensors fall back to Q5_0.
    let input = Manifest::load("convert-bpe/f16.json");
    let model =
        qforge::pipeline::quantize::model_info_from_metadata(&manifest_metadata(&input)).unwrap();
    let expected = Manifest::load("convert-bpe/Q4_K_M-from-f16.json");
    let p = plan(
        &model,
        &manifest_tensors(&input),
        &TypeOptions::new(FileType::Q4_K_M),
    )
    .unwrap();
    assert_plan_matches(
        "convert-bpe Q4_K_M",
        &p.tensors,
        &manifest_tensors(&expected),
    );
    assert!(p.n_fallback > 0);
    assert_eq!(
        p.n_fallback,
        p.tensors.iter().filter(|t| t.fallback).count()
    );
}

#[test]
fn pure_mixes_of_the_adversarial_tensors_match() {
    let (model, tensors) = gguf_tensors("tensors.f32.gguf");
    let mut checked = 0;
    for (dir, imatrix) in [("pure", false), ("pure-imatrix", true)] {
        let mut names: Vec<String> = std::fs::read_dir(golden(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".gguf"))
            .collect();
        names.sort();
        for name in names {
            let rel = format!("{dir}/{name}");
            let mut opts = TypeOptions::new(ftype_of(&name));
            opts.pure = true;
            opts.has_imatrix = imatrix;
            let got = plan_types(&model, &tensors, &opts).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let f = GgufFile::open(golden(&rel)).unwrap();
            let expected: TensorList = f
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
                .collect();
            assert_plan_matches(&rel, &got, &expected);
            for t in &got {
                // Every fallback in these files comes from the three odd row lengths.
                assert_eq!(
                    t.fallback,
                    t.allows_quantization && t.new_type != opts.ftype.default_type(),
                    "{rel} {}",
                    t.name
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 38, "only {checked} pure files found");
}

#[test]
fn very_low_bit_mixes_refuse_to_plan_without_an_imatrix() {
    let (model, tensors) = gguf_tensors("tiny-llama.f16.gguf");
    let very_low_bit = [
        FileType::Q2_K_S,
        FileType::IQ2_XXS,
        FileType::IQ2_XS,
        FileType::IQ2_S,
        FileType::IQ2_M,
        FileType::IQ3_XXS,
        FileType::IQ3_XS,
        FileType::IQ1_S,
        FileType::IQ1_M,
    ];
    for ftype in very_low_bit {
        // --dry-run plans anyway and says which tensors would need one.
        let mut opts = TypeOptions::new(ftype);
        opts.dry_run = true;
        let p = plan_types(&model, &tensors, &opts).unwrap();
        assert!(p.iter().any(|t| t.requires_imatrix), "{ftype:?}");
        assert!(!p
            .iter()
            .any(|t| t.requires_imatrix
                && (t.name == "output.weight" || t.name == "token_embd.weight")));
        // A mix with a type that has no quantizer yet plans, and the pipeline says "not
        // supported yet" (asking for an imatrix first would send the user off for nothing);
        // every other mix is refused for want of an imatrix.
        let all_supported = p
            .iter()
            .all(|t| !t.quantize || quant::quantizer(t.new_type).is_some());
        let r = plan_types(&model, &tensors, &TypeOptions::new(ftype));
        if all_supported {
            let err = r.unwrap_err();
            assert!(
                matches!(err, RuleError::ImatrixRequired { .. }),
                "{ftype:?}: {err}"
            );
        } else {
            assert!(r.is_ok(), "{ftype:?}");
        }
    }
    // Those that this checkout quantizes whole.
    for ftype in [
        FileType::Q2_K_S,
        FileType::IQ2_XXS,
        FileType::IQ2_XS,
        FileType::IQ3_XXS,
        FileType::IQ3_XS,
        FileType::IQ1_S,
        FileType::IQ1_M,
    ] {
        let err = plan_types(&model, &tensors, &TypeOptions::new(ftype)).unwrap_err();
        assert!(
            matches!(err, RuleError::ImatrixRequired { .. }),
            "{ftype:?}"
        );
    }
}

#[test]
fn copy_keeps_every_type() {
    let (model, tensors) = gguf_tensors("tiny-llama.f16.gguf");
    let mut opts = TypeOptions::new(FileType::F32);
    opts.copy_only = true;
    let p = plan_types(&model, &tensors, &opts).unwrap();
    assert_eq!(p.len(), tensors.len());
    for t in &p {
        assert_eq!(t.new_type, tensors[t.source_index].1);
        assert!(!t.quantize && !t.allows_quantization);
    }
}
