//! GPU and CPU quantizers write the same bytes on random and adversarial blocks (zeros, spikes,
//! ties, subnormals, huge and tiny values), with and without an imatrix, including rows whose
//! block count is odd (units straddle rows) and tensors split into many chunks.

use crate::devices::Device;

use qforge::gpu::pipelines::{Imatrix, KERNELS};
use qforge::gpu::selfcheck::{
    adversarial_rows, canary_weights, cpu_reference, float_edge_values, ROW_KINDS,
};
use qforge::quant::{self, GgmlType};

fn compare(
    q: &qforge::gpu::GpuQuantizer,
    ty: GgmlType,
    x: &[f32],
    n_per_row: usize,
    qw: Option<&[f32]>,
) -> bool {
    let row_bytes = quant::row_bytes(ty, n_per_row).unwrap();
    let n_rows = x.len() / n_per_row;
    let mut cpu = vec![0u8; n_rows * row_bytes];
    if let Err(e) = cpu_reference(ty, x, n_per_row, qw, &mut cpu) {
        eprintln!(
            "{ty} imatrix {}: not compared ({e}); see tests/gpu/kernel_golden.rs",
            qw.is_some()
        );
        return false;
    }
    let mut gpu = vec![0xa5u8; cpu.len()];
    q.quantize_rows_unchecked(ty, x, n_per_row, qw, &mut gpu)
        .unwrap();
    if let Some(i) = gpu.iter().zip(&cpu).position(|(a, b)| a != b) {
        let row = i / row_bytes;
        panic!(
            "{ty} n_per_row {n_per_row} imatrix {}: row {row} ({}) byte {} gpu {:#04x} cpu {:#04x}",
            qw.is_some(),
            ROW_KINDS[row % ROW_KINDS.len()],
            i % row_bytes,
            gpu[i],
            cpu[i]
        );
    }
    true
}

device_test!(gpu_equals_cpu_on_random_and_adversarial_blocks, gpu);
fn gpu_equals_cpu_on_random_and_adversarial_blocks(device: Device) {
    let q = device.quantizer();
    let mut compared = Vec::new();
    for def in KERNELS {
        let ty = def.ty.unwrap();
        let block = def.block_elems.max(1);
        // Several row lengths: 1, 3 (odd: units straddle rows) and 16 blocks (8 for 256-blocks).
        for (i, blocks) in [1usize, 3, 16].into_iter().enumerate() {
            let n_per_row = if block == 1 {
                2 * blocks + 1
            } else {
                block * blocks
            };
            let n_rows = ROW_KINDS.len() * 12;
            let x = adversarial_rows(n_per_row, n_rows, 1000 + i as u64);
            if compare(&q, ty, &x, n_per_row, None) && i == 0 {
                compared.push(format!("{ty}"));
            }
            if def.imatrix == Imatrix::Used {
                let w = canary_weights(n_per_row, 77 + i as u64);
                if compare(&q, ty, &x, n_per_row, Some(&w)) && i == 0 {
                    compared.push(format!("{ty}+imatrix"));
                }
                if i == 0 {
                    // All-zero importance weights: every weighted fit degenerates.
                    let zeros = vec![0.0f32; n_per_row];
                    compare(&q, ty, &x, n_per_row, Some(&zeros));
                }
            }
        }
        if block == 1 {
            let x = float_edge_values();
            assert!(compare(&q, ty, &x, x.len(), None));
        }
    }
    eprintln!("GPU == CPU for {compared:?}");
    for def in KERNELS.iter().filter(|d| d.imatrix == Imatrix::Used) {
        let must = format!("{}+imatrix", def.ty.unwrap());
        assert!(compared.contains(&must), "{must} not compared");
    }
    for must in [
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K",
        "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0", "MXFP4", "Q1_0",
        "Q2_0",
    ] {
        assert!(compared.iter().any(|c| c == must), "{must} not compared");
    }
}

device_test!(mxfp4_q1_0_q2_0_edge_magnitudes_equal_cpu, gpu);
/// The inputs where these three kernels take their rare paths: MXFP4 blocks whose amax sits at
/// and just below every power of two (where the f32 log2 rounds up) and at magnitudes whose
/// E8M0 scale is subnormal (amax in [2^−125, 2^−123)) or wraps (subnormal amax); Q2_0 blocks
/// whose 1/d overflows; ±0 signs for Q1_0.
fn mxfp4_q1_0_q2_0_edge_magnitudes_equal_cpu(device: Device) {
    let q = device.quantizer();
    let mut x = Vec::new();
    let mut rng = qforge::rng::Rng::new(99);
    // 128-element rows (one Q1_0 block, two Q2_0 blocks, four MXFP4 blocks).
    let push_row = |amax: f32, x: &mut Vec<f32>, rng: &mut qforge::rng::Rng| {
        for j in 0..128 {
            let v = if j % 32 == 5 {
                amax
            } else {
                (rng.uniform() as f32 * 2.0 - 1.0) * amax
            };
            x.push(if j % 7 == 0 { -v } else { v });
        }
    };
    for e in -149..128i32 {
        let p = 2f64.powi(e) as f32;
        if p == 0.0 || !p.is_finite() {
            continue;
        }
        for k in 1..4u32 {
            if let Some(b) = p.to_bits().checked_sub(k).filter(|&b| b > 0) {
                push_row(f32::from_bits(b), &mut x, &mut rng);
            }
        }
        push_row(p, &mut x, &mut rng);
    }
    let mut z = vec![0.0f32; 128];
    z[3] = -0.0;
    z[4] = 1e-39;
    z[9] = -1e-39;
    x.extend(z);
    let n_per_row = 128;
    for ty in [GgmlType::MXFP4, GgmlType::Q1_0, GgmlType::Q2_0] {
        assert!(compare(&q, ty, &x, n_per_row, None), "{ty} not compared");
    }
}

device_test!(chunked_dispatch_equals_single_dispatch, gpu);
/// Many small chunks (with odd block counts per row and an imatrix) give the same bytes as one
/// chunk: row stats, unit padding and the double-buffered read-back are chunk-independent.
fn chunked_dispatch_equals_single_dispatch(_device: Device) {
    // Its own context: the default options (not the shared strict quantizer's).
    let ctx = std::sync::Arc::new(
        qforge::gpu::device::select(qforge::gpu::device::DeviceSpec::Gpu)
            .unwrap()
            .unwrap(),
    );
    let q = qforge::gpu::GpuQuantizer::new(ctx.clone(), Default::default());
    for (ty, n_per_row) in [
        (GgmlType::F16, 333usize),
        (GgmlType::Q8_0, 96),
        (GgmlType::Q4_0, 96),
        (GgmlType::Q5_1, 160),
        (GgmlType::Q3_K, 768), // two-block units straddling rows
        (GgmlType::Q4_K, 512),
        (GgmlType::IQ4_NL, 96),
        (GgmlType::IQ3_XXS, 768), // two-block units straddling rows
    ] {
        let n_rows = 301;
        let x = adversarial_rows(n_per_row, n_rows, 5);
        let w = canary_weights(n_per_row, 6);
        for qw in [None, Some(&w[..])] {
            let bytes = quant::row_bytes(ty, n_per_row).unwrap() * n_rows;
            let mut whole = vec![0u8; bytes];
            ctx.set_chunk_cap(1 << 30);
            q.quantize_rows_unchecked(ty, &x, n_per_row, qw, &mut whole)
                .unwrap();
            let mut chunked = vec![0u8; bytes];
            // ~8 rows a chunk → 38 chunks (F16 units of 8 elements need 8 rows of 333)
            ctx.set_chunk_cap((n_per_row * 4 * 9) as u64);
            q.quantize_rows_unchecked(ty, &x, n_per_row, qw, &mut chunked)
                .unwrap();
            assert!(
                whole == chunked,
                "{ty} imatrix {}: chunking changed bytes",
                qw.is_some()
            );
        }
    }
}

device_test!(
    #[ignore = "slow sweep: cargo test --test gpu -- --ignored million_block_sweep"]
    million_block_sweep,
    gpu
);
/// A million blocks per type against the CPU (minutes on lavapipe: run with --ignored).
fn million_block_sweep(device: Device) {
    let q = device.quantizer();
    for def in KERNELS {
        let ty = def.ty.unwrap();
        let n_per_row = def.block_elems.max(1) * 64;
        let n_rows = (1usize << 20) / 64;
        let x = adversarial_rows(n_per_row, n_rows, 31337);
        assert!(compare(&q, ty, &x, n_per_row, None) || quant::quantizer(ty).is_none());
        if def.imatrix == Imatrix::Used {
            let w = canary_weights(n_per_row, 4242);
            compare(&q, ty, &x, n_per_row, Some(&w));
        }
    }
}
