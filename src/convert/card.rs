//! The `general.*` keys llama.cpp's converter derives for a model: name, size label, authorship
//! from the model card, sampling defaults from generation_config.json. Reproduces gguf-py's
//! `Metadata.load`, `get_model_id_components`, `id_to_title` and `size_label`
//! (gguf-py/gguf/metadata.py, utility.py; llama.cpp 0c1e57098).

use std::path::Path;

use regex::Regex;
use serde_json::{Map, Value as Json};

use crate::formats::gguf::{Value, ValueType};
use crate::formats::gguf_kv::KvList;

/// Errors reading the files the metadata comes from.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// A file exists but cannot be read or parsed.
    #[error("{path}: {what}")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// A value has a type the converter cannot write (it would crash on it).
    #[error("{path}: '{key}' must be {expected}")]
    BadValue {
        /// The file holding the value.
        path: String,
        /// The key whose value has the wrong type.
        key: String,
        /// The type the converter needs, in words.
        expected: &'static str,
    },
}

/// A sampling default: written as i32 or f32 as the key requires.
#[derive(Clone, Debug, PartialEq)]
enum Sampling {
    Str(String),
    Int(i64),
    Float(f64),
}

/// gguf-py's `Metadata`: every optional authorship field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelCard {
    sampling: Vec<(&'static str, Sampling)>,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.author`.
    pub author: Option<String>,
    /// `general.version` (e.g. `v0.2`).
    pub version: Option<String>,
    /// `general.organization`.
    pub organization: Option<String>,
    /// `general.finetune` (e.g. `Instruct`).
    pub finetune: Option<String>,
    /// `general.basename`: the model name without size, finetune and version.
    pub basename: Option<String>,
    /// `general.description`.
    pub description: Option<String>,
    /// `general.quantized_by`.
    pub quantized_by: Option<String>,
    /// `general.size_label` (e.g. `7B`, `8x7B`).
    pub size_label: Option<String>,
    /// `general.url`.
    pub url: Option<String>,
    /// `general.doi`.
    pub doi: Option<String>,
    /// `general.uuid`.
    pub uuid: Option<String>,
    /// `general.repo_url`.
    pub repo_url: Option<String>,
    /// `general.source.url`: where the original model came from.
    pub source_url: Option<String>,
    /// `general.source.doi`.
    pub source_doi: Option<String>,
    /// `general.source.uuid`.
    pub source_uuid: Option<String>,
    /// `general.source.repo_url`.
    pub source_repo_url: Option<String>,
    /// `general.license` (an SPDX id or `other`).
    pub license: Option<String>,
    /// `general.license.name`.
    pub license_name: Option<String>,
    /// `general.license.link`.
    pub license_link: Option<String>,
    /// `general.base_model.*`: one map per base model (name, organization, version, url, ...).
    pub base_models: Option<Vec<Map<String, Json>>>,
    /// `general.dataset.*`: one map per training data set, like `base_models`.
    pub datasets: Option<Vec<Map<String, Json>>>,
    /// `general.tags`.
    pub tags: Option<Vec<String>>,
    /// `general.languages`.
    pub languages: Option<Vec<String>>,
}

/// Sampling keys of generation_config.json, in the order gguf-py reads and writes them: (key in
/// the GGUF file, key(s) in generation_config.json, is an integer).
const SAMPLING_KEYS: &[(&str, &[&str], SamplingKind)] = &[
    (
        "general.sampling.sequence",
        &["sequence"],
        SamplingKind::Str,
    ),
    ("general.sampling.top_k", &["top_k"], SamplingKind::Int),
    ("general.sampling.top_p", &["top_p"], SamplingKind::Float),
    ("general.sampling.min_p", &["min_p"], SamplingKind::Float),
    (
        "general.sampling.xtc_probability",
        &["xtc_probability"],
        SamplingKind::Float,
    ),
    (
        "general.sampling.xtc_threshold",
        &["xtc_threshold"],
        SamplingKind::Float,
    ),
    (
        "general.sampling.temp",
        &["temperature"],
        SamplingKind::Float,
    ),
    (
        "general.sampling.penalty_last_n",
        &["penalty_last_n"],
        SamplingKind::Int,
    ),
    (
        "general.sampling.penalty_repeat",
        &["penalty_repeat", "repetition_penalty"],
        SamplingKind::Float,
    ),
    (
        "general.sampling.mirostat",
        &["mirostat"],
        SamplingKind::Int,
    ),
    (
        "general.sampling.mirostat_tau",
        &["mirostat_tau"],
        SamplingKind::Float,
    ),
    (
        "general.sampling.mirostat_eta",
        &["mirostat_eta"],
        SamplingKind::Float,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum SamplingKind {
    Str,
    Int,
    Float,
}

/// The parts gguf-py reads out of a Hugging Face model id (`org/Name-7B-Instruct-v0.2`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelIdParts {
    /// The id's last path component as given (`Name-7B-Instruct-v0.2`).
    pub full_name: Option<String>,
    /// The part before the `/`, when the id has one.
    pub org: Option<String>,
    /// The name with size label, finetune and version taken out.
    pub basename: Option<String>,
    /// The finetune tag (`Instruct`, `Chat`, ...).
    pub finetune: Option<String>,
    /// The version tag (`v0.2`).
    pub version: Option<String>,
    /// The size label (`7B`, `8x7B`).
    pub size_label: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Tag {
    Basename,
    SizeLabel,
    Finetune,
    Version,
    Type,
}

/// Python's `str.islower()`: at least one cased character and no uppercase one.
fn py_islower(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_uppercase() {
            return false;
        }
        if c.is_lowercase() {
            cased = true;
        }
    }
    cased
}

/// Python's `str.title()`: a cased character after an uncased one is uppercased, others lowered.
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased {
            if prev_cased {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// gguf-py's `Metadata.id_to_title`.
pub fn id_to_title(s: &str) -> String {
    let version_like = Regex::new(r"^(v\d+(?:\.\d+)*|\d.*)$").unwrap();
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            if py_islower(w) && !version_like.is_match(w) {
                py_title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn full_match(pattern: &str) -> Regex {
    Regex::new(&format!("(?i)^(?:{pattern})$")).unwrap()
}

/// gguf-py's `Metadata.get_model_id_components`.
pub fn model_id_components(model_id: Option<&str>, total_params: i64) -> ModelIdParts {
    let Some(model_id) = model_id else {
        return ModelIdParts::default();
    };
    if model_id.contains(' ') {
        return ModelIdParts {
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
    let add = |t: &mut Vec<Tag>, tag: Tag| {
        if !t.contains(&tag) {
            t.push(tag);
        }
    };
    let re_version = full_match(r"(v|iter)?\d+([.]\d+)*");
    let re_type = full_match(r"i?q\d(_\w)*|b?fp?(16|32)");
    let re_size =
        full_match(r"(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)");
    let re_finetune = full_match(r"chat|instruct|vision|lora");
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if re_version.is_match(&part) {
            add(&mut tags[i], Tag::Version);
        } else if re_type.is_match(&part) {
            add(&mut tags[i], Tag::Type);
            parts[i] = part.to_uppercase();
        } else if i > 0 && re_size.is_match(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            // bloom-7b1 style: "7b1" reads "7.1b"
            if p.last()
                .is_some_and(|c| c.is_ascii_digit() || c.is_numeric())
                && p.len() >= 2
            {
                let n = p.len();
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.push('.');
                p.push(b);
                p.push(a);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_numeric() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total_params != 0 {
                let head: String = p[..p.len() - 1].iter().collect();
                if let Ok(v) = head.parse::<f64>() {
                    let last = *p.last().unwrap();
                    let exp = " KMBT".find(last).map(|e| e as i32).unwrap_or(-1);
                    let label_params = v * 1000f64.powi(exp);
                    let total = total_params as f64;
                    let too_small =
                        total_params < 0 && label_params < (total_params.unsigned_abs() / 8) as f64;
                    let too_far = total_params > 0
                        && (label_params - total).abs() > (7 * total_params).div_euclid(8) as f64;
                    if too_small || too_far {
                        add(&mut tags[i], Tag::Finetune);
                        let last = p.len() - 1;
                        p[last] = p[last].to_ascii_lowercase();
                    }
                }
            }
            if tags[i].is_empty() {
                add(&mut tags[i], Tag::SizeLabel);
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && re_finetune.is_match(&part) {
            if total_params < 0 && part.to_lowercase() == "lora" {
                add(&mut tags[i], Tag::Type);
            } else {
                add(&mut tags[i], Tag::Finetune);
            }
        }
    }
    // Word-only size labels lose out to a numeric one.
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
            add(t, Tag::Basename);
        } else {
            at_start = false;
            if t.is_empty() {
                add(t, Tag::Finetune);
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
    let join = |pred: &dyn Fn(&Vec<Tag>) -> bool, dedup: bool| -> Option<String> {
        let mut picked: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&tags) {
            if pred(t) && !(dedup && picked.contains(&p.as_str())) {
                picked.push(p);
            }
        }
        let s = picked.join("-");
        (!s.is_empty()).then_some(s)
    };
    let mut basename = join(&|t| t.contains(&Tag::Basename), false);
    let size_label = join(&|t| t.contains(&Tag::SizeLabel), true);
    let finetune = join(&|t| t.contains(&Tag::Finetune), false);
    let version = join(
        &|t| t.contains(&Tag::Version) && !t.contains(&Tag::Basename),
        false,
    );
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    ModelIdParts {
        full_name: Some(full),
        org,
        basename,
        finetune,
        version,
        size_label,
    }
}

/// gguf-py's `model_weight_count_rounded_notation`.
fn rounded_count(n: u64, min_digits: usize) -> String {
    let x = n as f64;
    let (scaled, suffix) = if x > 1e12 {
        (x * 1e-12, "T")
    } else if x > 1e9 {
        (x * 1e-9, "B")
    } else if x > 1e6 {
        (x * 1e-6, "M")
    } else {
        (x * 1e-3, "K")
    };
    // Python: len(str(round(scaled)).lstrip('0')), round() being half-to-even.
    let rounded = format!("{}", scaled.round_ties_even() as u64);
    let digits = rounded.trim_start_matches('0').len();
    let fix = min_digits.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

/// gguf-py's `size_label` for a model without experts.
pub fn size_label(total_params: u64) -> String {
    rounded_count(total_params, 2)
}

/// gguf-py's `size_label` with experts: `{count}x{per-expert size}`.
pub fn size_label_experts(shared: u64, expert: u64, expert_count: u64) -> String {
    format!("{expert_count}x{}", rounded_count(shared + expert, 2))
}

/// The directory's name as Python's `Path(dir).name` gives it (empty for `.`).
pub fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_json(path: &Path) -> Result<Option<Json>, CardError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| CardError::BadFile {
        path: path.display().to_string(),
        what: e.to_string(),
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CardError::BadFile {
            path: path.display().to_string(),
            what: format!("invalid JSON: {e}"),
        })
}

/// The YAML front matter of README.md, as JSON values. A card without front matter is empty.
fn load_model_card(dir: &Path) -> Result<Map<String, Json>, CardError> {
    let path = dir.join("README.md");
    if !path.is_file() {
        return Ok(Map::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| CardError::BadFile {
        path: path.display().to_string(),
        what: e.to_string(),
    })?;
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return Ok(Map::new());
    }
    let mut yaml = String::new();
    for line in lines {
        if line == "---" {
            break;
        }
        yaml.push_str(line);
        yaml.push('\n');
    }
    if yaml.is_empty() {
        return Ok(Map::new());
    }
    crate::convert::yaml::front_matter_to_json(&yaml).map_err(|what| CardError::BadFile {
        path: path.display().to_string(),
        what,
    })
}

fn str_field(v: &Json, path: &Path, key: &str) -> Result<Option<String>, CardError> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.clone())),
        _ => Err(CardError::BadValue {
            path: path.display().to_string(),
            key: key.to_string(),
            expected: "a string",
        }),
    }
}

impl ModelCard {
    /// gguf-py's `Metadata.load(None, dir, model_name, total_params)` followed by the
    /// converter's fallback of the name to the directory name.
    pub fn load(
        dir: &Path,
        model_name: Option<&str>,
        total_params: i64,
    ) -> Result<ModelCard, CardError> {
        let card = load_model_card(dir)?;
        let config_path = dir.join("config.json");
        let hf_params = read_json(&config_path)?;
        let gen_path = dir.join("generation_config.json");
        // gguf-py ignores an unreadable generation_config.json.
        let gen_config = read_json(&gen_path).ok().flatten();

        let mut m = ModelCard::default();
        m.apply_card(&card, &dir.join("README.md"), total_params)?;

        if let Some(Json::Object(hf)) = &hf_params {
            if let Some(Json::String(id)) = hf.get("_name_or_path") {
                if id.matches('/').count() <= 1 {
                    m.fill_from_id(id, total_params);
                }
            }
        }
        let dir_name = dir_name(dir);
        m.fill_from_id(&dir_name, total_params);

        if let Some(Json::Object(g)) = &gen_config {
            for (gguf_key, keys, kind) in SAMPLING_KEYS {
                let Some(v) = keys.iter().find_map(|k| g.get(*k)) else {
                    continue;
                };
                let s = match (kind, v) {
                    (_, Json::Null) => continue,
                    (SamplingKind::Str, Json::String(s)) => Sampling::Str(s.clone()),
                    (SamplingKind::Int, Json::Number(n)) if n.is_i64() => {
                        Sampling::Int(n.as_i64().unwrap())
                    }
                    (SamplingKind::Float, Json::Number(n)) => Sampling::Float(n.as_f64().unwrap()),
                    _ => {
                        return Err(CardError::BadValue {
                            path: gen_path.display().to_string(),
                            key: keys[0].to_string(),
                            expected: match kind {
                                SamplingKind::Str => "a string",
                                SamplingKind::Int => "an integer",
                                SamplingKind::Float => "a number",
                            },
                        })
                    }
                };
                m.sampling.push((gguf_key, s));
            }
        }
        if let Some(n) = model_name {
            m.name = Some(n.to_string());
        }
        if m.name.is_none() {
            m.name = Some(dir_name);
        }
        Ok(m)
    }

    fn fill_from_id(&mut self, id: &str, total_params: i64) {
        let p = model_id_components(Some(id), total_params);
        if self.name.is_none() {
            self.name = p.full_name.as_deref().map(id_to_title);
        }
        if self.organization.is_none() {
            self.organization = p.org.as_deref().map(id_to_title);
        }
        if self.basename.is_none() {
            self.basename = p.basename;
        }
        if self.finetune.is_none() {
            self.finetune = p.finetune;
        }
        if self.version.is_none() {
            self.version = p.version;
        }
        if self.size_label.is_none() {
            self.size_label = p.size_label;
        }
    }

    /// The model-card part of `apply_metadata_heuristic`.
    fn apply_card(
        &mut self,
        card: &Map<String, Json>,
        path: &Path,
        total_params: i64,
    ) -> Result<(), CardError> {
        if card.is_empty() {
            return Ok(());
        }
        let get = |k: &str| card.get(k);
        macro_rules! use_card {
            ($field:ident, $key:expr) => {
                if self.$field.is_none() {
                    if let Some(v) = get($key) {
                        self.$field = str_field(v, path, $key)?;
                    }
                }
            };
        }
        use_card!(name, "name");
        use_card!(author, "author");
        use_card!(version, "version");
        use_card!(organization, "organization");
        use_card!(description, "description");
        use_card!(finetune, "finetune");
        use_card!(basename, "basename");
        use_card!(size_label, "size_label");
        use_card!(source_url, "url");
        use_card!(source_doi, "doi");
        use_card!(source_uuid, "uuid");
        use_card!(source_repo_url, "repo_url");
        use_card!(name, "model_name");
        use_card!(author, "model_author");
        use_card!(version, "model_version");
        use_card!(organization, "model_organization");
        use_card!(description, "model_description");
        use_card!(finetune, "model_finetune");
        use_card!(basename, "model_basename");
        use_card!(size_label, "model_size_label");
        use_card!(source_url, "model_url");
        use_card!(source_doi, "model_doi");
        use_card!(source_uuid, "model_uuid");
        use_card!(source_repo_url, "model_repo_url");
        use_card!(author, "model_creator");
        use_card!(basename, "model_type");

        let base = get("base_model")
            .or_else(|| get("base_models"))
            .or_else(|| get("base_model_sources"));
        if card.contains_key("base_model")
            || card.contains_key("base_models")
            || card.contains_key("base_model_sources")
        {
            let list = self.base_models.get_or_insert_with(Vec::new);
            for id in as_list(base) {
                list.push(describe_source(id, total_params, path, "base_model")?);
            }
        }
        let ds = get("datasets")
            .or_else(|| get("dataset"))
            .or_else(|| get("dataset_sources"));
        if card.contains_key("datasets")
            || card.contains_key("dataset")
            || card.contains_key("dataset_sources")
        {
            let list = self.datasets.get_or_insert_with(Vec::new);
            for id in as_list(ds) {
                list.push(describe_source(id, total_params, path, "datasets")?);
            }
        }
        if self.license.is_none() {
            match get("license") {
                None | Some(Json::Null) => {}
                Some(Json::String(s)) => self.license = Some(s.clone()),
                Some(Json::Array(items)) => {
                    let mut parts = Vec::new();
                    for it in items {
                        match it {
                            Json::String(s) => parts.push(s.clone()),
                            _ => {
                                return Err(CardError::BadValue {
                                    path: path.display().to_string(),
                                    key: "license".into(),
                                    expected: "a string or a list of strings",
                                })
                            }
                        }
                    }
                    self.license = Some(parts.join(","));
                }
                Some(_) => {
                    return Err(CardError::BadValue {
                        path: path.display().to_string(),
                        key: "license".into(),
                        expected: "a string or a list of strings",
                    })
                }
            }
        }
        use_card!(license_name, "license_name");
        use_card!(license_link, "license_link");
        for (field, key) in [("tags", "tags"), ("tags", "pipeline_tag")]
            .into_iter()
            .chain([("languages", "languages"), ("languages", "language")])
        {
            let Some(v) = get(key) else { continue };
            let mut add = Vec::new();
            match v {
                Json::Null => continue,
                Json::String(s) => add.push(s.clone()),
                Json::Array(items) => {
                    for it in items {
                        match it {
                            Json::String(s) => add.push(s.clone()),
                            _ => {
                                return Err(CardError::BadValue {
                                    path: path.display().to_string(),
                                    key: key.into(),
                                    expected: "a list of strings",
                                })
                            }
                        }
                    }
                }
                // gguf-py ignores other types here.
                _ => continue,
            }
            let target = if field == "tags" {
                &mut self.tags
            } else {
                &mut self.languages
            };
            target.get_or_insert_with(Vec::new).extend(add);
        }
        Ok(())
    }

    /// Whether generation_config.json gave no sampling defaults.
    pub fn sampling_is_empty(&self) -> bool {
        self.sampling.is_empty()
    }

    /// gguf-py's `Metadata.set_gguf_meta_model`, in its order.
    pub fn write(&self, kv: &mut KvList) {
        for (key, s) in &self.sampling {
            match s {
                Sampling::Str(v) => kv.add_str(key, v),
                Sampling::Int(v) => kv.add_i32(key, *v as i32),
                Sampling::Float(v) => kv.add_f32(key, *v),
            }
        }
        let name = self.name.as_deref().unwrap_or_default();
        kv.add_str("general.name", name);
        let opt = |kv: &mut KvList, key: &str, v: &Option<String>| {
            if let Some(v) = v {
                kv.add_str(key, v);
            }
        };
        opt(kv, "general.author", &self.author);
        opt(kv, "general.version", &self.version);
        opt(kv, "general.organization", &self.organization);
        opt(kv, "general.finetune", &self.finetune);
        opt(kv, "general.basename", &self.basename);
        opt(kv, "general.description", &self.description);
        opt(kv, "general.quantized_by", &self.quantized_by);
        opt(kv, "general.size_label", &self.size_label);
        opt(kv, "general.license", &self.license);
        opt(kv, "general.license.name", &self.license_name);
        opt(kv, "general.license.link", &self.license_link);
        opt(kv, "general.url", &self.url);
        opt(kv, "general.doi", &self.doi);
        opt(kv, "general.uuid", &self.uuid);
        opt(kv, "general.repo_url", &self.repo_url);
        opt(kv, "general.source.url", &self.source_url);
        opt(kv, "general.source.doi", &self.source_doi);
        opt(kv, "general.source.uuid", &self.source_uuid);
        opt(kv, "general.source.repo_url", &self.source_repo_url);
        for (prefix, list) in [
            ("general.base_model", &self.base_models),
            ("general.dataset", &self.datasets),
        ] {
            let Some(list) = list else { continue };
            kv.add_u32(&format!("{prefix}.count"), list.len() as u32);
            for (i, entry) in list.iter().enumerate() {
                for field in [
                    "name",
                    "author",
                    "version",
                    "organization",
                    "description",
                    "url",
                    "doi",
                    "uuid",
                    "repo_url",
                ] {
                    if let Some(Json::String(s)) = entry.get(field) {
                        kv.add_str(&format!("{prefix}.{i}.{field}"), s);
                    }
                }
            }
        }
        for (key, list) in [
            ("general.tags", &self.tags),
            ("general.languages", &self.languages),
        ] {
            if let Some(list) = list {
                kv.add_array(
                    key,
                    ValueType::Str,
                    list.iter().cloned().map(Value::Str).collect(),
                );
            }
        }
    }
}

fn as_list(v: Option<&Json>) -> Vec<&Json> {
    match v {
        Some(Json::Array(items)) => items.iter().collect(),
        Some(Json::String(_)) => vec![v.unwrap()],
        _ => Vec::new(),
    }
}

/// One `base_model` or `datasets` entry of a model card, as gguf-py expands it.
fn describe_source(
    id: &Json,
    total_params: i64,
    path: &Path,
    key: &str,
) -> Result<Map<String, Json>, CardError> {
    let mut out = Map::new();
    match id {
        Json::String(s) => {
            let put = |out: &mut Map<String, Json>, p: &ModelIdParts, with_repo: bool| {
                if let Some(n) = &p.full_name {
                    out.insert("name".into(), Json::String(id_to_title(n)));
                }
                if let Some(o) = &p.org {
                    out.insert("organization".into(), Json::String(id_to_title(o)));
                }
                if let Some(v) = &p.version {
                    out.insert("version".into(), Json::String(v.clone()));
                }
                if with_repo {
                    if let (Some(o), Some(n)) = (&p.org, &p.full_name) {
                        out.insert(
                            "repo_url".into(),
                            Json::String(format!("https://huggingface.co/{o}/{n}")),
                        );
                    }
                }
            };
            if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("ssh://") {
                out.insert("repo_url".into(), Json::String(s.clone()));
                if s.contains("huggingface.co") {
                    let re = Regex::new(r"^https?://huggingface.co/([^/]+/[^/]+)$").unwrap();
                    if let Some(c) = re.captures(s) {
                        let p = model_id_components(Some(&c[1]), total_params);
                        put(&mut out, &p, false);
                    }
                }
            } else {
                let p = model_id_components(Some(s), total_params);
                put(&mut out, &p, true);
            }
        }
        Json::Object(m) => out = m.clone(),
        _ => {
            return Err(CardError::BadValue {
                path: path.display().to_string(),
                key: key.to_string(),
                expected: "strings or mappings",
            })
        }
    }
    for v in out.values() {
        if !matches!(v, Json::String(_)) {
            return Err(CardError::BadValue {
                path: path.display().to_string(),
                key: key.to_string(),
                expected: "entries whose fields are strings",
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_follow_python() {
        assert_eq!(id_to_title("tiny-llama"), "Tiny Llama");
        assert_eq!(id_to_title("tiny-bpe"), "Tiny Bpe");
        assert_eq!(id_to_title("Mistral-7B-v0.1"), "Mistral 7B v0.1");
        assert_eq!(id_to_title("smollm2-135m"), "Smollm2 135m");
        assert_eq!(id_to_title("llama3b-chat"), "Llama3B Chat");
        assert_eq!(id_to_title("\u{c9}COLE-model"), "\u{c9}COLE Model");
        assert_eq!(id_to_title("gpt-neox_20b"), "Gpt Neox_20B");
        assert_eq!(id_to_title("\u{fc}ber-v2.1-test"), "\u{dc}ber v2.1 Test");
    }

    /// Expected values printed by gguf-py's own `Metadata.get_model_id_components` (llama.cpp
    /// 0c1e57098): (id, total params, full name, org, basename, finetune, version, size label).
    #[allow(clippy::type_complexity)]
    const GGUF_PY_IDS: &[(&str, i64, [Option<&str>; 6])] = &[
        (
            "tiny-llama",
            4722944,
            [Some("tiny-llama"), None, None, None, None, None],
        ),
        (
            "mistralai/Mistral-7B-Instruct-v0.2",
            7241732096,
            [
                Some("Mistral-7B-Instruct-v0.2"),
                Some("mistralai"),
                Some("Mistral"),
                Some("Instruct"),
                Some("v0.2"),
                Some("7B"),
            ],
        ),
        (
            "Qwen2.5-0.5B-Instruct",
            494032768,
            [
                Some("Qwen2.5-0.5B-Instruct"),
                None,
                Some("Qwen2.5"),
                Some("Instruct"),
                None,
                Some("0.5B"),
            ],
        ),
        (
            "model-128k",
            4700000,
            [
                Some("model-128k"),
                None,
                Some("model"),
                Some("128k"),
                None,
                None,
            ],
        ),
        (
            "meta-llama/Llama-3.1-8B-Instruct",
            8030261248,
            [
                Some("Llama-3.1-8B-Instruct"),
                Some("meta-llama"),
                Some("Llama-3.1"),
                Some("Instruct"),
                None,
                Some("8B"),
            ],
        ),
        (
            "bigscience/bloom-7b1",
            7069016064,
            [
                Some("bloom-7b1"),
                Some("bigscience"),
                Some("bloom"),
                None,
                None,
                Some("7.1B"),
            ],
        ),
        (
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            134515008,
            [
                Some("SmolLM2-135M-Instruct"),
                Some("HuggingFaceTB"),
                Some("SmolLM2"),
                Some("Instruct"),
                None,
                Some("135M"),
            ],
        ),
        (
            "Mixtral-8x7B-v0.1",
            46702792704,
            [
                Some("Mixtral-8x7B-v0.1"),
                None,
                Some("Mixtral"),
                None,
                Some("v0.1"),
                Some("8x7B"),
            ],
        ),
        (
            "./local-model-v2",
            1000000,
            [
                Some("local-model-v2"),
                None,
                Some("local-model"),
                None,
                Some("v2"),
                None,
            ],
        ),
        (
            "Qwen3-30B-A3B",
            30532122624,
            [
                Some("Qwen3-30B-A3B"),
                None,
                Some("Qwen3"),
                None,
                None,
                Some("30B-A3B"),
            ],
        ),
        (
            "phi-2-GGUF-q4_0",
            2779683840,
            [Some("phi-2-GGUF-q4_0"), None, None, None, None, None],
        ),
        (
            "my model name",
            1000,
            [Some("my model name"), None, None, None, None, None],
        ),
        (
            "deepseek-coder-1.3b-base",
            1346471936,
            [
                Some("deepseek-coder-1.3b-base"),
                None,
                Some("deepseek-coder"),
                Some("base"),
                None,
                Some("1.3B"),
            ],
        ),
        (
            "gemma-2-2b-it",
            2614341888,
            [
                Some("gemma-2-2b-it"),
                None,
                Some("gemma-2"),
                Some("it"),
                None,
                Some("2B"),
            ],
        ),
        (
            "Llama-2-7b-chat-hf",
            6738415616,
            [
                Some("Llama-2-7b-chat-hf"),
                None,
                Some("Llama-2"),
                Some("chat-hf"),
                None,
                Some("7B"),
            ],
        ),
        (
            "model-small-7B",
            7000000000,
            [
                Some("model-small-7B"),
                None,
                Some("model-small"),
                None,
                None,
                Some("7B"),
            ],
        ),
        (
            "lora-test-LoRA",
            -5000000,
            [Some("lora-test-LoRA"), None, None, None, None, None],
        ),
        (
            "x-70b-v1.5-iter3",
            70000000000,
            [
                Some("x-70b-v1.5-iter3"),
                None,
                Some("x"),
                None,
                Some("v1.5-iter3"),
                Some("70B"),
            ],
        ),
    ];

    #[test]
    fn model_ids_split_like_gguf_py() {
        for (id, total, want) in GGUF_PY_IDS {
            let p = model_id_components(Some(id), *total);
            let got = [
                p.full_name.as_deref(),
                p.org.as_deref(),
                p.basename.as_deref(),
                p.finetune.as_deref(),
                p.version.as_deref(),
                p.size_label.as_deref(),
            ];
            assert_eq!(&got, want, "{id}");
        }
    }

    #[test]
    fn size_labels_round_like_python() {
        // Expected values printed by gguf-py's `size_label`.
        for (n, want) in [
            (4722944u64, "4.7M"),
            (3268928, "3.3M"),
            (999, "1.0K"),
            (1000000, "1000K"),
            (1000001, "1.0M"),
            (999999999, "1000M"),
            (1000000001, "1.0B"),
            (12345678901234, "12T"),
            (0, "0.00K"),
            (5, "0.01K"),
            (950000, "950K"),
            (9500000, "10M"),
        ] {
            assert_eq!(size_label(n), want, "{n}");
        }
        assert_eq!(size_label_experts(1_000_000, 7_000_000_000, 8), "8x7.0B");
    }
}
