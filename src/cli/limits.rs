//! Bounds on the counts a command line gives: thread counts go through the library's one cap
//! ([`qforge::threads::cap`]), which names the option in its notice.

/// `requested` threads (0 = all cores, passed through), capped by the library's rule; the
/// notice names `what` (the option).
pub fn cap_threads(requested: usize, what: &str) -> usize {
    qforge::threads::cap(requested, what)
}
