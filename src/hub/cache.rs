//! huggingface_hub's cache layout, so either tool reuses the other's downloads:
//!
//! ```text
//! {cache}/models--{org}--{name}/blobs/{etag}                 file contents, named by hash
//! {cache}/models--{org}--{name}/blobs/{etag}.incomplete      a transfer in progress (resumable)
//! {cache}/models--{org}--{name}/snapshots/{commit}/{path}    relative symlink → ../../blobs/{etag}
//! {cache}/models--{org}--{name}/refs/{revision}              the commit a branch or tag named
//! {cache}/.locks/models--{org}--{name}/{etag}.lock           held while a blob is written
//! ```

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::api::is_commit_hash;
use super::HubError;

/// The cache folder of one model repository.
#[derive(Clone, Debug)]
pub struct RepoCache {
    root: PathBuf,
    locks: PathBuf,
}

impl RepoCache {
    /// The folder of `repo` (`org/name`) under the hub cache `cache_dir`.
    pub fn new(cache_dir: &Path, repo: &str) -> RepoCache {
        let folder = repo_folder_name(repo);
        RepoCache {
            root: cache_dir.join(&folder),
            locks: cache_dir.join(".locks").join(folder),
        }
    }

    /// `models--{org}--{name}`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a finished blob lives.
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// Where a blob's bytes go while they arrive (huggingface_hub's name, so either tool resumes
    /// the other's transfer).
    pub fn incomplete_path(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// The lock file guarding one blob's transfer.
    pub fn lock_path(&self, etag: &str) -> PathBuf {
        self.locks.join(format!("{etag}.lock"))
    }

    /// The snapshot folder of a commit.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// A file's pointer inside a snapshot.
    pub fn pointer_path(&self, commit: &str, path: &str) -> PathBuf {
        let mut p = self.snapshot_dir(commit);
        p.extend(path.split('/'));
        p
    }

    /// The commit a revision names according to the cache: the revision itself when it is a
    /// commit hash, else the content of `refs/{revision}`.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let text = fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let commit = text.trim().to_string();
        is_commit_hash(&commit).then_some(commit)
    }

    /// Record that `revision` names `commit` (written through a temporary file and a rename, so
    /// a concurrent reader never sees half a hash). A commit hash needs no ref.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit || self.read_ref(revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        let dir = path.parent().expect("a ref has a parent folder");
        fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        let tmp = dir.join(format!(".ref.{}.tmp", unique_suffix()));
        fs::write(&tmp, commit).map_err(|e| HubError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| HubError::io(&path, e))
    }

    /// Whether `path` of `commit` is in the snapshot, pointing at a blob of `size` bytes.
    pub fn has_file(&self, commit: &str, path: &str, size: u64) -> bool {
        fs::metadata(self.pointer_path(commit, path)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Whether the finished blob `etag` is here with `size` bytes.
    pub fn has_blob(&self, etag: &str, size: u64) -> bool {
        fs::metadata(self.blob_path(etag)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Point `snapshots/{commit}/{path}` at `blobs/{etag}` with a relative symlink, replacing
    /// whatever was there in one rename (never a moment without a valid pointer).
    pub fn link(&self, commit: &str, path: &str, etag: &str) -> Result<(), HubError> {
        let pointer = self.pointer_path(commit, path);
        let dir = pointer.parent().expect("a pointer has a parent folder");
        fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        // snapshots/{commit}/a/b/file → ../../../../blobs/{etag}: one `..` per folder level.
        let depth = 2 + path.split('/').count() - 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let tmp = dir.join(format!(
            ".{}.{}.link.tmp",
            pointer
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            unique_suffix()
        ));
        let _ = fs::remove_file(&tmp);
        make_symlink(&target, &tmp).map_err(|e| HubError::io(&tmp, e))?;
        fs::rename(&tmp, &pointer).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            HubError::io(&pointer, e)
        })
    }

    /// Files of a cached snapshot (paths relative to it, `/`-separated, sorted).
    pub fn snapshot_files(&self, commit: &str) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                let p = e.path();
                if p.is_dir() {
                    walk(&p, &rel, out);
                } else if p.is_file() {
                    out.push(rel);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.snapshot_dir(commit), "", &mut out);
        out.sort();
        out
    }

    /// Take the lock of blob `etag`, waiting while another process (qforge or huggingface_hub,
    /// which locks the same file) holds it. Released when the returned file is dropped.
    pub fn lock_blob(&self, etag: &str) -> Result<File, HubError> {
        fs::create_dir_all(&self.locks).map_err(|e| HubError::io(&self.locks, e))?;
        let path = self.lock_path(etag);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HubError::io(&path, e))?;
        f.lock().map_err(|e| HubError::io(&path, e))?;
        Ok(f)
    }

    /// Create `blobs/` if needed.
    pub fn ensure_blobs_dir(&self) -> Result<(), HubError> {
        let d = self.root.join("blobs");
        fs::create_dir_all(&d).map_err(|e| HubError::io(&d, e))
    }
}

/// `org/name` → `models--org--name` (huggingface_hub's `repo_folder_name` for model repos).
pub fn repo_folder_name(repo: &str) -> String {
    let mut s = String::from("models");
    for part in repo.split('/') {
        s.push_str("--");
        s.push_str(part);
    }
    s
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

/// `{pid}-{n}`: unique per process and per call, so concurrent writers (processes or threads)
/// never share a temporary name.
fn unique_suffix() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
