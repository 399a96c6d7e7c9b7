//! The `general.*` authorship keys llama.cpp's converters derive from a model directory
//! (reproduces gguf-py's `Metadata.load` + `set_gguf_meta_model` for the inputs an adapter
//! directory has: a `README.md` model card with simple front matter, a `config.json`'s
//! `_name_or_path`, and the directory's own name).
//!
//! Model-card front matter is read with a small YAML subset (top-level `key: value` scalars,
//! block and flow lists of scalars); a key the heuristics use whose value needs more YAML than
//! that is refused as not supported rather than guessed.
//!
//! The lead should merge this with the `convert` helper's copy of the same heuristics when both
//! have landed.

use std::path::Path;

use regex::Regex;

use crate::formats::gguf::{Value, ValueType};

use super::LoraError;

/// `Metadata.id_to_title`: words split on spaces and dashes, all-lowercase words title-cased
/// unless they are versions or start with a digit.
pub fn id_to_title(s: &str) -> String {
    let keep = Regex::new(r"^(v\d+(?:\.\d+)*|\d.*)$").unwrap();
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            if is_lower(w) && !keep.is_match(w) {
                python_title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `str.islower()`: at least one cased character, and no uppercase one.
fn is_lower(w: &str) -> bool {
    w.chars().any(|c| c.is_lowercase()) && !w.chars().any(|c| c.is_uppercase())
}

/// Python's `str.title()`: a cased character after a non-cased one is uppercased, others are
/// lowercased.
fn python_title(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    let mut prev_cased = false;
    for c in w.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased && !prev_cased {
            out.extend(c.to_uppercase());
        } else if cased {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// What `Metadata.get_model_id_components` extracts from a model id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdComponents {
    pub full_name: Option<String>,
    pub org: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Tag {
    Basename,
    SizeLabel,
    Finetune,
    Version,
    Type,
}

/// Reproduces `Metadata.get_model_id_components`. `total_params` is negative for adapters.
pub fn model_id_components(model_id: &str, total_params: i64) -> IdComponents {
    if model_id.contains(' ') {
        return IdComponents {
            full_name: Some(model_id.to_string()),
            ..Default::default()
        };
    }
    let (mut org, full) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()), n.to_string()),
        None => (None, model_id.to_string()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let mut tags: Vec<Vec<Tag>> = vec![Vec::new(); parts.len()];
    let version_re = Regex::new(r"(?i)^(?:(v|iter)?\d+([.]\d+)*)$").unwrap();
    let type_re = Regex::new(r"(?i)^(?:i?q\d(_\w)*|b?fp?(16|32))$").unwrap();
    let size_re = Regex::new(
        r"(?i)^(?:(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl))$",
    )
    .unwrap();
    let finetune_re = Regex::new(r"(?i)^(?:chat|instruct|vision|lora)$").unwrap();
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if version_re.is_match(&part) {
            tags[i].push(Tag::Version);
        } else if type_re.is_match(&part) {
            tags[i].push(Tag::Type);
            parts[i] = part.to_uppercase();
        } else if i > 0 && size_re.is_match(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            // bloom-7b1 → 7.1b
            if p[n - 1].is_ascii_digit() || p[n - 1].is_numeric() {
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.extend(['.', b, a]);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_numeric() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total_params != 0 {
                let head: String = p[..p.len() - 1].iter().collect();
                if let Ok(num) = parse_python_float(&head) {
                    let last = p[p.len() - 1];
                    let power = match " KMBT".find(last) {
                        Some(k) => k as i32,
                        None => -1,
                    };
                    let label = num * 1000f64.powi(power);
                    let abs_total = total_params.unsigned_abs() as i64;
                    let context_like = (total_params < 0 && label < (abs_total / 8) as f64)
                        || (total_params > 0
                            && (label - total_params as f64).abs() > (7 * total_params / 8) as f64);
                    if context_like {
                        tags[i].push(Tag::Finetune);
                        let l = p.len() - 1;
                        p[l] = p[l].to_ascii_lowercase();
                    }
                }
            }
            if tags[i].is_empty() {
                tags[i].push(Tag::SizeLabel);
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && finetune_re.is_match(&part) {
            if total_params < 0 && part.to_lowercase() == "lora" {
                tags[i].push(Tag::Type);
            } else {
                tags[i].push(Tag::Finetune);
            }
        }
    }
    // Word-based size labels give way to a number-based one.
    let numeric_size = parts
        .iter()
        .zip(&tags)
        .any(|(p, t)| t.contains(&Tag::SizeLabel) && p.chars().any(|c| c.is_numeric()));
    if numeric_size {
        for (p, t) in parts.iter().zip(tags.iter_mut()) {
            if t.contains(&Tag::SizeLabel) && p.chars().all(|c| c.is_alphabetic()) {
                t.retain(|x| *x != Tag::SizeLabel);
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(tags.iter_mut()) {
        let alpha_start = p.chars().next().is_some_and(|c| c.is_alphabetic());
        if at_start && ((t.is_empty() && alpha_start) || t.contains(&Tag::Version)) {
            t.push(Tag::Basename);
        } else {
            at_start = false;
            if t.is_empty() {
                t.push(Tag::Finetune);
            }
        }
    }
    for t in tags.iter_mut().rev() {
        if t.contains(&Tag::Basename) && t.len() > 1 {
            t.retain(|x| *x != Tag::Basename);
        } else {
            break;
        }
    }
    let join = |want: Tag, skip_basename: bool, dedup: bool| {
        let mut out: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&tags) {
            if t.contains(&want)
                && !(skip_basename && t.contains(&Tag::Basename))
                && !(dedup && out.contains(&p.as_str()))
            {
                out.push(p);
            }
        }
        (!out.is_empty()).then(|| out.join("-"))
    };
    let mut basename = join(Tag::Basename, false, false);
    let size_label = join(Tag::SizeLabel, false, true);
    let finetune = join(Tag::Finetune, false, false);
    let version = join(Tag::Version, true, false);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdComponents {
        full_name: Some(full),
        org,
        basename,
        finetune,
        version,
        size_label,
    }
}

/// Python's `float()` for the strings a size label can hold (digits and one dot).
fn parse_python_float(s: &str) -> Result<f64, ()> {
    let t = s.trim();
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(());
    }
    t.parse::<f64>().map_err(|_| ())
}

/// A value of the front-matter subset.
#[derive(Clone, Debug, PartialEq)]
enum Yaml {
    Str(String),
    /// A plain scalar YAML would type as null, a bool or a number.
    NonString(String),
    List(Vec<Yaml>),
    /// Anything richer (maps, block scalars, nested lists).
    Unsupported,
}

/// Top-level keys of the `README.md` front matter, in order, as gguf-py's `load_model_card`
/// finds it (first line `---`, up to the next `---`).
fn read_front_matter(text: &str) -> Option<Vec<(String, Yaml)>> {
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return None;
    }
    let body: Vec<String> = lines
        .take_while(|l| *l != "---")
        .map(|l| l.replace('\t', "  "))
        .collect();
    let key_re = Regex::new(r"^([A-Za-z0-9_][A-Za-z0-9_.\-]*):(?:\s+(.*))?$").unwrap();
    let mut entries: Vec<(String, Yaml)> = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let line = &body[i];
        i += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some(c) = key_re.captures(line) else {
            // A line we cannot place: nothing after it can be trusted.
            entries.push((String::new(), Yaml::Unsupported));
            break;
        };
        let key = c[1].to_string();
        let rest = c.get(2).map_or("", |m| m.as_str()).trim();
        // The key's block: following lines that are indented or list items.
        let mut block = Vec::new();
        while i < body.len() {
            let l = &body[i];
            if l.trim().is_empty() || l.starts_with(' ') || l.starts_with('-') {
                block.push(l.as_str());
                i += 1;
            } else {
                break;
            }
        }
        let value = if rest.is_empty() || rest.starts_with('#') {
            parse_block_list(&block)
        } else if !block.iter().all(|l| l.trim().is_empty()) {
            Yaml::Unsupported
        } else {
            parse_inline(rest)
        };
        entries.push((key, value));
    }
    Some(entries)
}

fn parse_block_list(block: &[&str]) -> Yaml {
    let items: Vec<&str> = block
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if items.is_empty() {
        return Yaml::NonString(String::new());
    }
    let mut out = Vec::new();
    for it in items {
        let Some(v) = it.strip_prefix("- ").or_else(|| (it == "-").then_some("")) else {
            return Yaml::Unsupported;
        };
        match parse_inline(v.trim()) {
            Yaml::List(_) | Yaml::Unsupported => return Yaml::Unsupported,
            s => out.push(s),
        }
    }
    Yaml::List(out)
}

fn parse_inline(v: &str) -> Yaml {
    if let Some(inner) = v.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        if inner.contains(['[', '{', '"', '\'']) {
            return Yaml::Unsupported;
        }
        let items: Vec<Yaml> = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_scalar)
            .collect();
        return Yaml::List(items);
    }
    if v.starts_with(['{', '|', '>', '&', '*', '!']) {
        return Yaml::Unsupported;
    }
    parse_scalar(v)
}

fn parse_scalar(v: &str) -> Yaml {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            let inner = &v[1..v.len() - 1];
            if inner.contains(q) || (q == '"' && inner.contains('\\')) {
                return Yaml::Unsupported;
            }
            return Yaml::Str(inner.to_string());
        }
    }
    // A plain scalar ends at " #".
    let v = v.split(" #").next().unwrap_or("").trim_end();
    if v.starts_with(['"', '\'']) || v.contains(": ") {
        return Yaml::Unsupported;
    }
    let lower = v.to_ascii_lowercase();
    let typed = ["null", "~", "", "true", "false", "yes", "no", "on", "off"]
        .contains(&lower.as_str())
        || v.parse::<f64>().is_ok()
        || lower == ".inf"
        || lower == ".nan";
    if typed {
        Yaml::NonString(v.to_string())
    } else {
        Yaml::Str(v.to_string())
    }
}

/// Authorship fields gathered as gguf-py's `Metadata` does (the subset an adapter can have).
#[derive(Clone, Debug, Default)]
struct Authorship {
    name: Option<String>,
    author: Option<String>,
    version: Option<String>,
    organization: Option<String>,
    finetune: Option<String>,
    basename: Option<String>,
    description: Option<String>,
    size_label: Option<String>,
    license: Option<String>,
    license_name: Option<String>,
    license_link: Option<String>,
    source_url: Option<String>,
    source_doi: Option<String>,
    source_uuid: Option<String>,
    source_repo_url: Option<String>,
    /// Each entry's keys in gguf-py's write order.
    base_models: Option<Vec<Vec<(&'static str, String)>>>,
    datasets: Option<Vec<Vec<(&'static str, String)>>>,
    tags: Option<Vec<String>>,
    languages: Option<Vec<String>>,
}

/// The `general.*` KV pairs `convert_lora_to_gguf.py` writes between `adapter.type` and
/// `adapter.lora.alpha`, for an adapter in `dir` whose tensors total `total_params`
/// (negative: an adapter).
pub fn authorship_kv(dir: &Path, total_params: i64) -> Result<Vec<(String, Value)>, LoraError> {
    let mut m = Authorship::default();
    let readme = dir.join("README.md");
    if readme.is_file() {
        let text = std::fs::read_to_string(&readme).map_err(LoraError::io(&readme))?;
        if let Some(card) = read_front_matter(&text) {
            apply_model_card(&mut m, &card, &readme, total_params)?;
        }
    }
    let gen_config = dir.join("generation_config.json");
    if let Some(json) = std::fs::read_to_string(&gen_config)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        const SAMPLING: &[&str] = &[
            "sequence",
            "top_k",
            "top_p",
            "min_p",
            "xtc_probability",
            "xtc_threshold",
            "temperature",
            "penalty_last_n",
            "penalty_repeat",
            "repetition_penalty",
            "mirostat",
            "mirostat_tau",
            "mirostat_eta",
        ];
        if SAMPLING.iter().any(|k| json.get(*k).is_some()) {
            return Err(LoraError::NotSupported {
                path: gen_config,
                what: "sampling defaults from an adapter's generation_config.json".into(),
            });
        }
    }
    let config = dir.join("config.json");
    if config.is_file() {
        let text = std::fs::read_to_string(&config).map_err(LoraError::io(&config))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| LoraError::BaseConfig {
                path: config.clone(),
                what: format!("not valid JSON: {e}"),
            })?;
        if let Some(id) = json.get("_name_or_path").and_then(|v| v.as_str()) {
            if id.matches('/').count() <= 1 {
                apply_id(&mut m, id, total_params);
            }
        }
    }
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    apply_id(&mut m, &dir_name, total_params);

    let mut kv: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            kv.push((k.to_string(), Value::Str(v.clone())));
        }
    };
    put("general.name", &Some(m.name.clone().unwrap_or_default()));
    put("general.author", &m.author);
    put("general.version", &m.version);
    put("general.organization", &m.organization);
    put("general.finetune", &m.finetune);
    put("general.basename", &m.basename);
    put("general.description", &m.description);
    put("general.size_label", &m.size_label);
    put("general.license", &m.license);
    put("general.license.name", &m.license_name);
    put("general.license.link", &m.license_link);
    put("general.source.url", &m.source_url);
    put("general.source.doi", &m.source_doi);
    put("general.source.uuid", &m.source_uuid);
    put("general.source.repo_url", &m.source_repo_url);
    for (list, prefix) in [(&m.base_models, "base_model"), (&m.datasets, "dataset")] {
        if let Some(entries) = list {
            kv.push((
                format!("general.{prefix}.count"),
                Value::U32(entries.len() as u32),
            ));
            for (i, e) in entries.iter().enumerate() {
                for (k, v) in e {
                    kv.push((format!("general.{prefix}.{i}.{k}"), Value::Str(v.clone())));
                }
            }
        }
    }
    for (list, key) in [
        (&m.tags, "general.tags"),
        (&m.languages, "general.languages"),
    ] {
        if let Some(items) = list {
            kv.push((
                key.to_string(),
                Value::Array(
                    ValueType::Str,
                    items.iter().map(|s| Value::Str(s.clone())).collect(),
                ),
            ));
        }
    }
    Ok(kv)
}

/// The directory-name / `_name_or_path` heuristic: fill what is still missing.
fn apply_id(m: &mut Authorship, id: &str, total_params: i64) {
    let c = model_id_components(id, total_params);
    if m.name.is_none() {
        m.name = c.full_name.as_deref().map(id_to_title);
    }
    if m.organization.is_none() {
        m.organization = c.org.as_deref().map(id_to_title);
    }
    if m.basename.is_none() {
        m.basename = c.basename;
    }
    if m.finetune.is_none() {
        m.finetune = c.finetune;
    }
    if m.version.is_none() {
        m.version = c.version;
    }
    if m.size_label.is_none() {
        m.size_label = c.size_label;
    }
}

/// Selects one string field of [`Authorship`].
type Field = fn(&mut Authorship) -> &mut Option<String>;

/// The model-card part of `Metadata.apply_metadata_heuristic`.
fn apply_model_card(
    m: &mut Authorship,
    card: &[(String, Yaml)],
    path: &Path,
    total_params: i64,
) -> Result<(), LoraError> {
    let get = |k: &str| card.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let unsupported = |k: &str| LoraError::NotSupported {
        path: path.to_path_buf(),
        what: format!("the model card's '{k}' value (beyond the simple YAML qforge reads)"),
    };
    if card
        .iter()
        .any(|(k, v)| k.is_empty() && *v == Yaml::Unsupported)
    {
        return Err(LoraError::NotSupported {
            path: path.to_path_buf(),
            what: "model card front matter beyond simple `key: value` lines".into(),
        });
    }
    let string = |k: &str| -> Result<Option<String>, LoraError> {
        match get(k) {
            None => Ok(None),
            Some(Yaml::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(unsupported(k)),
        }
    };
    let fields: [(&str, Field); 27] = [
        ("name", |m| &mut m.name),
        ("author", |m| &mut m.author),
        ("version", |m| &mut m.version),
        ("organization", |m| &mut m.organization),
        ("description", |m| &mut m.description),
        ("finetune", |m| &mut m.finetune),
        ("basename", |m| &mut m.basename),
        ("size_label", |m| &mut m.size_label),
        ("url", |m| &mut m.source_url),
        ("doi", |m| &mut m.source_doi),
        ("uuid", |m| &mut m.source_uuid),
        ("repo_url", |m| &mut m.source_repo_url),
        ("model_name", |m| &mut m.name),
        ("model_author", |m| &mut m.author),
        ("model_version", |m| &mut m.version),
        ("model_organization", |m| &mut m.organization),
        ("model_description", |m| &mut m.description),
        ("model_finetune", |m| &mut m.finetune),
        ("model_basename", |m| &mut m.basename),
        ("model_size_label", |m| &mut m.size_label),
        ("model_url", |m| &mut m.source_url),
        ("model_doi", |m| &mut m.source_doi),
        ("model_uuid", |m| &mut m.source_uuid),
        ("model_repo_url", |m| &mut m.source_repo_url),
        ("model_name", |m| &mut m.name),
        ("model_creator", |m| &mut m.author),
        ("model_type", |m| &mut m.basename),
    ];
    for (k, field) in fields {
        if let Some(v) = string(k)? {
            let slot = field(m);
            if slot.is_none() {
                *slot = Some(v);
            }
        }
    }
    let strings_of = |k: &str, v: &Yaml| -> Result<Vec<String>, LoraError> {
        match v {
            Yaml::Str(s) => Ok(vec![s.clone()]),
            Yaml::List(items) => items
                .iter()
                .map(|i| match i {
                    Yaml::Str(s) => Ok(s.clone()),
                    _ => Err(unsupported(k)),
                })
                .collect(),
            Yaml::NonString(s) if s.is_empty() || s == "~" || s == "null" => Ok(Vec::new()),
            _ => Err(unsupported(k)),
        }
    };
    for (list_key, is_base) in [
        (["base_model", "base_models", "base_model_sources"], true),
        (["datasets", "dataset", "dataset_sources"], false),
    ] {
        let Some(k) = list_key.iter().find(|k| get(k).is_some()) else {
            continue;
        };
        let ids = strings_of(k, get(k).unwrap())?;
        let entries: Vec<Vec<(&'static str, String)>> = ids
            .iter()
            .map(|id| source_entry(id, total_params))
            .collect();
        let slot = if is_base {
            &mut m.base_models
        } else {
            &mut m.datasets
        };
        slot.get_or_insert_with(Vec::new).extend(entries);
    }
    if let Some(v) = get("license") {
        if m.license.is_none() {
            m.license = Some(strings_of("license", v)?.join(","));
        }
    }
    let license_fields: [(&str, Field); 2] = [
        ("license_name", |m| &mut m.license_name),
        ("license_link", |m| &mut m.license_link),
    ];
    for (k, field) in license_fields {
        if let Some(v) = string(k)? {
            let slot = field(m);
            if slot.is_none() {
                *slot = Some(v);
            }
        }
    }
    for (k, languages) in [
        ("tags", false),
        ("pipeline_tag", false),
        ("languages", true),
        ("language", true),
    ] {
        if let Some(v) = get(k) {
            // A YAML null is skipped, as gguf-py skips None.
            if matches!(v, Yaml::NonString(s) if s.is_empty() || s == "~" || s == "null") {
                continue;
            }
            let items = strings_of(k, v)?;
            let slot = if languages {
                &mut m.languages
            } else {
                &mut m.tags
            };
            slot.get_or_insert_with(Vec::new).extend(items);
        }
    }
    Ok(())
}

/// One `base_model` / `dataset` entry of the card, as gguf-py expands a string id.
fn source_entry(id: &str, total_params: i64) -> Vec<(&'static str, String)> {
    let mut e: Vec<(&'static str, String)> = Vec::new();
    let push_parts = |e: &mut Vec<(&'static str, String)>, c: &IdComponents| {
        if let Some(n) = &c.full_name {
            e.push(("name", id_to_title(n)));
        }
        if let Some(v) = &c.version {
            e.push(("version", v.clone()));
        }
        if let Some(o) = &c.org {
            e.push(("organization", id_to_title(o)));
        }
    };
    if id.starts_with("http://") || id.starts_with("https://") || id.starts_with("ssh://") {
        if id.contains("huggingface.co") {
            let re = Regex::new(r"^https?://huggingface.co/([^/]+/[^/]+)$").unwrap();
            if let Some(c) = re.captures(id) {
                push_parts(&mut e, &model_id_components(&c[1], total_params));
            }
        }
        e.push(("repo_url", id.to_string()));
    } else {
        let c = model_id_components(id, total_params);
        push_parts(&mut e, &c);
        if let (Some(o), Some(n)) = (&c.org, &c.full_name) {
            e.push(("repo_url", format!("https://huggingface.co/{o}/{n}")));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_like_python() {
        assert_eq!(id_to_title("tiny-llama"), "Tiny Llama");
        assert_eq!(id_to_title("adapter"), "Adapter");
        assert_eq!(id_to_title("Llama-3.1-8B"), "Llama 3.1 8B");
        assert_eq!(id_to_title("meta-llama"), "Meta Llama");
        assert_eq!(id_to_title("my-lora-v2"), "My Lora v2");
    }

    #[test]
    fn id_components_follow_gguf_py() {
        let c = model_id_components("Mistral-7B-Instruct-v0.2", 7_000_000_000);
        assert_eq!(c.basename.as_deref(), Some("Mistral"));
        assert_eq!(c.size_label.as_deref(), Some("7B"));
        assert_eq!(c.finetune.as_deref(), Some("Instruct"));
        assert_eq!(c.version.as_deref(), Some("v0.2"));
        let c = model_id_components("adapter", -4_000_000);
        assert_eq!((c.basename, c.size_label), (None, None));
        // A LoRA's own "lora" is its type, not a finetune.
        let c = model_id_components("llama-7b-lora", -4_000_000);
        assert_eq!(c.finetune, None);
        assert_eq!(c.size_label.as_deref(), Some("7B"));
        assert_eq!(c.basename.as_deref(), Some("llama"));
    }

    /// Expected values printed by gguf-py's own `get_model_id_components` / `id_to_title`
    /// (extracted from gguf-py/gguf/metadata.py and run on these ids).
    #[test]
    fn id_components_match_gguf_py_outputs() {
        type Row<'a> = (&'a str, i64, [Option<&'a str>; 4], &'a str);
        let rows: [Row; 8] = [
            ("adapter", -4000000, [None, None, None, None], "Adapter"),
            (
                "Llama-2-7b-chat-lora",
                -4000000,
                [Some("Llama-2"), Some("chat"), None, Some("7B")],
                "Llama 2 7b Chat Lora",
            ),
            (
                "tiny-llama",
                4700000,
                [None, None, None, None],
                "Tiny Llama",
            ),
            (
                "Mistral-7B-Instruct-v0.2",
                7000000000,
                [Some("Mistral"), Some("Instruct"), Some("v0.2"), Some("7B")],
                "Mistral 7B Instruct v0.2",
            ),
            (
                "my_adapter-v2",
                -100,
                [Some("my_adapter"), None, Some("v2"), None],
                "My_Adapter v2",
            ),
            (
                "Qwen2.5-0.5B-Instruct-lora-r16",
                -5000000,
                [Some("Qwen2.5"), Some("Instruct-r16"), None, Some("0.5B")],
                "Qwen2.5 0.5B Instruct Lora R16",
            ),
            (
                "llama-3-8k-lora",
                -2000000,
                [Some("llama-3"), Some("8k"), None, None],
                "Llama 3 8k Lora",
            ),
            (
                "SmolLM2-135M-bf16",
                -1000,
                [Some("SmolLM2"), None, None, Some("135M")],
                "SmolLM2 135M Bf16",
            ),
        ];
        for (id, total, [basename, finetune, version, size], title) in rows {
            let c = model_id_components(id, total);
            assert_eq!(c.full_name.as_deref(), Some(id));
            assert_eq!(c.org, None);
            assert_eq!(
                [
                    c.basename.as_deref(),
                    c.finetune.as_deref(),
                    c.version.as_deref(),
                    c.size_label.as_deref()
                ],
                [basename, finetune, version, size],
                "{id}"
            );
            assert_eq!(id_to_title(id), title, "{id}");
        }
    }

    #[test]
    fn peft_model_card_front_matter_is_read() {
        let text = "---\nbase_model: meta-llama/Llama-3.2-1B\nlibrary_name: peft\npipeline_tag: text-generation\ntags:\n- base_model:adapter:meta-llama/Llama-3.2-1B\n- lora\n- transformers\n---\n\n# Model Card\n";
        let card = read_front_matter(text).unwrap();
        let mut m = Authorship::default();
        apply_model_card(&mut m, &card, Path::new("README.md"), -1000).unwrap();
        assert_eq!(
            m.base_models.unwrap()[0],
            vec![
                ("name", "Llama 3.2 1B".to_string()),
                ("organization", "Meta Llama".to_string()),
                (
                    "repo_url",
                    "https://huggingface.co/meta-llama/Llama-3.2-1B".to_string()
                )
            ]
        );
        assert_eq!(
            m.tags.unwrap(),
            [
                "base_model:adapter:meta-llama/Llama-3.2-1B",
                "lora",
                "transformers",
                "text-generation"
            ]
        );
    }
}
