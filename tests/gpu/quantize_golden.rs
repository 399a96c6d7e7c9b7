//! Whole-file byte equality with llama-quantize: every golden in pure/, pure-imatrix/, mixes/ and
//! mixes-imatrix/ (and this checkout's tests/data/mixes-imatrix/) reproduced by `qforge quantize`
//! with the same arguments, on each device.

use crate::devices::Device;
use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use qforge::gpu::GpuQuantizer;
use qforge::quant::GgmlType;

/// Run `qforge quantize ARGS… INPUT OUT TYPE 2` in the golden folder (so stored imatrix file
/// names match) and return the output path.
fn run_quantize(tag: &str, device: &str, args: &[&str], input: &Path, ty: &str) -> PathBuf {
    let dir = support::temp_dir(&format!("golden-{tag}-{device}"));
    let out = dir.join("out.gguf");
    let res = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .current_dir(support::golden(""))
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

/// The golden's tensor types that have no GPU kernel (F32 is a copy and needs none).
fn without_gpu_kernel(types: impl IntoIterator<Item = GgmlType>) -> Vec<GgmlType> {
    let mut v: Vec<GgmlType> = types
        .into_iter()
        .filter(|&t| t != GgmlType::F32 && !GpuQuantizer::has_kernel(t, false))
        .collect();
    v.dedup();
    v
}

/// `--device gpu` asked for a type without a GPU kernel: it must refuse, naming the type, and
/// leave no output file — never write other bytes.
fn assert_gpu_refuses(tag: &str, args: &[&str], input: &Path, ty: &str, missing: &[GgmlType]) {
    let dir = support::temp_dir(&format!("golden-{tag}-gpu-refused"));
    let out = dir.join("out.gguf");
    let res = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .current_dir(support::golden(""))
        .args(["quantize", "--device", "gpu"])
        .args(args)
        .arg(input)
        .arg(&out)
        .arg(ty)
        .arg("2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success(),
        "{ty}: --device gpu succeeded without a kernel for {missing:?}"
    );
    assert!(
        missing
            .iter()
            .any(|t| stderr.contains(&format!("quantizing to {t}")) && stderr.contains("GPU")),
        "{ty}: the refusal does not name the type: {stderr}"
    );
    assert!(!out.exists(), "{ty}: a refused run left {}", out.display());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "{ty}: files left behind"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn check_pure(ty: &str, imatrix: Option<&str>, golden: &str, device: &str) {
    check_pure_at(ty, imatrix, &support::golden(golden), device);
}

/// [`check_pure`] against the golden file at `golden`.
fn check_pure_at(ty: &str, imatrix: Option<&str>, golden: &Path, device: &str) {
    let mut args = vec!["--pure"];
    if let Some(im) = imatrix {
        args.extend(["--imatrix", im]);
    }
    let tag = golden.to_string_lossy().replace('/', "_");
    if device == "gpu" {
        let g = qforge::formats::gguf::GgufFile::open(golden).unwrap();
        let missing = without_gpu_kernel(g.tensors.iter().map(|t| t.ty));
        if !missing.is_empty() {
            return assert_gpu_refuses(&tag, &args, Path::new("tensors.f32.gguf"), ty, &missing);
        }
    }
    let out = run_quantize(&tag, device, &args, Path::new("tensors.f32.gguf"), ty);
    let golden = golden.display().to_string();
    let expected = std::fs::read(&golden).unwrap();
    let got = std::fs::read(&out).unwrap();
    if got != expected {
        // Name the tensors that differ.
        let m = qforge::formats::gguf::GgufFile::open(&golden).unwrap();
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
    let m = support::Manifest::load(manifest);
    check_mix_of(
        &m,
        &manifest.replace('/', "_"),
        Path::new("tiny-llama.f16.gguf"),
        args,
        ty,
        device,
    );
}

/// `check_mix` against a manifest of this checkout's tests/data (`rel` under it), for mixes the
/// shared golden set lacks.
fn check_local_mix(rel: &str, args: &[&str], ty: &str, device: &str) {
    let m = support::Manifest::load_path(&test_data(rel));
    check_mix_of(
        &m,
        &rel.replace('/', "_"),
        Path::new("tiny-llama.f16.gguf"),
        args,
        ty,
        device,
    );
}

/// `qforge quantize ARGS INPUT OUT TYPE 2` against manifest `m`.
fn check_mix_of(
    m: &support::Manifest,
    tag: &str,
    input: &Path,
    args: &[&str],
    ty: &str,
    device: &str,
) {
    if device == "gpu" {
        let missing = without_gpu_kernel(
            m.tensors()
                .iter()
                .map(|t| GgmlType::from_name(&t.ty).unwrap()),
        );
        if !missing.is_empty() {
            return assert_gpu_refuses(tag, args, input, ty, &missing);
        }
    }
    let out = run_quantize(tag, device, args, input, ty);
    support::assert_matches_manifest(&out, m);
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

/// `rel` under tests/data: the goldens made for this repository (tests/data/README.md).
fn test_data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// The `$ty` mix with tiny-imatrix.gguf, against tests/data/mixes-imatrix/`$ty`.json (made
/// here: see the README there), on each device.
macro_rules! local_mix_im {
    ($name:ident, $ty:literal) => {
        device_test!($name, cpu, gpu);
        fn $name(device: Device) {
            check_local_mix(
                concat!("mixes-imatrix/", $ty, ".json"),
                &["--imatrix", "tiny-imatrix.gguf"],
                $ty,
                device.name(),
            );
        }
    };
}

/// A llama-quantize golden kept in tests/data (`$manifest`, relative to it; the README beside it
/// has the command), reproduced from `$input` with `$args`, on each device.
macro_rules! local {
    ($name:ident, $manifest:literal, $input:literal, $ty:literal, [$($arg:literal),*]) => {
        device_test!($name, cpu, gpu);
        fn $name(device: Device) {
            let m = support::Manifest::load_path(&test_data($manifest));
            let tag = $manifest.replace('/', "_");
            check_mix_of(&m, &tag, Path::new($input), &[$($arg),*], $ty, device.name());
        }
    };
}

/// `--pure` to `$ty`, against golden/pure/`$ty`.gguf, on each device.
macro_rules! pure {
    ($name:ident, $ty:literal) => {
        device_test!($name, cpu, gpu);
        fn $name(device: Device) {
            check_pure($ty, None, concat!("pure/", $ty, ".gguf"), device.name());
        }
    };
}

/// The `$ty` mix of tiny-llama, against golden/mixes/`$ty`.json, on each device.
macro_rules! mix {
    ($name:ident, $ty:literal) => {
        device_test!($name, cpu, gpu);
        fn $name(device: Device) {
            check_mix(concat!("mixes/", $ty, ".json"), &[], $ty, device.name());
        }
    };
}

/// `--pure --imatrix $im` to `$ty`, against golden/pure-imatrix/`$file`.gguf, on each device.
macro_rules! pure_im {
    ($name:ident, $ty:literal, $file:literal, $im:literal) => {
        device_test!($name, cpu, gpu);
        fn $name(device: Device) {
            check_pure(
                $ty,
                Some($im),
                concat!("pure-imatrix/", $file, ".gguf"),
                device.name(),
            );
        }
    };
}

/// The `$ty` mix with tiny-imatrix.gguf, against golden/mixes-imatrix/`$ty`.json, on each device.
macro_rules! mix_im {
    ($name:ident, $ty:literal) => {
        device_test!($name, cpu, gpu);
        fn $name(device: Device) {
            check_mix(
                concat!("mixes-imatrix/", $ty, ".json"),
                &["--imatrix", "tiny-imatrix.gguf"],
                $ty,
                device.name(),
            );
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

// K-quants, IQ4, ternary.
pure!(pure_q2_k, "Q2_K");
pure!(pure_q3_k_s, "Q3_K_S");
pure!(pure_q4_k_s, "Q4_K_S");
pure!(pure_q5_k_s, "Q5_K_S");
pure!(pure_q6_k, "Q6_K");
pure!(pure_iq4_nl, "IQ4_NL");
pure!(pure_iq4_xs, "IQ4_XS");
pure!(pure_tq1_0, "TQ1_0");
pure!(pure_tq2_0, "TQ2_0");
mix!(mix_q2_k, "Q2_K");
mix!(mix_q3_k_s, "Q3_K_S");
mix!(mix_q3_k_m, "Q3_K_M");
mix!(mix_q3_k_l, "Q3_K_L");
mix!(mix_q4_k_s, "Q4_K_S");
mix!(mix_q4_k_m, "Q4_K_M");
mix!(mix_q5_k_s, "Q5_K_S");
mix!(mix_q5_k_m, "Q5_K_M");
mix!(mix_q6_k, "Q6_K");
mix!(mix_iq4_nl, "IQ4_NL");
mix!(mix_iq4_xs, "IQ4_XS");
mix!(mix_tq1_0, "TQ1_0");
mix!(mix_tq2_0, "TQ2_0");

// With an importance matrix.
pure_im!(pure_im_q4_0, "Q4_0", "Q4_0", "imatrix.gguf");
pure_im!(pure_im_q4_1, "Q4_1", "Q4_1", "imatrix.gguf");
pure_im!(pure_im_q5_0, "Q5_0", "Q5_0", "imatrix.gguf");
pure_im!(pure_im_q5_1, "Q5_1", "Q5_1", "imatrix.gguf");
pure_im!(pure_im_q8_0, "Q8_0", "Q8_0", "imatrix.gguf");
pure_im!(pure_im_q2_k, "Q2_K", "Q2_K", "imatrix.gguf");
pure_im!(pure_im_q3_k_s, "Q3_K_S", "Q3_K_S", "imatrix.gguf");
pure_im!(pure_im_q4_k_s, "Q4_K_S", "Q4_K_S", "imatrix.gguf");
pure_im!(pure_im_q5_k_s, "Q5_K_S", "Q5_K_S", "imatrix.gguf");
pure_im!(pure_im_q6_k, "Q6_K", "Q6_K", "imatrix.gguf");
pure_im!(pure_im_iq4_nl, "IQ4_NL", "IQ4_NL", "imatrix.gguf");
pure_im!(pure_im_iq4_xs, "IQ4_XS", "IQ4_XS", "imatrix.gguf");
pure_im!(
    pure_im_q4_k_s_from_dat,
    "Q4_K_S",
    "Q4_K_S.from-dat",
    "imatrix.dat"
);
pure_im!(
    pure_im_q4_k_s_partial,
    "Q4_K_S",
    "Q4_K_S.partial",
    "imatrix-partial.gguf"
);
mix_im!(mix_im_q2_k_s, "Q2_K_S");
mix_im!(mix_im_q3_k_m, "Q3_K_M");
mix_im!(mix_im_q4_0, "Q4_0");
mix_im!(mix_im_q4_k_m, "Q4_K_M");
mix_im!(mix_im_q6_k, "Q6_K");
mix_im!(mix_im_iq4_xs, "IQ4_XS");
pure_im!(pure_im_iq1_s, "IQ1_S", "IQ1_S", "imatrix.gguf");
pure_im!(pure_im_iq1_m, "IQ1_M", "IQ1_M", "imatrix.gguf");
local_mix_im!(mix_im_iq1_s, "IQ1_S");
local_mix_im!(mix_im_iq1_m, "IQ1_M");
pure_im!(pure_im_iq2_xxs, "IQ2_XXS", "IQ2_XXS", "imatrix.gguf");
pure_im!(pure_im_iq2_xs, "IQ2_XS", "IQ2_XS", "imatrix.gguf");
pure_im!(pure_im_iq2_s, "IQ2_S", "IQ2_S", "imatrix.gguf");
mix_im!(mix_im_iq2_xxs, "IQ2_XXS");
mix_im!(mix_im_iq2_m, "IQ2_M");
pure_im!(pure_im_iq3_xxs, "IQ3_XXS", "IQ3_XXS", "imatrix.gguf");
pure_im!(pure_im_iq3_s, "IQ3_S", "IQ3_S", "imatrix.gguf");
mix_im!(mix_im_iq3_xxs, "IQ3_XXS");
mix_im!(mix_im_iq3_m, "IQ3_M");
local!(
    mix_im_iq3_xs,
    "mixes-imatrix/IQ3_XS.json",
    "tiny-llama.f16.gguf",
    "IQ3_XS",
    ["--imatrix", "tiny-imatrix.gguf"]
);
local!(
    mix_im_iq3_s,
    "mixes-imatrix/IQ3_S.json",
    "tiny-llama.f16.gguf",
    "IQ3_S",
    ["--imatrix", "tiny-imatrix.gguf"]
);
// IQ3 without an imatrix (IQ3_XS, which needs one, is refused: tests/it/quant/mix_rules_golden.rs).
local!(
    mix_iq3_s,
    "mixes/IQ3_S.json",
    "tiny-llama.f16.gguf",
    "IQ3_S",
    []
);
local!(
    mix_iq3_m,
    "mixes/IQ3_M.json",
    "tiny-llama.f16.gguf",
    "IQ3_M",
    []
);
local!(
    pure_iq3_s,
    "pure/IQ3_S.json",
    "tensors.f32.gguf",
    "IQ3_S",
    ["--pure"]
);

// Options and requantization.
device_test!(mix_q4_k_m_opts_a, cpu, gpu);
fn mix_q4_k_m_opts_a(device: Device) {
    check_mix(
        "mixes/Q4_K_M.opts-a.json",
        &[
            "--output-tensor-type",
            "q8_0",
            "--token-embedding-type",
            "q4_k",
            "--tensor-type",
            "ffn_up=q5_k",
            "--tensor-type",
            "attn_.*=q6_k",
        ],
        "Q4_K_M",
        device.name(),
    );
}

device_test!(mix_q5_k_m_opts_b, cpu, gpu);
fn mix_q5_k_m_opts_b(device: Device) {
    check_mix(
        "mixes/Q5_K_M.opts-b.json",
        &[
            "--leave-output-tensor",
            "--override-kv",
            "general.name=str:renamed",
            "--override-kv",
            "llama.context_length=int:4096",
        ],
        "Q5_K_M",
        device.name(),
    );
}

device_test!(mix_q4_k_m_requant_from_q8_0, cpu, gpu);
/// llama-quantize f16 → Q8_0, then --allow-requantize Q8_0 → Q4_K_M. Our Q8_0 step is itself
/// proven identical by `mix_q8_0`.
fn mix_q4_k_m_requant_from_q8_0(device: Device) {
    let dev = device.name();
    let q8 = run_quantize(
        "requant-q8",
        dev,
        &[],
        Path::new("tiny-llama.f16.gguf"),
        "Q8_0",
    );
    let m = support::Manifest::load("mixes/Q4_K_M.requant-from-Q8_0.json");
    let out = run_quantize("requant-q4km", dev, &["--allow-requantize"], &q8, "Q4_K_M");
    support::assert_matches_manifest(&out, &m);
    // Without the flag it is refused.
    let res = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(["quantize", "--device", dev])
        .arg(&q8)
        .arg(out.with_extension("refused.gguf"))
        .arg("Q4_K_M")
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("requantizing from type Q8_0 is disabled")
    );
    assert!(!out.with_extension("refused.gguf").exists());
}

// Q1_0, Q2_0 and MXFP4_MOE: goldens in tests/data.
device_test!(pure_q2_0, cpu, gpu);
fn pure_q2_0(device: Device) {
    check_pure_at("Q2_0", None, &test_data("pure/Q2_0.gguf"), device.name());
}

device_test!(mix_q1_0, cpu, gpu);
fn mix_q1_0(device: Device) {
    let m = support::Manifest::load_path(&test_data("mixes/Q1_0.json"));
    let input = Path::new("tiny-llama.f16.gguf");
    check_mix_of(&m, "mix-q1_0", input, &[], "Q1_0", device.name());
}

device_test!(mix_q2_0, cpu, gpu);
fn mix_q2_0(device: Device) {
    let m = support::Manifest::load_path(&test_data("mixes/Q2_0.json"));
    let input = Path::new("tiny-llama.f16.gguf");
    check_mix_of(&m, "mix-q2_0", input, &[], "Q2_0", device.name());
}

device_test!(mix_mxfp4_moe, cpu, gpu);
fn mix_mxfp4_moe(device: Device) {
    let m = support::Manifest::load_path(&test_data("moe/MXFP4_MOE.json"));
    let input = test_data("moe/tiny-moe.f16.gguf");
    check_mix_of(&m, "mix-mxfp4_moe", &input, &[], "MXFP4_MOE", device.name());
}

device_test!(q1_0_refuses_rows_it_cannot_block, cpu, gpu);
/// llama-quantize has no fallback for Q1_0's 128-element blocks and stops at the first tensor
/// whose rows do not divide (rows of 100 here): one line naming it, a failure exit, no file.
fn q1_0_refuses_rows_it_cannot_block(device: Device) {
    let dir = support::temp_dir(&format!("q1_0-refusal-{}", device.name()));
    let out = dir.join("out.gguf");
    let res = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .current_dir(support::golden(""))
        .args(["quantize", "--device", device.name(), "--pure"])
        .arg("tensors.f32.gguf")
        .arg(&out)
        .args(["Q1_0", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "stderr: {stderr}");
    // Besides the "quantizing A → B on DEVICE" progress line: one error line, naming the file
    // and the tensor.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert_eq!(
        lines[0],
        "qforge: error: tensors.f32.gguf: tensor 'blk.0.odd100.weight': rows of 100 cannot be \
         blocked by Q1_0 and no fallback type is defined for it"
    );
    assert!(!out.exists());
    assert_eq!(support::list_files(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}
