//! The `qforge` binary: clap commands that build a job, run it, and print. No logic of its own.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
