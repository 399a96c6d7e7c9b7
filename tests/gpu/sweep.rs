//! The quantization sweep on a small synthetic llama: every type quantized, loaded and measured
//! against the F16 original, and the reports written; on the GPU, the same files and the same
//! numbers up to the forward pass's rounding.

use crate::devices::Device;

use std::path::{Path, PathBuf};

use crate::support::rng::Rng;
use qforge::eval::{perplexity, sweep, PplOptions, SweepOptions, SweepReport, SweepRow};
use qforge::formats::gguf::GgufFile;
use qforge::gpu::DeviceSpec;
use qforge::quant::GgmlType;
use qforge::runtime::forward::{LlamaModel, LoadOptions};
use qforge::runtime::synthetic::SyntheticLlama;

/// A 2-layer synthetic llama as F16 GGUF in `dir`, and 256 random tokens.
fn synthetic(dir: &Path) -> (PathBuf, Vec<u32>) {
    std::fs::create_dir_all(dir).unwrap();
    let s = SyntheticLlama {
        n_layer: 2,
        n_embd: 256,
        n_ff: 512,
        n_head: 4,
        n_head_kv: 2,
        n_vocab: 512,
        weight_type: GgmlType::F16,
        seed: 11,
    };
    let model_path = dir.join("synthetic.f16.gguf");
    s.write_gguf(&model_path).unwrap();
    let mut rng = Rng::new(1);
    let tokens: Vec<u32> = (0..256).map(|_| (rng.next_u64() % 512) as u32).collect();
    (model_path, tokens)
}

fn options(model: &Path, types: &[&str], out_dir: PathBuf, device: DeviceSpec) -> SweepOptions {
    SweepOptions {
        model: model.to_path_buf(),
        types: types.iter().map(|t| t.to_string()).collect(),
        out_dir,
        ppl: PplOptions {
            n_ctx: 64,
            ..Default::default()
        },
        imatrix: None,
        threads: 2,
        remove_files: false,
        load: LoadOptions {
            keep_quantized: true,
        },
        device,
    }
}

fn print(r: &SweepReport) {
    eprintln!("{}", r.device);
    for row in &r.rows {
        let k = row.kld.as_ref();
        eprintln!(
            "{:<8} {:>9} B {:>6.3} bpw  q {:.2}s  eval {:.2}s  PPL {:>9.4}  KLD {:.6}  top {:.1}%  rmse {:.5} {}",
            row.name,
            row.file_bytes,
            row.bpw,
            row.quantize_seconds,
            row.eval_seconds,
            row.ppl.as_ref().map_or(f64::NAN, |p| p.ppl),
            k.map_or(f64::NAN, |k| k.mean_kld),
            k.map_or(f64::NAN, |k| k.same_top_pct),
            row.tensor_error.as_ref().map_or(f64::NAN, |t| t.overall_rel_rmse),
            row.error.as_deref().unwrap_or("")
        );
    }
}

#[test]
fn sweep_measures_each_type_against_the_original() {
    let dir = std::env::temp_dir().join(format!("qforge-runtime-sweep-{}", std::process::id()));
    let (model_path, tokens) = synthetic(&dir);
    let opts = options(
        &model_path,
        &["Q8_0", "Q4_K_M", "q2_k", "NOT_A_TYPE"],
        dir.join("out"),
        DeviceSpec::Cpu,
    );
    let r = sweep(&opts, &tokens).unwrap();
    print(&r);
    assert!(r.device.starts_with("cpu"), "{}", r.device);
    assert_eq!(r.n_chunks, 4);
    assert_eq!(r.rows.len(), 5);
    let base = &r.rows[0];
    assert_eq!(base.name, "F16");
    assert!(base.kld.is_none() && base.error.is_none());
    assert!((base.bpw - 16.0).abs() < 0.1);
    let (q8, q4, q2) = (&r.rows[1], &r.rows[2], &r.rows[3]);
    assert_eq!((q8.name.as_str(), q2.name.as_str()), ("Q8_0", "Q2_K"));
    for row in [q8, q4, q2] {
        assert!(row.error.is_none(), "{:?}", row.error);
        assert!(row.file.as_ref().unwrap().exists());
        assert!(row.file_bytes < base.file_bytes);
    }
    // Fewer bits, bigger divergence.
    let kld = |row: &SweepRow| row.kld.as_ref().unwrap().mean_kld;
    assert!(q8.bpw > q4.bpw && q4.bpw > q2.bpw);
    assert!(0.0 < kld(q8) && kld(q8) < kld(q4) && kld(q4) < kld(q2));
    assert!(q8.kld.as_ref().unwrap().same_top_pct > q2.kld.as_ref().unwrap().same_top_pct);
    assert!(r.rows[4].error.as_ref().unwrap().contains("unknown"));

    // The sweep's PPL is the perplexity of the written file.
    let again = perplexity(
        &LlamaModel::load(q4.file.as_ref().unwrap()).unwrap(),
        &tokens,
        &opts.ppl,
    )
    .unwrap();
    assert_eq!(again.ppl, q4.ppl.as_ref().unwrap().ppl);

    // Per-tensor error: every tensor the type changed, in the file's order; more bits, less error.
    let te = |row: &SweepRow| row.tensor_error.clone().unwrap();
    assert!(base.tensor_error.is_none());
    let (e8, e4, e2) = (te(q8), te(q4), te(q2));
    assert!(0.0 < e8.overall_rel_rmse && e8.overall_rel_rmse < e4.overall_rel_rmse);
    assert!(e4.overall_rel_rmse < e2.overall_rel_rmse);
    let q4_file = GgufFile::open(q4.file.as_ref().unwrap()).unwrap();
    let changed: Vec<&str> = q4_file
        .tensors
        .iter()
        .filter(|t| t.ty != GgmlType::F32)
        .map(|t| t.name.as_str())
        .collect();
    let listed: Vec<&str> = e4.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(listed, changed);
    let worst = e4.worst.as_ref().unwrap();
    assert!(e4.tensors.iter().all(|t| t.rel_rmse <= worst.rel_rmse));
    assert!(worst.rel_rmse >= e4.overall_rel_rmse);

    // The reports say the same as the rows; the sizes are the files'.
    let csv = std::fs::read_to_string(dir.join("out/report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6);
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let q8_line: Vec<&str> = csv.lines().nth(2).unwrap().split(',').collect();
    assert_eq!(q8_line[0], "Q8_0");
    assert_eq!(q8_line.len(), header.len());
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let q8_len = std::fs::metadata(q8.file.as_ref().unwrap()).unwrap().len();
    assert_eq!(q8_line[col("file_bytes")], q8_len.to_string());
    assert_eq!(q8.file_bytes, q8_len);
    assert_eq!(
        q8_line[col("worst_tensor")],
        e8.worst.as_ref().unwrap().name.as_str()
    );
    let md = std::fs::read_to_string(dir.join("out/report.md")).unwrap();
    assert!(md.contains("| Q4_K_M |") && md.contains("failed"));
    assert!(md.contains(&format!("{} (", worst.name)), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 5);
    assert_eq!(
        json["rows"][2]["tensor_error"]["tensors"]
            .as_array()
            .unwrap()
            .len(),
        e4.tensors.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

device_test!(
    sweep_on_the_gpu_writes_the_same_files_and_close_numbers,
    gpu
);
/// `--device gpu`: the GPU quantizer writes the CPU's bytes, and the GPU forward pass gives the
/// CPU's perplexity and divergence up to float rounding.
fn sweep_on_the_gpu_writes_the_same_files_and_close_numbers(_device: Device) {
    let dir = std::env::temp_dir().join(format!("qforge-runtime-sweep-gpu-{}", std::process::id()));
    let (model_path, tokens) = synthetic(&dir);
    let types = ["Q8_0", "Q4_K_M"];
    let cpu = sweep(
        &options(&model_path, &types, dir.join("cpu"), DeviceSpec::Cpu),
        &tokens,
    )
    .unwrap();
    let gpu = sweep(
        &options(&model_path, &types, dir.join("gpu"), DeviceSpec::Gpu),
        &tokens,
    )
    .unwrap();
    print(&cpu);
    print(&gpu);
    assert!(gpu.device.starts_with("gpu"), "{}", gpu.device);
    assert_eq!(cpu.rows.len(), gpu.rows.len());
    let close = |a: f64, b: f64, rel: f64, abs: f64| (a - b).abs() <= rel * a.abs() + abs;
    for (c, g) in cpu.rows.iter().zip(&gpu.rows) {
        assert!(g.error.is_none(), "{}: {:?}", g.name, g.error);
        assert_eq!(c.name, g.name);
        assert_eq!(c.file_bytes, g.file_bytes);
        assert_eq!(c.tensor_error, g.tensor_error, "{}", c.name);
        if c.kld.is_some() {
            let (fc, fg) = (c.file.as_ref().unwrap(), g.file.as_ref().unwrap());
            assert!(
                std::fs::read(fc).unwrap() == std::fs::read(fg).unwrap(),
                "{}: the GPU's file differs from the CPU's",
                c.name
            );
        }
        let (pc, pg) = (c.ppl.as_ref().unwrap().ppl, g.ppl.as_ref().unwrap().ppl);
        assert!(close(pc, pg, 1e-3, 0.0), "{}: PPL {pc} vs {pg}", c.name);
        if let (Some(kc), Some(kg)) = (&c.kld, &g.kld) {
            assert!(
                close(kc.mean_kld, kg.mean_kld, 0.05, 1e-6),
                "{}: KLD {} vs {}",
                c.name,
                kc.mean_kld,
                kg.mean_kld
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
