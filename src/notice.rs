//! What the library has to tell its user, without printing it: fallbacks and distrusted
//! kernels go to the process's [`Observer`], which the command-line front end installs and
//! renders. With none installed, notices are dropped — the library itself never writes to
//! stdout or stderr.

use std::fmt;
use std::sync::{Arc, RwLock};

/// One thing the user should know about a job that still goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `--device auto` found no usable GPU (none, or it failed to open): the CPU runs the job.
    CpuFallback {
        /// Why the GPU is not used.
        reason: String,
    },
    /// A GPU kernel failed its self-check on an adapter; the CPU does that kernel's work.
    KernelDisabled {
        /// The kernel (type, imatrix or not; or "LoRA merge", "forward pass").
        kernel: String,
        /// The adapter's name.
        adapter: String,
        /// What the self-check saw.
        detail: String,
    },
    /// A type has no GPU kernel (yet): `--device auto` quantizes it on the CPU.
    NoGpuKernel {
        /// The ggml type.
        ty: String,
    },
    /// A worker count far past the machine's cores was lowered (the output does not change).
    ThreadsCapped {
        /// The option that asked (`NTHREADS`, `--threads`).
        option: String,
        /// What it asked for.
        requested: usize,
        /// What is used.
        max: usize,
        /// The machine's cores.
        cores: usize,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::CpuFallback { reason } => write!(f, "{reason}; using the CPU"),
            Notice::KernelDisabled {
                kernel,
                adapter,
                detail,
            } => write!(
                f,
                "warning: GPU {kernel} disabled on '{adapter}': {detail}; using the CPU"
            ),
            Notice::NoGpuKernel { ty } => {
                write!(f, "no GPU kernel for {ty} yet; quantizing it on the CPU")
            }
            Notice::ThreadsCapped {
                option,
                requested,
                max,
                cores,
            } => write!(
                f,
                "{option} {requested} capped at {max} ({}× the {cores} cores)",
                max / cores.max(&1)
            ),
        }
    }
}

/// Receives the library's notices (the CLI prints them; tests collect them).
pub trait Observer: Send + Sync {
    /// A notice, delivered on whichever thread raised it.
    fn notice(&self, notice: &Notice);
}

static OBSERVER: RwLock<Option<Arc<dyn Observer>>> = RwLock::new(None);

/// Install the process's observer (replacing any earlier one); `None` drops notices again.
pub fn set_observer(observer: Option<Arc<dyn Observer>>) {
    *OBSERVER.write().unwrap_or_else(|e| e.into_inner()) = observer;
}

/// Hand `notice` to the installed observer, if any.
pub fn emit(notice: Notice) {
    let observer = OBSERVER.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(o) = observer {
        o.notice(&notice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Collect(Mutex<Vec<Notice>>);
    impl Observer for Collect {
        fn notice(&self, n: &Notice) {
            self.0.lock().unwrap().push(n.clone());
        }
    }

    #[test]
    fn notices_reach_the_installed_observer_and_render_as_one_line() {
        let c = Arc::new(Collect(Mutex::new(Vec::new())));
        set_observer(Some(c.clone()));
        emit(Notice::CpuFallback {
            reason: "GPU unavailable (no adapter)".into(),
        });
        set_observer(None);
        emit(Notice::CpuFallback {
            reason: "dropped".into(),
        });
        let got = c.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].to_string(),
            "GPU unavailable (no adapter); using the CPU"
        );
    }
}
