use qforge::gpu::device::{select, DeviceSpec};
use qforge::gpu::{GpuOptions, GpuQuantizer};
use qforge::quant::GgmlType;
use std::time::Instant;
fn main() {
    let ctx = std::sync::Arc::new(select(DeviceSpec::Gpu).unwrap().unwrap());
    let q = GpuQuantizer::new(ctx, GpuOptions::default());
    let n = 4096;
    let rows = 64;
    let x: Vec<f32> = (0..n * rows)
        .map(|i| ((i * 7919) % 1000) as f32 / 333.0 - 1.5)
        .collect();
    let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32).collect();
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
    ] {
        let mut out = vec![0u8; ty.row_size(n as u64).unwrap() as usize * rows];
        for (label, qw) in [("plain", None), ("imatrix", Some(&w[..]))] {
            for pass in 0..2 {
                let t = Instant::now();
                q.quantize_rows_unchecked(ty, &x, n, qw, &mut out).unwrap();
                println!("{ty} {label} pass {pass}: {:?}", t.elapsed());
            }
        }
    }
}
