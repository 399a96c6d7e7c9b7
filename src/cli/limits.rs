//! Bounds on the counts a command line gives: a thread count far past the machine's cores
//! only spends minutes spawning threads, so it is capped (the output never depends on it).

/// Threads per core beyond which more threads cannot help.
const THREADS_PER_CORE: usize = 8;

/// `requested` threads (0 = all cores, passed through), capped at [`THREADS_PER_CORE`] times the
/// cores with a notice on stderr naming `what` (the option).
pub fn cap_threads(requested: usize, what: &str) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = cores * THREADS_PER_CORE;
    if requested > max {
        eprintln!(
            "qforge: {what} {requested} capped at {max} ({THREADS_PER_CORE}× the {cores} cores)"
        );
        max
    } else {
        requested
    }
}
