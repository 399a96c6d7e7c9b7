//! The GPU LoRA merge (`shaders/lora_merge.wgsl`) against the CPU kernel, bit for bit: random
//! shapes and ranks (rank 1, shapes that are not multiples of the 16×16 tile, fan_in_fan_out /
//! embedding orientation, several adapters, f32/f16/bf16 outputs), the self-check, the golden
//! merged-reference with `--device gpu`, and `convert --lora --device gpu` against the CPU.

use crate::devices::{self, Device};
use crate::support;

use std::path::Path;
use std::process::Command;

use crate::support::rng::Rng;
use qforge::formats::safetensors::SafetensorsFile;
use qforge::lora::gpu_merge::{cpu_merge_bits, GpuLoraMerge};
use qforge::lora::merge::LowRankUpdate;
use qforge::lora::{merge_lora_hf, AdapterSpec, MergeDevice, MergeOptions};
use qforge::quant::GgmlType;

fn merger(device: &Device) -> GpuLoraMerge {
    let ctx = device.gpu();
    let a = ctx.adapter();
    if devices::gpu_required() {
        assert_eq!(
            a.backend,
            wgpu::Backend::Vulkan,
            "expected Vulkan (lavapipe), got {a}"
        );
    }
    GpuLoraMerge::build(ctx).expect("the merge kernel builds")
}

device_test!(self_check_passes, gpu);
fn self_check_passes(device: Device) {
    let m = merger(&device);
    m.self_check().unwrap();
}

device_test!(random_shapes_and_ranks_match_the_cpu_bit_for_bit, gpu);
fn random_shapes_and_ranks_match_the_cpu_bit_for_bit(device: Device) {
    let m = merger(&device);
    let mut rng = Rng::new(2024);
    // (rows, cols, ranks of each adapter, transposed storage, output type)
    let cases: &[(usize, usize, &[usize], bool, GgmlType)] = &[
        (1, 1, &[1], false, GgmlType::F32),
        (16, 16, &[16], false, GgmlType::F16),
        (17, 33, &[1], false, GgmlType::BF16),
        (50, 7, &[3, 8], true, GgmlType::F16),
        (31, 100, &[17, 1, 32], false, GgmlType::F32),
        (64, 48, &[64], true, GgmlType::BF16),
        (5, 300, &[2], false, GgmlType::F16),
        (
            129,
            65,
            &[5, 9, 1, 2, 3, 4, 7, 8, 6, 11],
            false,
            GgmlType::BF16,
        ),
    ];
    for (ci, &(rows, cols, ranks, transposed, ty)) in cases.iter().enumerate() {
        let w = rng.vec(rows * cols, 0.5);
        let updates: Vec<LowRankUpdate> = ranks
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let scale = 0.5 + i as f32 * 0.75 - (i % 2) as f32 * 2.0;
                if transposed {
                    // The stored matrix is [in, out] = [rows, cols]: B is [cols, r], A [r, rows].
                    let b = rng.vec(cols * r, 0.3);
                    let a = rng.vec(r * rows, 0.3);
                    LowRankUpdate::in_out(&b, &a, r, scale)
                } else {
                    LowRankUpdate::out_in(rng.vec(rows * r, 0.3), rng.vec(r * cols, 0.3), r, scale)
                }
            })
            .collect();
        let refs: Vec<&LowRankUpdate> = updates.iter().collect();
        let gpu = m.merge(ty, &w, cols, 0, &refs).unwrap();
        let cpu = cpu_merge_bits(ty, &w, cols, 0, &refs);
        let diff = gpu.iter().zip(&cpu).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 0,
            "case {ci} ({rows}×{cols}, ranks {ranks:?}, {ty}): {diff} elements differ"
        );
        // A slab in the middle of the matrix (rows 3..) gives the same bits as those rows.
        if rows > 4 {
            let slab = m.merge(ty, &w[3 * cols..], cols, 3, &refs).unwrap();
            assert_eq!(slab, gpu[3 * cols..], "case {ci}: slab from row 3");
        }
    }
}

device_test!(golden_merged_reference_on_the_gpu, gpu);
fn golden_merged_reference_on_the_gpu(device: Device) {
    let ctx = device.gpu();
    let device = MergeDevice::open(Some(ctx), true).unwrap();
    assert!(matches!(device, MergeDevice::Gpu(_)));
    let tmp = support::temp_dir("lora-gpu-golden");
    let out = tmp.join("merged");
    let report = merge_lora_hf(
        &support::golden("tiny-llama"),
        &[AdapterSpec::new(support::golden("lora/adapter"), 1.0)],
        &out,
        &MergeOptions { threads: 2, device },
    )
    .unwrap();
    assert_eq!(report.merged, 56);
    let reference =
        SafetensorsFile::open(support::golden("lora/merged-reference.safetensors")).unwrap();
    let merged = SafetensorsFile::open(out.join("model.safetensors")).unwrap();
    for r in reference.tensors() {
        let m = merged.tensor(&r.name).unwrap();
        assert!(
            merged.data(m) == reference.data(r),
            "{} differs from the reference",
            r.name
        );
    }
    std::fs::remove_dir_all(tmp).unwrap();
}

fn qforge(args: &[&str]) -> std::process::Output {
    devices::quiet_mesa();
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

device_test!(cli_device_gpu_matches_the_cpu, gpu);
/// The CLI with `--device gpu`: merge-lora equals the golden, and convert --lora equals the CPU
/// run, for a float and a K-quant output.
fn cli_device_gpu_matches_the_cpu(_device: Device) {
    let tmp = support::temp_dir("lora-gpu-cli");
    let base = support::golden("tiny-llama");
    let adapter = format!("{}:0.75", s(&support::golden("lora/adapter")));
    let merged = tmp.join("merged");
    let res = qforge(&[
        "merge-lora",
        "--base",
        s(&base),
        "--lora",
        &adapter,
        "-o",
        s(&merged),
        "--device",
        "gpu",
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("merging LoRA on gpu"),
        "the merge did not run on the GPU: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let merged_cpu = tmp.join("merged-cpu");
    let res = qforge(&[
        "merge-lora",
        "--base",
        s(&base),
        "--lora",
        &adapter,
        "-o",
        s(&merged_cpu),
        "--device",
        "cpu",
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        std::fs::read(merged.join("model.safetensors")).unwrap(),
        std::fs::read(merged_cpu.join("model.safetensors")).unwrap()
    );
    for outtype in ["f16", "Q4_K_M"] {
        let mut outs = Vec::new();
        for device in ["gpu", "cpu"] {
            let out = tmp.join(format!("{outtype}-{device}.gguf"));
            let res = qforge(&[
                "convert",
                s(&base),
                "--outtype",
                outtype,
                "--lora",
                &adapter,
                "--device",
                device,
                "-o",
                s(&out),
            ]);
            assert!(
                res.status.success(),
                "{}",
                String::from_utf8_lossy(&res.stderr)
            );
            outs.push(std::fs::read(&out).unwrap());
        }
        assert!(outs[0] == outs[1], "{outtype}: GPU and CPU outputs differ");
    }
    std::fs::remove_dir_all(tmp).unwrap();
}

/// `--device gpu` with no usable adapter (WGPU_BACKEND=gl selects none we allow) is an error
/// and writes nothing; `--device auto` says it uses the CPU and succeeds.
#[test]
fn device_gpu_without_an_adapter_fails() {
    let tmp = support::temp_dir("lora-gpu-none");
    let base = support::golden("tiny-llama");
    let adapter = support::golden("lora/adapter");
    let run = |device: &str, out: &Path| {
        devices::quiet_mesa();
        Command::new(env!("CARGO_BIN_EXE_qforge"))
            .args([
                "merge-lora",
                "--base",
                s(&base),
                "--lora",
                s(&adapter),
                "-o",
                s(out),
                "--device",
                device,
            ])
            .env("WGPU_BACKEND", "gl")
            .output()
            .unwrap()
    };
    let out = tmp.join("gpu");
    let res = run("gpu", &out);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success(),
        "--device gpu succeeded without a GPU"
    );
    assert!(err.contains("no usable GPU adapter"), "{err}");
    assert!(!out.exists());
    let out = tmp.join("auto");
    let res = run("auto", &out);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    assert!(err.contains("merging LoRA on cpu"), "{err}");
    assert!(MergeDevice::open(None, true).is_ok_and(|d| matches!(d, MergeDevice::Cpu)));
    std::fs::remove_dir_all(tmp).unwrap();
}
