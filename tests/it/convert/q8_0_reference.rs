//! The converter's Q8_0 (gguf-py's numpy quantizer, reproduced in `model::encode`) against
//! ggml's `quantize_row_q8_0_ref`, as llama-quantize wrote it into the golden pure/Q8_0.gguf:
//! every adversarial tensor of tensors.f32.gguf (subnormals, ties, outliers, constant rows)
//! must give the same bytes.

use crate::support;

use qforge::convert::encode::quantize_q8_0;
use qforge::formats::gguf::GgufFile;

#[test]
fn gguf_py_q8_0_equals_ggml_reference_on_the_adversarial_tensors() {
    let src = GgufFile::open(support::golden("tensors.f32.gguf")).unwrap();
    let golden = GgufFile::open(support::golden("pure/Q8_0.gguf")).unwrap();
    let mut compared = 0;
    for g in &golden.tensors {
        if g.ty.name() != "Q8_0" {
            continue;
        }
        let s = src.tensor(&g.name).unwrap();
        let x: Vec<f32> = src
            .tensor_data(s)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut out = vec![0u8; x.len() / 32 * 34];
        quantize_q8_0(&x, &mut out);
        assert!(out == golden.tensor_data(g), "{} differs", g.name);
        compared += 1;
    }
    assert!(compared >= 15, "only {compared} tensors compared");
}
