//! The server's jobs in SQLite (`STATE/jobs.sqlite3`): what was asked, its state, and what it
//! made, so a restart lists every finished job as it was.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::cli::child_process::rfc3339;

/// One job as stored.
#[derive(Clone, Debug)]
pub struct JobRow {
    /// Its id, from 1.
    pub id: i64,
    /// The qforge command line (without the program name).
    pub args: Vec<String>,
    /// queued, running, succeeded, failed or cancelled.
    pub state: String,
    /// 0..1.
    pub progress: f64,
    /// Why it failed (the command's last line, "interrupted", "cancelled").
    pub error: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC, once running.
    pub started_at: Option<String>,
    /// RFC 3339 UTC, once finished.
    pub finished_at: Option<String>,
    /// Files the job wrote, relative to the root.
    pub outputs: Vec<String>,
    /// The child process while running (kept after: a restart cleans its temp files by it).
    pub pid: Option<u32>,
    /// The child's exit status, when it exited with one.
    pub exit_code: Option<i32>,
}

impl JobRow {
    /// The job as the API shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "args": self.args,
            "state": self.state,
            "progress": self.progress,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outputs": self.outputs,
            "exit_code": self.exit_code,
        })
    }
}

/// The job table behind one connection (SQLite serializes writers anyway).
pub struct Store {
    conn: Mutex<Connection>,
}

const COLUMNS: &str =
    "id, args, state, progress, error, created_at, started_at, finished_at, outputs, pid, exit_code";

fn row_to_job(r: &Row) -> rusqlite::Result<JobRow> {
    let args: String = r.get(1)?;
    let outputs: String = r.get(8)?;
    Ok(JobRow {
        id: r.get(0)?,
        args: serde_json::from_str(&args).unwrap_or_default(),
        state: r.get(2)?,
        progress: r.get(3)?,
        error: r.get(4)?,
        created_at: r.get(5)?,
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
        outputs: serde_json::from_str(&outputs).unwrap_or_default(),
        pid: r.get::<_, Option<i64>>(9)?.map(|p| p as u32),
        exit_code: r.get(10)?,
    })
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

impl Store {
    /// Open (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(|| format!("{}: journal mode", path.display()))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                args TEXT NOT NULL,
                state TEXT NOT NULL,
                progress REAL NOT NULL DEFAULT 0,
                error TEXT,
                created_at TEXT NOT NULL,
                started_at TEXT,
                finished_at TEXT,
                outputs TEXT NOT NULL DEFAULT '[]',
                pid INTEGER,
                exit_code INTEGER
            );
            CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);",
        )
        .with_context(|| format!("{}: creating the jobs table", path.display()))?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }

    /// Queue a job.
    pub fn insert(&self, args: &[String]) -> Result<JobRow> {
        let id = self.with(|c| {
            c.execute(
                "INSERT INTO jobs (args, state, created_at) VALUES (?1, 'queued', ?2)",
                params![serde_json::to_string(args).unwrap_or_default(), now()],
            )?;
            Ok(c.last_insert_rowid())
        })?;
        Ok(self.get(id)?.expect("just inserted"))
    }

    /// The job with this id.
    pub fn get(&self, id: i64) -> Result<Option<JobRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                row_to_job,
            )
            .optional()
        })
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Result<Vec<JobRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM jobs ORDER BY id"))?;
            let rows = st.query_map([], row_to_job)?;
            rows.collect()
        })
    }

    /// How many jobs wait.
    pub fn count_queued(&self) -> Result<usize> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as usize)
    }

    /// Take the oldest queued job and mark it running.
    pub fn claim_next(&self) -> Result<Option<JobRow>> {
        let id = self.with(|c| {
            let id: Option<i64> = c
                .query_row(
                    "SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = id {
                c.execute(
                    "UPDATE jobs SET state = 'running', started_at = ?2 WHERE id = ?1",
                    params![id, now()],
                )?;
            }
            Ok(id)
        })?;
        match id {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    /// Record the running job's process.
    pub fn set_pid(&self, id: i64, pid: u32) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET pid = ?2 WHERE id = ?1",
                params![id, pid as i64],
            )
        })
        .map(drop)
    }

    /// Record a running job's progress.
    pub fn set_progress(&self, id: i64, progress: f64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET progress = ?2 WHERE id = ?1 AND state = 'running'",
                params![id, progress],
            )
        })
        .map(drop)
    }

    /// Record how a job ended.
    pub fn finish(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
        outputs: &[String],
        exit_code: Option<i32>,
    ) -> Result<()> {
        let progress = if state == "succeeded" { 1.0 } else { -1.0 };
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = ?2, error = ?3, outputs = ?4, exit_code = ?5,
                 finished_at = ?6, progress = CASE WHEN ?7 >= 0 THEN ?7 ELSE progress END
                 WHERE id = ?1",
                params![
                    id,
                    state,
                    error,
                    serde_json::to_string(outputs).unwrap_or_default(),
                    exit_code,
                    now(),
                    progress
                ],
            )
        })
        .map(drop)
    }

    /// Cancel a job that has not started; false if it is not queued.
    pub fn cancel_queued(&self, id: i64) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = 'cancelled', error = 'cancelled', finished_at = ?2
                 WHERE id = ?1 AND state = 'queued'",
                params![id, now()],
            )
        })
        .map(|n| n == 1)
    }

    /// After a crash: every job still marked running failed ("interrupted"). Returns them, for
    /// their temporary files to be removed.
    pub fn recover_interrupted(&self) -> Result<Vec<JobRow>> {
        let running: Vec<JobRow> = self
            .list()?
            .into_iter()
            .filter(|j| j.state == "running")
            .collect();
        for j in &running {
            self.finish(j.id, "failed", Some("interrupted"), &[], None)?;
        }
        Ok(running)
    }
}
