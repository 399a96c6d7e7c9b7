//! Q1_0, Q2_0 and MXFP4 against llama-quantize, tensor by tensor (goldens in tests/data, made
//! as tests/data/README.md says): every tensor of the output, quantized here from the same input
//! with the type llama-quantize chose, must have the same bytes — `--pure` Q2_0 of
//! golden/tensors.f32.gguf (with its Q4_0 / F16 fallbacks), the Q1_0 and Q2_0 mixes of
//! tiny-llama, and MXFP4_MOE of a small mixture-of-experts model. The type rules must make the
//! same choices, and Q1_0 must refuse rows it cannot block, as llama-quantize does.

use std::path::{Path, PathBuf};

use crate::support::{self, Manifest};
use qforge::formats::gguf::GgufFile;
use qforge::quant::rules::{plan_types, RuleError, TypeOptions};
use qforge::quant::{self, FileType, GgmlType};

/// `rel` under tests/data.
fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// A tensor of `f` as f32 values.
fn values(f: &GgufFile, t: &qforge::formats::gguf::TensorInfo) -> Vec<f32> {
    let mut out = vec![0.0f32; t.n_elements() as usize];
    let bytes = f.tensor_data(t);
    let n_per_row = t.ne[0] as usize;
    let row_bytes = t.ty.row_size(n_per_row as u64).unwrap() as usize;
    for (b, y) in bytes
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(n_per_row))
    {
        quant::dequantize_rows(t.ty, b, y).unwrap();
    }
    out
}

/// Quantize every tensor of `input` to the type `expected` (a list of name, type, bytes) has for
/// it and compare; tensors that keep their type must be copied unchanged. Returns how many
/// tensors of `own` were compared.
fn check_tensors(input: &Path, expected: &[(String, String, String)], own: GgmlType) -> usize {
    let f = GgufFile::open(input).unwrap();
    let mut failures = Vec::new();
    let mut own_count = 0;
    for (name, ty_name, sha) in expected {
        let t = f
            .tensor(name)
            .unwrap_or_else(|| panic!("{name}: not in the input"));
        let ty = GgmlType::from_name(ty_name).unwrap();
        let got = if ty == t.ty {
            f.tensor_data(t).to_vec()
        } else {
            let x = values(&f, t);
            let n_per_row = t.ne[0] as usize;
            let mut out =
                vec![0u8; quant::row_bytes(ty, n_per_row).unwrap() * (x.len() / n_per_row)];
            quant::quantize_rows(ty, &x, n_per_row, None, &mut out).unwrap();
            out
        };
        if support::sha256_hex(&got) != *sha {
            failures.push(format!("{name} ({ty})"));
        }
        own_count += (ty == own) as usize;
    }
    assert!(
        failures.is_empty(),
        "{}: tensors differ from llama-quantize's: {failures:?}",
        input.display()
    );
    own_count
}

/// (name, type, sha256) of a manifest's tensors.
fn manifest_tensors(m: &Manifest) -> Vec<(String, String, String)> {
    m.tensors()
        .into_iter()
        .map(|t| (t.name, t.ty, t.sha256))
        .collect()
}

/// The plan's (name, type) against a manifest's.
fn assert_plan(input: &Path, opts: &TypeOptions, expected: &[(String, String, String)]) {
    let f = GgufFile::open(input).unwrap();
    let model = qforge::pipeline::quantize::model_info_from_metadata(&f.metadata).unwrap();
    let tensors: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let plan = plan_types(&model, &tensors, opts).unwrap();
    let got: Vec<(String, String)> = plan
        .iter()
        .map(|p| (p.name.clone(), p.new_type.name().to_string()))
        .collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(n, t, _)| (n.clone(), t.clone()))
        .collect();
    assert_eq!(got, want, "{}: planned types", input.display());
}

#[test]
fn pure_q2_0_of_the_adversarial_tensors_matches_tensor_by_tensor() {
    let golden = GgufFile::open(data("pure/Q2_0.gguf")).unwrap();
    let expected: Vec<(String, String, String)> = golden
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.ty.name().to_string(),
                support::sha256_hex(golden.tensor_data(t)),
            )
        })
        .collect();
    let input = support::golden("tensors.f32.gguf");
    // Rows of 96 fall back to Q4_0, rows of 100 to F16, as tensor_type_fallback says.
    let ty_of = |n: &str| &expected.iter().find(|e| e.0 == n).unwrap().1;
    assert_eq!(ty_of("blk.0.odd96.weight"), "Q4_0");
    assert_eq!(ty_of("blk.0.odd100.weight"), "F16");
    assert_eq!(ty_of("blk.0.odd384.weight"), "Q2_0");
    let mut opts = TypeOptions::new(FileType::Q2_0);
    opts.pure = true;
    assert_plan(&input, &opts, &expected);
    assert!(check_tensors(&input, &expected, GgmlType::Q2_0) >= 14);
}

#[test]
fn q1_0_and_q2_0_mixes_of_tiny_llama_match_tensor_by_tensor() {
    let input = support::golden("tiny-llama.f16.gguf");
    for (ftype, own) in [
        (FileType::Q1_0, GgmlType::Q1_0),
        (FileType::Q2_0, GgmlType::Q2_0),
    ] {
        let m = Manifest::load_path(&data(&format!("mixes/{}.json", ftype.name())));
        let expected = manifest_tensors(&m);
        assert_plan(&input, &TypeOptions::new(ftype), &expected);
        assert!(check_tensors(&input, &expected, own) >= 50, "{ftype:?}");
    }
}

#[test]
fn mxfp4_moe_of_a_small_moe_model_matches_tensor_by_tensor() {
    let input = data("moe/tiny-moe.f16.gguf");
    let expected = manifest_tensors(&Manifest::load_path(&data("moe/MXFP4_MOE.json")));
    assert_plan(&input, &TypeOptions::new(FileType::MXFP4_MOE), &expected);
    // Two layers × three expert tensors.
    assert_eq!(check_tensors(&input, &expected, GgmlType::MXFP4), 6);
}

#[test]
fn q1_0_refuses_rows_it_cannot_block_naming_the_tensor() {
    // llama-quantize: "no tensor type fallback is defined for type q1_0", after a warning
    // naming the first such tensor in output order (tests/data/README.md).
    let f = GgufFile::open(support::golden("tensors.f32.gguf")).unwrap();
    let model = qforge::pipeline::quantize::model_info_from_metadata(&f.metadata).unwrap();
    let tensors: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let mut opts = TypeOptions::new(FileType::Q1_0);
    opts.pure = true;
    match plan_types(&model, &tensors, &opts) {
        Err(RuleError::NoFallback { tensor, ty, ncols }) => {
            assert_eq!(tensor, "blk.0.odd100.weight");
            assert_eq!(ty, GgmlType::Q1_0);
            assert_eq!(ncols, 100);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Rows of 384 are three blocks: no refusal for them alone.
    let only_384: Vec<_> = tensors
        .iter()
        .filter(|t| t.0 == "blk.0.odd384.weight")
        .cloned()
        .collect();
    let p = plan_types(&model, &only_384, &opts).unwrap();
    assert_eq!(p[0].new_type, GgmlType::Q1_0);
}
