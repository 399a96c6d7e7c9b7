//! Q2_K … Q6_K rows are byte-identical with llama-quantize's, without and with an imatrix.

use crate::support;

use crate::support::quant_data::{f32s, imatrix_weights_for, open};

use qforge::quant::{kquants, GgmlType};

/// Quantizes every tensor of tensors.f32.gguf whose golden counterpart in `golden_rel` has type
/// `ty`, row by row, and compares the bytes. Returns how many tensors were compared.
fn check(golden_rel: &str, ty: GgmlType, with_imatrix: bool) -> usize {
    let input = open(&support::golden("tensors.f32.gguf"));
    let golden = open(&support::golden(golden_rel));
    let imatrix = with_imatrix.then(|| open(&support::golden("imatrix.gguf")));
    let quantize = kquants::quantizer(ty).unwrap();
    let mut compared = 0;
    let mut failures = Vec::new();
    for t in &input.tensors {
        let g = golden.tensor(&t.name).unwrap();
        if g.ty != ty {
            continue;
        }
        assert_eq!(t.ty, GgmlType::F32);
        let ne0 = t.ne[0] as usize;
        let x = f32s(input.tensor_data(t));
        let qw = imatrix
            .as_ref()
            .map(|m| imatrix_weights_for(m, &t.name).expect("imatrix entry"));
        if let Some(w) = &qw {
            assert_eq!(w.len(), ne0, "{}: imatrix width", t.name);
        }
        let expected = golden.tensor_data(g);
        let rb = ty.row_size(ne0 as u64).unwrap() as usize;
        assert_eq!(expected.len(), rb * (x.len() / ne0));
        let mut row_out = vec![0u8; rb];
        let mut bad_blocks = 0;
        let mut first_bad = None;
        for (r, (xr, er)) in x
            .chunks_exact(ne0)
            .zip(expected.chunks_exact(rb))
            .enumerate()
        {
            quantize(xr, qw.as_deref(), &mut row_out);
            for (b, (ob, eb)) in row_out
                .chunks_exact(ty.type_size())
                .zip(er.chunks_exact(ty.type_size()))
                .enumerate()
            {
                if ob != eb {
                    bad_blocks += 1;
                    first_bad.get_or_insert((r, b));
                }
            }
        }
        if bad_blocks > 0 {
            failures.push(format!(
                "{}: {bad_blocks} blocks differ, first at (row, block) {:?}",
                t.name,
                first_bad.unwrap()
            ));
        }
        compared += 1;
    }
    assert!(
        failures.is_empty(),
        "{golden_rel} ({ty}, imatrix {with_imatrix}):\n  {}",
        failures.join("\n  ")
    );
    compared
}

fn check_both(ftype: &str, ty: GgmlType) {
    let plain = check(&format!("pure/{ftype}.gguf"), ty, false);
    let weighted = check(&format!("pure-imatrix/{ftype}.gguf"), ty, true);
    // 18 input tensors: the 1-D norm stays F32 and the widths 384/96/100 fall back to other types.
    assert_eq!(plain, 13, "{ftype}: tensors compared without imatrix");
    assert_eq!(weighted, 13, "{ftype}: tensors compared with imatrix");
}

#[test]
fn q2_k_matches_llama_quantize() {
    check_both("Q2_K", GgmlType::Q2_K);
}

#[test]
fn q3_k_matches_llama_quantize() {
    check_both("Q3_K_S", GgmlType::Q3_K);
}

#[test]
fn q4_k_matches_llama_quantize() {
    check_both("Q4_K_S", GgmlType::Q4_K);
}

#[test]
fn q5_k_matches_llama_quantize() {
    check_both("Q5_K_S", GgmlType::Q5_K);
}

#[test]
fn q6_k_matches_llama_quantize() {
    check_both("Q6_K", GgmlType::Q6_K);
}
