//! Peak memory and time of a large conversion. Needs a checkpoint: set QFORGE_CONVERT_BIG to a
//! model directory (e.g. a 538 MB F32 Llama) and run
//! `cargo test --release --test it -- --ignored --nocapture --exact convert::memory_bound::big_f32_checkpoint_to_f16_in_bounded_memory`.
//! Checks that the resident set stays within 256 MiB (a run in its own process: the test
//! harness adds little).

use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
#[ignore = "needs QFORGE_CONVERT_BIG=<model dir>"]
fn big_f32_checkpoint_to_f16_in_bounded_memory() {
    let Ok(dir) = std::env::var("QFORGE_CONVERT_BIG") else {
        panic!("set QFORGE_CONVERT_BIG to a model directory");
    };
    let outtype = std::env::var("QFORGE_CONVERT_OUTTYPE").unwrap_or_else(|_| "f16".into());
    let out = std::env::temp_dir().join(format!("qforge-big-{}.gguf", std::process::id()));
    let opts = ConvertOptions {
        outtype: OutType::parse(&outtype).unwrap(),
        ..Default::default()
    };
    let before = vm_hwm_kib();
    let r = convert(std::path::Path::new(&dir), &out, &opts).unwrap();
    let peak = vm_hwm_kib();
    let size = std::fs::metadata(&out).unwrap().len();
    let _ = std::fs::remove_file(&out);
    eprintln!(
        "{} tensors, {:.1} MB written in {:.2} s; peak RSS {} MiB (before {} MiB)",
        r.n_tensors,
        size as f64 / 1e6,
        r.seconds,
        peak / 1024,
        before / 1024
    );
    assert!(
        peak <= 256 * 1024,
        "peak RSS {} MiB exceeds 256 MiB",
        peak / 1024
    );
}
