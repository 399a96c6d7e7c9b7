//! The one way qforge sizes its worker pools: `threads` workers, 0 meaning one per core, and
//! never more than [`MAX_THREADS`] (a typo such as `100000` must not spawn threads for minutes).

/// The most workers any pool gets: far past any machine's core count, far below what makes
/// thread creation itself the job.
pub const MAX_THREADS: usize = 1024;

/// Errors sizing a pool.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// More threads than [`MAX_THREADS`] were asked for.
    #[error("{0} threads is more than the {MAX_THREADS} qforge runs at most")]
    TooMany(usize),
    /// The operating system refused to start the workers.
    #[error("cannot start the worker threads: {0}")]
    Spawn(#[from] rayon::ThreadPoolBuildError),
}

/// The worker count `threads` means: itself, or the machine's cores for 0.
pub fn resolve(threads: usize) -> Result<usize, ThreadsError> {
    if threads > MAX_THREADS {
        return Err(ThreadsError::TooMany(threads));
    }
    Ok(if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    })
}

/// A rayon pool of `threads` workers (0 = one per core).
pub fn pool(threads: usize) -> Result<rayon::ThreadPool, ThreadsError> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(resolve(threads)?)
        .build()?)
}

/// Size the process-wide rayon pool (0 = one per core); must run before any parallel work.
pub fn set_global(threads: usize) -> Result<(), ThreadsError> {
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(resolve(threads)?)
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
    fn zero_means_every_core_and_absurd_counts_are_refused() {
        assert!(resolve(0).unwrap() >= 1);
        assert_eq!(resolve(3).unwrap(), 3);
        assert!(matches!(
            resolve(100_000),
            Err(ThreadsError::TooMany(100_000))
        ));
        assert_eq!(pool(2).unwrap().current_num_threads(), 2);
        assert_eq!(install(Some(2), rayon::current_num_threads).unwrap(), 2);
    }
}
