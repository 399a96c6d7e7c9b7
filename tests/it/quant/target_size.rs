//! `quantize --target-size` / `--target-bpw`: the file never exceeds the target and is exactly
//! the predicted size, sits close under it, validates, keeps every type's row constraint; a
//! too-small target is refused with no output; at a fixed mix's exact size the chosen plan's
//! weighted error (recomputed here from the written files) is no larger than the mix's; the
//! JSON report says what the file holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qforge::formats::gguf::GgufFile;
use qforge::formats::{imatrix, GgufSource, TensorSource};
use qforge::ggml::ftype::{FileType, QuantTarget};
use qforge::pipeline::quantize::{quantize, ImatrixInput, QuantizeJob};
use qforge::pipeline::target_size::{
    plan_report_path, quantize_to_size, SizeGoal, SizePlanReport, SizeTarget,
};
use qforge::pipeline::{Backend, PipelineError};
use qforge::quant::rules::TypeOptions;
use qforge::quant::{self, weighted_error, GgmlType};
use qforge::runtime::synthetic::SyntheticLlama;

use crate::support;

fn tiny_imatrix() -> ImatrixInput {
    let path = support::golden("tiny-imatrix.gguf");
    let w = imatrix::prepare(&path, &[], &[]).unwrap().unwrap();
    ImatrixInput {
        kv: w.quantize_kv(&path.to_string_lossy()),
        weights: w.entries,
    }
}

fn job(out: &Path, ftype: FileType, imatrix: Option<ImatrixInput>) -> QuantizeJob {
    QuantizeJob {
        output: out.to_path_buf(),
        target: QuantTarget::Mix(ftype),
        type_options: TypeOptions::new(ftype),
        allow_requantize: false,
        imatrix,
        overrides: Vec::new(),
    }
}

/// Measure every row (no sampling), so the report's errors are the files' exact errors.
fn exact(goal: SizeGoal) -> SizeTarget {
    SizeTarget {
        goal,
        sample_elements: usize::MAX,
        candidates: None,
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// Every tensor's type divides its rows, has a dequantizer, and the file is sound for
/// `qforge validate`.
fn assert_loadable(path: &Path) {
    let f = GgufFile::open(path).unwrap();
    for t in &f.tensors {
        assert_eq!(
            t.ne[0] % t.ty.block_size() as u64,
            0,
            "{}: {} rows of {}",
            t.name,
            t.ty,
            t.ne[0]
        );
        assert!(quant::dequantizer(t.ty).is_some(), "{} {}", t.name, t.ty);
        assert!(!matches!(t.ty, GgmlType::Q8_K | GgmlType::Q8_1));
    }
    let report = qforge::inspect::validate(path, &mut |_| {}).unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
}

/// The weights the plan measures a tensor's error with (see `pipeline::target_size`): its
/// imatrix entry; else the column mean of the entries of its row length; a token embedding
/// that is not the output head is a lookup (Σ/n_vocab); without an imatrix, all ones.
fn error_weights(
    name: &str,
    ne: &[u64],
    tied: bool,
    im: Option<&ImatrixInput>,
) -> (Option<Vec<f32>>, f64) {
    let Some(im) = im else {
        if name == "token_embd.weight" && !tied {
            return (None, 1.0 / ne[1] as f64);
        }
        return (None, 1.0);
    };
    if let Some(w) = im.weights.get(name) {
        return (Some(w.clone()), 1.0);
    }
    if name == "token_embd.weight" && !tied {
        return (None, 1.0 / ne[1] as f64);
    }
    let same: Vec<&Vec<f32>> = im
        .weights
        .values()
        .filter(|w| w.len() as u64 == ne[0])
        .collect();
    if same.is_empty() {
        return (None, 1.0);
    }
    let mean: Vec<f32> = (0..ne[0] as usize)
        .map(|j| (same.iter().map(|w| w[j] as f64).sum::<f64>() / same.len() as f64) as f32)
        .collect();
    (Some(mean), 1.0)
}

/// Σ over the quantized tensors of `file` of the weighted squared error against `source`,
/// recomputed from the file's bytes, by tensor.
fn file_errors(
    source: &dyn TensorSource,
    file: &Path,
    im: Option<&ImatrixInput>,
) -> BTreeMap<String, f64> {
    let f = GgufFile::open(file).unwrap();
    let tied = f.tensor("output.weight").is_none();
    let mut out = BTreeMap::new();
    for t in &f.tensors {
        let idx = source
            .tensors()
            .iter()
            .position(|s| s.name == t.name)
            .unwrap();
        let s = &source.tensors()[idx];
        if t.ne.len() < 2 || t.name.contains("_norm") {
            continue;
        }
        let (w, scale) = error_weights(&t.name, &t.ne, tied, im);
        let n = t.ne[0] as usize;
        let src = source.tensor_bytes(idx).unwrap();
        let src_row = s.ty.row_size(t.ne[0]).unwrap() as usize;
        let q_row = t.ty.row_size(t.ne[0]).unwrap() as usize;
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        let mut sum = 0f64;
        for (sr, qr) in src.chunks(src_row).zip(f.tensor_data(t).chunks(q_row)) {
            quant::dequantize_rows(s.ty, sr, &mut a).unwrap();
            quant::dequantize_rows(t.ty, qr, &mut b).unwrap();
            sum += weighted_error::squared_sums(&a, &b, w.as_deref()).0;
        }
        out.insert(t.name.clone(), sum * scale);
    }
    out
}

fn read_report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(plan_report_path(out)).unwrap()).unwrap()
}

fn tiny_llama() -> GgufSource {
    GgufSource::open(&support::golden("tiny-llama.f16.gguf")).unwrap()
}

#[test]
fn several_targets_are_met_exactly_as_predicted_and_closely() {
    let dir = support::temp_dir("target-size-several");
    let source = tiny_llama();
    let im = tiny_imatrix();
    let f16_bytes = file_len(&support::golden("tiny-llama.f16.gguf"));
    let backend = Backend::cpu(2);
    let mut last_error = f64::INFINITY;
    for (k, frac) in [0.22, 0.3, 0.4, 0.55].into_iter().enumerate() {
        let target = (f16_bytes as f64 * frac) as u64;
        let out = dir.join(format!("t{k}.gguf"));
        let (report, plan) = quantize_to_size(
            &source,
            &job(&out, FileType::Q4_K_M, Some(im.clone())),
            &SizeTarget::new(SizeGoal::Bytes(target)),
            &backend,
        )
        .unwrap();
        let len = file_len(&out);
        assert!(len <= target, "{len} > {target}");
        assert_eq!(plan.predicted_bytes, len);
        assert_eq!(plan.achieved_bytes, Some(len));
        // Close under the target: the remaining slack is less than the smallest step any
        // searched tensor could still take (here well under 1% of the file).
        assert!(
            (target - len) as f64 <= 0.01 * target as f64,
            "{len} of {target}"
        );
        assert_eq!(report.tensors.len(), plan.tensors.len());
        assert_loadable(&out);
        // More bytes, less estimated damage.
        assert!(plan.estimated_error < last_error);
        last_error = plan.estimated_error;
        // The metadata is the baseline's: file type and imatrix keys.
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(
            f.metadata.get_u64("general.file_type"),
            Some(FileType::Q4_K_M.id() as u64)
        );
        assert!(f.metadata.get("quantize.imatrix.file").is_some());
    }
}

#[test]
fn target_bpw_counts_tensor_data_and_the_header_comes_on_top() {
    let dir = support::temp_dir("target-size-bpw");
    let source = tiny_llama();
    let out = dir.join("bpw.gguf");
    let (_, plan) = quantize_to_size(
        &source,
        &job(&out, FileType::Q4_K_M, Some(tiny_imatrix())),
        &SizeTarget::new(SizeGoal::Bpw(5.0)),
        &Backend::cpu(2),
    )
    .unwrap();
    let n: u64 = source
        .tensors()
        .iter()
        .map(|t| t.ne.iter().product::<u64>())
        .sum();
    assert_eq!(plan.target_bytes, plan.header_bytes + 5 * n / 8);
    assert!(plan.bpw <= 5.0 && plan.bpw > 4.9, "{}", plan.bpw);
    assert_eq!(file_len(&out), plan.predicted_bytes);
}

#[test]
fn at_the_mix_size_the_plan_has_no_more_error_than_the_mix() {
    let dir = support::temp_dir("target-size-vs-mix");
    let source = tiny_llama();
    let im = tiny_imatrix();
    let backend = Backend::cpu(2);
    for ftype in [FileType::Q4_K_M, FileType::Q3_K_M] {
        let mix_out = dir.join(format!("{}.gguf", ftype.name()));
        quantize(&source, &job(&mix_out, ftype, Some(im.clone())), &backend).unwrap();
        let mix_len = file_len(&mix_out);
        let out = dir.join(format!("{}.target.gguf", ftype.name()));
        let (_, plan) = quantize_to_size(
            &source,
            &job(&out, ftype, Some(im.clone())),
            &exact(SizeGoal::Bytes(mix_len)),
            &backend,
        )
        .unwrap();
        assert_eq!(plan.baseline_bytes, mix_len);
        assert!(file_len(&out) <= mix_len);

        // Recomputed from the two files, tensor by tensor, the way the plan measures.
        let mix_err = file_errors(&source, &mix_out, Some(&im));
        let plan_err = file_errors(&source, &out, Some(&im));
        let (mix_sum, plan_sum): (f64, f64) = (mix_err.values().sum(), plan_err.values().sum());
        assert!(
            plan_sum <= mix_sum,
            "{}: plan {plan_sum} > mix {mix_sum}",
            ftype.name()
        );
        // The report's estimates are those errors (every row measured here).
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-30);
        for t in plan.tensors.iter().filter(|t| t.fixed.is_none()) {
            assert!(close(t.error.unwrap(), plan_err[&t.name]), "{}", t.name);
            assert!(
                close(t.baseline_error.unwrap(), mix_err[&t.name]),
                "{}",
                t.name
            );
        }
        assert!(close(plan.estimated_error, plan_sum));
        assert!(close(plan.baseline_error.unwrap(), mix_sum));
    }
}

#[test]
fn a_target_below_the_smallest_file_is_refused_with_no_output() {
    let dir = support::temp_dir("target-size-too-small");
    let source = tiny_llama();
    let out = dir.join("small.gguf");
    let err = quantize_to_size(
        &source,
        &job(&out, FileType::Q4_K_M, None),
        &SizeTarget::new(SizeGoal::Bytes(100_000)),
        &Backend::cpu(2),
    )
    .unwrap_err();
    match &err {
        PipelineError::TargetTooSmall {
            target, minimum, ..
        } => {
            assert_eq!(*target, 100_000);
            assert!(*minimum > 100_000);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("below the smallest file possible"));
    assert!(!out.exists());
    assert!(!plan_report_path(&out).exists());
    assert!(support::list_files(&dir).is_empty());

    // The minimum itself is feasible.
    let PipelineError::TargetTooSmall { minimum, .. } = err else {
        unreachable!()
    };
    let (_, plan) = quantize_to_size(
        &source,
        &job(&out, FileType::Q4_K_M, None),
        &SizeTarget::new(SizeGoal::Bytes(minimum)),
        &Backend::cpu(2),
    )
    .unwrap();
    assert_eq!(file_len(&out), minimum);
    assert_eq!(plan.minimum_bytes, minimum);
    assert_loadable(&out);
}

#[test]
fn the_json_report_describes_the_file() {
    let dir = support::temp_dir("target-size-json");
    let source = tiny_llama();
    let out = dir.join("r.gguf");
    let (_, plan) = quantize_to_size(
        &source,
        &job(&out, FileType::Q4_K_M, Some(tiny_imatrix())),
        &SizeTarget::new(SizeGoal::Bpw(4.5)),
        &Backend::cpu(2),
    )
    .unwrap();
    let json = read_report(&out);
    let parsed: SizePlanReport = plan.clone();
    assert_eq!(json["baseline"], "Q4_K_M");
    assert_eq!(json["goal"], "4.5 bpw");
    assert_eq!(json["target_bytes"], parsed.target_bytes);
    assert_eq!(json["predicted_bytes"], file_len(&out));
    assert_eq!(json["achieved_bytes"], file_len(&out));
    assert_eq!(json["imatrix"], true);
    assert!(json["method"].as_str().unwrap().contains("exchange"));
    let f = GgufFile::open(&out).unwrap();
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), f.tensors.len());
    let mut data_bytes = 0;
    for (j, t) in tensors.iter().zip(&f.tensors) {
        assert_eq!(j["name"], t.name.as_str());
        assert_eq!(j["type"], t.ty.name());
        let padded = t.n_bytes().unwrap().div_ceil(32) * 32;
        assert_eq!(j["bytes"], padded);
        data_bytes += padded;
        if j["fixed"].is_null() {
            let cands = j["candidates"].as_array().unwrap();
            assert!(cands.iter().any(|c| c["type"] == t.ty.name()));
            assert!(j["error"].as_f64().unwrap() >= 0.0);
        } else {
            assert_eq!(j["type"], j["baseline_type"]);
        }
    }
    assert_eq!(
        json["header_bytes"].as_u64().unwrap() + data_bytes,
        file_len(&out)
    );
    // Norms stay F32; the tied output head never drops below the baseline's Q6_K.
    let norm = tensors
        .iter()
        .find(|t| t["name"] == "blk.0.attn_norm.weight")
        .unwrap();
    assert_eq!(norm["type"], "F32");
    assert_eq!(norm["fixed"], "not quantized");
    let head = tensors.iter().find(|t| t["name"] == "output.weight");
    let head = head.unwrap_or_else(|| {
        tensors
            .iter()
            .find(|t| t["name"] == "token_embd.weight")
            .unwrap()
    });
    let ty = GgmlType::from_name(head["type"].as_str().unwrap()).unwrap();
    assert!(ty.type_size() as f64 * 8.0 / ty.block_size() as f64 >= 6.5625);
}

#[test]
fn synthetic_models_without_imatrix_fit_and_skip_types_that_need_one() {
    let dir = support::temp_dir("target-size-synthetic");
    let model = SyntheticLlama {
        n_layer: 3,
        n_embd: 256,
        n_ff: 512,
        n_vocab: 512,
        ..SyntheticLlama::default()
    };
    let src_path = dir.join("synth.f16.gguf");
    model.write_gguf(&src_path).unwrap();
    let source = GgufSource::open(&src_path).unwrap();
    let backend = Backend::cpu(2);
    let mix_out = dir.join("q4_k_s.gguf");
    quantize(&source, &job(&mix_out, FileType::Q4_K_S, None), &backend).unwrap();
    let mix_len = file_len(&mix_out);
    for target in [mix_len * 3 / 4, mix_len, mix_len * 3 / 2] {
        let out = dir.join(format!("synth.{target}.gguf"));
        let (_, plan) = quantize_to_size(
            &source,
            &job(&out, FileType::Q4_K_S, None),
            &exact(SizeGoal::Bytes(target)),
            &backend,
        )
        .unwrap();
        assert!(file_len(&out) <= target);
        assert_eq!(file_len(&out), plan.predicted_bytes);
        assert_loadable(&out);
        let f = GgufFile::open(&out).unwrap();
        for t in &f.tensors {
            assert!(!quant::requires_imatrix(t.ty), "{} {}", t.name, t.ty);
        }
        if target == mix_len {
            let mix_sum: f64 = file_errors(&source, &mix_out, None).values().sum();
            let plan_sum: f64 = file_errors(&source, &out, None).values().sum();
            assert!(plan_sum <= mix_sum, "plan {plan_sum} > mix {mix_sum}");
        }
    }
}

#[test]
fn a_copy_target_or_a_bad_bpw_is_refused_before_any_work() {
    let dir = support::temp_dir("target-size-refusals");
    let source = tiny_llama();
    let out = dir.join("x.gguf");
    let mut j = job(&out, FileType::Q4_K_M, None);
    j.target = QuantTarget::Copy;
    let e = quantize_to_size(
        &source,
        &j,
        &SizeTarget::new(SizeGoal::Bytes(1 << 30)),
        &Backend::cpu(2),
    )
    .unwrap_err();
    assert!(e.to_string().contains("COPY"), "{e}");
    let e = quantize_to_size(
        &source,
        &job(&out, FileType::Q4_K_M, None),
        &SizeTarget::new(SizeGoal::Bpw(-1.0)),
        &Backend::cpu(2),
    )
    .unwrap_err();
    assert!(e.to_string().contains("positive"), "{e}");
    assert!(support::list_files(&dir).is_empty());
}

#[test]
fn the_cli_prints_the_table_writes_the_report_and_refuses_calibrate() {
    let dir = support::temp_dir("target-size-cli");
    let input = support::golden("tiny-llama.f16.gguf");
    let out: PathBuf = dir.join("cli.gguf");
    let stdout = support::qforge_ok(&[
        "quantize",
        "--target-bpw",
        "4.8",
        "--imatrix",
        support::golden("tiny-imatrix.gguf").to_str().unwrap(),
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q4_K_M",
    ]);
    assert!(stdout.contains("est. error"), "{stdout}");
    assert!(stdout.contains("blk.7.ffn_down.weight"));
    assert!(stdout.contains("target: 4.8 bpw"), "{stdout}");
    assert!(plan_report_path(&out).exists());
    let json = read_report(&out);
    assert_eq!(json["achieved_bytes"], file_len(&out));

    let refused = dir.join("refused.gguf");
    let o = support::qforge(&[
        "quantize",
        "--target-size",
        "2M",
        "--calibrate",
        "text.txt",
        input.to_str().unwrap(),
        refused.to_str().unwrap(),
        "Q4_K_M",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not supported yet"));
    let o = support::qforge(&[
        "quantize",
        "--target-size",
        "10K",
        input.to_str().unwrap(),
        refused.to_str().unwrap(),
        "Q4_K_M",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("below the smallest file possible"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!refused.exists());
    assert!(!plan_report_path(&refused).exists());
}

#[test]
fn sweep_adds_size_targeted_rows_beside_the_mixes() {
    let dir = support::temp_dir("target-size-sweep");
    let model = support::synthetic::llama_with_tiny_llama_vocab(&dir);
    let text = dir.join("eval.txt");
    std::fs::write(&text, support::synthetic::pseudo_text(300)).unwrap();
    let out = dir.join("out");
    support::qforge_ok(&[
        "sweep",
        model.to_str().unwrap(),
        "--types",
        "Q4_K_M",
        "--target-bpw",
        "4.5,6",
        "--eval",
        text.to_str().unwrap(),
        "-c",
        "64",
        "--chunks",
        "2",
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(&names[1..], ["Q4_K_M", "Q4_K_M@4.5bpw", "Q4_K_M@6bpw"]);
    for (row, bpw) in rows[2..].iter().zip([4.5, 6.0]) {
        assert!(row["error"].is_null(), "{}", row["error"]);
        assert!(row["bpw"].as_f64().unwrap() <= bpw);
        assert!(row["bpw"].as_f64().unwrap() > bpw - 0.1);
        assert!(row["kld"]["mean_kld"].as_f64().is_some());
        let file = PathBuf::from(row["file"].as_str().unwrap());
        assert!(plan_report_path(&file).exists());
    }
}

#[test]
fn a_candidate_list_limits_the_search_but_not_the_protections() {
    let dir = support::temp_dir("target-size-candidates");
    let source = tiny_llama();
    let out = dir.join("k.gguf");
    let allowed = [GgmlType::Q4_K, GgmlType::Q5_K];
    let target = SizeTarget {
        candidates: Some(allowed.to_vec()),
        ..SizeTarget::new(SizeGoal::Bpw(5.0))
    };
    let (_, plan) = quantize_to_size(
        &source,
        &job(&out, FileType::Q4_K_M, Some(tiny_imatrix())),
        &target,
        &Backend::cpu(2),
    )
    .unwrap();
    for t in &plan.tensors {
        let ty = GgmlType::from_name(&t.ty).unwrap();
        match t.fixed {
            Some(_) => assert_eq!(t.ty, t.baseline_type),
            // The output head's floor (Q6_K) leaves none of the allowed types: refused, or
            // searched among what is left.
            None => assert!(allowed.contains(&ty), "{} {}", t.name, t.ty),
        }
    }
    assert_eq!(file_len(&out), plan.predicted_bytes);
}
