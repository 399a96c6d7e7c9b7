//! Throughput of the GPU path against the CPU path (`pipeline::Backend::cpu`, rayon over rows),
//! measured in one run by `qforge::gpu::bench::bench_types`. Not a pass/fail test of speed:
//! `cargo test --release --test gpu_throughput -- --ignored --nocapture` prints the table.
//! BENCH_TYPES=Q4_K,Q6_K narrows the types; BENCH_ROWS sets the tensor's rows (of 4096).

mod gpu_support;

use qforge::gpu::bench::{bench_types, gpu_types, BenchOptions};
use qforge::quant::GgmlType;

fn types() -> Vec<GgmlType> {
    match std::env::var("BENCH_TYPES") {
        Ok(list) => list
            .split(',')
            .map(|t| GgmlType::from_name(t.trim()).unwrap_or_else(|| panic!("unknown type {t}")))
            .collect(),
        Err(_) => gpu_types(),
    }
}

#[test]
#[ignore = "benchmark-like: run on demand"]
fn gpu_vs_cpu_throughput() {
    let Some(q) = gpu_support::quantizer() else {
        return;
    };
    let n_rows = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4096);
    for imatrix in [false, true] {
        let opts = BenchOptions {
            n_rows,
            imatrix,
            ..BenchOptions::default()
        };
        let rows = bench_types(&q, &types(), &opts).unwrap();
        println!(
            "{:<8} {:>8} {:>10} {:>10} {:>7}",
            "type", "imatrix", "CPU MB/s", "GPU MB/s", "GPU/CPU"
        );
        for r in &rows {
            println!(
                "{:<8} {:>8} {:>10.0} {:>10.0} {:>7.2}",
                r.ty.to_string(),
                r.imatrix,
                r.cpu_mb_s,
                r.gpu_mb_s,
                r.ratio()
            );
            assert!(r.identical, "{}: GPU and CPU bytes differ", r.ty);
        }
    }
}
