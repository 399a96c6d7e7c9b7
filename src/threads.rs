//! The one way qforge sizes its worker pools: `threads` workers, 0 meaning one per core, and
//! never more than [`THREADS_PER_CORE`] per core — a typo such as `100000` must not spend
//! minutes spawning threads, and the output never depends on the count, so it is capped (with
//! a [`Notice`](crate::notice::Notice)), not refused.

use crate::notice::{self, Notice};

/// Threads per core beyond which more threads cannot help.
pub const THREADS_PER_CORE: usize = 8;

/// Errors sizing a pool.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// The operating system refused to start the workers.
    #[error("cannot start the worker threads: {0}")]
    Spawn(#[from] rayon::ThreadPoolBuildError),
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `requested` (0 passes through) capped at [`THREADS_PER_CORE`] times the cores; a cap is
/// reported as a notice naming `what` (the option that asked).
pub fn cap(requested: usize, what: &str) -> usize {
    let cores = cores();
    let max = cores * THREADS_PER_CORE;
    if requested > max {
        notice::emit(Notice::ThreadsCapped {
            option: what.to_string(),
            requested,
            max,
            cores,
        });
        max
    } else {
        requested
    }
}

/// The worker count `threads` means: itself (capped), or the machine's cores for 0.
pub fn resolve(threads: usize) -> usize {
    if threads == 0 {
        cores()
    } else {
        cap(threads, "the thread count")
    }
}

/// A rayon pool of `threads` workers (0 = one per core).
pub fn pool(threads: usize) -> Result<rayon::ThreadPool, ThreadsError> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(resolve(threads))
        .build()?)
}

/// Size the process-wide rayon pool (0 = one per core); must run before any parallel work.
pub fn set_global(threads: usize) -> Result<(), ThreadsError> {
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(resolve(threads))
            .build_global()?;
    }
    Ok(())
}

/// Run `f` on a pool of `threads` workers, or on the current (global) pool for `None`.
pub fn install<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, ThreadsError> {
    match threads {
        Some(n) => Ok(pool(n.max(1))?.install(f)),
        None => Ok(f()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_every_core_and_absurd_counts_are_capped() {
        assert!(resolve(0) >= 1);
        assert_eq!(resolve(3), 3.min(cores() * THREADS_PER_CORE));
        assert_eq!(resolve(100_000), cores() * THREADS_PER_CORE);
        assert_eq!(pool(2).unwrap().current_num_threads(), 2);
        assert_eq!(install(Some(2), rayon::current_num_threads).unwrap(), 2);
    }
}
