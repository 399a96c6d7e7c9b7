//! Throughput of the GPU path against the CPU path (`pipeline::Backend::cpu`, rayon over rows),
//! measured in one run by `qforge::pipeline::bench::bench_types`. Not a pass/fail test of speed:
//! `cargo test --release --test gpu -- --ignored --nocapture gpu_vs_cpu_throughput` prints the table.
//! BENCH_TYPES=Q4_K,Q6_K narrows the types; BENCH_ROWS sets the tensor's rows (of 4096).

use crate::devices::Device;

use qforge::pipeline::bench::{bench_types, gpu_types, BenchOptions};
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

device_test!(
    #[ignore = "benchmark-like: run on demand"]
    gpu_vs_cpu_throughput,
    gpu
);
fn gpu_vs_cpu_throughput(device: Device) {
    let q = device.quantizer();
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

device_test!(host_times_account_for_every_chunk, gpu);
/// The host-time accounting `qforge bench` reports (its `host`/`device` columns): every chunk
/// is counted once, the parts never exceed the run's wall time, and taking the sums resets them.
fn host_times_account_for_every_chunk(device: Device) {
    let q = device.quantizer();
    let ctx = q.context();
    let n_per_row = 256;
    let n_rows = 64;
    let x = qforge::pipeline::bench::bench_tensor(n_per_row, n_rows, 7);
    let ty = GgmlType::Q4_K;
    let mut out = vec![0u8; qforge::quant::row_bytes(ty, n_per_row).unwrap() * n_rows];
    q.check(ty, false).unwrap(); // the self-check's own runs are not this test's
                                 // 16 rows of 1 KiB per chunk (plus the unit of padding a chunk reserves): four chunks.
    ctx.set_chunk_cap(17 * 1024);
    ctx.take_host_times();
    let t = std::time::Instant::now();
    q.quantize_rows(ty, &x, n_per_row, None, &mut out).unwrap();
    let wall = t.elapsed();
    ctx.set_chunk_cap(16 << 20); // the default
    let h = ctx.take_host_times();
    assert_eq!(h.chunks, 4, "{h:?}");
    assert!(h.fill > std::time::Duration::ZERO && h.drain > std::time::Duration::ZERO);
    assert!(h.host_work() + h.device() <= wall, "{h:?} > {wall:?}");
    assert_eq!(ctx.take_host_times(), Default::default());
}
