//! Does an output path resolve to one of a job's inputs? Checked before any work, because a
//! job that writes over its own input destroys it (the temp file + rename of [`super::atomic`]
//! replaces the input whole, and it is gone even when the job then succeeds).
//!
//! Two paths are the same when their canonical paths are equal or, on Unix, when they name the
//! same device and inode — so a hard link to an input counts as the input.

use std::fs;
use std::path::{Path, PathBuf};

/// Why an output path cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputPathError {
    /// The output is (a path to) one of the inputs: writing it would destroy that input.
    #[error("{output}: the output is the {role} {input}; writing it would destroy that input — choose another output path")]
    IsInput {
        /// The output path.
        output: PathBuf,
        /// What the input is to the job ("model", "base", "adapter", "text", …).
        role: String,
        /// The input it resolves to.
        input: PathBuf,
    },
    /// The output is a file the job reads inside an input directory.
    #[error("{output}: the output is {input}, a file of the {role} directory this job reads — choose another output path")]
    InInputDir {
        /// The output path.
        output: PathBuf,
        /// What the input is to the job.
        role: String,
        /// The input it resolves to.
        input: PathBuf,
    },
    /// A file output names an existing directory.
    #[error("{output}: the output is a directory; give a file name")]
    IsDirectory {
        /// The output path.
        output: PathBuf,
    },
}

/// One input of a job: its path and what it is to the job, for the message.
#[derive(Clone, Copy, Debug)]
pub struct JobInput<'a> {
    /// The input path (a file or a directory).
    pub path: &'a Path,
    /// What it is ("model", "base", "adapter", "text", "imatrix", …).
    pub role: &'a str,
}

impl<'a> JobInput<'a> {
    /// An input at `path` with `role`.
    pub fn new(path: &'a Path, role: &'a str) -> JobInput<'a> {
        JobInput { path, role }
    }
}

/// Whether `a` and `b` name the same existing file or directory (canonical path, or the same
/// device and inode). Paths that do not exist are never the same as anything.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
            return true;
        }
    }
    #[cfg(not(unix))]
    let _ = (&ma, &mb);
    matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Refuse a file output that is a directory or resolves to an input. For a directory input,
/// the directory itself and every file in it that the job may read count; GGUF files and
/// temporary files inside it do not (a checkpoint directory is where `convert` and
/// `lora-to-gguf` put their `.gguf` outputs by default, and no directory reader reads them).
pub fn check_file_output(output: &Path, inputs: &[JobInput<'_>]) -> Result<(), OutputPathError> {
    if output.is_dir() {
        return Err(OutputPathError::IsDirectory {
            output: output.to_path_buf(),
        });
    }
    check_output(output, inputs)
}

/// Refuse an output (a file or a directory) that resolves to an input, as
/// [`check_file_output`] but allowing a directory output.
pub fn check_output(output: &Path, inputs: &[JobInput<'_>]) -> Result<(), OutputPathError> {
    for input in inputs {
        if same_file(output, input.path) {
            return Err(OutputPathError::IsInput {
                output: output.to_path_buf(),
                role: input.role.to_string(),
                input: input.path.to_path_buf(),
            });
        }
        if !input.path.is_dir() || !output.exists() {
            continue;
        }
        let Ok(entries) = fs::read_dir(input.path) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext.eq_ignore_ascii_case("gguf") || ext == "tmp" || p.is_dir() {
                continue;
            }
            if same_file(output, &p) {
                return Err(OutputPathError::InInputDir {
                    output: output.to_path_buf(),
                    role: input.role.to_string(),
                    input: p,
                });
            }
        }
    }
    Ok(())
}
