//! Weights from the Hugging Face Hub: `qforge pull` and `REPO_ID[@REV]` / `hf://…` model
//! arguments.
//!
//! Files land in the cache huggingface_hub uses (see [`cache`]), so either tool reuses the other's
//! downloads. Transfers are resumable and checked: LFS files against their sha256, the rest
//! against their git blob sha1, before anything is linked into a snapshot (see [`download`]).
//! The library prints nothing: progress goes to the caller's observer as [`PullEvent`]s.

pub mod api;
pub mod cache;
pub mod download;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

pub use api::{HubClient, HubSettings, RepoFile, RepoListing};
pub use cache::RepoCache;

/// Everything that can stop a pull, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A model argument that is neither an existing path nor a repository reference.
    #[error("{arg}: not a local path, nor a Hub repository (ORG/NAME[@REVISION] or hf://ORG/NAME[@REVISION][/FILE])")]
    BadReference {
        /// The argument as given.
        arg: String,
    },
    /// 401/403/404 for the repository without a token (the Hub hides private repos this way),
    /// or with a token that cannot see it.
    #[error("{repo}: repository not found{}", if *token_sent { " (or the token in HF_TOKEN has no access to it)" } else { ", or private: set HF_TOKEN (or run `huggingface-cli login`) to a token that can read it" })]
    RepoNotFound {
        /// `org/name`.
        repo: String,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// The token was sent and refused.
    #[error("{repo}: the Hub refused the token (HTTP {status}); check HF_TOKEN or the token file under HF_HOME")]
    TokenRejected {
        /// `org/name`.
        repo: String,
        /// 401 or 403.
        status: u16,
    },
    /// A gated repository whose terms this account has not accepted (or no token was sent).
    #[error("{repo}: gated repository: {}accept its terms at {endpoint}/{repo}", if *token_sent { "" } else { "set HF_TOKEN to a token of your account, and " })]
    Gated {
        /// `org/name`.
        repo: String,
        /// The Hub's address, for the link to the terms.
        endpoint: String,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// The repository exists but the revision does not.
    #[error("{repo}: revision {revision:?} not found (no such branch, tag or commit)")]
    RevisionNotFound {
        /// `org/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
    },
    /// A file asked for is not in the revision.
    #[error("{repo}@{revision}: file {path:?} not found in the repository")]
    FileNotFound {
        /// `org/name`.
        repo: String,
        /// The revision or commit.
        revision: String,
        /// The path inside the repository.
        path: String,
    },
    /// `--include`/`--exclude` left nothing to pull.
    #[error("{repo}@{revision}: no file matches the --include/--exclude patterns")]
    NothingSelected {
        /// `org/name`.
        repo: String,
        /// The revision.
        revision: String,
    },
    /// A repository of several GGUF files given where one model file is needed.
    #[error("{repo}: {} .gguf files and no config.json; name one, e.g. hf://{repo}/{}", files.len(), files.first().map(String::as_str).unwrap_or(""))]
    AmbiguousGguf {
        /// `org/name`.
        repo: String,
        /// The .gguf files of the repository.
        files: Vec<String>,
    },
    /// Offline (`HF_HUB_OFFLINE` or no connection) and the revision is not in the cache.
    #[error("{repo}@{revision}: not in the cache {} and {reason}", cache.display())]
    NotCached {
        /// `org/name`.
        repo: String,
        /// The revision.
        revision: String,
        /// The cache looked in.
        cache: PathBuf,
        /// Why the Hub was not asked: offline mode, or the error reaching it.
        reason: String,
    },
    /// Any other HTTP error status.
    #[error("{url}: HTTP {status} {message}")]
    Http {
        /// The request.
        url: String,
        /// The status.
        status: u16,
        /// The Hub's `X-Error-Message`, if any.
        message: String,
    },
    /// The connection failed every attempt.
    #[error("{url}: {error} (gave up after {attempts} attempt(s); run again to resume)")]
    Transport {
        /// The request.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        error: String,
    },
    /// The Hub answered something that is not what its API returns.
    #[error("{url}: unexpected answer: {what}")]
    BadResponse {
        /// The request.
        url: String,
        /// What was wrong.
        what: String,
    },
    /// Downloaded bytes whose hash is not the listing's (the bytes were removed).
    #[error("{path}: {algorithm} mismatch: expected {expected}, got {actual} (corrupted in transit; the bad bytes were removed, run again)")]
    ChecksumMismatch {
        /// The path inside the repository.
        path: String,
        /// `sha256` (LFS files) or `git blob sha1`.
        algorithm: &'static str,
        /// The listing's hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// Downloaded bytes of the wrong length.
    #[error("{path}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The path inside the repository.
        path: String,
        /// The listing's size.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// The disk filled while writing (the partial file is kept for a resume; nothing was linked).
    #[error("{}: disk full; free space and run again (the transfer resumes where it stopped)", path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// An `--include`/`--exclude` pattern that is not a glob.
    #[error("pattern {pattern:?}: {error}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        error: String,
    },
}

impl HubError {
    /// An I/O error on `path`; ENOSPC becomes [`HubError::DiskFull`].
    pub fn io(path: &Path, error: std::io::Error) -> HubError {
        if error.kind() == std::io::ErrorKind::StorageFull || error.raw_os_error() == Some(28) {
            return HubError::DiskFull {
                path: path.to_path_buf(),
            };
        }
        HubError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// What a pull reports while it runs. Events come from several worker threads.
#[derive(Clone, Debug)]
pub enum PullEvent {
    /// The revision was resolved and the files chosen.
    Plan {
        /// `org/name`.
        repo: String,
        /// The commit.
        commit: String,
        /// Files selected.
        files: usize,
        /// Of them, already in the cache.
        cached_files: usize,
        /// Bytes still to bring into the cache (all of the files not cached, including any part
        /// an earlier run left).
        bytes_to_fetch: u64,
    },
    /// A transfer continues from bytes an earlier run left in `.incomplete`.
    Resumed {
        /// The path inside the repository.
        path: String,
        /// Bytes already there.
        offset: u64,
    },
    /// Bytes arrived.
    Bytes {
        /// The path inside the repository.
        path: String,
        /// How many.
        n: u64,
    },
    /// An attempt broke; another follows after `wait`.
    Retry {
        /// The path inside the repository.
        path: String,
        /// The number of the retry (1 = the first).
        attempt: u32,
        /// The wait before it.
        wait: Duration,
        /// What broke.
        reason: String,
    },
    /// A file is verified and linked into the snapshot.
    FileDone {
        /// The path inside the repository.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The Hub could not be reached; the cached snapshot is used.
    UsingCache {
        /// Why the Hub was not used.
        reason: String,
    },
}

/// Which files of a revision to pull.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// Only files matching one of these globs (fnmatch: `*` crosses `/`; a trailing `/` means
    /// everything under that folder), as huggingface_hub's `allow_patterns`.
    pub include: Vec<String>,
    /// No file matching one of these, as `ignore_patterns`.
    pub exclude: Vec<String>,
    /// Files transferred at once (0 or 1: one at a time).
    pub jobs: usize,
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct PullReport {
    /// `org/name`.
    pub repo: String,
    /// The commit pulled.
    pub commit: String,
    /// `snapshots/{commit}` in the cache.
    pub snapshot: PathBuf,
    /// The selected files (paths inside the repository).
    pub files: Vec<String>,
    /// Of them, already cached before this pull.
    pub cached_files: usize,
    /// Bytes that came over the network.
    pub downloaded_bytes: u64,
    /// Whether the Hub was not asked (offline mode or unreachable).
    pub from_cache_only: bool,
}

/// A compiled `--include`/`--exclude` selection.
struct Selection {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Selection {
    fn new(include: &[String], exclude: &[String]) -> Result<Selection, HubError> {
        fn build(patterns: &[String]) -> Result<Option<GlobSet>, HubError> {
            if patterns.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                // huggingface_hub: a pattern ending in "/" means the whole folder.
                let pat = if p.ends_with('/') {
                    format!("{p}*")
                } else {
                    p.clone()
                };
                let g = GlobBuilder::new(&pat)
                    .literal_separator(false)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| HubError::BadPattern {
                        pattern: p.clone(),
                        error: e.to_string(),
                    })?;
                b.add(g);
            }
            b.build().map(Some).map_err(|e| HubError::BadPattern {
                pattern: patterns.join(","),
                error: e.to_string(),
            })
        }
        Ok(Selection {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    fn matches(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(path))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(path))
    }
}

/// Pull `repo` (`org/name`) into the cache: resolve the revision, transfer every selected file
/// not yet cached (`opts.jobs` at a time), link the snapshot and record the ref. With
/// `settings.offline`, or when the Hub cannot be reached at all, a cached snapshot of the
/// revision answers instead.
pub fn pull(
    repo: &str,
    opts: &PullOptions,
    settings: &HubSettings,
    observer: &(dyn Fn(&PullEvent) + Sync),
) -> Result<PullReport, HubError> {
    let selection = Selection::new(&opts.include, &opts.exclude)?;
    let revision = opts.revision.as_deref().unwrap_or("main");
    let cache = RepoCache::new(&settings.cache_dir, repo);
    let client = HubClient::new(settings);
    let listing = match list_or_cache(&client, &cache, repo, revision, observer)? {
        Listed::Hub(l) => l,
        Listed::Cache(commit) => {
            let files: Vec<String> = cache
                .snapshot_files(&commit)
                .into_iter()
                .filter(|p| selection.matches(p))
                .collect();
            if files.is_empty() {
                return Err(HubError::NothingSelected {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                });
            }
            return Ok(PullReport {
                repo: repo.to_string(),
                snapshot: cache.snapshot_dir(&commit),
                commit,
                cached_files: files.len(),
                files,
                downloaded_bytes: 0,
                from_cache_only: true,
            });
        }
    };
    pull_listed(&client, &cache, &listing, &selection, opts.jobs, observer)
}

/// A revision's files, from the Hub or (offline, unreachable) from a cached snapshot.
enum Listed {
    Hub(RepoListing),
    Cache(String),
}

fn list_or_cache(
    client: &HubClient,
    cache: &RepoCache,
    repo: &str,
    revision: &str,
    observer: &(dyn Fn(&PullEvent) + Sync),
) -> Result<Listed, HubError> {
    let settings = client.settings();
    let cached = || {
        cache
            .read_ref(revision)
            .filter(|c| cache.snapshot_dir(c).is_dir())
    };
    let not_cached = |reason: String| HubError::NotCached {
        repo: repo.to_string(),
        revision: revision.to_string(),
        cache: cache.root().to_path_buf(),
        reason,
    };
    if settings.offline {
        return cached()
            .map(Listed::Cache)
            .ok_or_else(|| not_cached("HF_HUB_OFFLINE is set".to_string()));
    }
    match client.list(repo, revision) {
        Ok(l) => Ok(Listed::Hub(l)),
        // No connection at all: like huggingface_hub, a cached snapshot will do.
        Err(HubError::Transport { url, error, .. }) => match cached() {
            Some(c) => {
                observer(&PullEvent::UsingCache {
                    reason: format!("{url}: {error}"),
                });
                Ok(Listed::Cache(c))
            }
            None => Err(not_cached(format!(
                "the Hub is unreachable ({url}: {error})"
            ))),
        },
        Err(e) => Err(e),
    }
}

fn pull_listed(
    client: &HubClient,
    cache: &RepoCache,
    listing: &RepoListing,
    selection: &Selection,
    jobs: usize,
    observer: &(dyn Fn(&PullEvent) + Sync),
) -> Result<PullReport, HubError> {
    let repo = listing.repo.as_str();
    let commit = listing.commit.as_str();
    let chosen: Vec<&RepoFile> = listing
        .files
        .iter()
        .filter(|f| selection.matches(&f.path))
        .collect();
    if chosen.is_empty() {
        return Err(HubError::NothingSelected {
            repo: repo.to_string(),
            revision: listing.revision.clone(),
        });
    }
    // The ref first, as huggingface_hub does: it names the commit whatever happens next.
    cache.write_ref(&listing.revision, commit)?;
    std::fs::create_dir_all(cache.snapshot_dir(commit))
        .map_err(|e| HubError::io(&cache.snapshot_dir(commit), e))?;
    let mut todo = Vec::new();
    let mut cached_files = 0;
    for f in &chosen {
        if cache.has_file(commit, &f.path, f.size) {
            cached_files += 1;
        } else if cache.has_blob(f.etag(), f.size) {
            // Shared with another revision: link only.
            cache.link(commit, &f.path, f.etag())?;
            cached_files += 1;
        } else {
            todo.push(*f);
        }
    }
    observer(&PullEvent::Plan {
        repo: repo.to_string(),
        commit: commit.to_string(),
        files: chosen.len(),
        cached_files,
        bytes_to_fetch: todo.iter().map(|f| f.size).sum(),
    });
    // Big files first, so the parallel tail is short.
    todo.sort_by_key(|f| std::cmp::Reverse(f.size));
    let queue = Mutex::new(todo.into_iter());
    let downloaded = Mutex::new(0u64);
    let first_error: Mutex<Option<HubError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let workers = jobs.max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Some(f) = queue.lock().expect("queue lock").next() else {
                    return;
                };
                match download::fetch_file(client, cache, repo, commit, f, observer) {
                    Ok(n) => {
                        *downloaded.lock().expect("counter lock") += n;
                        observer(&PullEvent::FileDone {
                            path: f.path.clone(),
                            size: f.size,
                        });
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        first_error.lock().expect("error lock").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().expect("error lock") {
        return Err(e);
    }
    Ok(PullReport {
        repo: repo.to_string(),
        commit: commit.to_string(),
        snapshot: cache.snapshot_dir(commit),
        files: chosen.iter().map(|f| f.path.clone()).collect(),
        cached_files,
        downloaded_bytes: downloaded.into_inner().expect("counter lock"),
        from_cache_only: false,
    })
}

/// A parsed Hub reference: `ORG/NAME[@REVISION]` or `hf://ORG/NAME[@REVISION][/PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    /// `org/name`.
    pub repo: String,
    /// The revision, if one was given.
    pub revision: Option<String>,
    /// A file inside the repository, if one was given (hf:// form only).
    pub path: Option<String>,
}

impl HubRef {
    /// Parse `arg`; `None` when it is not a Hub reference.
    pub fn parse(arg: &str) -> Option<HubRef> {
        let (explicit, rest) = match arg.strip_prefix("hf://") {
            Some(r) => (true, r),
            None => (false, arg),
        };
        let mut parts = rest.splitn(3, '/');
        let org = parts.next()?;
        let second = parts.next()?;
        let tail = parts.next();
        // The revision sits on the name: org/name@rev[/path]. Without hf:// there is no path,
        // so the revision may contain slashes (refs/pr/1).
        let (name, revision, path) = match second.split_once('@') {
            Some((n, r)) if !explicit => {
                let rev = match tail {
                    Some(t) => format!("{r}/{t}"),
                    None => r.to_string(),
                };
                (n, Some(rev), None)
            }
            Some((n, r)) => (n, Some(r.to_string()), tail.map(str::to_string)),
            None if !explicit && tail.is_some() => return None,
            None => (second, None, tail.map(str::to_string)),
        };
        let valid_id = |s: &str| {
            !s.is_empty()
                && s.len() <= 96
                && !s.starts_with(['.', '-'])
                && !s.contains("..")
                && !s.contains("--")
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !valid_id(org) || !valid_id(name) {
            return None;
        }
        if revision.as_deref().is_some_and(|r| {
            r.is_empty() || r.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        }) {
            return None;
        }
        if let Some(p) = &path {
            api::check_repo_path(p).ok()?;
        }
        Some(HubRef {
            repo: format!("{org}/{name}"),
            revision,
            path,
        })
    }
}

/// What a model argument names, for commands that take a model: an existing local path is
/// returned unchanged; otherwise `ORG/NAME[@REV]` or `hf://ORG/NAME[@REV][/FILE]` is pulled and
/// the local path of what it names is returned:
///
/// - with a FILE: that file (and only it is pulled);
/// - a repository with a `config.json` (a Hugging Face checkpoint), or with no `.gguf` file: the
///   snapshot directory, without the duplicate weight formats a converter does not read
///   (`*.bin`, `*.pth`, `*.pt`, `*.h5`, `*.msgpack`, `*.onnx`, `*.ot`, `*.gguf`, `original/`)
///   when the repository has `*.safetensors`;
/// - a repository of exactly one `.gguf` file (and no config.json): that file;
/// - several `.gguf` files: an error listing them (name one with hf://…/FILE).
///
/// An argument that is no path and no reference is returned unchanged, so the command reports
/// the missing file as it always did.
pub fn resolve_model_arg(
    arg: &Path,
    settings: &HubSettings,
    observer: &(dyn Fn(&PullEvent) + Sync),
) -> Result<PathBuf, HubError> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let Some(r) = arg.to_str().and_then(HubRef::parse) else {
        return Ok(arg.to_path_buf());
    };
    Ok(pull_model(&r, settings, 8, observer)?.0)
}

/// [`resolve_model_arg`] for a parsed reference, with `jobs` parallel transfers; also returns
/// the pull's report.
pub fn pull_model(
    r: &HubRef,
    settings: &HubSettings,
    jobs: usize,
    observer: &(dyn Fn(&PullEvent) + Sync),
) -> Result<(PathBuf, PullReport), HubError> {
    let revision = r.revision.clone().unwrap_or_else(|| "main".to_string());
    let cache = RepoCache::new(&settings.cache_dir, &r.repo);
    let client = HubClient::new(settings);
    let (paths, listing): (Vec<String>, Option<RepoListing>) =
        match list_or_cache(&client, &cache, &r.repo, &revision, observer)? {
            Listed::Hub(l) => (l.files.iter().map(|f| f.path.clone()).collect(), Some(l)),
            Listed::Cache(commit) => (cache.snapshot_files(&commit), None),
        };
    let (include, exclude, pick): (Vec<String>, Vec<String>, Option<String>) = match &r.path {
        Some(p) => {
            if listing.is_none() && !paths.iter().any(|x| x == p) {
                return Err(HubError::NotCached {
                    repo: r.repo.clone(),
                    revision,
                    cache: cache.root().to_path_buf(),
                    reason: format!("{p} is not in the cached snapshot and the Hub is not used"),
                });
            }
            if !paths.iter().any(|x| x == p) {
                return Err(HubError::FileNotFound {
                    repo: r.repo.clone(),
                    revision,
                    path: p.clone(),
                });
            }
            (vec![glob_literal(p)], vec![], Some(p.clone()))
        }
        None => {
            let ggufs: Vec<String> = paths
                .iter()
                .filter(|p| p.to_ascii_lowercase().ends_with(".gguf"))
                .cloned()
                .collect();
            let has_config = paths.iter().any(|p| p == "config.json");
            if !has_config && ggufs.len() == 1 {
                (
                    vec![glob_literal(&ggufs[0])],
                    vec![],
                    Some(ggufs[0].clone()),
                )
            } else if !has_config && ggufs.len() > 1 {
                return Err(HubError::AmbiguousGguf {
                    repo: r.repo.clone(),
                    files: ggufs,
                });
            } else if paths.iter().any(|p| p.ends_with(".safetensors")) {
                let skip = [
                    "*.bin",
                    "*.pth",
                    "*.pt",
                    "*.h5",
                    "*.msgpack",
                    "*.onnx",
                    "*.ot",
                    "*.gguf",
                    "original/",
                ];
                (vec![], skip.iter().map(|s| s.to_string()).collect(), None)
            } else {
                (vec![], vec![], None)
            }
        }
    };
    let selection = Selection::new(&include, &exclude)?;
    let report = match listing {
        Some(l) => pull_listed(&client, &cache, &l, &selection, jobs, observer)?,
        None => {
            let commit = cache.read_ref(&revision).expect("listed from this ref");
            let files: Vec<String> = paths.into_iter().filter(|p| selection.matches(p)).collect();
            PullReport {
                repo: r.repo.clone(),
                snapshot: cache.snapshot_dir(&commit),
                commit,
                cached_files: files.len(),
                files,
                downloaded_bytes: 0,
                from_cache_only: true,
            }
        }
    };
    let path = match pick {
        Some(p) => {
            let mut full = report.snapshot.clone();
            full.extend(p.split('/'));
            full
        }
        None => report.snapshot.clone(),
    };
    Ok((path, report))
}

/// A glob matching exactly `path` (its metacharacters escaped).
fn glob_literal(path: &str) -> String {
    let mut s = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// A folder named after the repository whose entries are symlinks to a snapshot's, so a
/// converter that takes names from the folder (`general.name`, the size label…) sees the model
/// as a clone named `NAME` would be, not as a commit hash. Removed when dropped.
#[derive(Debug)]
pub struct NamedView {
    root: PathBuf,
    dir: PathBuf,
}

impl NamedView {
    /// Make the view of `snapshot` named `name` under the system temp folder.
    pub fn new(snapshot: &Path, name: &str) -> Result<NamedView, HubError> {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "qforge-view-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let view = NamedView { root, dir };
        let snapshot = std::fs::canonicalize(snapshot).map_err(|e| HubError::io(snapshot, e))?;
        let entries = std::fs::read_dir(&snapshot).map_err(|e| HubError::io(&snapshot, e))?;
        for e in entries {
            let e = e.map_err(|e| HubError::io(&snapshot, e))?;
            let link = view.dir.join(e.file_name());
            symlink_any(&e.path(), &link).map_err(|err| HubError::io(&link, err))?;
        }
        Ok(view)
    }

    /// The folder to hand to the converter.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NamedView {
    fn drop(&mut self) {
        // Only links and folders we made: removing them never touches the cache's files.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(unix)]
fn symlink_any(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink_any(target: &Path, link: &Path) -> std::io::Result<()> {
    if target.is_dir() {
        std::os::windows::fs::symlink_dir(target, link)
    } else {
        std::os::windows::fs::symlink_file(target, link)
    }
}
