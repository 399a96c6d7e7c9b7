//! IQ1_S and IQ1_M against llama.cpp:
//! - every IQ1 tensor of golden/pure-imatrix/{IQ1_S,IQ1_M}.gguf, quantized row by row from
//!   tensors.f32.gguf with the weights of golden/imatrix.gguf, equals the golden's bytes;
//! - the same tensors with other weights (all ones, golden/imatrix-partial.gguf's, and none for
//!   IQ1_M), and the dequantizers on the golden bytes, against tests/data/iq1/reference.json:
//!   sha256 of what llama.cpp's own `quantize_iq1_*` and `dequantize_row_iq1_*` give (made by
//!   tests/data/iq1/make_reference.py);
//! - the decoded golden bytes are near the inputs.

use crate::support;
use crate::support::quant_data::golden_cases;

use std::path::Path;

use qforge::formats::gguf::GgufFile;
use qforge::formats::imatrix::ImportanceWeights;
use qforge::quant::{self, GgmlType};

/// Quantizes every `ty` tensor of `golden_file` and compares bytes; returns tensors compared.
fn check(golden_file: &str, ty: GgmlType) -> usize {
    let quantize = quant::quantizer(ty).expect("quantizer registered");
    let block = ty.type_size();
    let cases = golden_cases(golden_file, ty);
    let mut failures = Vec::new();
    for c in &cases {
        let qw = c.qw.as_deref();
        assert!(qw.is_some(), "{}: no imatrix entry", c.name);
        let rb = ty.row_size(c.n_per_row as u64).unwrap() as usize;
        assert_eq!(c.want.len(), rb * (c.x.len() / c.n_per_row), "{}", c.name);
        let mut out = vec![0u8; c.want.len()];
        for (xr, or) in c.x.chunks_exact(c.n_per_row).zip(out.chunks_exact_mut(rb)) {
            quantize(xr, qw, or);
        }
        if let Some(m) = support::quant_data::block_mismatch(&out, &c.want, block) {
            failures.push(format!("{}: {m}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{golden_file}: {} of {} tensors differ:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
    cases.len()
}

#[test]
fn iq1_s_matches_llama_quantize() {
    // 18 input tensors: the 1-D norm stays F32, widths 384/96 fall back to IQ4_NL (and the
    // 384-wide real_attn too), width 100 to F16.
    assert_eq!(check("pure-imatrix/IQ1_S.gguf", GgmlType::IQ1_S), 13);
}

#[test]
fn iq1_m_matches_llama_quantize() {
    assert_eq!(check("pure-imatrix/IQ1_M.gguf", GgmlType::IQ1_M), 13);
}

/// The dequantizers read the golden bytes as llama.cpp means them: on the Gaussian tensors the
/// decoded values are close to the inputs (a misread layout decodes to noise, error ≥ 1).
#[test]
fn golden_iq1_bytes_dequantize_near_the_inputs() {
    for (file, ty, bound) in [
        ("pure-imatrix/IQ1_S.gguf", GgmlType::IQ1_S, 0.7),
        ("pure-imatrix/IQ1_M.gguf", GgmlType::IQ1_M, 0.6),
    ] {
        for c in golden_cases(file, ty) {
            if !c.name.contains("gauss") && !c.name.contains("real_ffn") {
                continue;
            }
            let mut y = vec![0f32; c.x.len()];
            quant::dequantize_rows(ty, &c.want, &mut y).unwrap();
            let (mut err, mut norm) = (0f64, 0f64);
            for (&a, &b) in c.x.iter().zip(&y) {
                err += ((a - b) as f64).powi(2);
                norm += (a as f64).powi(2);
            }
            let rel = (err / norm).sqrt();
            eprintln!("{file} {}: relative RMS error {rel:.4}", c.name);
            assert!(rel < bound, "{file} {}: relative RMS error {rel}", c.name);
        }
    }
}

/// tests/data/iq1/reference.json.
fn reference() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iq1/reference.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn other_weights_and_the_dequantizers_equal_llama_cpps_functions() {
    let input = GgufFile::open(support::golden("tensors.f32.gguf")).unwrap();
    let partial = ImportanceWeights::load(support::golden("imatrix-partial.gguf")).unwrap();
    let doc = reference();
    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 13);
    let mut failures = Vec::new();
    let mut compared = 0;
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let ne0 = t["ne0"].as_u64().unwrap() as usize;
        let src = input.tensor(name).unwrap();
        let x = support::quant_data::f32s(input.tensor_data(src));
        let ones = vec![1.0f32; ne0];
        let partial_w = partial.for_tensor(name, name, &src.ne).unwrap();
        for (ty, key) in [(GgmlType::IQ1_S, "iq1_s"), (GgmlType::IQ1_M, "iq1_m")] {
            let rb = quant::row_bytes(ty, ne0).unwrap();
            for (tag, sha) in t[key].as_object().unwrap() {
                let qw = match tag.as_str() {
                    "ones" => Some(ones.as_slice()),
                    "partial" => Some(partial_w.expect("partial imatrix entry")),
                    "none" => None,
                    other => panic!("unknown weights '{other}'"),
                };
                let mut q = vec![0u8; x.len() / ne0 * rb];
                quant::quantize_rows(ty, &x, ne0, qw, &mut q).unwrap();
                if support::sha256_hex(&q) != sha.as_str().unwrap() {
                    failures.push(format!("{name}: {ty} with weights '{tag}'"));
                }
                compared += 1;
            }
            let golden =
                GgufFile::open(support::golden(&format!("pure-imatrix/{ty}.gguf"))).unwrap();
            let g = golden.tensor(name).unwrap();
            assert_eq!(g.ty, ty);
            let mut y = vec![0f32; x.len()];
            quant::dequantize_rows(ty, golden.tensor_data(g), &mut y).unwrap();
            let bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
            let want = &t[format!("{key}_dequantized")];
            if support::sha256_hex(&bytes) != want.as_str().unwrap() {
                failures.push(format!("{name}: {ty} dequantized"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differ from llama.cpp:\n  {}",
        failures.join("\n  ")
    );
    // 13 tensors × (IQ1_S: ones + partial, IQ1_M: ones + partial + none), less const's partial.
    assert_eq!(compared, 13 * 5 - 2);
}
