//! MB/s of f32 input per quant type on one core, through the same row kernels the pipeline uses.
//! F32→F16 conversion runs in the same group as the baseline the ratios are read against.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qforge::quant;
use qforge::runtime::synthetic::Rng;

const N_PER_ROW: usize = 4096;
const ROWS: usize = 64;

fn input() -> Vec<f32> {
    let mut rng = Rng::new(7);
    (0..N_PER_ROW * ROWS).map(|_| 0.02 * rng.normal()).collect()
}

fn bench_types(c: &mut Criterion) {
    let x = input();
    let qw: Vec<f32> = {
        let mut rng = Rng::new(9);
        (0..N_PER_ROW).map(|_| rng.uniform() as f32).collect()
    };
    let mut g = c.benchmark_group("quantize_1thread");
    g.throughput(Throughput::Bytes((x.len() * 4) as u64));
    g.sample_size(10);
    // Every type with a CPU quantizer (the registry's list); those that need an imatrix only
    // with one.
    for ty in qforge::pipeline::bench::cpu_types() {
        let mut out = vec![0u8; quant::row_bytes(ty, N_PER_ROW).unwrap() * ROWS];
        if !quant::requires_imatrix(ty) {
            g.bench_with_input(BenchmarkId::new("plain", ty.name()), &ty, |b, &ty| {
                b.iter(|| quant::quantize_rows(ty, &x, N_PER_ROW, None, &mut out).unwrap())
            });
        }
        if ty.is_quantized() {
            g.bench_with_input(BenchmarkId::new("imatrix", ty.name()), &ty, |b, &ty| {
                b.iter(|| quant::quantize_rows(ty, &x, N_PER_ROW, Some(&qw), &mut out).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_types);
criterion_main!(benches);
