//! The `qforge` binary: clap commands that build a job, run it, and print. No logic of its own.

mod cli;

fn main() {
    restore_sigpipe();
    std::process::exit(cli::run());
}

/// Rust ignores SIGPIPE, so `qforge info f | head -1` would panic in `println!` once `head`
/// exits. Restoring the default makes qforge end quietly there, as C command-line tools do.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
