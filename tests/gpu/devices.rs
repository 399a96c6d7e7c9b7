//! The devices GPU tests run on: one shared GPU context per test binary, the skip-or-fail rule
//! for a missing adapter (`QFORGE_REQUIRE_GPU=1` makes it a failure), and [`device_test!`], which
//! turns one test body into one test per device.

use std::sync::{Arc, OnceLock};

use qforge::gpu::device::{select, DeviceSpec};
use qforge::gpu::{GpuContext, GpuOptions, GpuQuantizer};

/// One test body, instantiated once per device (candle's `test_device!` idea): for a body
/// `fn NAME(device: Device)`, `device_test!(NAME, cpu, gpu);` makes the tests `NAME::cpu` and
/// `NAME::gpu`, and `device_test!(NAME, gpu);` only `NAME::gpu`. Attributes written before NAME
/// (`#[ignore = "why"]`) go on every generated test. The GPU instance runs on [`context`]: with no
/// adapter it skips with a loud message, or fails when QFORGE_REQUIRE_GPU=1.
macro_rules! device_test {
    ($(#[$meta:meta])* $name:ident, $($device:ident),+ $(,)?) => {
        device_test!(@module [$(#[$meta])*] $name [$($device)+]);
    };
    // The attributes travel as one token tree: a repetition cannot nest inside the devices'.
    (@module $attrs:tt $name:ident [$($device:ident)+]) => {
        mod $name {
            $(device_test!(@test $attrs $name $device);)+
        }
    };
    (@test [$(#[$meta:meta])*] $name:ident $device:ident) => {
        $(#[$meta])*
        #[test]
        fn $device() {
            $crate::devices::run_on(stringify!($device), super::$name);
        }
    };
}

/// Where a [`device_test!`] body runs.
#[derive(Clone)]
pub enum Device {
    /// The CPU path (`--device cpu`).
    Cpu,
    /// The shared `--device gpu` context.
    Gpu(Arc<GpuContext>),
}

impl Device {
    /// The name `--device` takes for this device.
    pub fn name(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu(_) => "gpu",
        }
    }

    /// The GPU context; only GPU instances of a body call this.
    pub fn gpu(&self) -> Arc<GpuContext> {
        match self {
            Device::Gpu(ctx) => ctx.clone(),
            Device::Cpu => panic!("a GPU-only test body ran on the CPU"),
        }
    }

    /// A strict quantizer on the GPU context (no self-check sampling).
    pub fn quantizer(&self) -> GpuQuantizer {
        GpuQuantizer::new(
            self.gpu(),
            GpuOptions {
                strict: true,
                verify_fraction: 0.0,
            },
        )
    }
}

/// Run `body` on the device `--device` calls `name`; a GPU run without an adapter returns early
/// (see [`context`]).
pub fn run_on(name: &str, body: fn(Device)) {
    match name {
        "cpu" => body(Device::Cpu),
        "gpu" => {
            if let Some(ctx) = context() {
                body(Device::Gpu(ctx))
            }
        }
        other => panic!("device_test!: unknown device {other}"),
    }
}

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
/// when there is no adapter and QFORGE_REQUIRE_GPU is not 1, a panic when it is.
pub fn context() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    quiet_mesa();
    let ctx = CTX.get_or_init(|| match select(DeviceSpec::Gpu) {
        Ok(Some(ctx)) => Ok(Arc::new(ctx)),
        Ok(None) => unreachable!("--device gpu never means the CPU"),
        Err(e) => {
            if !gpu_required() {
                eprintln!("\n*** SKIPPING GPU TESTS: no GPU adapter ({e}) ***\n");
            }
            Err(e.to_string())
        }
    });
    match ctx {
        Ok(ctx) => Some(ctx.clone()),
        // Checked on every call: each test that would skip must fail.
        Err(e) if gpu_required() => panic!("QFORGE_REQUIRE_GPU=1 but no GPU: {e}"),
        Err(_) => None,
    }
}
