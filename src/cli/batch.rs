//! `qforge batch RECIPE.toml`: run a recipe's units as child `qforge` processes (so outputs are
//! the CLI's bytes), `--jobs N` at once, skipping those a sidecar record shows finished, with a
//! summary table (or `--json`) at the end; `--shard I/N` runs every N-th unit for job arrays on
//! many machines, and `--merge-reports` joins the shards' reports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use qforge::formats::atomic::AtomicFile;

use super::child_process::{qforge_command, remove_stale_temp_files, rfc3339, unix_nanos};
use super::config::Settings;
use super::job_args::path_words;
use super::recipe::{self, parse_shard, Recipe, Unit};

/// `qforge batch`'s command line.
#[derive(Args)]
pub struct BatchArgs {
    /// The recipe (TOML: [defaults] and [[job]] tables).
    #[arg(required_unless_present = "merge_reports")]
    recipe: Option<PathBuf>,
    /// Units to run at once.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// I/N: run only the units whose index is I modulo N (I from 0).
    #[arg(long)]
    shard: Option<String>,
    /// Show what would run and what is finished, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// After a failed unit, go on with the others (default: start no new unit).
    #[arg(long)]
    keep_going: bool,
    /// Redo every unit, even those a sidecar record shows finished.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the summary as JSON to this file (per shard, for --merge-reports).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Join these reports (from --report, one per shard) into one summary instead of running.
    #[arg(long, num_args = 1.., conflicts_with_all = ["recipe", "shard", "dry_run", "report"])]
    merge_reports: Vec<PathBuf>,
}

/// What a rerun compares to decide a unit is finished: inputs' identity, the command line,
/// the defaults that applied, the qforge version, and the output as it was written.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct FileIdentity {
    path: String,
    size: u64,
    mtime_ns: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct Sidecar {
    qforge_version: String,
    args: Vec<String>,
    inputs: Vec<FileIdentity>,
    defaults: Vec<String>,
    output: FileIdentity,
    finished_at: String,
    seconds: f64,
}

/// One unit's line in the summary.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct UnitReport {
    index: usize,
    job: usize,
    name: String,
    command: String,
    model: String,
    #[serde(rename = "type")]
    ty: String,
    output: String,
    /// done, skipped, failed, not-run, would-run, would-skip (and missing, when merging).
    status: String,
    seconds: f64,
    bytes: Option<u64>,
    error: Option<String>,
    args: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug)]
struct BatchReport {
    recipe: String,
    recipe_sha256: String,
    qforge_version: String,
    /// [I, N]; [0, 1] unsharded.
    shard: [usize; 2],
    total_units: usize,
    units: Vec<UnitReport>,
}

/// Size and modification time of a file, or (a directory output or input) the total size and
/// latest time of the files directly in it.
fn identity(dir: &Path, rel: &str) -> Option<FileIdentity> {
    let p = dir.join(rel);
    let m = std::fs::metadata(&p).ok()?;
    let (size, mtime) = if m.is_dir() {
        let mut size = 0;
        let mut mtime = 0;
        for e in std::fs::read_dir(&p).ok()?.flatten() {
            if let Ok(em) = e.metadata() {
                if em.is_file() {
                    size += em.len();
                    mtime = mtime.max(em.modified().map(unix_nanos).unwrap_or(0));
                }
            }
        }
        (size, mtime)
    } else {
        (m.len(), m.modified().map(unix_nanos).unwrap_or(0))
    };
    Some(FileIdentity {
        path: rel.to_string(),
        size,
        mtime_ns: mtime as u64,
    })
}

fn sidecar_path(dir: &Path, output: &str) -> PathBuf {
    dir.join(format!("{}.qforge.json", output.trim_end_matches('/')))
}

/// Everything but the output that a unit's result depends on.
fn unit_inputs(recipe: &Recipe, u: &Unit) -> Vec<FileIdentity> {
    path_words(&u.args)
        .into_iter()
        .filter(|w| w != &u.output)
        .filter_map(|w| identity(&recipe.dir, &w))
        .collect()
}

fn unit_defaults(settings: &Settings, u: &Unit) -> Vec<String> {
    settings
        .for_command(&u.command)
        .into_iter()
        .map(|s| format!("{} = {}", s.key, s.value))
        .collect()
}

/// Whether `u`'s sidecar shows it finished with today's inputs, options and version.
fn is_finished(recipe: &Recipe, settings: &Settings, u: &Unit) -> bool {
    let Ok(text) = std::fs::read_to_string(sidecar_path(&recipe.dir, &u.output)) else {
        return false;
    };
    let Ok(s) = serde_json::from_str::<Sidecar>(&text) else {
        return false;
    };
    s.qforge_version == env!("CARGO_PKG_VERSION")
        && s.args == u.args
        && s.inputs == unit_inputs(recipe, u)
        && s.defaults == unit_defaults(settings, u)
        && identity(&recipe.dir, &u.output).as_ref() == Some(&s.output)
}

fn write_sidecar(recipe: &Recipe, settings: &Settings, u: &Unit, seconds: f64) -> Result<u64> {
    let output = identity(&recipe.dir, &u.output)
        .ok_or_else(|| anyhow!("{}: missing after the command succeeded", u.output))?;
    let bytes = output.size;
    let s = Sidecar {
        qforge_version: env!("CARGO_PKG_VERSION").into(),
        args: u.args.clone(),
        inputs: unit_inputs(recipe, u),
        defaults: unit_defaults(settings, u),
        output,
        finished_at: rfc3339(SystemTime::now()),
        seconds,
    };
    let path = sidecar_path(&recipe.dir, &u.output);
    let mut f = AtomicFile::create(&path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(serde_json::to_string_pretty(&s)?.as_bytes())?;
    f.commit()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes)
}

fn report_of(u: &Unit, status: &str) -> UnitReport {
    UnitReport {
        index: u.index,
        job: u.job,
        name: u.name.clone(),
        command: u.command.clone(),
        model: u.model.clone(),
        ty: u.ty.clone(),
        output: u.output.clone(),
        status: status.into(),
        seconds: 0.0,
        bytes: None,
        error: None,
        args: u.args.clone(),
    }
}

/// Run one unit as a child qforge process; its output goes to the report, not the terminal.
fn run_unit(recipe: &Recipe, settings: &Settings, u: &Unit) -> UnitReport {
    let mut r = report_of(u, "failed");
    let out_path = recipe.dir.join(&u.output);
    // What a killed run left beside this output, and the record of an older output.
    remove_stale_temp_files(&out_path);
    let _ = std::fs::remove_file(sidecar_path(&recipe.dir, &u.output));
    if let Some(parent) = out_path.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            r.error = Some(format!("creating {}: {e}", parent.display()));
            return r;
        }
    }
    let t0 = Instant::now();
    let result = qforge_command(&u.args, &recipe.dir).and_then(|mut c| c.output());
    r.seconds = t0.elapsed().as_secs_f64();
    match result {
        Err(e) => r.error = Some(format!("starting qforge: {e}")),
        Ok(o) if !o.status.success() => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let line = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            r.error = Some(match o.status.code() {
                Some(c) => format!("exit {c}: {line}"),
                None => format!("killed by a signal: {line}"),
            });
        }
        Ok(_) => match write_sidecar(recipe, settings, u, r.seconds) {
            Ok(bytes) => {
                r.status = "done".into();
                r.bytes = Some(bytes);
            }
            Err(e) => r.error = Some(format!("{e:#}")),
        },
    }
    r
}

/// Run (or, with `--merge-reports`, summarize) a recipe.
pub fn run(a: BatchArgs) -> Result<()> {
    if !a.merge_reports.is_empty() {
        return merge(&a.merge_reports, a.json);
    }
    let recipe_path = a.recipe.clone().expect("clap requires it");
    let recipe = recipe::load(&recipe_path)?;
    let (shard_i, shard_n) = match &a.shard {
        Some(s) => parse_shard(s)?,
        None => (0, 1),
    };
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let settings = Settings::load_in(&recipe.dir)?;
    let mine: Vec<&Unit> = recipe
        .units
        .iter()
        .filter(|u| u.index % shard_n == shard_i)
        .collect();
    let mut reports: Vec<Option<UnitReport>> = vec![None; mine.len()];
    let mut pending: Vec<usize> = Vec::new();
    for (k, u) in mine.iter().enumerate() {
        let finished = !a.force && is_finished(&recipe, &settings, u);
        if a.dry_run {
            reports[k] = Some(report_of(
                u,
                if finished { "would-skip" } else { "would-run" },
            ));
        } else if finished {
            let mut r = report_of(u, "skipped");
            r.bytes = identity(&recipe.dir, &u.output).map(|i| i.size);
            reports[k] = Some(r);
        } else {
            pending.push(k);
        }
    }
    if !a.dry_run && !pending.is_empty() {
        eprintln!(
            "qforge: batch: {} of {} unit(s) to run{}, {} at once",
            pending.len(),
            mine.len(),
            if shard_n > 1 {
                format!(" (shard {shard_i}/{shard_n})")
            } else {
                String::new()
            },
            a.jobs
        );
        let queue = Mutex::new(pending.into_iter());
        let results: Mutex<Vec<(usize, UnitReport)>> = Mutex::new(Vec::new());
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..a.jobs.min(mine.len()) {
                scope.spawn(|| loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Some(k) = queue.lock().unwrap().next() else {
                        return;
                    };
                    let u = mine[k];
                    eprintln!(
                        "qforge: batch: [{}] {} {} → {}: running",
                        u.index, u.name, u.ty, u.output
                    );
                    let r = run_unit(&recipe, &settings, u);
                    match &r.error {
                        None => eprintln!(
                            "qforge: batch: [{}] {} {}: done in {:.2} s",
                            u.index, u.name, u.ty, r.seconds
                        ),
                        Some(e) => {
                            eprintln!(
                                "qforge: batch: [{}] {} {}: failed: {e}",
                                u.index, u.name, u.ty
                            );
                            if !a.keep_going {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    results.lock().unwrap().push((k, r));
                });
            }
        });
        for (k, r) in results.into_inner().unwrap() {
            reports[k] = Some(r);
        }
    }
    let units: Vec<UnitReport> = reports
        .into_iter()
        .zip(&mine)
        .map(|(r, u)| r.unwrap_or_else(|| report_of(u, "not-run")))
        .collect();
    let report = BatchReport {
        recipe: recipe.path.display().to_string(),
        recipe_sha256: recipe.sha256.clone(),
        qforge_version: env!("CARGO_PKG_VERSION").into(),
        shard: [shard_i, shard_n],
        total_units: recipe.units.len(),
        units,
    };
    if let Some(p) = &a.report {
        if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut f = AtomicFile::create(p).with_context(|| format!("writing {}", p.display()))?;
        f.write_all(serde_json::to_string_pretty(&report)?.as_bytes())?;
        f.commit()
            .with_context(|| format!("writing {}", p.display()))?;
    }
    print_summary(&report, a.json)?;
    let failed = report.units.iter().filter(|u| u.status == "failed").count();
    if failed > 0 {
        bail!("{failed} of {} unit(s) failed", report.units.len());
    }
    Ok(())
}

fn print_summary(report: &BatchReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let w_name = report
        .units
        .iter()
        .map(|u| u.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let w_ty = report
        .units
        .iter()
        .map(|u| u.ty.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let w_out = report
        .units
        .iter()
        .map(|u| u.output.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:>4}  {:<w_name$}  {:<w_ty$}  {:<w_out$}  {:<10}  {:>8}  {:>10}",
        "#", "name", "type", "output", "status", "seconds", "MiB"
    );
    for u in &report.units {
        println!(
            "{:>4}  {:<w_name$}  {:<w_ty$}  {:<w_out$}  {:<10}  {:>8.2}  {:>10}{}",
            u.index,
            u.name,
            u.ty,
            u.output,
            u.status,
            u.seconds,
            u.bytes
                .map_or("-".into(), |b| format!("{:.2}", b as f64 / 1048576.0)),
            u.error.as_ref().map_or(String::new(), |e| format!("  {e}"))
        );
    }
    let count = |s: &str| report.units.iter().filter(|u| u.status == s).count();
    let mut parts = Vec::new();
    for s in [
        "done",
        "skipped",
        "failed",
        "not-run",
        "would-run",
        "would-skip",
        "missing",
    ] {
        let n = count(s);
        if n > 0 || ["done", "skipped", "failed"].contains(&s) {
            parts.push(format!("{n} {s}"));
        }
    }
    println!(
        "batch: {} of {} unit(s){}: {}",
        report.units.len(),
        report.total_units,
        if report.shard[1] > 1 {
            format!(" in shard {}/{}", report.shard[0], report.shard[1])
        } else {
            String::new()
        },
        parts.join(", ")
    );
    Ok(())
}

/// How good a status is when two reports name the same unit.
fn rank(status: &str) -> u8 {
    match status {
        "done" => 4,
        "skipped" => 3,
        "failed" => 2,
        _ => 1,
    }
}

/// `--merge-reports`: one summary of several shards' reports of the same recipe.
fn merge(paths: &[PathBuf], json: bool) -> Result<()> {
    let mut reports = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let r: BatchReport = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}: not a batch report: {e}", p.display()))?;
        reports.push((p, r));
    }
    let (first_path, first) = &reports[0];
    for (p, r) in &reports[1..] {
        if r.recipe_sha256 != first.recipe_sha256 || r.total_units != first.total_units {
            bail!(
                "{}: a report of another recipe (or another version of it) than {}",
                p.display(),
                first_path.display()
            );
        }
    }
    let total = first.total_units;
    let mut merged: Vec<Option<UnitReport>> = vec![None; total];
    for (p, r) in &reports {
        for u in &r.units {
            let slot = merged
                .get_mut(u.index)
                .ok_or_else(|| anyhow!("{}: unit {} out of range", p.display(), u.index))?;
            if slot
                .as_ref()
                .is_none_or(|s| rank(&u.status) > rank(&s.status))
            {
                *slot = Some(u.clone());
            }
        }
    }
    let units: Vec<UnitReport> = merged
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            u.unwrap_or_else(|| UnitReport {
                index: i,
                job: 0,
                name: String::new(),
                command: String::new(),
                model: String::new(),
                ty: String::new(),
                output: String::new(),
                status: "missing".into(),
                seconds: 0.0,
                bytes: None,
                error: Some("in none of the reports".into()),
                args: Vec::new(),
            })
        })
        .collect();
    let out = BatchReport {
        recipe: first.recipe.clone(),
        recipe_sha256: first.recipe_sha256.clone(),
        qforge_version: first.qforge_version.clone(),
        shard: [0, 1],
        total_units: total,
        units,
    };
    print_summary(&out, json)?;
    let bad = out
        .units
        .iter()
        .filter(|u| !["done", "skipped"].contains(&u.status.as_str()))
        .count();
    if bad > 0 {
        bail!("{bad} of {total} unit(s) not finished (failed, not run or missing)");
    }
    Ok(())
}
