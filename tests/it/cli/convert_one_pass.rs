//! `qforge convert MODEL_DIR --outtype TYPE` (and `quantize MODEL_DIR`) in one pass equals
//! convert_hf_to_gguf.py + llama-quantize: against the llama.cpp golden for tiny-bpe, and against
//! our own two-step path (each step golden-proven) for tiny-llama with and without an imatrix.

use crate::support;

use std::path::Path;
use std::process::Command;

fn qforge(args: &[&str], cwd: &Path) {
    let res = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "qforge {args:?}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn tiny_bpe_one_pass_q4_k_m_equals_llama_cpp() {
    let dir = support::temp_dir("onepass-bpe");
    let out = dir.join("q4km.gguf");
    let g = support::golden("");
    qforge(
        &[
            "convert",
            "tiny-bpe",
            "--outtype",
            "Q4_K_M",
            "--device",
            "cpu",
            "-o",
            out.to_str().unwrap(),
        ],
        &g,
    );
    support::assert_matches_manifest(
        &out,
        &support::Manifest::load("convert-bpe/Q4_K_M-from-f16.json"),
    );
    // `quantize` accepts the directory as INPUT too.
    let out2 = dir.join("q4km-quantize.gguf");
    qforge(
        &[
            "quantize",
            "--device",
            "cpu",
            "tiny-bpe",
            out2.to_str().unwrap(),
            "Q4_K_M",
        ],
        &g,
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tiny_llama_one_pass_equals_two_steps() {
    let dir = support::temp_dir("onepass-llama");
    let g = support::golden("");
    let f32 = dir.join("f32.gguf");
    qforge(
        &[
            "convert",
            "tiny-llama",
            "--outtype",
            "f32",
            "-o",
            f32.to_str().unwrap(),
        ],
        &g,
    );
    support::assert_matches_manifest(&f32, &support::Manifest::load("convert/f32.json"));
    for (ty, extra) in [
        ("Q4_K_M", vec![]),
        ("Q5_0", vec![]),
        ("Q3_K_M", vec!["--imatrix", "tiny-imatrix.gguf"]),
    ] {
        let two = dir.join(format!("two-{ty}.gguf"));
        let one = dir.join(format!("one-{ty}.gguf"));
        let mut a = vec!["quantize", "--device", "cpu"];
        a.extend(&extra);
        a.extend([f32.to_str().unwrap(), two.to_str().unwrap(), ty]);
        qforge(&a, &g);
        let mut b = vec![
            "convert",
            "tiny-llama",
            "--device",
            "cpu",
            "--outtype",
            ty,
            "-o",
            one.to_str().unwrap(),
        ];
        b.extend(&extra);
        qforge(&b, &g);
        assert!(
            std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
            "{ty}: one pass differs from two steps"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
