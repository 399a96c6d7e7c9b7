//! `qforge pull REPO_ID[@REVISION]`, and the Hub side of every model argument: a path that does
//! not exist but reads `ORG/NAME[@REV]` or `hf://ORG/NAME[@REV][/FILE]` is pulled first.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use qforge::hub::{pull, pull_model, HubRef, HubSettings, NamedView, PullEvent, PullOptions};

#[derive(Args)]
pub struct PullArgs {
    /// ORG/NAME[@REVISION] (or hf://ORG/NAME[@REVISION]); the revision defaults to main.
    repo: String,
    /// Only files matching this glob (repeatable; `*` matches across `/`, `dir/` = all under it).
    #[arg(long)]
    include: Vec<String>,
    /// Leave out files matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// The hub cache (default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Files transferred at once.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
}

pub fn run(a: PullArgs) -> Result<()> {
    let mut settings = HubSettings::from_env();
    if let Some(d) = a.cache_dir {
        settings.cache_dir = d;
    }
    let r = match HubRef::parse(&a.repo) {
        Some(r) if r.path.is_none() => r,
        Some(r) => bail!(
            "{}: pull takes a repository; use --include {:?} to pull one file",
            a.repo,
            r.path.unwrap_or_default()
        ),
        None => bail!("{}: not a repository id (ORG/NAME[@REVISION])", a.repo),
    };
    let opts = PullOptions {
        revision: r.revision.clone(),
        include: a.include,
        exclude: a.exclude,
        jobs: a.jobs,
    };
    let progress = PullProgress::new();
    let report = pull(&r.repo, &opts, &settings, &|e| progress.event(e));
    progress.finish();
    let report = report?;
    let fetched = report.files.len() - report.cached_files;
    println!(
        "{}@{}: {} file(s), {} downloaded ({:.1} MiB), {} already cached{}",
        report.repo,
        report.commit,
        report.files.len(),
        fetched,
        report.downloaded_bytes as f64 / 1048576.0,
        report.cached_files,
        if report.from_cache_only {
            " (offline: from the cache)"
        } else {
            ""
        }
    );
    println!("{}", report.snapshot.display());
    Ok(())
}

/// A model argument made local. Keep it alive while the path is in use: a Hugging Face
/// checkpoint pulled from the Hub is presented through a [`NamedView`] named after the
/// repository (the converter takes `general.name` from the folder name), removed on drop.
pub struct LocalModel {
    /// What to open.
    pub path: PathBuf,
    /// Whether it came from the Hub (outputs then default to the current folder, not the cache).
    pub from_hub: bool,
    _view: Option<NamedView>,
}

/// `arg` unchanged when it exists (or is no Hub reference); else pulled, see
/// [`qforge::hub::resolve_model_arg`].
pub fn local_model(arg: &Path) -> Result<LocalModel> {
    let local = |p: &Path| LocalModel {
        path: p.to_path_buf(),
        from_hub: false,
        _view: None,
    };
    if arg.exists() {
        return Ok(local(arg));
    }
    let Some(r) = arg.to_str().and_then(HubRef::parse) else {
        return Ok(local(arg));
    };
    let settings = HubSettings::from_env();
    let progress = PullProgress::new();
    let result = pull_model(&r, &settings, 8, &|e| progress.event(e));
    progress.finish();
    // A bare ORG/NAME may be a mistyped local path: say both were tried.
    let (path, report) =
        result.with_context(|| match arg.to_string_lossy().starts_with("hf://") {
            true => format!("{}: pulling from the Hub", arg.display()),
            false => format!("{}: no such local path; tried the Hub", arg.display()),
        })?;
    eprintln!(
        "qforge: {}@{} → {}",
        report.repo,
        report.commit,
        path.display()
    );
    let view = if path.is_dir() {
        let name = r.repo.rsplit('/').next().unwrap_or(&r.repo);
        Some(NamedView::new(&path, name)?)
    } else {
        None
    };
    Ok(LocalModel {
        path: view.as_ref().map_or(path, |v| v.path().to_path_buf()),
        from_hub: true,
        _view: view,
    })
}

/// [`local_model`] for each path, replaced in place (LoRA adapter lists); keep the result alive
/// while the paths are in use.
pub fn local_models<'a>(
    paths: impl IntoIterator<Item = &'a mut PathBuf>,
) -> Result<Vec<LocalModel>> {
    paths
        .into_iter()
        .map(|p| {
            let m = local_model(p)?;
            p.clone_from(&m.path);
            Ok(m)
        })
        .collect()
}

/// Renders [`PullEvent`]s: one bar with bytes/s and ETA on a terminal, plain lines otherwise.
struct PullProgress {
    bar: Option<ProgressBar>,
    lines: Mutex<()>,
}

impl PullProgress {
    fn new() -> PullProgress {
        PullProgress {
            bar: std::io::stderr().is_terminal().then(ProgressBar::hidden),
            lines: Mutex::new(()),
        }
    }

    fn say(&self, msg: String) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => {
                let _guard = self.lines.lock();
                eprintln!("{msg}");
            }
        }
    }

    fn event(&self, e: &PullEvent) {
        match e {
            PullEvent::Plan {
                repo,
                commit,
                files,
                cached_files,
                bytes_to_fetch,
            } => {
                self.say(format!(
                    "qforge: {repo}@{commit}: {files} file(s), {cached_files} cached, {:.1} MiB to fetch",
                    *bytes_to_fetch as f64 / 1048576.0
                ));
                if let Some(b) = &self.bar {
                    b.set_length(*bytes_to_fetch);
                    b.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} \
                             ({binary_bytes_per_sec}, ETA {eta}) {msg}",
                        )
                        .expect("valid template"),
                    );
                    b.set_draw_target(ProgressDrawTarget::stderr());
                    b.enable_steady_tick(std::time::Duration::from_millis(200));
                }
            }
            PullEvent::Resumed { path, offset } => {
                self.say(format!("qforge: {path}: resuming at byte {offset}"));
                if let Some(b) = &self.bar {
                    b.inc(*offset);
                }
            }
            PullEvent::Bytes { path, n } => {
                if let Some(b) = &self.bar {
                    b.set_message(path.clone());
                    b.inc(*n);
                }
            }
            PullEvent::Retry {
                path,
                attempt,
                wait,
                reason,
            } => self.say(format!(
                "qforge: {path}: {reason}; retry {attempt} in {:.1} s",
                wait.as_secs_f64()
            )),
            PullEvent::FileDone { path, size } => {
                if self.bar.is_none() {
                    self.say(format!("qforge: {path}: {size} bytes, verified"));
                }
            }
            PullEvent::UsingCache { reason } => self.say(format!(
                "qforge: the Hub is unreachable ({reason}); using the cached snapshot"
            )),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
