//! The legacy, IQ4 and ternary quantizers against llama-quantize: every tensor of
//! golden/tensors.f32.gguf quantized row by row must equal, byte for byte, the same tensor in
//! golden/pure/<TYPE>.gguf (and, with golden/imatrix.gguf, in golden/pure-imatrix/<TYPE>.gguf).
//! Tensors the golden stored in another type (fallbacks) are compared too when we quantize that
//! type, else skipped.

use crate::support;

use std::collections::HashMap;

use qforge::formats::gguf::GgufFile;
use qforge::quant::{self, GgmlType};

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A test-local reader of golden/imatrix.gguf (the real one lives in src/formats/imatrix.rs):
/// per tensor, the importance weights llama-quantize derives — in_sum2 / count with the count
/// rounded to an integer, or all ones when the count is zero (tools/quantize load_imatrix).
fn load_imatrix(rel: &str) -> HashMap<String, Vec<f32>> {
    let f = GgufFile::open(support::golden(rel)).unwrap();
    let mut out = HashMap::new();
    for t in &f.tensors {
        let Some(name) = t.name.strip_suffix(".in_sum2") else {
            continue;
        };
        assert_eq!(t.ty, GgmlType::F32);
        let sums = f32_values(f.tensor_data(t));
        let counts_info = f
            .tensor(&format!("{name}.counts"))
            .unwrap_or_else(|| panic!("{name}: no counts"));
        let counts = f32_values(f.tensor_data(counts_info));
        let ne0 = t.ne[0] as usize;
        assert_eq!(sums.len(), ne0 * counts.len());
        let mut w = vec![0.0f32; sums.len()];
        for (j, &c) in counts.iter().enumerate() {
            let count = c.round() as i64 as f32;
            for i in 0..ne0 {
                w[j * ne0 + i] = if count > 0.0 {
                    sums[j * ne0 + i] / count
                } else {
                    1.0
                };
            }
        }
        out.insert(name.to_string(), w);
    }
    out
}

/// Quantize every tensor of tensors.f32.gguf whose type in `golden_rel` we can produce and compare
/// the bytes. Returns how many tensors of `ty` itself were compared.
fn check_against_golden(
    golden_rel: &str,
    ty: GgmlType,
    imatrix: Option<&HashMap<String, Vec<f32>>>,
) {
    let input = GgufFile::open(support::golden("tensors.f32.gguf")).unwrap();
    let golden = GgufFile::open(support::golden(golden_rel)).unwrap();
    let mut compared_own = 0;
    let mut failures = Vec::new();
    for g in &golden.tensors {
        let Some(quantize) = supported(g.ty) else {
            continue;
        };
        let src = input.tensor(&g.name).unwrap();
        assert_eq!(src.ty, GgmlType::F32);
        assert_eq!(src.ne, g.ne);
        let x = f32_values(input.tensor_data(src));
        let n_per_row = g.ne[0] as usize;
        let row_bytes = g.ty.row_size(n_per_row as u64).unwrap() as usize;
        let qw = imatrix.and_then(|m| m.get(&g.name)).map(|w| {
            assert_eq!(w.len(), n_per_row, "{}: imatrix length", g.name);
            w.as_slice()
        });
        let mut out = vec![0u8; x.len() / n_per_row * row_bytes];
        for (xr, or) in x
            .chunks_exact(n_per_row)
            .zip(out.chunks_exact_mut(row_bytes))
        {
            quantize(xr, qw, or);
        }
        let expected = golden.tensor_data(g);
        if out != expected {
            let block = g.ty.type_size();
            let first = out
                .chunks(block)
                .zip(expected.chunks(block))
                .position(|(a, b)| a != b)
                .unwrap();
            let n_bad = out
                .chunks(block)
                .zip(expected.chunks(block))
                .filter(|(a, b)| a != b)
                .count();
            failures.push(format!(
                "{} ({}, imatrix: {}): {n_bad} of {} blocks differ, first #{first}: ours {:02x?} expected {:02x?}",
                g.name,
                g.ty,
                qw.is_some(),
                out.len() / block,
                &out[first * block..(first + 1) * block],
                &expected[first * block..(first + 1) * block],
            ));
        }
        if g.ty == ty {
            compared_own += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{golden_rel}: {} tensors differ:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert!(
        compared_own >= 10,
        "{golden_rel}: only {compared_own} {ty} tensors compared"
    );
}

/// The quantizer for a golden tensor's type, when it is one of the types these tests cover.
fn supported(ty: GgmlType) -> Option<quant::RowQuantizer> {
    use GgmlType::*;
    match ty {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | IQ4_XS | TQ1_0 | TQ2_0 => {
            Some(quant::quantizer(ty).expect("quantizer registered"))
        }
        _ => None,
    }
}

macro_rules! golden_tests {
    ($($name:ident: $ty:ident, $file:literal, $imatrix:expr;)*) => {$(
        #[test]
        fn $name() {
            let im = if $imatrix { Some(load_imatrix("imatrix.gguf")) } else { None };
            check_against_golden($file, GgmlType::$ty, im.as_ref());
        }
    )*};
}

golden_tests! {
    pure_q4_0: Q4_0, "pure/Q4_0.gguf", false;
    pure_q4_1: Q4_1, "pure/Q4_1.gguf", false;
    pure_q5_0: Q5_0, "pure/Q5_0.gguf", false;
    pure_q5_1: Q5_1, "pure/Q5_1.gguf", false;
    pure_q8_0: Q8_0, "pure/Q8_0.gguf", false;
    pure_iq4_nl: IQ4_NL, "pure/IQ4_NL.gguf", false;
    pure_iq4_xs: IQ4_XS, "pure/IQ4_XS.gguf", false;
    pure_tq1_0: TQ1_0, "pure/TQ1_0.gguf", false;
    pure_tq2_0: TQ2_0, "pure/TQ2_0.gguf", false;
    pure_imatrix_q4_0: Q4_0, "pure-imatrix/Q4_0.gguf", true;
    pure_imatrix_q4_1: Q4_1, "pure-imatrix/Q4_1.gguf", true;
    pure_imatrix_q5_0: Q5_0, "pure-imatrix/Q5_0.gguf", true;
    pure_imatrix_q5_1: Q5_1, "pure-imatrix/Q5_1.gguf", true;
    pure_imatrix_q8_0: Q8_0, "pure-imatrix/Q8_0.gguf", true;
    pure_imatrix_iq4_nl: IQ4_NL, "pure-imatrix/IQ4_NL.gguf", true;
    pure_imatrix_iq4_xs: IQ4_XS, "pure-imatrix/IQ4_XS.gguf", true;
}
