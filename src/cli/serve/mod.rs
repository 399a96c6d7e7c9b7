//! `qforge serve`: a jobs server. Jobs are qforge command lines POSTed as JSON, checked by the
//! CLI's parser, confined to `--root`, stored in SQLite under `--state`, and run `--jobs N` at
//! once as child processes (see [`worker`]).
//!
//! HTTP is tiny_http: small and synchronous, which fits blocking SQLite and child processes
//! without an async runtime, and compiles quickly.

mod http;
mod root_paths;
mod store;
mod worker;

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};

use crate::cli::child_process::remove_temp_files;

/// Threads answering HTTP requests (each holds the store only briefly).
const HTTP_THREADS: usize = 8;

/// `qforge serve`'s command line.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The directory jobs read and write in; paths in jobs are relative to it.
    #[arg(long)]
    root: PathBuf,
    /// File holding the bearer token clients must send.
    #[arg(long)]
    token_file: PathBuf,
    /// Where the job database and logs live (outside the root). Default:
    /// `$XDG_STATE_HOME/qforge/serve`, else `~/.local/state/qforge/serve`.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Jobs running at once.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Most jobs waiting at once; more get 429.
    #[arg(long, default_value_t = 1024)]
    max_queued: usize,
}

fn default_state_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("qforge/serve"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("no --state given and neither XDG_STATE_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".local/state/qforge/serve"))
}

/// Serve until killed.
pub fn run(a: ServeArgs) -> Result<()> {
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let root =
        std::fs::canonicalize(&a.root).with_context(|| format!("--root {}", a.root.display()))?;
    if !root.is_dir() {
        bail!("--root {}: not a directory", a.root.display());
    }
    let token = std::fs::read_to_string(&a.token_file)
        .with_context(|| format!("reading --token-file {}", a.token_file.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!(
            "--token-file {}: the token is empty",
            a.token_file.display()
        );
    }
    let state = match a.state {
        Some(s) => s,
        None => default_state_dir()?,
    };
    let log_dir = state.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let state = std::fs::canonicalize(&state)?;
    if state.starts_with(&root) {
        bail!(
            "--state {} is inside --root {}: jobs could overwrite the job database",
            state.display(),
            root.display()
        );
    }
    let store = store::Store::open(&state.join("jobs.sqlite3"))?;
    // Jobs running when the last server died: failed, and nothing of theirs left half-written.
    for j in store.recover_interrupted()? {
        if let Some(pid) = j.pid {
            let removed = remove_temp_files(&root_paths::job_dirs(&root, &j.args), pid);
            eprintln!(
                "qforge: serve: job {} was running when the server stopped: marked failed (interrupted){}",
                j.id,
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(", removed {} temporary file(s)", removed.len())
                }
            );
        }
    }
    let server =
        tiny_http::Server::http(&a.listen).map_err(|e| anyhow!("--listen {}: {e}", a.listen))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("--listen {}: not an IP address", a.listen))?;
    let shared = Arc::new(worker::Shared {
        store,
        root,
        log_dir,
        cancels: Mutex::new(HashSet::new()),
        wake: (Mutex::new(0), Condvar::new()),
    });
    for _ in 0..a.jobs {
        let s = shared.clone();
        std::thread::spawn(move || worker::worker_loop(s));
    }
    let api = Arc::new(http::Api {
        shared,
        token_digest: Sha256::digest(token.as_bytes()).into(),
        max_queued: a.max_queued,
    });
    let server = Arc::new(server);
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    let handlers: Vec<_> = (0..HTTP_THREADS)
        .map(|_| {
            let (server, api) = (server.clone(), api.clone());
            std::thread::spawn(move || {
                while let Ok(rq) = server.recv() {
                    api.handle(rq);
                }
            })
        })
        .collect();
    for h in handlers {
        let _ = h.join();
    }
    Ok(())
}
