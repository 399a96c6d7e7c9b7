//! The eval commands end to end through the `qforge` binary: `imatrix` and `perplexity` on
//! tiny-llama against llama.cpp's recorded outputs (tests/runtime_data), the KL-divergence base
//! save/compare round trip, `sweep` on a synthetic model, and bad input.

use crate::support::synthetic;
use crate::support::{self, final_ppl, qforge, qforge_ok, runtime_data};

use std::path::{Path, PathBuf};

use qforge::formats::gguf::{GgufFile, GgufWriter, Metadata, Value};
use qforge::formats::imatrix::{ImatrixFile, ImatrixFormat};
use qforge::quant::GgmlType;

fn fails(args: &[&str]) -> String {
    let out = qforge(args);
    assert!(!out.status.success(), "qforge {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// llama-perplexity's recorded final PPL for tiny-llama on ppl_text.txt (-c 128).
fn reference_ppl() -> f64 {
    let text = std::fs::read_to_string(runtime_data("ppl_reference.txt")).unwrap();
    final_ppl(&text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn imatrix_command_matches_llama_imatrix() {
    let dir = support::temp_dir("eval-cmd-imatrix");
    let out = dir.join("tiny.imatrix.gguf");
    let model = support::golden("tiny-llama.f16.gguf");
    let text = runtime_data("ppl_text.txt");
    let stdout = qforge_ok(&[
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
    let want = ImatrixFile::open(runtime_data("tiny-llama.imatrix.gguf")).unwrap();
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
    qforge_ok(&[
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
    let model = support::golden("tiny-llama.f16.gguf");
    let stdout = qforge_ok(&[
        "perplexity",
        "-m",
        s(&model),
        "-f",
        s(&runtime_data("ppl_text.txt")),
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
    let hf = qforge_ok(&[
        "perplexity",
        "-m",
        s(&support::golden("tiny-llama")),
        "-f",
        s(&runtime_data("ppl_text.txt")),
        "-c",
        "128",
        "--chunks",
        "4",
    ]);
    let gguf4 = qforge_ok(&[
        "perplexity",
        "-m",
        s(&model),
        "-f",
        s(&runtime_data("ppl_text.txt")),
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
    let dir = support::temp_dir("eval-cmd-kld");
    let base_model = support::golden("tiny-llama.f16.gguf");
    let text = runtime_data("ppl_text.txt");
    let base = dir.join("base.logits");
    let base_out = qforge_ok(&[
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
    let same = qforge_ok(&[
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
    qforge_ok(&["quantize", s(&base_model), s(&q4), "Q4_K_M", "2"]);
    let cmp = qforge_ok(&[
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
    let reference = std::fs::read_to_string(runtime_data("kld_reference.txt")).unwrap();
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

#[test]
fn sweep_command_writes_consistent_reports() {
    let dir = support::temp_dir("eval-cmd-sweep");
    let model = synthetic::llama_with_tiny_llama_vocab(&dir);
    let text = dir.join("eval.txt");
    std::fs::write(&text, synthetic::pseudo_text(400)).unwrap();
    let out = dir.join("out");
    qforge_ok(&[
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
    let dir = support::temp_dir("eval-cmd-bad");
    let model = support::golden("tiny-llama.f16.gguf");
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
    let text = runtime_data("ppl_text.txt");
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
