//! Scalar vs SIMD throughput of the K-quant quantizers (one row of 64 super-blocks of Gaussian
//! data, with and without importance weights), one thread.
//!
//! `cargo bench --bench kquants` (add `-- Q4_K` etc. to filter).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qforge::quant::kquants::{available_backends, quantize_row_with};
use qforge::quant::GgmlType;

const BLOCKS: usize = 64;

fn gaussian(n: usize, mut seed: u64) -> Vec<f32> {
    let mut next = move || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next() + 1e-12, next());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = gaussian(BLOCKS * 256, 1);
    let qw: Vec<f32> = gaussian(BLOCKS * 256, 2).iter().map(|v| v * v).collect();
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
    ] {
        let mut g = c.benchmark_group(ty.name());
        g.throughput(Throughput::Elements(x.len() as u64));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(2));
        let mut out = vec![0u8; ty.row_size(x.len() as u64).unwrap() as usize];
        for backend in available_backends() {
            for (tag, w) in [("plain", None), ("imatrix", Some(&qw[..]))] {
                g.bench_function(format!("{backend:?}/{tag}"), |b| {
                    b.iter(|| quantize_row_with(backend, ty, black_box(&x), w, &mut out))
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
