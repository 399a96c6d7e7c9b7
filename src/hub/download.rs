//! One file's transfer into the cache: bytes to `blobs/{etag}.incomplete`, resumed with
//! `Range: bytes=N-` after a broken connection (also one a killed process left), checked against
//! the listing (size, and sha256 for LFS files or the git blob sha1 for the rest) before the blob
//! is renamed into place and linked into the snapshot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::api::{backoff_wait, Failure, HubClient, RepoFile, Target};
use super::cache::RepoCache;
use super::{HubError, PullEvent};

/// The running hash a file is checked with.
enum Checker {
    /// LFS files: sha256 of the content.
    Lfs(Sha256),
    /// Small files: git's blob sha1, `sha1("blob {size}\0" + content)`.
    Git(Sha1),
}

impl Checker {
    fn new(file: &RepoFile) -> Checker {
        match file.lfs_sha256 {
            Some(_) => Checker::Lfs(Sha256::new()),
            None => {
                let mut h = Sha1::new();
                h.update(format!("blob {}\0", file.size).as_bytes());
                Checker::Git(h)
            }
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Checker::Lfs(h) => h.update(bytes),
            Checker::Git(h) => h.update(bytes),
        }
    }

    fn finish(self) -> String {
        match self {
            Checker::Lfs(h) => hex(&h.finalize()),
            Checker::Git(h) => hex(&h.finalize()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why one attempt stopped short.
enum AttemptError {
    /// Worth another attempt: the connection broke, timed out, or the server said 5xx/429.
    Retry(String),
    /// Not worth retrying: a 4xx answer, a full disk, a bad checksum.
    Fatal(HubError),
}

/// Bring `file` of `commit` into the cache and link it into the snapshot. Returns the number of
/// bytes that came over the network. Holds the blob's lock throughout, so a second process (or
/// huggingface_hub) pulling the same blob waits and then finds it done.
pub(crate) fn fetch_file(
    client: &HubClient,
    cache: &RepoCache,
    repo: &str,
    commit: &str,
    file: &RepoFile,
    observer: &(dyn Fn(&PullEvent) + Sync),
) -> Result<u64, HubError> {
    let etag = file.etag();
    cache.ensure_blobs_dir()?;
    let _lock = cache.lock_blob(etag)?;
    if cache.has_blob(etag, file.size) {
        cache.link(commit, &file.path, etag)?;
        return Ok(0);
    }
    let incomplete = cache.incomplete_path(etag);
    let url = client.resolve_url(repo, commit, &file.path);
    let settings = client.settings();
    let mut received = 0u64;
    let mut attempt = 0u32;
    let mut first = true;
    let target = Target {
        repo,
        revision: Some(commit),
        path: Some(&file.path),
    };
    loop {
        let transfer = Transfer {
            client,
            url: &url,
            target: &target,
            incomplete: &incomplete,
            file,
            observer,
        };
        match transfer.attempt(first, &mut received) {
            Ok(()) => break,
            Err(AttemptError::Fatal(HubError::Http { status: 416, .. }))
                if attempt < settings.retries =>
            {
                // The server refused our range: what we hold is not a prefix it knows. Start over.
                fs::remove_file(&incomplete).map_err(|e| HubError::io(&incomplete, e))?;
            }
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::Retry(reason)) => {
                if attempt >= settings.retries {
                    return Err(HubError::Transport {
                        url,
                        attempts: attempt + 1,
                        error: reason,
                    });
                }
                let wait = backoff_wait(settings, attempt);
                observer(&PullEvent::Retry {
                    path: file.path.clone(),
                    attempt: attempt + 1,
                    wait,
                    reason,
                });
                std::thread::sleep(wait);
            }
        }
        attempt += 1;
        first = false;
    }
    verify(&incomplete, file)?;
    let blob = cache.blob_path(etag);
    fs::rename(&incomplete, &blob).map_err(|e| HubError::io(&blob, e))?;
    cache.link(commit, &file.path, etag)?;
    Ok(received)
}

/// What one attempt needs to know about the file it transfers.
struct Transfer<'a> {
    client: &'a HubClient,
    url: &'a str,
    target: &'a Target<'a>,
    incomplete: &'a Path,
    file: &'a RepoFile,
    observer: &'a (dyn Fn(&PullEvent) + Sync),
}

impl Transfer<'_> {
    /// One request: resume from what `.incomplete` holds, append until the body ends.
    /// `first` marks the first attempt of this run (a prefix then comes from an earlier run).
    fn attempt(&self, first: bool, received: &mut u64) -> Result<(), AttemptError> {
        let Transfer {
            client,
            url,
            target,
            incomplete,
            file,
            observer,
        } = *self;
        let fatal_io = |e: io::Error| AttemptError::Fatal(HubError::io(incomplete, e));
        let have = match fs::metadata(incomplete) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(fatal_io(e)),
        };
        if have > file.size {
            // Longer than the file can be: not ours to resume.
            fs::remove_file(incomplete).map_err(fatal_io)?;
            return self.attempt(first, received);
        }
        if have == file.size {
            return Ok(());
        }
        if first && have > 0 {
            observer(&PullEvent::Resumed {
                path: file.path.clone(),
                offset: have,
            });
        }
        let resp = match client.get(url, (have > 0).then_some(have)) {
            Ok(r) => r,
            Err(Failure::Transport(e)) => return Err(AttemptError::Retry(e)),
            Err(Failure::Status { status, .. }) if status == 429 || status >= 500 => {
                return Err(AttemptError::Retry(format!("HTTP {status}")))
            }
            Err(f) => return Err(AttemptError::Fatal(client.status_error(f, target, url))),
        };
        let status = resp.status().as_u16();
        let mut out = match (status, have) {
            (206, _) => {
                let start = resp
                    .headers()
                    .get("Content-Range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if start != Some(have) {
                    return Err(AttemptError::Retry(format!(
                    "server answered range bytes={have}- with Content-Range starting at {start:?}"
                )));
                }
                OpenOptions::new()
                    .append(true)
                    .open(incomplete)
                    .map_err(fatal_io)?
            }
            // A full body: start from zero (a server that ignores Range answers this way too).
            (200, _) => File::create(incomplete).map_err(fatal_io)?,
            (s, _) => {
                return Err(AttemptError::Fatal(HubError::Http {
                    url: url.to_string(),
                    status: s,
                    message: "unexpected status for a file download".to_string(),
                }))
            }
        };
        // Unbuffered: every piece that arrives is in the file at once, so a killed process leaves
        // a prefix as long as what it received, for the next run to resume from.
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let written_before = if status == 206 { have } else { 0 };
        let mut written = written_before;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(AttemptError::Retry(format!(
                        "connection broken after {written} of {} bytes: {e}",
                        file.size
                    )));
                }
            };
            if written + n as u64 > file.size {
                return Err(AttemptError::Fatal(HubError::SizeMismatch {
                    path: file.path.clone(),
                    expected: file.size,
                    actual: written + n as u64,
                }));
            }
            out.write_all(&buf[..n]).map_err(fatal_io)?;
            written += n as u64;
            *received += n as u64;
            observer(&PullEvent::Bytes {
                path: file.path.clone(),
                n: n as u64,
            });
        }
        out.sync_all().map_err(fatal_io)?;
        if written < file.size {
            return Err(AttemptError::Retry(format!(
                "body ended after {written} of {} bytes",
                file.size
            )));
        }
        Ok(())
    }
}

/// `bytes N-M/T` → N.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim();
    rest.split('-').next()?.trim().parse().ok()
}

/// Check the finished `.incomplete` file against the listing; on a mismatch remove it (those
/// bytes must not be resumed from) and name the file with both hashes.
fn verify(incomplete: &Path, file: &RepoFile) -> Result<(), HubError> {
    let mut f = File::open(incomplete).map_err(|e| HubError::io(incomplete, e))?;
    let mut checker = Checker::new(file);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| HubError::io(incomplete, e))?;
        if n == 0 {
            break;
        }
        checker.update(&buf[..n]);
        total += n as u64;
    }
    drop(f);
    if total != file.size {
        let _ = fs::remove_file(incomplete);
        return Err(HubError::SizeMismatch {
            path: file.path.clone(),
            expected: file.size,
            actual: total,
        });
    }
    let (algorithm, expected) = match &file.lfs_sha256 {
        Some(s) => ("sha256", s.clone()),
        None => ("git blob sha1", file.blob_id.clone()),
    };
    let actual = checker.finish();
    if !actual.eq_ignore_ascii_case(&expected) {
        let _ = fs::remove_file(incomplete);
        return Err(HubError::ChecksumMismatch {
            path: file.path.clone(),
            algorithm,
            expected,
            actual,
        });
    }
    Ok(())
}
