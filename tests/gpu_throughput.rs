//! Throughput of the GPU path against the CPU path (rayon over rows, as the pipeline does).
//! Not a pass/fail test of speed: `cargo test --test gpu_throughput -- --ignored --nocapture`.

mod gpu_support;

use std::time::Instant;

use qforge::gpu::selfcheck::adversarial_rows;
use qforge::quant::{self, GgmlType};
use rayon::prelude::*;

#[test]
#[ignore = "benchmark-like: run on demand"]
fn gpu_vs_cpu_throughput() {
    let Some(q) = gpu_support::quantizer() else {
        return;
    };
    let n_per_row = 4096;
    let n_rows = 4096; // 16 Mi elements, 64 MiB of f32
    let x = adversarial_rows(n_per_row, n_rows, 3);
    for ty in [
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_1,
        GgmlType::TQ2_0,
    ] {
        let row_bytes = quant::row_bytes(ty, n_per_row).unwrap();
        let mut gpu = vec![0u8; row_bytes * n_rows];
        q.quantize_rows_unchecked(
            ty,
            &x[..n_per_row * 64],
            n_per_row,
            None,
            &mut gpu[..row_bytes * 64],
        )
        .unwrap(); // pipeline build outside the timing
        let t = Instant::now();
        q.quantize_rows_unchecked(ty, &x, n_per_row, None, &mut gpu)
            .unwrap();
        let tg = t.elapsed();
        let mut cpu = vec![0u8; row_bytes * n_rows];
        let t = Instant::now();
        x.par_chunks(n_per_row)
            .zip(cpu.par_chunks_mut(row_bytes))
            .for_each(|(xr, or)| quant::quantize_rows(ty, xr, n_per_row, None, or).unwrap());
        let tc = t.elapsed();
        assert!(gpu == cpu, "{ty}: GPU and CPU differ");
        let mb = (x.len() * 4) as f64 / 1e6;
        println!(
            "{ty}: GPU {:.0} MB/s ({tg:?}), CPU {:.0} MB/s ({tc:?}), GPU/CPU {:.2}",
            mb / tg.as_secs_f64(),
            mb / tc.as_secs_f64(),
            tc.as_secs_f64() / tg.as_secs_f64()
        );
    }
}
