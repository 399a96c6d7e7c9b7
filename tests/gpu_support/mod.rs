//! Shared by the tests/gpu_*.rs binaries: one GPU context per test binary.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use qforge::gpu::device::{select, DeviceSpec};
use qforge::gpu::{GpuContext, GpuOptions, GpuQuantizer};

/// Give Mesa the runtime dir it wants (silences its warning); once, before any thread uses env.
pub fn quiet_mesa() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            let dir = std::env::temp_dir().join(format!("qforge-xdg-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    });
}

/// Whether a missing GPU must fail the test rather than skip it.
pub fn gpu_required() -> bool {
    std::env::var("QFORGE_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The `--device gpu` context, shared by the tests of this binary; None (with a loud message)
/// when there is no adapter and QFORGE_REQUIRE_GPU is not 1.
pub fn context() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Option<Arc<GpuContext>>> = OnceLock::new();
    quiet_mesa();
    CTX.get_or_init(|| match select(DeviceSpec::Gpu) {
        Ok(Some(ctx)) => Some(Arc::new(ctx)),
        Ok(None) => unreachable!("--device gpu never means the CPU"),
        Err(e) => {
            if gpu_required() {
                panic!("QFORGE_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("\n*** SKIPPING GPU TEST: no GPU adapter ({e}) ***\n");
            None
        }
    })
    .clone()
}

/// A strict quantizer on the shared context.
pub fn quantizer() -> Option<GpuQuantizer> {
    context().map(|c| {
        GpuQuantizer::new(
            c,
            GpuOptions {
                strict: true,
                verify_fraction: 0.0,
            },
        )
    })
}

/// One tensor of golden/tensors.f32.gguf with what llama-quantize wrote for it.
pub struct GoldenCase {
    pub name: String,
    pub n_per_row: usize,
    pub x: Vec<f32>,
    pub qw: Option<Vec<f32>>,
    pub want: Vec<u8>,
}

fn shared_golden(rel: &str) -> std::path::PathBuf {
    let base = std::env::var("QFORGE_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    base.join("golden").join(rel)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Importance weights of `name` from golden/imatrix.gguf the way llama-quantize derives them:
/// in_sum2 / count, or 1 where the count is 0.
pub fn imatrix_weights(name: &str) -> Option<Vec<f32>> {
    use qforge::formats::gguf::GgufFile;
    static IM: OnceLock<GgufFile> = OnceLock::new();
    let im = IM.get_or_init(|| GgufFile::open(shared_golden("imatrix.gguf")).unwrap());
    let sums = im.tensor(&format!("{name}.in_sum2"))?;
    let counts = im.tensor(&format!("{name}.counts"))?;
    let sums = f32s(im.tensor_data(sums));
    let counts = f32s(im.tensor_data(counts));
    let ne0 = sums.len() / counts.len();
    let mut w = vec![0f32; sums.len()];
    for (j, &c) in counts.iter().enumerate() {
        for i in 0..ne0 {
            w[j * ne0 + i] = if c > 0.0 { sums[j * ne0 + i] / c } else { 1.0 };
        }
    }
    Some(w)
}

/// The tensors of tensors.f32.gguf that `golden_file` (e.g. "pure/Q4_0.gguf") stores as `ty`.
pub fn golden_cases(golden_file: &str, ty: qforge::quant::GgmlType) -> Vec<GoldenCase> {
    use qforge::formats::gguf::GgufFile;
    let src = GgufFile::open(shared_golden("tensors.f32.gguf")).unwrap();
    let gold = GgufFile::open(shared_golden(golden_file)).unwrap();
    let with_imatrix = golden_file.starts_with("pure-imatrix/");
    let mut cases = Vec::new();
    for t in &src.tensors {
        let Some(g) = gold.tensor(&t.name) else {
            continue;
        };
        if g.ty != ty {
            continue;
        }
        assert_eq!(t.ty, qforge::quant::GgmlType::F32, "{}", t.name);
        let qw = if with_imatrix {
            imatrix_weights(&t.name)
        } else {
            None
        };
        cases.push(GoldenCase {
            name: t.name.clone(),
            n_per_row: t.ne[0] as usize,
            x: f32s(src.tensor_data(t)),
            qw,
            want: gold.tensor_data(g).to_vec(),
        });
    }
    cases
}
