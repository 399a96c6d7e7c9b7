//! Output files that appear whole or not at all: data goes to a temporary file beside the
//! target, renamed onto it on commit, removed on drop and on Ctrl-C.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// Temporary files to remove if the process is interrupted.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static HANDLER: Once = Once::new();

fn install_interrupt_handler() {
    HANDLER.call_once(|| {
        // If another handler is installed already (an embedding program), leave it alone.
        let _ = ctrlc::set_handler(|| {
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
            eprintln!("qforge: interrupted; no output written");
            std::process::exit(130);
        });
    });
}

/// A file being written at `<target>.<pid>.tmp`.
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Opens a temp file next to `target` (same directory, so the final rename is atomic); nothing
    /// appears at `target` until the write is committed.
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        install_interrupt_handler();
        let mut name = target
            .file_name()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
            })?
            .to_os_string();
        name.push(format!(".{}.tmp", std::process::id()));
        let tmp = target.with_file_name(name);
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
    /// Creates a temp directory next to `target`; it is renamed onto `target` only when committed.
    pub fn create(target: &Path) -> io::Result<AtomicDir> {
        install_interrupt_handler();
        let mut name = target
            .file_name()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "output path has no directory name",
                )
            })?
            .to_os_string();
        name.push(format!(".{}.tmp", std::process::id()));
        let tmp = target.with_file_name(name);
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
