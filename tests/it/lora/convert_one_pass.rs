//! `qforge convert MODEL_DIR --lora …` (merge + convert + quantize in one pass) against the
//! two-step path it promises to equal: `qforge merge-lora` into a directory of the same name,
//! then `qforge convert` with the same options. Byte for byte, for f16, q8_0 and Q4_K_M
//! outputs, with one adapter and with two (one scaled); and refusals that leave no output.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::rng::Rng;
use crate::support::synthetic::{lora_config, write_adapter, T};
use qforge::formats::safetensors::Dtype;

fn qforge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .unwrap()
}

fn qforge_ok(args: &[&str]) {
    let res = qforge(args);
    assert!(
        res.status.success(),
        "qforge {args:?}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// tiny-llama's projections: (module suffix, out, in).
const PROJECTIONS: &[(&str, usize, usize)] = &[
    ("self_attn.q_proj", 256, 256),
    ("self_attn.k_proj", 64, 256),
    ("self_attn.v_proj", 64, 256),
    ("self_attn.o_proj", 256, 256),
    ("mlp.gate_proj", 512, 256),
    ("mlp.up_proj", 512, 256),
    ("mlp.down_proj", 256, 512),
];

/// A second adapter for tiny-llama: rank 3 in BF16 on q, k and down of some layers (so the two
/// adapters overlap on some tensors and not on others), alpha 5.
fn second_adapter(dir: &Path) {
    let mut rng = Rng::new(77);
    let mut tensors = Vec::new();
    let r = 3;
    for layer in [0, 3, 7] {
        for &(m, out, inn) in PROJECTIONS
            .iter()
            .filter(|p| ["self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"].contains(&p.0))
        {
            let name = format!("base_model.model.model.layers.{layer}.{m}");
            tensors.push(T::new(
                &format!("{name}.lora_A.weight"),
                Dtype::BF16,
                &[r, inn],
                rng.vec(r * inn, 0.2),
            ));
            tensors.push(T::new(
                &format!("{name}.lora_B.weight"),
                Dtype::BF16,
                &[out, r],
                rng.vec(out * r, 0.2),
            ));
        }
    }
    write_adapter(
        dir,
        &lora_config(r, 5.0, &["q_proj", "k_proj", "down_proj"]),
        &tensors,
    );
}

struct Setup {
    tmp: PathBuf,
    base: PathBuf,
    golden_adapter: PathBuf,
    second: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let tmp = support::temp_dir(tag);
    let second = tmp.join("adapter2");
    second_adapter(&second);
    Setup {
        base: support::golden("tiny-llama"),
        golden_adapter: support::golden("lora/adapter"),
        second,
        tmp,
    }
}

/// One-pass and two-step outputs of `outtype` with `loras`; asserts they are equal and differ
/// from the plain conversion (the adapters changed something).
fn one_pass_equals_two_step(st: &Setup, tag: &str, outtype: &str, loras: &[String]) {
    one_pass_equals_two_step_named(st, tag, outtype, loras, "tiny-llama")
}

/// The same, for a base whose directory is called `base_name`.
fn one_pass_equals_two_step_named(
    st: &Setup,
    tag: &str,
    outtype: &str,
    loras: &[String],
    base_name: &str,
) {
    let dir = st.tmp.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let one = dir.join("one.gguf");
    let mut args = vec![
        "convert",
        s(&st.base),
        "--outtype",
        outtype,
        "--device",
        "cpu",
        "-o",
        s(&one),
    ];
    for l in loras {
        args.extend(["--lora", l.as_str()]);
    }
    qforge_ok(&args);

    // Two steps; the merged directory keeps the base's name (general.name comes from it).
    let merged = dir.join("merged").join(base_name);
    let mut margs = vec![
        "merge-lora",
        "--base",
        s(&st.base),
        "-o",
        s(&merged),
        "--device",
        "cpu",
    ];
    for l in loras {
        margs.extend(["--lora", l.as_str()]);
    }
    qforge_ok(&margs);
    let two = dir.join("two.gguf");
    qforge_ok(&[
        "convert",
        s(&merged),
        "--outtype",
        outtype,
        "--device",
        "cpu",
        "-o",
        s(&two),
    ]);
    let plain = dir.join("plain.gguf");
    qforge_ok(&[
        "convert",
        s(&st.base),
        "--outtype",
        outtype,
        "--device",
        "cpu",
        "-o",
        s(&plain),
    ]);
    let (one_b, two_b, plain_b) = (
        std::fs::read(&one).unwrap(),
        std::fs::read(&two).unwrap(),
        std::fs::read(&plain).unwrap(),
    );
    assert!(
        one_b == two_b,
        "{outtype} {loras:?}: one pass differs from merge-lora + convert"
    );
    assert_ne!(
        one_b, plain_b,
        "{outtype} {loras:?}: the adapters changed nothing"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_adapter_one_pass_equals_two_steps() {
    let st = setup("lora-onepass-1");
    let loras = [s(&st.golden_adapter).to_string()];
    for outtype in ["f16", "q8_0", "Q4_K_M"] {
        one_pass_equals_two_step(&st, &format!("one-{outtype}"), outtype, &loras);
    }
    std::fs::remove_dir_all(&st.tmp).unwrap();
}

#[test]
fn two_adapters_with_a_scale_one_pass_equals_two_steps() {
    let st = setup("lora-onepass-2");
    let loras = [
        format!("{}:0.5", s(&st.golden_adapter)),
        format!("{}:-1.25", s(&st.second)),
    ];
    for outtype in ["f16", "q8_0", "Q4_K_M"] {
        one_pass_equals_two_step(&st, &format!("two-{outtype}"), outtype, &loras);
    }
    std::fs::remove_dir_all(&st.tmp).unwrap();
}

/// An adapter over tiny-llama's layer 0 q_proj with the given A and B.
fn bad_adapter(dir: &Path, r: usize, a: Option<T>, b: Option<T>) {
    let tensors: Vec<T> = a.into_iter().chain(b).collect();
    write_adapter(dir, &lora_config(r, 8.0, &["q_proj"]), &tensors);
}

const Q0: &str = "base_model.model.model.layers.0.self_attn.q_proj";

fn factor(suffix: &str, shape: &[usize], values: Vec<f32>) -> T {
    T::new(&format!("{Q0}.{suffix}"), Dtype::F32, shape, values)
}

/// `convert --lora` fails with a message containing every `needles` entry, for a f16 and a
/// Q4_K_M output, and writes nothing.
fn refuses(st: &Setup, adapter: &Path, needles: &[&str]) {
    for outtype in ["f16", "Q4_K_M"] {
        let out = st.tmp.join(format!("refused-{outtype}.gguf"));
        let res = qforge(&[
            "convert",
            s(&st.base),
            "--outtype",
            outtype,
            "--device",
            "cpu",
            "--lora",
            s(adapter),
            "-o",
            s(&out),
        ]);
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{outtype}: accepted {adapter:?}");
        for n in needles {
            assert!(err.contains(n), "{outtype}: '{n}' not in: {err}");
        }
        assert!(!out.exists(), "{outtype}: output written despite the error");
        let leftovers: Vec<_> = std::fs::read_dir(&st.tmp)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("refused"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}

#[test]
fn bad_adapters_are_refused_by_module_with_no_output() {
    let st = setup("lora-onepass-bad");
    let mut rng = Rng::new(5);

    // An adapter for another base: q_proj of a 128-wide model.
    let other = st.tmp.join("other-base");
    bad_adapter(
        &other,
        2,
        Some(factor("lora_A.weight", &[2, 128], rng.vec(256, 0.1))),
        Some(factor("lora_B.weight", &[128, 2], rng.vec(256, 0.1))),
    );
    refuses(
        &st,
        &other,
        &["model.layers.0.self_attn.q_proj", "[256, 256]"],
    );

    // B missing.
    let no_b = st.tmp.join("no-b");
    bad_adapter(
        &no_b,
        2,
        Some(factor("lora_A.weight", &[2, 256], rng.vec(512, 0.1))),
        None,
    );
    refuses(&st, &no_b, &["model.layers.0.self_attn.q_proj", "lora_B"]);

    // A missing.
    let no_a = st.tmp.join("no-a");
    bad_adapter(
        &no_a,
        2,
        None,
        Some(factor("lora_B.weight", &[256, 2], rng.vec(512, 0.1))),
    );
    refuses(&st, &no_a, &["model.layers.0.self_attn.q_proj", "lora_A"]);

    // A of rank 2, B of rank 3.
    let rank = st.tmp.join("rank");
    bad_adapter(
        &rank,
        2,
        Some(factor("lora_A.weight", &[2, 256], rng.vec(512, 0.1))),
        Some(factor("lora_B.weight", &[256, 3], rng.vec(768, 0.1))),
    );
    refuses(&st, &rank, &["model.layers.0.self_attn.q_proj", "rank"]);

    // A NaN in B.
    let nan = st.tmp.join("nan");
    let mut b = rng.vec(512, 0.1);
    b[77] = f32::NAN;
    bad_adapter(
        &nan,
        2,
        Some(factor("lora_A.weight", &[2, 256], rng.vec(512, 0.1))),
        Some(factor("lora_B.weight", &[256, 2], b)),
    );
    refuses(&st, &nan, &["model.layers.0.self_attn.q_proj", "NaN"]);

    // Finite factors whose product overflows: rows 200 and 77 of q_proj (77 the lowest, and in
    // another head of the permuted output than 200), column 5 only. The one-pass merge (rows
    // produced in the converter's permuted order) names the element `merge-lora` names.
    let huge = st.tmp.join("huge");
    let mut a = rng.vec(512, 0.1);
    a[5] = 1e20; // A[0, 5]
    let mut b = rng.vec(512, 0.1);
    b[200 * 2] = 1e20; // B[200, 0]
    b[77 * 2] = -1e20; // B[77, 0]
    bad_adapter(
        &huge,
        2,
        Some(factor("lora_A.weight", &[2, 256], a)),
        Some(factor("lora_B.weight", &[256, 2], b)),
    );
    let element = format!("at element {}", 77 * 256 + 5);
    refuses(
        &st,
        &huge,
        &["model.layers.0.self_attn.q_proj", "non-finite", &element],
    );
    let merged = st.tmp.join("refused-merged");
    let res = qforge(&[
        "merge-lora",
        "--base",
        s(&st.base),
        "--lora",
        s(&huge),
        "--device",
        "cpu",
        "-o",
        s(&merged),
    ]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && err.contains(&element), "{err}");

    std::fs::remove_dir_all(&st.tmp).unwrap();
}

/// An F16 base (generated) with a rank-16 adapter on every projection: one pass equals two
/// steps for f16 and Q4_K_M too.
#[test]
fn f16_base_with_every_projection_adapted() {
    use crate::support::synthetic::{write_llama_checkpoint, write_projection_adapter, LlamaDims};

    let tmp = support::temp_dir("lora-onepass-f16");
    let dims = LlamaDims {
        layers: 2,
        hidden: 256,
        ff: 512,
        heads: 4,
        kv_heads: 2,
    };
    let base = tmp.join("src").join("gen-llama");
    write_llama_checkpoint(&base, &support::golden("tiny-llama"), dims, Dtype::F16, 3);
    let adapter = tmp.join("adapter");
    write_projection_adapter(&adapter, dims, 16, 4);
    let st = Setup {
        base,
        golden_adapter: adapter.clone(),
        second: adapter,
        tmp: tmp.clone(),
    };
    let loras = [format!("{}:0.8", s(&st.golden_adapter))];
    for outtype in ["f16", "Q4_K_M"] {
        one_pass_equals_two_step_named(
            &st,
            &format!("f16-{outtype}"),
            outtype,
            &loras,
            "gen-llama",
        );
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Step 4 of the LoRA issue: wall time of `convert` alone against `convert --lora` (rank 16 on
/// every projection) on a generated ~70M-parameter BF16 llama, for f16 and Q4_K_M outputs.
/// Run with `cargo test --test it -- --ignored --nocapture timing_one_pass_merge_overhead`.
#[test]
#[ignore]
fn timing_one_pass_merge_overhead() {
    use crate::support::synthetic::{write_llama_checkpoint, write_projection_adapter, LlamaDims};

    use std::time::Instant;
    let tmp = support::temp_dir("lora-onepass-timing");
    let dims = LlamaDims {
        layers: 6,
        hidden: 1024,
        ff: 2816,
        heads: 16,
        kv_heads: 4,
    };
    let base = tmp.join("timing-llama");
    write_llama_checkpoint(&base, &support::golden("tiny-llama"), dims, Dtype::BF16, 11);
    let adapter = tmp.join("adapter");
    write_projection_adapter(&adapter, dims, 16, 12);
    let reps: usize = std::env::var("QFORGE_TIMING_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for outtype in ["f16", "Q4_K_M"] {
        let mut best = [f64::MAX; 2];
        for _ in 0..reps {
            for (i, with_lora) in [false, true].into_iter().enumerate() {
                let out = tmp.join(format!("{outtype}-{with_lora}.gguf"));
                let mut args = vec![
                    "convert",
                    s(&base),
                    "--outtype",
                    outtype,
                    "--device",
                    "cpu",
                    "-o",
                    s(&out),
                ];
                if with_lora {
                    args.extend(["--lora", s(&adapter)]);
                }
                let t = Instant::now();
                qforge_ok(&args);
                best[i] = best[i].min(t.elapsed().as_secs_f64());
                std::fs::remove_file(&out).unwrap();
            }
        }
        println!(
            "timing {outtype}: convert {:.2} s, convert --lora (r 16, all projections) {:.2} s: +{:.1}%",
            best[0],
            best[1],
            (best[1] / best[0] - 1.0) * 100.0
        );
    }
    // QFORGE_TIMING_KEEP=1 keeps the checkpoint and adapter for profiling by hand.
    if std::env::var_os("QFORGE_TIMING_KEEP").is_some() {
        println!("kept {}", tmp.display());
    } else {
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
