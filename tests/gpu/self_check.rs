//! The self-check trusts exactly the kernels that match the CPU, catches a deliberately wrong
//! kernel, and `verify_fraction` refuses a wrong result loudly.

use crate::devices::Device;

use std::sync::Arc;

use qforge::gpu::device::{select, DeviceSpec};
use qforge::gpu::pipelines::{Imatrix, KERNELS};
use qforge::gpu::selfcheck::{adversarial_rows, check_kernel, cpu_reference, KernelHealth};
use qforge::gpu::{GpuError, GpuOptions, GpuQuantizer};
use qforge::quant::{self, GgmlType};

/// A private context: fault injection must not leak into other tests' kernels.
fn private_context() -> Arc<qforge::gpu::GpuContext> {
    Arc::new(select(DeviceSpec::Gpu).unwrap().unwrap())
}

device_test!(every_kernel_with_a_cpu_reference_passes_its_self_check, gpu);
fn every_kernel_with_a_cpu_reference_passes_its_self_check(device: Device) {
    let ctx = device.gpu();
    let mut passed = Vec::new();
    for def in KERNELS {
        let ty = def.ty.unwrap();
        let modes: &[bool] = match def.imatrix {
            Imatrix::Ignored => &[false],
            Imatrix::Used => &[false, true],
        };
        for &im in modes {
            let h = check_kernel(&ctx, def, im);
            let n = def.block_elems.max(256);
            let x = adversarial_rows(n, 1, 1);
            let w = vec![1.0f32; n];
            let mut buf = vec![0u8; quant::row_bytes(ty, n).unwrap()];
            let has_cpu = cpu_reference(ty, &x, n, im.then_some(&w[..]), &mut buf).is_ok();
            if has_cpu {
                assert_eq!(h, KernelHealth::Passed, "{} imatrix={im}", def.name);
                passed.push(format!("{}{}", def.name, if im { "+imatrix" } else { "" }));
            } else {
                // No CPU answer to compare with: never trusted.
                assert!(matches!(h, KernelHealth::Unverifiable(_)), "{h:?}");
                eprintln!(
                    "{} imatrix={im}: not self-checkable yet (no CPU quantizer)",
                    def.name
                );
            }
        }
    }
    eprintln!("self-check passed: {passed:?}");
    assert!(passed.iter().any(|p| p == "quantize_row_f16"));
    assert!(passed.iter().any(|p| p == "quantize_row_bf16"));
    assert!(passed.iter().any(|p| p == "quantize_q8_0"));
    assert!(passed.iter().any(|p| p == "quantize_q5_1"));
    for k in [
        "quantize_q2_k",
        "quantize_q3_k",
        "quantize_q4_k",
        "quantize_q5_k",
        "quantize_q6_k",
        "quantize_iq4_nl",
        "quantize_iq4_xs",
    ] {
        for label in [k.to_string(), format!("{k}+imatrix")] {
            assert!(
                passed.contains(&label),
                "{label} did not pass its self-check"
            );
        }
    }
}

device_test!(self_check_catches_a_wrong_kernel, gpu);
fn self_check_catches_a_wrong_kernel(_device: Device) {
    let ctx = private_context();
    let def = KERNELS
        .iter()
        .find(|k| k.name == "quantize_row_f16")
        .unwrap();
    assert_eq!(check_kernel(&ctx, def, false), KernelHealth::Passed);
    ctx.set_fault_injection(def.name, true);
    let h = check_kernel(&ctx, def, false);
    let KernelHealth::Failed(detail) = &h else {
        panic!("faulty kernel passed: {h:?}");
    };
    assert!(detail.contains("differs from the CPU"), "{detail}");

    // Strict (--device gpu): quantizing is an error naming the kernel.
    let strict = GpuQuantizer::new(
        ctx.clone(),
        GpuOptions {
            strict: true,
            verify_fraction: 0.0,
        },
    );
    assert!(!strict.supports(GgmlType::F16, false));
    let x = vec![1.0f32; 64];
    let mut out = vec![0u8; 128];
    match strict.quantize_rows(GgmlType::F16, &x, 64, None, &mut out) {
        Err(GpuError::SelfCheckFailed { kernel, .. }) => assert_eq!(kernel, def.name),
        other => panic!("expected SelfCheckFailed, got {other:?}"),
    }
    // Lenient (--device auto): the type is simply not supported on this GPU (CPU fallback).
    let lenient = GpuQuantizer::new(ctx.clone(), GpuOptions::default());
    assert!(!lenient.supports(GgmlType::F16, false));
    assert!(
        lenient.supports(GgmlType::BF16, false),
        "other kernels stay trusted"
    );
    ctx.set_fault_injection(def.name, false);
    assert_eq!(check_kernel(&ctx, def, false), KernelHealth::Passed);
}

device_test!(verify_fraction_refuses_a_wrong_result, gpu);
fn verify_fraction_refuses_a_wrong_result(_device: Device) {
    let ctx = private_context();
    let q = GpuQuantizer::new(
        ctx.clone(),
        GpuOptions {
            strict: true,
            verify_fraction: 1.0,
        },
    );
    let n_per_row = 256;
    let x = adversarial_rows(n_per_row, 20, 9);
    let mut out = vec![0u8; x.len() * 2];
    q.quantize_rows(GgmlType::BF16, &x, n_per_row, None, &mut out)
        .expect("a correct kernel verifies");
    // The kernel goes wrong after it was trusted (the self-check result is cached).
    ctx.set_fault_injection("quantize_row_bf16", true);
    match q.quantize_rows(GgmlType::BF16, &x, n_per_row, None, &mut out) {
        Err(GpuError::VerifyMismatch { ty, row, byte }) => {
            assert_eq!((ty, row, byte), (GgmlType::BF16, 0, 0))
        }
        other => panic!("expected VerifyMismatch, got {other:?}"),
    }
    ctx.set_fault_injection("quantize_row_bf16", false);
}

device_test!(doctor_reports_adapters_and_kernel_checks, gpu);
fn doctor_reports_adapters_and_kernel_checks(_device: Device) {
    let report = qforge::pipeline::doctor::doctor(DeviceSpec::Gpu);
    assert!(report.enumerate_error.is_none());
    assert!(!report.adapters.is_empty());
    let first = &report.adapters[0];
    assert!(first.open_error.is_none());
    // One line per kernel and imatrix mode; F16 has a CPU reference, so it is checked and ok.
    assert!(first
        .kernels
        .iter()
        .any(|(k, h)| k == "quantize_row_f16" && *h == KernelHealth::Passed));
    assert!(first
        .kernels
        .iter()
        .any(|(k, _)| k == "quantize_q4_0+imatrix"));
    assert!(matches!(report.selection, Ok(Some(_))));
    let text = report.to_string();
    assert!(
        text.contains("quantize_q8_0") && text.contains("--device gpu selects gpu:"),
        "{text}"
    );
    eprintln!("{text}");
}

device_test!(a_type_without_a_kernel_goes_to_the_cpu_with_one_notice, gpu);
/// IQ2_XXS has no WGSL twin: a non-strict quantizer (`--device auto`) declines it — the pipeline
/// then quantizes it on the CPU — and says so once, however many tensors ask; a strict one
/// (`--device gpu`) refuses with an error naming the type.
fn a_type_without_a_kernel_goes_to_the_cpu_with_one_notice(device: Device) {
    use qforge::notice::{self, Notice, Observer};
    use std::sync::Mutex;

    struct Collect(Mutex<Vec<String>>);
    impl Observer for Collect {
        fn notice(&self, n: &Notice) {
            if let Notice::NoGpuKernel { ty } = n {
                self.0.lock().unwrap().push(ty.clone());
            }
        }
    }
    let ty = GgmlType::IQ2_XXS;
    if GpuQuantizer::has_kernel(ty, true) {
        eprintln!("{ty} has a GPU kernel now: nothing to check");
        return;
    }
    let seen = Arc::new(Collect(Mutex::new(Vec::new())));
    notice::set_observer(Some(seen.clone()));
    let auto = GpuQuantizer::new(
        device.gpu(),
        GpuOptions {
            strict: false,
            verify_fraction: 0.0,
        },
    );
    for _ in 0..3 {
        assert!(!auto.supports(ty, true));
    }
    notice::set_observer(None);
    assert_eq!(*seen.0.lock().unwrap(), vec!["IQ2_XXS".to_string()]);
    let strict = device.quantizer();
    let x = vec![1.0f32; 256];
    let w = vec![1.0f32; 256];
    let mut out = vec![0u8; 66];
    let err = strict
        .quantize_rows(ty, &x, 256, Some(&w), &mut out)
        .unwrap_err();
    assert!(matches!(err, GpuError::NotSupported { .. }), "{err}");
    assert!(err.to_string().contains("IQ2_XXS"), "{err}");
}
