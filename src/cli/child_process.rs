//! qforge running qforge: `batch` and `serve` run each job as a child process of this very
//! binary, so a job's output is the CLI's output byte for byte, a cancel is a signal to one
//! process, and a crashing job cannot take its runner down.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// A `qforge ARGS…` command run in `cwd`, with stdin closed. On Linux the child gets SIGKILL if
/// the thread that started it dies (PR_SET_PDEATHSIG), so a `kill -9` of the runner also stops
/// its jobs; the runner's next start removes what they left behind.
pub fn qforge_command(args: &[String], cwd: &Path) -> io::Result<Command> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new(exe);
    c.args(args).current_dir(cwd).stdin(Stdio::null());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: getpid is async-signal-safe and runs before the fork.
        let parent = unsafe { libc::getpid() };
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the prctl took effect: nobody will wait for us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    Ok(c)
}

/// Send `signal` to process `pid` (no-op where there are no signals).
pub fn send_signal(pid: u32, signal: i32) {
    #[cfg(unix)]
    // SAFETY: kill(2) with a plain pid; at worst it fails with ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
    #[cfg(not(unix))]
    let _ = (pid, signal);
}

/// SIGINT: qforge's own handler removes its temporary files and exits.
pub const SIGINT: i32 = 2;

/// Whether a process with this pid is alive on this machine (a zombie is not: in a container
/// without a reaping init, a killed runner's children stay zombies).
pub fn pid_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state letter follows the parenthesised command name.
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with(['Z', 'X'])),
            Err(_) => false,
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        // SAFETY: signal 0 only checks for existence and permission.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// Remove, in each of `dirs`, the temporary outputs process `pid` left (`NAME.<pid>.tmp`,
/// files or directories: src/formats/atomic.rs names them so). Returns what was removed.
pub fn remove_temp_files(dirs: &[PathBuf], pid: u32) -> Vec<PathBuf> {
    let suffix = format!(".{pid}.tmp");
    let mut removed = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().ends_with(&suffix) {
                continue;
            }
            let p = e.path();
            let gone = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p).is_ok(),
                _ => std::fs::remove_file(&p).is_ok(),
            };
            if gone {
                removed.push(p);
            }
        }
    }
    removed
}

/// Remove the temporary files of `output` (`OUTPUT.<pid>.tmp` beside it) whose writer is no
/// longer alive on this machine: what a killed run left. Returns what was removed.
pub fn remove_stale_temp_files(output: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (output.parent(), output.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        let Some(pid) = n
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let p = e.path();
        let gone = if p.is_dir() {
            std::fs::remove_dir_all(&p).is_ok()
        } else {
            std::fs::remove_file(&p).is_ok()
        };
        if gone {
            removed.push(p);
        }
    }
    removed
}

/// Nanoseconds since the Unix epoch of a file time (0 when unknown).
pub fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// `t` as an RFC 3339 UTC timestamp with milliseconds (`2026-12-01T20:15:03.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}
