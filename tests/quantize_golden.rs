//! Whole-file byte equality with llama-quantize: every golden in pure/, pure-imatrix/, mixes/ and
//! mixes-imatrix/ reproduced by `qforge quantize` with the same arguments, on each device.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `qforge quantize ARGS… INPUT OUT TYPE 2` in the golden folder (so stored imatrix file
/// names match) and return the output path.
fn run_quantize(tag: &str, device: &str, args: &[&str], input: &Path, ty: &str) -> PathBuf {
    let dir = common::temp_dir(&format!("golden-{tag}-{device}"));
    let out = dir.join("out.gguf");
    let res = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .current_dir(common::golden(""))
        .arg("quantize")
        .args(["--device", device])
        .args(args)
        .arg(input)
        .arg(&out)
        .arg(ty)
        .arg("2")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "qforge quantize {args:?} {ty} failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

fn check_pure(ty: &str, imatrix: Option<&str>, golden: &str, device: &str) {
    let mut args = vec!["--pure"];
    if let Some(im) = imatrix {
        args.extend(["--imatrix", im]);
    }
    let out = run_quantize(
        &golden.replace('/', "_"),
        device,
        &args,
        Path::new("tensors.f32.gguf"),
        ty,
    );
    let expected = std::fs::read(common::golden(golden)).unwrap();
    let got = std::fs::read(&out).unwrap();
    if got != expected {
        // Name the tensors that differ.
        let m = qforge::formats::gguf::GgufFile::open(common::golden(golden)).unwrap();
        let f = qforge::formats::gguf::GgufFile::open(&out).unwrap();
        let mut diffs = Vec::new();
        for (a, b) in f.tensors.iter().zip(&m.tensors) {
            if a.name != b.name || a.ty != b.ty || f.tensor_data(a) != m.tensor_data(b) {
                diffs.push(format!(
                    "{} {} (expected {} {})",
                    a.name, a.ty, b.name, b.ty
                ));
            }
        }
        panic!(
            "{golden}: output differs ({} vs {} bytes); tensors: {diffs:?}",
            got.len(),
            expected.len()
        );
    }
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

fn check_mix(manifest: &str, args: &[&str], ty: &str, device: &str) {
    let m = common::Manifest::load(manifest);
    let out = run_quantize(
        &manifest.replace('/', "_"),
        device,
        args,
        Path::new("tiny-llama.f16.gguf"),
        ty,
    );
    common::assert_matches_manifest(&out, &m);
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

macro_rules! golden_tests {
    ($device:ident) => {
        mod $device {
            use super::*;
            const DEV: &str = stringify!($device);

            macro_rules! pure {
                ($name:ident, $ty:literal) => {
                    #[test]
                    fn $name() {
                        check_pure($ty, None, concat!("pure/", $ty, ".gguf"), DEV);
                    }
                };
            }
            macro_rules! mix {
                ($name:ident, $ty:literal) => {
                    #[test]
                    fn $name() {
                        check_mix(concat!("mixes/", $ty, ".json"), &[], $ty, DEV);
                    }
                };
            }

            // Foundation: legacy and float types.
            pure!(pure_q4_0, "Q4_0");
            pure!(pure_q4_1, "Q4_1");
            pure!(pure_q5_0, "Q5_0");
            pure!(pure_q5_1, "Q5_1");
            pure!(pure_q8_0, "Q8_0");
            pure!(pure_f16, "F16");
            pure!(pure_bf16, "BF16");
            pure!(pure_f32, "F32");
            mix!(mix_q4_0, "Q4_0");
            mix!(mix_q4_1, "Q4_1");
            mix!(mix_q5_0, "Q5_0");
            mix!(mix_q5_1, "Q5_1");
            mix!(mix_q8_0, "Q8_0");
            mix!(mix_f16, "F16");
            mix!(mix_bf16, "BF16");
            mix!(mix_f32, "F32");
        }
    };
}

golden_tests!(cpu);
