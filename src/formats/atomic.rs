//! Output files that appear whole or not at all: data goes to a temporary file beside the
//! target, renamed onto it on commit, removed on drop. The library installs no signal handler:
//! writes fail once [`super::cancel`] is requested (so the job unwinds and drops its files), and
//! a program that must exit at once calls [`remove_pending`] first. Temporary files that a dead
//! process left beside a target are removed when the next one is created there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::formats::cancel;

/// Temporary files and directories of this process not yet committed or dropped.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Stale temporary files removed since the last [`take_removed_stale`].
static STALE_REMOVED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remove every temporary file and directory this process has not committed yet. For a program
/// about to exit without unwinding (a second Ctrl-C); after it, pending commits fail.
pub fn remove_pending() {
    if let Ok(list) = PENDING.lock() {
        for p in list.iter() {
            // An AtomicDir registers a directory; everything else is a file.
            if p.is_dir() {
                let _ = fs::remove_dir_all(p);
            } else {
                let _ = fs::remove_file(p);
            }
        }
    }
}

/// The stale temporary files (of processes no longer running) removed beside outputs since the
/// last call, for the program to report.
pub fn take_removed_stale() -> Vec<PathBuf> {
    STALE_REMOVED
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

/// `<name>.<pid>.tmp` beside `target`, for this process.
fn tmp_path(target: &Path, what: &str) -> io::Result<PathBuf> {
    let mut name = target
        .file_name()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("output path has no {what} name"),
            )
        })?
        .to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    Ok(target.with_file_name(name))
}

/// Whether process `pid` is running. Only Linux can tell (through /proc); elsewhere every
/// process counts as running, so nothing is removed.
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Remove the `<name>.<pid>.tmp` files and directories beside `target` whose process is gone
/// (killed by a signal no handler can catch, or a power cut), recording each one removed.
fn remove_stale(target: &Path) {
    let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let p = entry.path();
        let removed = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        if removed.is_ok() {
            if let Ok(mut v) = STALE_REMOVED.lock() {
                v.push(p);
            }
        }
    }
}

/// A file being written at `<target>.<pid>.tmp`.
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Start writing `target`: refused when it is a directory (the rename would fail only
    /// after all the work) or cancellation was requested.
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        cancel::check().map_err(io::Error::other)?;
        if target.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "the output is a directory",
            ));
        }
        let tmp = tmp_path(target, "file")?;
        remove_stale(target);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        PENDING.lock().unwrap().push(tmp.clone());
        Ok(AtomicFile {
            file: Some(file),
            tmp,
            target: target.to_path_buf(),
        })
    }

    /// Sync the data and rename the temporary file onto the target.
    pub fn commit(mut self) -> io::Result<()> {
        // Dropping `self` on this error removes the temporary file.
        cancel::check().map_err(io::Error::other)?;
        let file = self.file.take().expect("not committed twice");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.target)?;
        self.forget();
        Ok(())
    }

    fn forget(&self) {
        PENDING.lock().unwrap().retain(|p| p != &self.tmp);
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if cancel::is_requested() {
            return Err(cancel::io_error());
        }
        self.file.as_mut().expect("open").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
            self.forget();
        }
    }
}

/// A directory of outputs that appears whole or not at all: filled at `<target>.<pid>.tmp`
/// beside the target, renamed onto it on commit, removed with its contents on drop and on Ctrl-C.
/// The target must not exist, or be an empty directory.
pub struct AtomicDir {
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl AtomicDir {
    /// Start filling `target` (refused once cancellation was requested).
    pub fn create(target: &Path) -> io::Result<AtomicDir> {
        cancel::check().map_err(io::Error::other)?;
        let tmp = tmp_path(target, "directory")?;
        remove_stale(target);
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        PENDING.lock().unwrap().push(tmp.clone());
        Ok(AtomicDir {
            tmp,
            target: target.to_path_buf(),
            done: false,
        })
    }

    /// Where to write the directory's files until commit.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Rename the filled directory onto the target (replacing an empty directory there).
    pub fn commit(mut self) -> io::Result<()> {
        cancel::check().map_err(io::Error::other)?;
        if self.target.is_dir() {
            // Fails (and keeps everything) unless the directory is empty.
            fs::remove_dir(&self.target)?;
        }
        fs::rename(&self.tmp, &self.target)?;
        self.done = true;
        PENDING.lock().unwrap().retain(|p| p != &self.tmp);
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
            PENDING.lock().unwrap().retain(|p| p != &self.tmp);
        }
    }
}
