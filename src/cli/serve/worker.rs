//! The worker pool: N threads, each taking the oldest queued job and running it as a child
//! `qforge` process in the root, its stdout and stderr into `STATE/logs/ID.log`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use regex::Regex;

use super::root_paths::job_dirs;
use super::store::{JobRow, Store};
use crate::cli::child_process::{qforge_command, remove_temp_files, send_signal, SIGINT};

/// How long a cancelled child has to clean up after SIGINT before SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_millis(1500);

/// What the HTTP handlers and the workers share.
pub struct Shared {
    /// The job table.
    pub store: Store,
    /// The canonical root jobs run in.
    pub root: PathBuf,
    /// Where job logs go (`STATE/logs`).
    pub log_dir: PathBuf,
    /// Running jobs asked to stop.
    pub cancels: Mutex<HashSet<i64>>,
    /// Rung when a job is queued.
    pub wake: (Mutex<u64>, Condvar),
}

impl Shared {
    /// The log file of job `id`.
    pub fn log_path(&self, id: i64) -> PathBuf {
        self.log_dir.join(format!("{id}.log"))
    }

    /// Tell the workers a job is queued.
    pub fn notify(&self) {
        let (m, cv) = &self.wake;
        *m.lock().unwrap() += 1;
        cv.notify_all();
    }
}

/// One worker: run queued jobs forever.
pub fn worker_loop(shared: Arc<Shared>) {
    loop {
        let seen = *shared.wake.0.lock().unwrap();
        match shared.store.claim_next() {
            Ok(Some(job)) => run_job(&shared, job),
            Ok(None) => {
                let (m, cv) = &shared.wake;
                let g = m.lock().unwrap();
                if *g == seen {
                    let _ = cv.wait_timeout(g, Duration::from_millis(500));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The last `[i/n]` a command printed, as a fraction (the eval commands' and sweep's counters).
fn progress_from_log(path: &Path, re: &Regex) -> Option<f64> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(8192))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let c = re.captures_iter(&text).last()?;
    let i: f64 = c[1].parse().ok()?;
    let n: f64 = c[2].parse().ok()?;
    (n > 0.0).then(|| (i / n).clamp(0.0, 1.0))
}

/// The last line of the log that says what went wrong.
fn last_error_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(
        line.trim()
            .strip_prefix("qforge: error: ")
            .unwrap_or(line.trim())
            .to_string(),
    )
}

/// A regular file's identity and last change: a file the job wrote (or renamed into place)
/// differs in one of them from what was there before it started.
type FileStamp = (u64, SystemTime, u64);

/// The regular files in `dirs` (not temporaries) with their stamps.
fn snapshot(dirs: &[PathBuf]) -> HashMap<PathBuf, FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let mut out = HashMap::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            let name = e.file_name().to_string_lossy().to_string();
            if !m.is_file() || name.ends_with(".tmp") {
                continue;
            }
            let Ok(t) = m.modified() else { continue };
            out.insert(e.path(), (m.ino(), t, m.len()));
        }
    }
    out
}

/// What the job wrote: files in `dirs` that are new or changed since `before` was taken.
/// Comparing stamps rather than times against the start keeps a file written just before
/// the job (coarse file-time granularity) out of its outputs.
fn outputs_since(
    root: &Path,
    dirs: &[PathBuf],
    before: &HashMap<PathBuf, FileStamp>,
) -> Vec<String> {
    let mut out: Vec<String> = snapshot(dirs)
        .into_iter()
        .filter(|(p, stamp)| before.get(p) != Some(stamp))
        .filter_map(|(p, _)| Some(p.strip_prefix(root).ok()?.to_string_lossy().to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A job's process: qforge in the root, without defaults files. Their values are not checked
/// against the root (an `imatrix = "/elsewhere"` would read outside it), so jobs take options
/// from their command line alone. Hub downloads (`pull`, and REPO_ID models) go to a cache
/// inside the root, never to the server user's own huggingface_hub cache.
fn job_command(args: &[String], root: &Path) -> std::io::Result<std::process::Command> {
    let mut c = qforge_command(args, root)?;
    c.env("QFORGE_NO_CONFIG", "1");
    c.env(
        "HF_HUB_CACHE",
        root.join(".cache").join("huggingface").join("hub"),
    );
    c.env_remove("HF_HOME");
    Ok(c)
}

/// A quantize job's output size, from a dry run of the same command line (the plan alone, on
/// the CPU: no kernels, no device probe), so its progress is the temporary file's share of it.
fn expected_output_bytes(root: &Path, args: &[String]) -> Option<u64> {
    if args.first().map(String::as_str) != Some("quantize") || args.iter().any(|a| a == "--dry-run")
    {
        return None;
    }
    let mut dry: Vec<String> = vec![args[0].clone(), "--dry-run".into()];
    if !args
        .iter()
        .any(|a| a == "--device" || a.starts_with("--device="))
    {
        dry.extend(["--device".into(), "cpu".into()]);
    }
    dry.extend(args[1..].iter().cloned());
    let out = job_command(&dry, root)
        .ok()?
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("quant size: "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((mib * 1048576.0) as u64)
}

/// Bytes written so far to process `pid`'s temporary files in `dirs`.
fn temp_bytes(dirs: &[PathBuf], pid: u32) -> u64 {
    let suffix = format!(".{pid}.tmp");
    let mut n = 0;
    for d in dirs {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(&suffix) {
                n += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    n
}

fn run_job(shared: &Shared, job: JobRow) {
    let id = job.id;
    let log_path = shared.log_path(id);
    let fail = |msg: String| {
        let _ = shared.store.finish(id, "failed", Some(&msg), &[], None);
    };
    let log = match File::create(&log_path) {
        Ok(f) => f,
        Err(e) => return fail(format!("creating {}: {e}", log_path.display())),
    };
    let mut cmd = match job_command(&job.args, &shared.root) {
        Ok(c) => c,
        Err(e) => return fail(format!("finding the qforge binary: {e}")),
    };
    let (out, err) = match (log.try_clone(), log.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return fail("duplicating the log file".into()),
    };
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    let before = snapshot(&job_dirs(&shared.root, &job.args));
    let expected = expected_output_bytes(&shared.root, &job.args);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("starting qforge: {e}")),
    };
    let pid = child.id();
    let _ = shared.store.set_pid(id, pid);
    let re = Regex::new(r"\[(\d+)/(\d+)\]").expect("valid regex");
    let dirs_now = job_dirs(&shared.root, &job.args);
    let mut signalled: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        let cancel = shared.cancels.lock().unwrap().contains(&id);
        match signalled {
            None if cancel => {
                send_signal(pid, SIGINT);
                signalled = Some(Instant::now());
            }
            Some(t) if t.elapsed() > CANCEL_GRACE => {
                let _ = child.kill();
            }
            _ => {}
        }
        if last_progress.elapsed() > Duration::from_millis(300) {
            let from_file = expected
                .filter(|&n| n > 0)
                .map(|n| temp_bytes(&dirs_now, pid) as f64 / n as f64);
            if let Some(p) = progress_from_log(&log_path, &re).or(from_file) {
                // 1 means finished: the rename and the record are still to come.
                let _ = shared.store.set_progress(id, p.clamp(0.0, 0.99));
            }
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    // Whatever the child's own handler did, no temporary file of it survives.
    let dirs = job_dirs(&shared.root, &job.args);
    remove_temp_files(&dirs, pid);
    let cancelled = shared.cancels.lock().unwrap().remove(&id);
    match status {
        Some(s) if s.success() => {
            let outputs = outputs_since(&shared.root, &dirs, &before);
            let _ = shared
                .store
                .finish(id, "succeeded", None, &outputs, s.code());
        }
        Some(s) if cancelled => {
            let _ = shared
                .store
                .finish(id, "cancelled", Some("cancelled"), &[], s.code());
        }
        Some(s) => {
            let msg = last_error_line(&log_path).unwrap_or_else(|| match s.code() {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".into(),
            });
            let _ = shared.store.finish(id, "failed", Some(&msg), &[], s.code());
        }
        None => fail("lost track of the child process".into()),
    }
}
