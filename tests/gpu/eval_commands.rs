//! The eval commands with `--device gpu` through the `qforge` binary: `perplexity` and `sweep`
//! on the GPU forward pass, against the CPU and llama.cpp's recorded outputs.

use std::path::Path;

use crate::devices::Device;
use crate::support::synthetic;
use crate::support::{self, final_ppl, qforge, qforge_ok, runtime_data};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

device_test!(
    perplexity_on_the_gpu_matches_the_cpu_and_llama_perplexity,
    gpu
);
/// `--device gpu` runs the forward pass on the GPU twin (lavapipe in CI) and gives llama.cpp's
/// perplexity too; `--device cpu` and `gpu` agree closely.
fn perplexity_on_the_gpu_matches_the_cpu_and_llama_perplexity(_device: Device) {
    let model = support::golden("tiny-llama.f16.gguf");
    let run = |device: &str| {
        let out = qforge(&[
            "perplexity",
            "-m",
            s(&model),
            "-f",
            s(&runtime_data("ppl_text.txt")),
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

device_test!(sweep_command_runs_on_the_gpu, gpu);
/// `sweep --device gpu` quantizes on the GPU and evaluates on the GPU forward pass (lavapipe in
/// CI), and says so in the report; its files are the CPU's bytes.
fn sweep_command_runs_on_the_gpu(_device: Device) {
    let dir = support::temp_dir("eval-cmd-sweep-gpu");
    let model = synthetic::llama_with_tiny_llama_vocab(&dir);
    let text = dir.join("eval.txt");
    std::fs::write(&text, synthetic::pseudo_text(300)).unwrap();
    let run = |device: &str| {
        let out = dir.join(device);
        qforge_ok(&[
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
