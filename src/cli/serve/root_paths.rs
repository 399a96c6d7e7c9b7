//! Keeping jobs inside `--root`: every word of a job's command line that could name a file is
//! resolved the way the kernel will resolve it (symlinks followed, `..` applied after them) and
//! refused if it is absolute or lands outside the root.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An absolute path (paths are relative to the root).
    Absolute(String),
    /// `..` that climbs out of the root.
    Escapes(String),
    /// A symlink (or a dangling one) that points out of the root.
    SymlinkOut(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Absolute(p) => write!(
                f,
                "'{p}': absolute paths are refused; paths are relative to the server's root"
            ),
            Refusal::Escapes(p) => write!(f, "'{p}': leaves the server's root"),
            Refusal::SymlinkOut(p) => {
                write!(f, "'{p}': a symlink that points out of the server's root")
            }
        }
    }
}

fn inside(root: &Path, p: &Path) -> bool {
    p.starts_with(root)
}

/// Check `word` against the canonical `root`.
pub fn check_word(root: &Path, word: &str) -> Result<(), Refusal> {
    let path = Path::new(word);
    if path.is_absolute() || word.starts_with('/') {
        return Err(Refusal::Absolute(word.into()));
    }
    let mut cur: PathBuf = root.to_path_buf();
    // Once a component does not exist, what follows is created by the job (no symlinks).
    let mut exists = true;
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(Refusal::Absolute(word.into()))
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !cur.pop() || !inside(root, &cur) {
                    return Err(Refusal::Escapes(word.into()));
                }
            }
            Component::Normal(name) => {
                let next = cur.join(name);
                if exists && std::fs::symlink_metadata(&next).is_ok() {
                    match std::fs::canonicalize(&next) {
                        Ok(real) if inside(root, &real) => cur = real,
                        _ => return Err(Refusal::SymlinkOut(word.into())),
                    }
                } else {
                    exists = false;
                    cur = next;
                }
            }
        }
    }
    if !inside(root, &cur) {
        return Err(Refusal::Escapes(word.into()));
    }
    // A model directory's files are read too: none may point out (a Hugging Face cache
    // snapshot is symlinks into its blobs).
    if exists && cur.is_dir() {
        if let Ok(entries) = std::fs::read_dir(&cur) {
            for e in entries.flatten() {
                let Ok(t) = e.file_type() else { continue };
                if t.is_symlink() {
                    match std::fs::canonicalize(e.path()) {
                        Ok(real) if inside(root, &real) => {}
                        _ => {
                            return Err(Refusal::SymlinkOut(format!(
                                "{word}/{}",
                                e.file_name().to_string_lossy()
                            )))
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Check every path-like word of a command line.
pub fn check_args(root: &Path, args: &[String]) -> Result<(), Refusal> {
    for w in crate::cli::job_args::path_words(args) {
        check_word(root, &w)?;
    }
    Ok(())
}

/// The directories a job may write in: the root, each named directory and each named file's
/// directory, all inside the root. Its temporary files and outputs are looked for there.
pub fn job_dirs(root: &Path, args: &[String]) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    for w in crate::cli::job_args::path_words(args) {
        let p = root.join(&w);
        let cands = [Some(p.clone()), p.parent().map(Path::to_path_buf)];
        for d in cands.into_iter().flatten() {
            if let Ok(real) = std::fs::canonicalize(&d) {
                if real.is_dir() && inside(root, &real) && !dirs.contains(&real) {
                    dirs.push(real);
                }
            }
        }
    }
    dirs
}
