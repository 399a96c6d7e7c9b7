//! The eval commands end to end through the `qforge` binary: `imatrix` and `perplexity` on
//! tiny-llama against llama.cpp's recorded outputs (tests/runtime_data), the KL-divergence base
//! save/compare round trip, `sweep` on a synthetic model, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qforge::formats::gguf::{GgufFile, GgufWriter, Metadata, Value};
use qforge::formats::imatrix::{ImatrixFile, ImatrixFormat};
use qforge::quant::GgmlType;
use qforge::runtime::synthetic::{Rng, SyntheticLlama};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runtime_data")
        .join(name)
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qforge-evalcli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn qforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("running qforge")
}

fn ok(args: &[&str]) -> String {
    let out = qforge(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qforge {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = qforge(args);
    assert!(!out.status.success(), "qforge {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value after `Final estimate: PPL = `.
fn final_ppl(stdout: &str) -> f64 {
    stdout
        .split("Final estimate: PPL = ")
        .nth(1)
        .unwrap_or_else(|| panic!("no PPL line in {stdout}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// llama-perplexity's recorded final PPL for tiny-llama on ppl_text.txt (-c 128).
fn reference_ppl() -> f64 {
    let text = std::fs::read_to_string(data("ppl_reference.txt")).unwrap();
    final_ppl(&text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn imatrix_command_matches_llama_imatrix() {
    let dir = tmp("imatrix");
    let out = dir.join("tiny.imatrix.gguf");
    let model = common::golden("tiny-llama.f16.gguf");
    let text = data("ppl_text.txt");
    let stdout = ok(&[
        "imatrix",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "-o",
        s(&out),
        "-c",
        "128",
        "-t",
        "2",
        "--device",
        "cpu",
    ]);
    let ppl = final_ppl(&stdout);
    assert!(
        (ppl - reference_ppl()).abs() / reference_ppl() < 5e-3,
        "{ppl}"
    );

    let got = ImatrixFile::open(&out).unwrap();
    let want = ImatrixFile::open(data("tiny-llama.imatrix.gguf")).unwrap();
    assert_eq!(got.format, ImatrixFormat::Gguf);
    assert_eq!(got.chunk_count, want.chunk_count);
    assert_eq!(got.chunk_size, want.chunk_size);
    assert_eq!(got.datasets, [s(&text)]);
    let names: Vec<&String> = got.entries.keys().collect();
    assert_eq!(names, want.entries.keys().collect::<Vec<_>>());
    assert!(names.iter().all(|n| n.starts_with("blk.")));
    let mut worst: f64 = 0.0;
    for (name, e) in &got.entries {
        let w = &want.entries[name];
        assert_eq!(e.counts, w.counts, "{name}");
        let diff: f64 = e
            .sums
            .iter()
            .zip(&w.sums)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let norm: f64 = w.sums.iter().map(|&b| (b as f64).powi(2)).sum();
        let rel = (diff / norm).sqrt();
        assert!(rel < 1e-2, "{name}: relative L2 {rel:.2e}");
        worst = worst.max(rel);
    }
    eprintln!("imatrix command: worst relative L2 {worst:.2e}");

    // The legacy format, chosen explicitly, with --chunks and --process-output.
    let dat = dir.join("tiny.dat");
    ok(&[
        "imatrix",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "-o",
        s(&dat),
        "-c",
        "128",
        "--chunks",
        "3",
        "--output-format",
        "dat",
        "--process-output",
    ]);
    let legacy = ImatrixFile::open(&dat).unwrap();
    assert_eq!(legacy.format, ImatrixFormat::Legacy);
    assert_eq!(legacy.chunk_count, 3);
    assert!(legacy.entries.contains_key("output.weight"));
    assert_eq!(legacy.entries.len(), want.entries.len() + 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn perplexity_command_matches_llama_perplexity() {
    let model = common::golden("tiny-llama.f16.gguf");
    let stdout = ok(&[
        "perplexity",
        "-m",
        s(&model),
        "-f",
        s(&data("ppl_text.txt")),
        "-c",
        "128",
        "-t",
        "2",
    ]);
    let ppl = final_ppl(&stdout);
    let want = reference_ppl();
    eprintln!("tiny-llama PPL {ppl} (llama-perplexity {want})");
    assert!((ppl - want).abs() / want < 5e-3, "{ppl} vs {want}");
    // The per-chunk line, as llama-perplexity prints it.
    assert!(
        stdout.starts_with("[1]") && stdout.contains(",[10]"),
        "{stdout}"
    );

    // The Hugging Face checkpoint the GGUF was converted from, loaded in memory (its exact BF16
    // weights rather than the F16 conversion): the same text, nearly the same PPL.
    let hf = ok(&[
        "perplexity",
        "-m",
        s(&common::golden("tiny-llama")),
        "-f",
        s(&data("ppl_text.txt")),
        "-c",
        "128",
        "--chunks",
        "4",
    ]);
    let gguf4 = ok(&[
        "perplexity",
        "-m",
        s(&model),
        "-f",
        s(&data("ppl_text.txt")),
        "-c",
        "128",
        "--chunks",
        "4",
    ]);
    let (a, b) = (final_ppl(&hf), final_ppl(&gguf4));
    assert!((a - b).abs() / b < 5e-3, "HF {a} vs GGUF {b}");
}

#[test]
fn kl_divergence_base_save_and_compare() {
    let dir = tmp("kld");
    let base_model = common::golden("tiny-llama.f16.gguf");
    let text = data("ppl_text.txt");
    let base = dir.join("base.logits");
    let base_out = ok(&[
        "perplexity",
        "-m",
        s(&base_model),
        "-f",
        s(&text),
        "-c",
        "128",
        "--kl-divergence-base",
        s(&base),
    ]);
    assert!(base.exists());
    // The same model against its own logits: zero divergence, all tops equal.
    let same = ok(&[
        "perplexity",
        "-m",
        s(&base_model),
        "-f",
        s(&text),
        "-c",
        "128",
        "--kl-divergence-base",
        s(&base),
        "--kl-divergence",
    ]);
    assert_eq!(final_ppl(&same), final_ppl(&base_out));
    assert!(same.contains("Mean    KLD:   0.000000"), "{same}");
    assert!(same.contains("Same top p: 100.000 %"), "{same}");

    // Q4_K_M of it, as llama-quantize makes it (qforge quantize is byte-identical), against the
    // llama.cpp run recorded in kld_reference.txt.
    let q4 = dir.join("q4km.gguf");
    ok(&["quantize", s(&base_model), s(&q4), "Q4_K_M", "2"]);
    let cmp = ok(&[
        "perplexity",
        "-m",
        s(&q4),
        "-f",
        s(&text),
        "-c",
        "128",
        "--kl-divergence-base",
        s(&base),
        "--kl-divergence",
    ]);
    let value = |text: &str, label: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label} missing in {text}"));
        line.split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let reference = std::fs::read_to_string(data("kld_reference.txt")).unwrap();
    for (label, tol) in [
        ("Mean    KLD", 0.03),
        ("Median  KLD", 0.05),
        ("Mean PPL(Q)", 5e-3),
    ] {
        let (got, want) = (value(&cmp, label), value(&reference, label));
        eprintln!("{label}: {got} (llama.cpp {want})");
        assert!((got - want).abs() / want < tol, "{label}: {got} vs {want}");
    }
    for label in [
        "99.0%   KLD",
        " 1.0%   KLD",
        "Maximum KLD",
        "Minimum KLD",
        "Same top p",
    ] {
        assert!(value(&cmp, label) > 0.0, "{label}");
    }

    // A base from other settings is refused, not silently compared.
    let err = fails(&[
        "perplexity",
        "-m",
        s(&q4),
        "-f",
        s(&text),
        "-c",
        "64",
        "--kl-divergence-base",
        s(&base),
        "--kl-divergence",
    ]);
    assert!(err.contains("same tokens"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A synthetic llama (random weights) with tiny-llama's SentencePiece vocabulary, so that
/// real text tokenizes.
fn synthetic_model(dir: &Path) -> PathBuf {
    let m = SyntheticLlama {
        n_layer: 2,
        n_embd: 256,
        n_ff: 512,
        n_head: 4,
        n_head_kv: 2,
        n_vocab: 512,
        weight_type: GgmlType::F16,
        seed: 5,
    };
    let raw = dir.join("synth-raw.gguf");
    m.write_gguf(&raw).unwrap();
    let donor = GgufFile::open(common::golden("tiny-llama.f16.gguf")).unwrap();
    let path = dir.join("synth.f16.gguf");
    graft_vocab(&raw, &donor.metadata, &path);
    std::fs::remove_file(raw).ok();
    path
}

/// Copy `src` to `out` with its tokenizer.* keys replaced by `donor`'s.
fn graft_vocab(src: &Path, donor: &Metadata, out: &Path) {
    let f = GgufFile::open(src).unwrap();
    let mut md = f.metadata.clone();
    md.retain(|k| !k.starts_with("tokenizer."));
    for (k, v) in donor.iter() {
        if k.starts_with("tokenizer.") {
            md.set(k, v.clone());
        }
    }
    let infos: Vec<(String, GgmlType, Vec<u64>)> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let mut w = GgufWriter::create(out, &md, &infos).unwrap();
    for t in &f.tensors {
        w.write_tensor(f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
}

fn pseudo_text(n_words: usize) -> String {
    let words = [
        "the", "ship", "lamp", "water", "ledger", "bread", "gas", "page", "story",
    ];
    let mut rng = Rng::new(3);
    (0..n_words)
        .map(|_| words[(rng.next_u64() % words.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn sweep_command_writes_consistent_reports() {
    let dir = tmp("sweep");
    let model = synthetic_model(&dir);
    let text = dir.join("eval.txt");
    std::fs::write(&text, pseudo_text(400)).unwrap();
    let out = dir.join("out");
    ok(&[
        "sweep",
        s(&model),
        "--types",
        "Q8_0,Q4_K_M,Q2_K",
        "--eval",
        s(&text),
        "-c",
        "64",
        "--chunks",
        "4",
        "-o",
        s(&out),
        "--device",
        "cpu",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let csv = std::fs::read_to_string(out.join("report.csv")).unwrap();
    let csv_rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let gguf = GgufFile::open(&model).unwrap();
    let params: u64 = gguf.tensors.iter().map(|t| t.n_elements()).sum();
    let mut klds = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let name = row["name"].as_str().unwrap();
        let file = PathBuf::from(row["file"].as_str().unwrap());
        let bytes = row["file_bytes"].as_u64().unwrap();
        assert_eq!(bytes, std::fs::metadata(&file).unwrap().len(), "{name}");
        // bpw counts tensor data bytes over parameters.
        let f = GgufFile::open(&file).unwrap();
        let data_bytes: u64 = f.tensors.iter().map(|t| t.n_bytes().unwrap()).sum();
        let bpw = row["bpw"].as_f64().unwrap();
        assert!(
            (bpw - 8.0 * data_bytes as f64 / params as f64).abs() < 1e-9,
            "{name}"
        );
        let ppl = row["ppl"]["ppl"].as_f64().unwrap();
        // csv and md carry the same numbers, rounded.
        let c = &csv_rows[i];
        assert_eq!(c[0], name);
        assert_eq!(c[1].parse::<u64>().unwrap(), bytes);
        assert!((c[2].parse::<f64>().unwrap() - bpw).abs() < 1e-4);
        assert!((c[5].parse::<f64>().unwrap() - ppl).abs() < 1e-6 * ppl.max(1.0));
        assert!(md.contains(&format!(
            "| {name} | {:.3} | {bpw:.3} |",
            bytes as f64 / 1048576.0
        )));
        assert!(md.contains(&format!("{ppl:.4}")));
        if i > 0 {
            let kld = row["kld"]["mean_kld"].as_f64().unwrap();
            assert!((c[8].parse::<f64>().unwrap() - kld).abs() < 1e-6);
            klds.push((bpw, kld));
        }
    }
    assert_eq!(rows[0]["name"], "F16");
    assert!(rows[0]["kld"].is_null());
    // Fewer bits, more divergence.
    assert!(klds[0].0 > klds[1].0 && klds[1].0 > klds[2].0);
    assert!(klds[0].1 < klds[1].1 && klds[1].1 < klds[2].1, "{klds:?}");

    let svg = std::fs::read_to_string(out.join("report.svg")).unwrap();
    assert!(svg.trim_start().starts_with("<svg") || svg.starts_with("<?xml"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    assert_eq!(svg.matches("<circle").count(), 3);
    for name in ["Q8_0", "Q4_K_M", "Q2_K"] {
        assert!(svg.contains(name), "{name} not labelled");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tmp("bad");
    let model = common::golden("tiny-llama.f16.gguf");
    let out = dir.join("im.gguf");
    // Missing text file.
    let err = fails(&[
        "imatrix",
        "-m",
        s(&model),
        "-f",
        s(&dir.join("nope.txt")),
        "-o",
        s(&out),
    ]);
    assert!(err.contains("nope.txt"), "{err}");
    // Text shorter than 2·CTX tokens.
    let short = dir.join("short.txt");
    std::fs::write(&short, "a few words only").unwrap();
    let err = fails(&[
        "imatrix",
        "-m",
        s(&model),
        "-f",
        s(&short),
        "-o",
        s(&out),
        "-c",
        "128",
    ]);
    assert!(err.contains("you need at least 256 tokens"), "{err}");
    let err = fails(&["perplexity", "-m", s(&model), "-f", s(&short), "-c", "128"]);
    assert!(err.contains("you need at least 256 tokens"), "{err}");
    // Not a llama model.
    let other = dir.join("gpt2.gguf");
    let mut md = Metadata::new();
    md.set("general.architecture", Value::Str("gpt2".into()));
    GgufWriter::create(&other, &md, &[("x".into(), GgmlType::F32, vec![4])])
        .and_then(|mut w| {
            w.write_tensor(&[0u8; 16])?;
            w.finish()
        })
        .unwrap();
    let text = data("ppl_text.txt");
    let err = fails(&["imatrix", "-m", s(&other), "-f", s(&text), "-o", s(&out)]);
    assert!(
        err.contains("architecture 'gpt2' is not supported yet"),
        "{err}"
    );
    // Missing model.
    let err = fails(&[
        "perplexity",
        "-m",
        s(&dir.join("none.gguf")),
        "-f",
        s(&text),
    ]);
    assert!(err.contains("none.gguf"), "{err}");
    // --kl-divergence without a base; a base file that is not one.
    let err = fails(&[
        "perplexity",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "--kl-divergence",
    ]);
    assert!(err.contains("--kl-divergence-base"), "{err}");
    let err = fails(&[
        "perplexity",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "--kl-divergence-base",
        s(&text),
        "--kl-divergence",
    ]);
    assert!(err.contains("not a qforge logits file"), "{err}");
    assert!(!out.exists(), "an output file was left behind");
    // A sweep on a model whose eval text is too short writes no directory.
    let err = fails(&[
        "sweep",
        s(&model),
        "--types",
        "Q8_0",
        "--eval",
        s(&short),
        "-o",
        s(&dir.join("sw2")),
    ]);
    assert!(err.contains("you need at least"), "{err}");
    assert!(!dir.join("sw2").exists());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["gpt2.gguf", "short.txt"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// `--device gpu` runs the forward pass on the GPU twin (lavapipe in CI) and gives llama.cpp's
/// perplexity too; `--device cpu` and `gpu` agree closely.
#[test]
fn perplexity_on_the_gpu_matches_the_cpu_and_llama_perplexity() {
    let model = common::golden("tiny-llama.f16.gguf");
    let run = |device: &str| {
        let out = qforge(&[
            "perplexity",
            "-m",
            s(&model),
            "-f",
            s(&data("ppl_text.txt")),
            "-c",
            "128",
            "--chunks",
            "3",
            "--device",
            device,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "--device {device}: {stderr}");
        (final_ppl(&String::from_utf8(out.stdout).unwrap()), stderr)
    };
    let (gpu, stderr) = run("gpu");
    assert!(stderr.contains("running the model on"), "{stderr}");
    let (cpu, _) = run("cpu");
    assert!((gpu - cpu).abs() / cpu < 1e-3, "GPU {gpu} vs CPU {cpu}");
    // Chunks 1-3 of llama-perplexity's run (ppl_reference.txt: [3]564.7314).
    assert!((gpu - 564.7314).abs() / 564.7314 < 5e-3, "GPU {gpu}");
}

/// `sweep --device gpu` quantizes on the GPU and evaluates on the GPU forward pass (lavapipe in
/// CI), and says so in the report; its files are the CPU's bytes.
#[test]
fn sweep_command_runs_on_the_gpu() {
    let dir = tmp("sweep-gpu");
    let model = synthetic_model(&dir);
    let text = dir.join("eval.txt");
    std::fs::write(&text, pseudo_text(300)).unwrap();
    let run = |device: &str| {
        let out = dir.join(device);
        ok(&[
            "sweep",
            s(&model),
            "--types",
            "Q4_K_M",
            "--eval",
            s(&text),
            "-c",
            "64",
            "--chunks",
            "2",
            "-o",
            s(&out),
            "--device",
            device,
        ]);
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        (md, json)
    };
    let (md, json) = run("gpu");
    assert!(md.contains("evaluated on gpu"), "{md}");
    assert!(json["device"].as_str().unwrap().starts_with("gpu"));
    let (_, cpu_json) = run("cpu");
    let file =
        |j: &serde_json::Value| std::fs::read(j["rows"][1]["file"].as_str().unwrap()).unwrap();
    assert!(
        file(&json) == file(&cpu_json),
        "GPU and CPU Q4_K_M files differ"
    );
    let ppl = |j: &serde_json::Value| j["rows"][1]["ppl"]["ppl"].as_f64().unwrap();
    assert!((ppl(&json) - ppl(&cpu_json)).abs() / ppl(&cpu_json) < 1e-3);
    std::fs::remove_dir_all(&dir).ok();
}
