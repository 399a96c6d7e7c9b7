//! The IQ2 quantizers and dequantizers against llama.cpp:
//! - every tensor of golden/pure-imatrix/{IQ2_XXS,IQ2_XS,IQ2_S}.gguf quantized row by row from
//!   golden/tensors.f32.gguf with golden/imatrix.gguf equals the golden's bytes (the IQ2_S ftype
//!   stores IQ2_XS tensors, as llama-quantize's mix default says; fallback types are compared
//!   too);
//! - IQ2_S itself (with and without imatrix) and the three dequantizers against
//!   tests/data/iq2/reference.json: sha256 of what llama.cpp's own `quantize_iq2_s` and
//!   `dequantize_row_iq2_*` give (made by tests/data/iq2/make_reference.py);
//! - round trips: the error of each type, in the order the bit rates promise.

use crate::support;

use std::path::Path;

use qforge::formats::gguf::GgufFile;
use qforge::formats::imatrix::ImportanceWeights;
use qforge::quant::{self, GgmlType};

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn is_iq2(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ2_S)
}

/// Quantize `x` (rows of `n_per_row`) to `ty` with the registered CPU quantizer.
fn quantize(ty: GgmlType, x: &[f32], n_per_row: usize, qw: Option<&[f32]>) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / n_per_row * quant::row_bytes(ty, n_per_row).unwrap()];
    quant::quantize_rows(ty, x, n_per_row, qw, &mut out).unwrap();
    out
}

fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n];
    let d = quant::dequantizer(ty).unwrap();
    d(bytes, &mut y);
    y
}

/// Every tensor of `golden_rel` whose type we quantize, reproduced from tensors.f32.gguf with
/// imatrix.gguf; returns how many IQ2 tensors were compared.
fn check_against_golden(golden_rel: &str) -> usize {
    let input = GgufFile::open(support::golden("tensors.f32.gguf")).unwrap();
    let golden = GgufFile::open(support::golden(golden_rel)).unwrap();
    let im = ImportanceWeights::load(support::golden("imatrix.gguf")).unwrap();
    let mut compared_iq2 = 0;
    let mut failures = Vec::new();
    for g in &golden.tensors {
        if quant::quantizer(g.ty).is_none() || g.ty == GgmlType::F32 {
            continue;
        }
        let src = input.tensor(&g.name).unwrap();
        assert_eq!(src.ty, GgmlType::F32);
        let x = f32_values(input.tensor_data(src));
        let n_per_row = g.ne[0] as usize;
        let qw = im.for_tensor(&g.name, &g.name, &g.ne).unwrap();
        let out = quantize(g.ty, &x, n_per_row, qw);
        let expected = golden.tensor_data(g);
        if let Some(m) = support::quant_data::block_mismatch(&out, expected, g.ty.type_size()) {
            failures.push(format!(
                "{} ({}, imatrix: {}): {m}",
                g.name,
                g.ty,
                qw.is_some()
            ));
        }
        compared_iq2 += is_iq2(g.ty) as usize;
    }
    assert!(
        failures.is_empty(),
        "{golden_rel}: {} tensors differ:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    compared_iq2
}

#[test]
fn pure_imatrix_iq2_xxs_equals_llama_quantize() {
    assert!(check_against_golden("pure-imatrix/IQ2_XXS.gguf") >= 10);
}

#[test]
fn pure_imatrix_iq2_xs_equals_llama_quantize() {
    assert!(check_against_golden("pure-imatrix/IQ2_XS.gguf") >= 10);
}

#[test]
fn pure_imatrix_iq2_s_ftype_equals_llama_quantize() {
    // LLAMA_FTYPE_MOSTLY_IQ2_S quantizes to IQ2_XS by default: the golden shows it.
    let golden = GgufFile::open(support::golden("pure-imatrix/IQ2_S.gguf")).unwrap();
    assert!(golden.tensors.iter().any(|t| t.ty == GgmlType::IQ2_XS));
    assert!(check_against_golden("pure-imatrix/IQ2_S.gguf") >= 10);
}

/// tests/data/iq2/reference.json.
fn reference() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iq2/reference.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn iq2_s_and_the_dequantizers_equal_llama_cpps_functions() {
    let input = GgufFile::open(support::golden("tensors.f32.gguf")).unwrap();
    let im = ImportanceWeights::load(support::golden("imatrix.gguf")).unwrap();
    let goldens: Vec<(GgmlType, GgufFile)> = [GgmlType::IQ2_XXS, GgmlType::IQ2_XS]
        .into_iter()
        .map(|ty| {
            let f = GgufFile::open(support::golden(&format!("pure-imatrix/{ty}.gguf"))).unwrap();
            (ty, f)
        })
        .collect();
    let doc = reference();
    let tensors = doc["tensors"].as_array().unwrap();
    assert!(tensors.len() >= 10);
    let mut failures = Vec::new();
    let mut check = |what: String, got: &[u8], expected: &serde_json::Value| {
        if support::sha256_hex(got) != expected.as_str().unwrap() {
            failures.push(what);
        }
    };
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let ne0 = t["ne0"].as_u64().unwrap() as usize;
        let src = input.tensor(name).unwrap();
        let x = f32_values(input.tensor_data(src));
        let qw = im.for_tensor(name, name, &src.ne).unwrap();
        if let Some(sha) = t.get("iq2_s_imatrix") {
            let q = quantize(GgmlType::IQ2_S, &x, ne0, Some(qw.unwrap()));
            check(format!("{name}: IQ2_S with imatrix"), &q, sha);
        }
        let q = quantize(GgmlType::IQ2_S, &x, ne0, None);
        check(format!("{name}: IQ2_S without imatrix"), &q, &t["iq2_s"]);
        let y = dequantize(GgmlType::IQ2_S, &q, x.len());
        check(
            format!("{name}: IQ2_S dequantized"),
            &f32_bytes(&y),
            &t["dequantized"]["IQ2_S"],
        );
        for (ty, g) in &goldens {
            let gt = g.tensor(name).unwrap();
            assert_eq!(gt.ty, *ty);
            let y = dequantize(*ty, g.tensor_data(gt), x.len());
            check(
                format!("{name}: {ty} dequantized"),
                &f32_bytes(&y),
                &t["dequantized"][ty.to_string()],
            );
        }
    }
    assert!(failures.is_empty(), "differ from llama.cpp: {failures:#?}");
}

/// Relative RMS error of a round trip.
fn rel_rmse(x: &[f32], y: &[f32]) -> f64 {
    let num: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn round_trips_lose_less_with_more_bits() {
    let input = GgufFile::open(support::golden("tensors.f32.gguf")).unwrap();
    let im = ImportanceWeights::load(support::golden("imatrix.gguf")).unwrap();
    for name in ["blk.0.gauss_b.weight", "blk.0.real_ffn.weight"] {
        let t = input.tensor(name).unwrap();
        let x = f32_values(input.tensor_data(t));
        let n = t.ne[0] as usize;
        let qw = im.for_tensor(name, name, &t.ne).unwrap();
        let err = |ty: GgmlType| {
            let q = quantize(ty, &x, n, qw);
            rel_rmse(&x, &dequantize(ty, &q, x.len()))
        };
        let (xxs, xs, s) = (
            err(GgmlType::IQ2_XXS),
            err(GgmlType::IQ2_XS),
            err(GgmlType::IQ2_S),
        );
        // 2.06, 2.31 and 2.56 bits per weight: each step buys accuracy, and none is useless.
        assert!(s < xs && xs < xxs, "{name}: {xxs} {xs} {s}");
        assert!(xxs < 0.6 && s > 0.05, "{name}: {xxs} {xs} {s}");
    }
}

#[test]
fn iq2_m_mix_iq2_s_tensors_equal_llama_quantize() {
    // The IQ2_M mix of tiny-llama (mixes-imatrix/IQ2_M.json) is the only llama-quantize output
    // with IQ2_S tensors; the whole file also needs IQ3_S. Each IQ2_S tensor, quantized from the
    // f16 model with tiny-imatrix.gguf, must have the manifest's sha256.
    let m = support::Manifest::load("mixes-imatrix/IQ2_M.json");
    let input = GgufFile::open(support::golden("tiny-llama.f16.gguf")).unwrap();
    let im = ImportanceWeights::load(support::golden("tiny-imatrix.gguf")).unwrap();
    let mut compared = 0;
    let mut failures = Vec::new();
    for t in m.tensors().iter().filter(|t| t.ty == "IQ2_S") {
        let src = input.tensor(&t.name).unwrap();
        let n = src.ne.iter().product::<u64>() as usize;
        let x = dequantize(src.ty, input.tensor_data(src), n);
        let qw = im.for_tensor(&t.name, &t.name, &src.ne).unwrap();
        assert!(qw.is_some(), "{}: no imatrix entry", t.name);
        let q = quantize(GgmlType::IQ2_S, &x, src.ne[0] as usize, qw);
        if support::sha256_hex(&q) != t.sha256 {
            failures.push(t.name.clone());
        }
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} IQ2_S tensors");
    assert!(failures.is_empty(), "IQ2_S tensors differ: {failures:?}");
}
