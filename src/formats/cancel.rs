//! The process-wide cancellation flag long jobs poll. The library never installs a signal
//! handler nor exits the process: the program (the CLI's `signals` module) sets the flag from
//! its handler, every write to an [`super::atomic::AtomicFile`] and every evaluation chunk
//! checks it, and the job returns [`Cancelled`] up the stack, dropping (and so removing) its
//! temporary files on the way out.

use std::sync::atomic::{AtomicBool, Ordering};

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// The job stopped because cancellation was requested (a signal, or the embedding program).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted: stopped on request before the end; no output written")]
pub struct Cancelled;

/// Ask every running job to stop at its next check. Safe to call from a signal-handling thread.
pub fn request() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Whether cancellation was requested.
pub fn is_requested() -> bool {
    CANCELLED.load(Ordering::Relaxed)
}

/// `Err(Cancelled)` once cancellation was requested.
pub fn check() -> Result<(), Cancelled> {
    if is_requested() {
        Err(Cancelled)
    } else {
        Ok(())
    }
}

/// Clear the flag (for a program that runs several jobs, after one was cancelled).
pub fn reset() {
    CANCELLED.store(false, Ordering::SeqCst);
}

/// The [`std::io::Error`] writers return once cancellation was requested. Its kind is `Other`,
/// not `Interrupted`, because `write_all` retries `Interrupted` forever.
pub fn io_error() -> std::io::Error {
    std::io::Error::other(Cancelled)
}
