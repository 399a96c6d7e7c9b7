//! The defaults file: `.qforge.toml` in the working directory and
//! `$XDG_CONFIG_HOME/qforge/config.toml` (else `~/.config/qforge/config.toml`) give defaults to
//! every command; flags on the command line win. `qforge config` shows the merged settings and
//! where each came from.
//!
//! A file holds top-level keys (for every command that takes the option) and per-command tables
//! (`[quantize]`, `[sweep]`, …). Precedence, highest first: a flag; the working directory's file
//! over the user's; within one file a command's table over the top level. Keys are option names
//! with `_` or `-` (`threads`, `device`, `output_tensor_type`); a key no command takes (a
//! `cache_dir` for `pull`) is kept and shown, and applies once a command takes it.
//! `QFORGE_NO_CONFIG=1` ignores both files.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, Args, CommandFactory};

/// One setting: `key = value` from `source`, for `command` (None: every command).
#[derive(Clone, Debug)]
pub struct Setting {
    /// The key as written, `_` and `-` both allowed.
    pub key: String,
    /// The command table it sits in, or None at the top level.
    pub command: Option<String>,
    /// Its value.
    pub value: toml::Value,
    /// The file it came from.
    pub source: PathBuf,
}

impl Setting {
    /// The option's long name (`output-tensor-type`).
    pub fn long_name(&self) -> String {
        self.key.replace('_', "-")
    }
}

/// The settings of both files, highest precedence first.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The files consulted, highest precedence first, and whether each exists.
    pub files: Vec<(PathBuf, bool)>,
    /// Every setting of the files that exist, highest precedence first.
    pub entries: Vec<Setting>,
}

/// The user's file: `$XDG_CONFIG_HOME/qforge/config.toml`, else `~/.config/qforge/config.toml`.
pub fn user_config_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("qforge/config.toml"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/qforge/config.toml"))
}

impl Settings {
    /// The settings that apply to a command run in `dir`.
    pub fn load_in(dir: &Path) -> Result<Settings> {
        let mut s = Settings::default();
        if std::env::var_os("QFORGE_NO_CONFIG").is_some_and(|v| !v.is_empty() && v != "0") {
            return Ok(s);
        }
        // Absolute, so `qforge config` and error messages say which directory's file it is.
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut paths = vec![dir.join(".qforge.toml")];
        paths.extend(user_config_path());
        for p in paths {
            let exists = p.is_file();
            if exists {
                s.entries.extend(read_file(&p)?);
            }
            s.files.push((p, exists));
        }
        Ok(s)
    }

    /// The settings for a command run in the working directory.
    pub fn load() -> Result<Settings> {
        Self::load_in(Path::new("."))
    }

    /// The winning setting of each key for `command`, in file order.
    pub fn for_command(&self, command: &str) -> Vec<&Setting> {
        let mut out: Vec<&Setting> = Vec::new();
        // entries are in file precedence order; within a file the command table beats the top
        // level, so per file take the table first.
        let mut files: Vec<&PathBuf> = Vec::new();
        for e in &self.entries {
            if !files.contains(&&e.source) {
                files.push(&e.source);
            }
        }
        for f in files {
            let in_file = self.entries.iter().filter(|e| &e.source == f);
            let (table, top): (Vec<&Setting>, Vec<&Setting>) =
                in_file.partition(|e| e.command.is_some());
            for e in table
                .into_iter()
                .filter(|e| e.command.as_deref() == Some(command))
                .chain(top)
            {
                if !out.iter().any(|o| o.long_name() == e.long_name()) {
                    out.push(e);
                }
            }
        }
        out
    }

    /// The winning value of `key` for `command` (or for no command in particular).
    pub fn get(&self, key: &str, command: Option<&str>) -> Option<&Setting> {
        let long = key.replace('_', "-");
        match command {
            Some(c) => self
                .for_command(c)
                .into_iter()
                .find(|e| e.long_name() == long),
            None => self
                .entries
                .iter()
                .find(|e| e.command.is_none() && e.long_name() == long),
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<Setting>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e.to_string())))?;
    let mut out = Vec::new();
    for (k, v) in table {
        match v {
            toml::Value::Table(t) => {
                for (k2, v2) in t {
                    if matches!(v2, toml::Value::Table(_)) {
                        bail!(
                            "{}: [{k}].{k2}: nested tables are not settings",
                            path.display()
                        );
                    }
                    out.push(Setting {
                        key: k2,
                        command: Some(k.clone()),
                        value: v2,
                        source: path.to_path_buf(),
                    });
                }
            }
            v => out.push(Setting {
                key: k,
                command: None,
                value: v,
                source: path.to_path_buf(),
            }),
        }
    }
    Ok(out)
}

/// A multi-line parser message on one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A TOML scalar as a command-line word.
pub fn scalar_word(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "{} is not a string, number or boolean",
            other.type_str()
        )),
    }
}

/// The flags that set option `--long` to `value` on `arg`: a boolean switch is `--long` or
/// nothing, a repeatable option takes an array as one flag per element, an option with a value
/// delimiter takes an array joined by it.
pub fn flag_words(arg: &clap::Arg, long: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let flag = format!("--{long}");
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            toml::Value::Boolean(true) => Ok(vec![flag]),
            toml::Value::Boolean(false) => Ok(vec![]),
            _ => Err(format!("--{long} is a switch: use true or false")),
        },
        ArgAction::Append => match value {
            toml::Value::Array(a) => {
                let mut out = Vec::new();
                for v in a {
                    out.push(flag.clone());
                    out.push(scalar_word(v)?);
                }
                Ok(out)
            }
            v => Ok(vec![flag, scalar_word(v)?]),
        },
        _ => match value {
            toml::Value::Array(a) => {
                let Some(d) = arg.get_value_delimiter() else {
                    return Err(format!("--{long} takes one value, not a list"));
                };
                let words = a.iter().map(scalar_word).collect::<Result<Vec<_>, _>>()?;
                Ok(vec![flag, words.join(&d.to_string())])
            }
            v => Ok(vec![flag, scalar_word(v)?]),
        },
    }
}

/// The option of subcommand `sub` whose long name is `long`.
pub fn find_option<'a>(sub: &'a clap::Command, long: &str) -> Option<&'a clap::Arg> {
    sub.get_arguments().find(|a| {
        a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|v| v.contains(&long))
    })
}

/// `argv` with the defaults of `settings` added for every option of its subcommand that the
/// command line does not set. A command line the parser refuses is returned as it is, so the
/// parser reports its own error.
pub fn apply_defaults(argv: Vec<OsString>, settings: &Settings) -> Result<Vec<OsString>> {
    if settings.entries.is_empty() {
        return Ok(argv);
    }
    let mut cmd = super::Cli::command();
    let Ok(matches) = cmd.try_get_matches_from_mut(argv.clone()) else {
        return Ok(argv);
    };
    let Some((name, m)) = matches.subcommand() else {
        return Ok(argv);
    };
    if name == "config" {
        return Ok(argv);
    }
    let Some(sub) = cmd.find_subcommand(name) else {
        return Ok(argv);
    };
    let mut options: Vec<OsString> = Vec::new();
    let mut trailing: Vec<OsString> = Vec::new();
    for s in settings.for_command(name) {
        let long = s.long_name();
        let blame = |e: String| {
            anyhow::anyhow!(
                "{}: {}{}: {e}",
                s.source.display(),
                s.command
                    .as_deref()
                    .map_or(String::new(), |c| format!("[{c}].")),
                s.key
            )
        };
        if name == "quantize" && long == "threads" {
            // llama-quantize's NTHREADS is the last positional word.
            let p: Vec<&String> = m
                .get_many::<String>("positional")
                .map(|v| v.collect())
                .unwrap_or_default();
            if !super::job_args::quantize_has_threads(&p) {
                trailing.push(scalar_word(&s.value).map_err(blame)?.into());
            }
            continue;
        }
        let Some(arg) = find_option(sub, &long) else {
            continue;
        };
        if m.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        options.extend(
            flag_words(arg, &long, &s.value)
                .map_err(blame)?
                .into_iter()
                .map(OsString::from),
        );
    }
    if options.is_empty() && trailing.is_empty() {
        return Ok(argv);
    }
    let at = argv
        .iter()
        .skip(1)
        .position(|a| a.to_str() == Some(name))
        .map_or(argv.len(), |i| i + 2);
    let mut out: Vec<OsString> = argv[..at].to_vec();
    out.extend(options);
    out.extend(argv[at..].iter().cloned());
    out.extend(trailing);
    // A default the parser refuses is the file's fault: say which file.
    if let Err(e) = cmd.try_get_matches_from_mut(out.clone()) {
        let files: Vec<String> = settings
            .files
            .iter()
            .filter(|(_, found)| *found)
            .map(|(p, _)| p.display().to_string())
            .collect();
        bail!(
            "defaults from {}: {}",
            files.join(", "),
            super::job_args::clap_message(&e)
        );
    }
    Ok(out)
}

/// `qforge config`: the merged settings and where each came from.
#[derive(Args)]
pub struct ConfigArgs {
    /// Print JSON instead of TOML-like lines.
    #[arg(long)]
    json: bool,
}

/// Show the settings.
pub fn run(a: ConfigArgs) -> Result<()> {
    let s = Settings::load()?;
    let cmd = super::Cli::command();
    // Shadowed settings are shown too, marked, so "why is my value ignored" has an answer.
    let winner = |e: &Setting| -> bool {
        match &e.command {
            Some(c) => s.for_command(c).iter().any(|w| std::ptr::eq(*w, e)),
            None => s.get(&e.key, None).is_some_and(|w| std::ptr::eq(w, e)),
        }
    };
    let used_by = |e: &Setting| -> Vec<String> {
        let long = e.long_name();
        cmd.get_subcommands()
            .filter(|c| e.command.as_deref().is_none_or(|n| n == c.get_name()))
            .filter(|c| {
                find_option(c, &long).is_some() || (c.get_name() == "quantize" && long == "threads")
            })
            .map(|c| c.get_name().to_string())
            .collect()
    };
    if a.json {
        let files: Vec<serde_json::Value> = s
            .files
            .iter()
            .map(|(p, f)| serde_json::json!({"path": p, "found": f}))
            .collect();
        let entries: Vec<serde_json::Value> = s
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "key": e.key,
                    "command": e.command,
                    "value": serde_json::to_value(&e.value).unwrap_or(serde_json::Value::Null),
                    "source": e.source,
                    "overridden": !winner(e),
                    "used_by": used_by(e),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"files": files, "settings": entries})
            )?
        );
        return Ok(());
    }
    for (p, found) in &s.files {
        println!(
            "# {} ({})",
            p.display(),
            if *found { "read" } else { "absent" }
        );
    }
    if s.entries.is_empty() {
        println!("# no settings: every command uses its built-in defaults");
    }
    let mut sections: Vec<Option<String>> = vec![None];
    for e in &s.entries {
        if !sections.contains(&e.command) {
            sections.push(e.command.clone());
        }
    }
    for sec in sections {
        let here: Vec<&Setting> = s.entries.iter().filter(|e| e.command == sec).collect();
        if here.is_empty() {
            continue;
        }
        if let Some(c) = &sec {
            println!("[{c}]");
        }
        for e in here {
            let users = used_by(e);
            println!(
                "{} = {}  # from {}{}{}",
                e.key,
                e.value,
                e.source.display(),
                if winner(e) { "" } else { "; overridden" },
                if users.is_empty() {
                    "; no command takes it yet".to_string()
                } else {
                    format!("; used by {}", users.join(", "))
                }
            );
        }
    }
    Ok(())
}
