//! IQ3_XXS and IQ3_S rows are byte-identical with llama-quantize's: every IQ3 tensor of
//! golden/pure-imatrix/{IQ3_XXS,IQ3_S}.gguf, quantized row by row from tensors.f32.gguf with
//! golden/imatrix.gguf; and both types without an imatrix (and with) against the per-tensor
//! hashes of llama.cpp's own quantizer in tests/data/iq3-reference/ (its README says how they
//! were made). Dequantizing the golden bytes gives llama.cpp's values (hashes there too), near
//! the input.

use crate::support;
use crate::support::quant_data::{golden_cases, open, GoldenCase};

use qforge::quant::{self, GgmlType};

use std::path::Path;

/// Quantize each case row by row and compare blocks; panics naming every tensor that differs.
fn assert_cases_match(label: &str, ty: GgmlType, cases: &[GoldenCase]) {
    let quantize = quant::quantizer(ty).expect("quantizer registered");
    let block = ty.type_size();
    let mut failures = Vec::new();
    for c in cases {
        let rb = ty.row_size(c.n_per_row as u64).unwrap() as usize;
        assert_eq!(c.want.len(), rb * (c.x.len() / c.n_per_row), "{}", c.name);
        let mut got = vec![0u8; c.want.len()];
        for (xr, or) in c.x.chunks_exact(c.n_per_row).zip(got.chunks_exact_mut(rb)) {
            quantize(xr, c.qw.as_deref(), or);
        }
        if let Some(m) = support::quant_data::block_mismatch(&got, &c.want, block) {
            failures.push(format!("{}: {m}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} tensors differ:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn check_pure_imatrix(ty: GgmlType) {
    let file = format!("pure-imatrix/{ty}.gguf");
    let cases = golden_cases(&file, ty);
    assert!(
        cases.len() >= 10,
        "{file}: only {} {ty} tensors",
        cases.len()
    );
    assert!(
        cases.iter().all(|c| c.qw.is_some()),
        "{file}: every tensor has an imatrix entry"
    );
    assert_cases_match(&file, ty, &cases);
}

#[test]
fn pure_imatrix_iq3_xxs() {
    check_pure_imatrix(GgmlType::IQ3_XXS);
}

#[test]
fn pure_imatrix_iq3_s() {
    check_pure_imatrix(GgmlType::IQ3_S);
}

/// Dequantizing the golden bytes gives values close to the input (the layout is read as written).
#[test]
fn golden_bytes_dequantize_near_the_input() {
    for ty in [GgmlType::IQ3_XXS, GgmlType::IQ3_S] {
        let file = format!("pure-imatrix/{ty}.gguf");
        let gold = open(&support::golden(&file));
        let mut checked = 0;
        for c in golden_cases(&file, ty) {
            if !["real_ffn", "real_attn", "gauss"]
                .iter()
                .any(|k| c.name.contains(k))
            {
                continue;
            }
            assert!(gold.tensor(&c.name).is_some());
            let mut y = vec![0f32; c.x.len()];
            quant::dequantize_rows(ty, &c.want, &mut y).unwrap();
            let err: f64 =
                c.x.iter()
                    .zip(&y)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum();
            let sig: f64 = c.x.iter().map(|a| (*a as f64).powi(2)).sum();
            let rel = (err / sig).sqrt();
            assert!(rel < 0.35, "{file} {}: relative RMS error {rel}", c.name);
            checked += 1;
        }
        assert!(checked >= 2, "{file}: {checked} tensors checked");
    }
}

/// Both types, both paths, every tensor of tensors.f32.gguf with whole super-block rows, against
/// tests/data/iq3-reference/no-imatrix.json.
#[test]
fn reference_hashes_with_and_without_imatrix() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iq3-reference/no-imatrix.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let input = open(&support::golden("tensors.f32.gguf"));
    let mut failures = Vec::new();
    let mut compared = 0;
    for (ty, key, with_imatrix) in [
        (GgmlType::IQ3_XXS, "IQ3_XXS", false),
        (GgmlType::IQ3_S, "IQ3_S", false),
        (GgmlType::IQ3_XXS, "IQ3_XXS imatrix", true),
        (GgmlType::IQ3_S, "IQ3_S imatrix", true),
    ] {
        let want = m[key]
            .as_object()
            .unwrap_or_else(|| panic!("{key} in {path:?}"));
        let quantize = quant::quantizer(ty).unwrap();
        for t in &input.tensors {
            let ne0 = t.ne[0] as usize;
            if t.ne.len() < 2 || !ne0.is_multiple_of(256) {
                continue;
            }
            let x = support::quant_data::f32s(input.tensor_data(t));
            let qw = if with_imatrix {
                Some(support::quant_data::golden_imatrix_weights(&t.name).unwrap())
            } else {
                None
            };
            let rb = ty.row_size(ne0 as u64).unwrap() as usize;
            let mut out = vec![0u8; x.len() / ne0 * rb];
            for (xr, or) in x.chunks_exact(ne0).zip(out.chunks_exact_mut(rb)) {
                quantize(xr, qw.as_deref(), or);
            }
            let expected = want[&t.name]
                .as_str()
                .unwrap_or_else(|| panic!("{key} {}", t.name));
            if support::sha256_hex(&out) != expected {
                failures.push(format!("{key} {}", t.name));
            }
            compared += 1;
        }
    }
    assert!(failures.is_empty(), "differ from llama.cpp: {failures:?}");
    assert_eq!(compared, 4 * 13);
}

/// Dequantizing every IQ3 tensor of the pure-imatrix goldens gives the f32 bits llama.cpp's
/// dequantize_row_iq3_xxs / _s give (tests/data/iq3-reference/no-imatrix.json).
#[test]
fn golden_bytes_dequantize_as_llama_cpp() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iq3-reference/no-imatrix.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for ty in [GgmlType::IQ3_XXS, GgmlType::IQ3_S] {
        let want = m[format!("{ty} dequantized")].as_object().unwrap();
        let cases = golden_cases(&format!("pure-imatrix/{ty}.gguf"), ty);
        assert_eq!(cases.len(), want.len(), "{ty}");
        for c in &cases {
            let mut y = vec![0f32; c.x.len()];
            quant::dequantize_rows(ty, &c.want, &mut y).unwrap();
            let bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(
                support::sha256_hex(&bytes),
                want[&c.name].as_str().unwrap(),
                "{ty} {}",
                c.name
            );
        }
    }
}
