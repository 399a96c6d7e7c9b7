//! Batch recipes: a TOML file of `[defaults]` and `[[job]]` tables, expanded into a stable list of
//! units (one per job and type), each a qforge command line checked by the CLI's parser.
//!
//! ```toml
//! [defaults]
//! threads = 2
//!
//! [[job]]
//! model = "root/m.gguf"
//! types = ["Q8_0", "Q4_K_M"]
//! out = "batch/{stem}.{type}.gguf"
//! ```
//!
//! Job keys: `command` (quantize, the default; convert; sweep), `model`, `types`, `out` (a
//! template with `{stem}` — the model's file or directory name without extension —, `{name}` —
//! the job's `name`, by default the stem — and `{type}`), `name`, and any option the command
//! takes, by its long name (`imatrix`, `device`, `tensor_type = [...]`, `pure = true`). `[defaults]`
//! holds the same keys for every job (a job's own win); a default option a job's command does not
//! take is skipped, one no job takes is an error. Paths
//! are relative to the recipe's directory, where the jobs run.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::CommandFactory;
use sha2::{Digest, Sha256};

use super::config::{find_option, flag_words, scalar_word};

/// The commands a recipe job can run.
pub const RECIPE_COMMANDS: &[&str] = &["quantize", "convert", "sweep"];

/// Keys of a job table that are not command options.
const JOB_KEYS: &[&str] = &["command", "model", "types", "out", "name"];

/// One command a recipe expands to: a job's model at one type (a sweep: all its types).
#[derive(Clone, Debug)]
pub struct Unit {
    /// Position in the recipe's stable order (0-based); shards split on it.
    pub index: usize,
    /// The `[[job]]` table it comes from (0-based).
    pub job: usize,
    /// The job's name (`name`, else the model's stem).
    pub name: String,
    /// quantize, convert or sweep.
    pub command: String,
    /// The model as the job names it (resolved by [`resolve_model`]).
    pub model: String,
    /// The type (all of a sweep's, comma-joined).
    pub ty: String,
    /// The output path, relative to the recipe's directory.
    pub output: String,
    /// The qforge command line (without the program name).
    pub args: Vec<String>,
}

/// A recipe read and expanded.
#[derive(Debug)]
pub struct Recipe {
    /// The recipe file.
    pub path: PathBuf,
    /// Its directory: jobs run there and paths are relative to it.
    pub dir: PathBuf,
    /// SHA-256 of the file's bytes: reports of different recipes are not merged.
    pub sha256: String,
    /// Every unit, in the stable order.
    pub units: Vec<Unit>,
}

/// Where a recipe's `model` value points, as a path relative to the recipe's directory. The one
/// place a model argument is resolved: a path today; a Hugging Face REPO_ID once `qforge pull`
/// exists; a Hub reference is passed on for the command to pull.
pub fn resolve_model(spec: &str, dir: &Path) -> Result<String> {
    let path = dir.join(spec);
    if path.exists() {
        return Ok(spec.to_string());
    }
    // A Hub reference (`ORG/NAME[@REV]`, `hf://…`): the job's own command pulls it into the
    // huggingface_hub cache and works on the snapshot, exactly as on the command line.
    if qforge::hub::HubRef::parse(spec).is_some() {
        return Ok(spec.to_string());
    }
    // A missing file: the command itself reports it, naming the path.
    Ok(spec.to_string())
}

/// The model's stem: file name without extension, or the directory's name.
fn stem_of(model: &str) -> String {
    let p = Path::new(model.trim_end_matches('/'));
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| model.to_string());
    match name.strip_suffix(".gguf") {
        Some(s) => s.to_string(),
        None => p
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or(name),
    }
}

/// Fill `{stem}`, `{name}` and `{type}` in `template`; any other `{…}` is an error.
pub fn fill_template(template: &str, stem: &str, name: &str, ty: Option<&str>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('}')
            .ok_or_else(|| anyhow!("out '{template}': unclosed '{{'"))?;
        match &after[..j] {
            "stem" => out.push_str(stem),
            "name" => out.push_str(name),
            "type" => out.push_str(
                ty.ok_or_else(|| anyhow!("out '{template}': a sweep's output has no {{type}}"))?,
            ),
            other => bail!("out '{template}': unknown placeholder {{{other}}} (use {{stem}}, {{name}}, {{type}})"),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn string_key(t: &toml::Table, key: &str, what: &str) -> Result<Option<String>> {
    match t.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => bail!("{what}: {key} must be a string, not {}", v.type_str()),
    }
}

fn types_key(t: &toml::Table, what: &str) -> Result<Option<Vec<String>>> {
    match t.get("types") {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(toml::Value::Array(a)) => Ok(Some(
            a.iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    v => Err(anyhow!(
                        "{what}: types must be strings, not {}",
                        v.type_str()
                    )),
                })
                .collect::<Result<_>>()?,
        )),
        Some(v) => bail!(
            "{what}: types must be a list of strings, not {}",
            v.type_str()
        ),
    }
}

/// Read and expand the recipe at `path`.
pub fn load(path: &Path) -> Result<Recipe> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: {}",
            path.display(),
            super::config::one_line(&e.to_string())
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let units = expand(&doc, &dir).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(Recipe {
        path: path.to_path_buf(),
        dir,
        sha256: Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        units,
    })
}

fn expand(doc: &toml::Table, dir: &Path) -> Result<Vec<Unit>> {
    for k in doc.keys() {
        if k != "defaults" && k != "job" {
            bail!("unknown top-level key '{k}' (a recipe has [defaults] and [[job]])");
        }
    }
    let empty = toml::Table::new();
    let defaults = match doc.get("defaults") {
        None => &empty,
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("defaults must be a table"),
    };
    let jobs: Vec<&toml::Table> = match doc.get("job") {
        None => bail!("no [[job]] tables"),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                toml::Value::Table(t) => Ok(t),
                _ => Err(anyhow!("job must be an array of tables ([[job]])")),
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("job must be an array of tables ([[job]])"),
    };
    let cli = super::Cli::command();
    let mut units: Vec<Unit> = Vec::new();
    let mut default_used = vec![false; defaults.len()];
    for (ji, job) in jobs.iter().enumerate() {
        let what = format!("job {}", ji + 1);
        let command = string_key(job, "command", &what)?
            .or(string_key(defaults, "command", "defaults")?)
            .unwrap_or_else(|| "quantize".into());
        if !RECIPE_COMMANDS.contains(&command.as_str()) {
            bail!("{what}: command '{command}' (a recipe runs quantize, convert or sweep)");
        }
        let sub = cli
            .find_subcommand(&command)
            .ok_or_else(|| anyhow!("{what}: no command {command}"))?;
        let model_spec = string_key(job, "model", &what)?
            .or(string_key(defaults, "model", "defaults")?)
            .ok_or_else(|| anyhow!("{what}: no model"))?;
        let model = resolve_model(&model_spec, dir).with_context(|| what.clone())?;
        let types = match types_key(job, &what)? {
            Some(t) => t,
            None => types_key(defaults, "defaults")?.ok_or_else(|| anyhow!("{what}: no types"))?,
        };
        if types.is_empty() {
            bail!("{what}: types is empty");
        }
        let out = string_key(job, "out", &what)?
            .or(string_key(defaults, "out", "defaults")?)
            .ok_or_else(|| anyhow!("{what}: no out"))?;
        let stem = stem_of(&model);
        let name = string_key(job, "name", &what)?
            .or(string_key(defaults, "name", "defaults")?)
            .unwrap_or_else(|| stem.clone());
        let what = format!("job {} ({name})", ji + 1);

        // Options: the job's own, then the defaults its command takes.
        let mut opts: Vec<String> = Vec::new();
        let mut threads: Option<String> = None;
        let mut seen: Vec<String> = Vec::new();
        let mut add = |key: &str, value: &toml::Value, from_job: bool| -> Result<bool> {
            let long = key.replace('_', "-");
            if seen.contains(&long) {
                return Ok(true);
            }
            if command == "quantize" && long == "threads" {
                threads = Some(scalar_word(value).map_err(|e| anyhow!("{what}: threads: {e}"))?);
                seen.push(long);
                return Ok(true);
            }
            let Some(arg) = find_option(sub, &long) else {
                if from_job {
                    bail!("{what}: {command} has no option --{long}");
                }
                return Ok(false);
            };
            if arg.is_positional() {
                return Ok(false);
            }
            opts.extend(flag_words(arg, &long, value).map_err(|e| anyhow!("{what}: {key}: {e}"))?);
            seen.push(long);
            Ok(true)
        };
        for (k, v) in job.iter() {
            if !JOB_KEYS.contains(&k.as_str()) {
                add(k, v, true)?;
            }
        }
        for (i, (k, v)) in defaults.iter().enumerate() {
            // Job keys in [defaults] (command, types, out) were read above.
            if JOB_KEYS.contains(&k.as_str()) || add(k, v, false)? {
                default_used[i] = true;
            }
        }

        let per_type: Vec<Option<String>> = if command == "sweep" {
            vec![None]
        } else {
            types.iter().cloned().map(Some).collect()
        };
        if per_type.len() > 1 && !out.contains("{type}") {
            bail!(
                "{what}: out '{out}' needs {{type}}: the job has {} types",
                types.len()
            );
        }
        for ty in per_type {
            let output =
                fill_template(&out, &stem, &name, ty.as_deref()).with_context(|| what.clone())?;
            let mut args: Vec<String> = vec![command.clone()];
            match command.as_str() {
                "quantize" => {
                    args.extend(opts.iter().cloned());
                    args.push(model.clone());
                    args.push(output.clone());
                    args.push(ty.clone().unwrap_or_default());
                    args.extend(threads.clone());
                }
                "convert" => {
                    args.push(model.clone());
                    args.extend([
                        "--outtype".into(),
                        ty.clone().unwrap_or_default(),
                        "-o".into(),
                        output.clone(),
                    ]);
                    args.extend(opts.iter().cloned());
                }
                _ => {
                    args.push(model.clone());
                    args.extend([
                        "--types".into(),
                        types.join(","),
                        "-o".into(),
                        output.clone(),
                    ]);
                    args.extend(opts.iter().cloned());
                }
            }
            let label = ty.clone().unwrap_or_else(|| types.join(","));
            super::job_args::check(&args).map_err(|e| anyhow!("{what} {label}: {e}"))?;
            if let Some(u) = units.iter().find(|u| u.output == output) {
                bail!(
                    "{what} {label}: output {output} is also job {} ({}) {}'s",
                    u.job + 1,
                    u.name,
                    u.ty
                );
            }
            units.push(Unit {
                index: units.len(),
                job: ji,
                name: name.clone(),
                command: command.clone(),
                model: model.clone(),
                ty: label,
                output,
                args,
            });
        }
    }
    for ((k, _), used) in defaults.iter().zip(default_used) {
        if !used {
            bail!(
                "defaults: {k}: no job's command takes --{}",
                k.replace('_', "-")
            );
        }
    }
    Ok(units)
}

/// `I/N`: run the units whose index is I modulo N (I from 0, as `$SLURM_ARRAY_TASK_ID` of
/// `--array=0-(N-1)` and `$JOB_COMPLETION_INDEX`).
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("--shard {s}: use I/N, e.g. 0/3"))?;
    let i: usize = i
        .trim()
        .parse()
        .map_err(|_| anyhow!("--shard {s}: I is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| anyhow!("--shard {s}: N is not a number"))?;
    if n == 0 || i >= n {
        bail!("--shard {s}: I must be in 0..N-1 and N at least 1");
    }
    Ok((i, n))
}
