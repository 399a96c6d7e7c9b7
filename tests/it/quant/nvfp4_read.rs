//! NVFP4 is read, not written: tests/data/nvfp4/nvfp4.gguf (one NVFP4 tensor whose scales take
//! every byte value) dequantized by qforge equals what llama-quantize makes of it as F32, both
//! through the library and as a whole file; asking for NVFP4 output says "not supported yet".

use std::path::{Path, PathBuf};

use crate::support;
use qforge::formats::gguf::GgufFile;
use qforge::quant::{self, GgmlType, QuantError};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/nvfp4")
        .join(rel)
}

#[test]
fn nvfp4_dequantizes_as_llama_quantize_does() {
    let input = GgufFile::open(data("nvfp4.gguf")).unwrap();
    let golden = GgufFile::open(data("F32.gguf")).unwrap();
    let t = input.tensor("blk.0.nvfp4.weight").unwrap();
    assert_eq!(t.ty, GgmlType::NVFP4);
    let g = golden.tensor("blk.0.nvfp4.weight").unwrap();
    assert_eq!(g.ty, GgmlType::F32);
    let mut y = vec![0.0f32; t.n_elements() as usize];
    quant::dequantize_rows(t.ty, input.tensor_data(t), &mut y).unwrap();
    let got: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(got == golden.tensor_data(g), "dequantized values differ");
}

#[test]
fn requantizing_nvfp4_to_f32_is_byte_identical() {
    let dir = support::temp_dir("nvfp4-f32");
    let out = dir.join("out.gguf");
    let input = data("nvfp4.gguf");
    support::qforge_ok(&[
        "quantize",
        "--allow-requantize",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "F32",
    ]);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(data("F32.gguf")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nvfp4_output_is_not_supported_yet() {
    assert!(quant::quantizer(GgmlType::NVFP4).is_none());
    let mut out = vec![0u8; 36];
    let err = quant::quantize_rows(GgmlType::NVFP4, &[0.5; 64], 64, None, &mut out).unwrap_err();
    assert!(matches!(err, QuantError::NotSupported(GgmlType::NVFP4)));
    assert_eq!(err.to_string(), "quantizing to NVFP4 is not supported yet");

    let dir = support::temp_dir("nvfp4-out");
    let out = dir.join("out.gguf");
    let input = support::golden("tiny-llama.f16.gguf");
    let o = support::qforge(&[
        "quantize",
        "--tensor-type",
        "attn_q=nvfp4",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q8_0",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("quantizing to NVFP4 is not supported yet"),
        "{err}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
