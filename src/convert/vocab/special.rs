//! Special token ids, add-BOS/EOS flags, merges and chat template, as gguf-py's `SpecialVocab`
//! finds them in tokenizer.json, tokenizer_config.json, chat_template.* and config.json
//! (llama.cpp 0c1e57098).

use std::path::Path;

use serde_json::{Map, Value as Json};

use super::{read_json, VocabError};
use crate::formats::gguf_kv::KvList;

/// A chat template: one string, or named templates (`tokenizer.chat_template.<name>`).
#[derive(Clone, Debug, PartialEq)]
pub enum ChatTemplate {
    /// The template of `tokenizer_config.json`'s `chat_template` string
    /// (`tokenizer.chat_template`).
    Single(String),
    /// A list of (name, template); `default` becomes `tokenizer.chat_template`, others
    /// `tokenizer.chat_template.<name>`.
    Named(Vec<(String, Option<String>)>),
}

/// gguf-py's `SpecialVocab`.
#[derive(Clone, Debug, Default)]
pub struct SpecialVocab {
    /// BPE merges (`tokenizer.ggml.merges`), `"a b"` per merge.
    pub merges: Vec<String>,
    load_merges: bool,
    n_vocab: Option<usize>,
    special_token_types: Vec<String>,
    /// (type, id) in the order found.
    pub special_token_ids: Vec<(String, u64)>,
    /// (type, add) in the order found.
    pub add_special_token: Vec<(String, bool)>,
    /// `tokenizer.chat_template*`, when the tokenizer config has one.
    pub chat_template: Option<ChatTemplate>,
    normalizer_lowercase: Option<bool>,
    normalizer_strip_accents: Option<bool>,
}

const DEFAULT_TYPES: &[&str] = &["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

fn set_default(list: &mut Vec<(String, bool)>, typ: &str, v: bool) {
    if !list.iter().any(|(t, _)| t == typ) {
        list.push((typ.to_string(), v));
    }
}

fn set_value(list: &mut Vec<(String, bool)>, typ: &str, v: bool) {
    match list.iter_mut().find(|(t, _)| t == typ) {
        Some(slot) => slot.1 = v,
        None => list.push((typ.to_string(), v)),
    }
}

/// Python truthiness of an optional JSON value.
fn truthy(v: Option<&Json>) -> bool {
    v.is_some_and(super::sentencepiece::py_truthy)
}

fn special_token_id(entry: Option<&Json>) -> Option<&Json> {
    entry?.get("SpecialToken")?.get("id")
}

impl SpecialVocab {
    /// Load from `dir` like `SpecialVocab(dir, load_merges, special_token_types, n_vocab)`.
    pub fn load(
        dir: &Path,
        load_merges: bool,
        special_token_types: Option<&[&str]>,
        n_vocab: Option<usize>,
    ) -> Result<SpecialVocab, VocabError> {
        let mut sv = SpecialVocab {
            load_merges,
            n_vocab,
            special_token_types: special_token_types
                .unwrap_or(DEFAULT_TYPES)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..Default::default()
        };
        sv.load_from_tokenizer_json(dir)?;
        sv.load_from_config_json(dir)?;
        if sv.load_merges && sv.merges.is_empty() {
            sv.load_merges_txt(dir)?;
        }
        Ok(sv)
    }

    /// `_set_special_token`: only integer ids count; the first id found for a type wins.
    pub fn set_special_token(&mut self, typ: &str, tid: Option<&Json>) -> Result<(), VocabError> {
        let id = match tid {
            Some(Json::Number(n)) if n.is_i64() || n.is_u64() => n.as_i64(),
            Some(Json::Bool(b)) => Some(*b as i64),
            _ => return Ok(()),
        };
        let Some(id) = id else { return Ok(()) };
        if id < 0 {
            return Err(VocabError::Invalid(format!(
                "invalid value for special token type {typ}: {id}"
            )));
        }
        if self.n_vocab.is_none_or(|n| (id as u64) < n as u64)
            && !self.special_token_ids.iter().any(|(t, _)| t == typ)
        {
            self.special_token_ids.push((typ.to_string(), id as u64));
        }
        Ok(())
    }

    fn load_merges_txt(&mut self, dir: &Path) -> Result<(), VocabError> {
        let path = dir.join("merges.txt");
        if !path.is_file() {
            return Ok(());
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| VocabError::file(&path, e.to_string()))?;
        let mut lines = text.lines().peekable();
        if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
            lines.next();
        }
        let mut merges = Vec::new();
        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() != 2 {
                continue;
            }
            merges.push(format!("{} {}", parts[0], parts[1]));
        }
        self.merges = merges;
        Ok(())
    }

    fn load_from_tokenizer_json(&mut self, dir: &Path) -> Result<(), VocabError> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.is_file() {
            Some(read_json(&tok_path)?)
        } else {
            None
        };
        let mut added_tokens: Vec<Json> = Vec::new();
        if let Some(tok) = &tokenizer {
            if self.load_merges {
                if let Some(Json::Array(merges)) = tok.get("model").and_then(|m| m.get("merges")) {
                    self.merges =
                        convert_merges(merges).map_err(|e| VocabError::file(&tok_path, e))?;
                }
            }
            if let Some(norm) = tok.get("normalizer") {
                if super::sentencepiece::py_truthy(norm) {
                    self.parse_normalizer(norm);
                }
            }
            if let Some(Json::Array(a)) = tok.get("added_tokens") {
                added_tokens = a.clone();
            }
        }
        let cfg_path = dir.join("tokenizer_config.json");
        let mut config: Option<Map<String, Json>> = if cfg_path.is_file() {
            match read_json(&cfg_path)? {
                Json::Object(m) => Some(m),
                _ => return Err(VocabError::file(&cfg_path, "not a JSON object".into())),
            }
        } else {
            None
        };
        // Python: `if tokenizer_config` (an empty dict counts as absent).
        let config_truthy =
            |c: &Option<Map<String, Json>>| c.as_ref().is_some_and(|m| !m.is_empty());

        if let Some(tok) = tokenizer
            .as_ref()
            .filter(|t| super::sentencepiece::py_truthy(t))
        {
            let cfg_get =
                |c: &Option<Map<String, Json>>, k: &str| c.as_ref().and_then(|m| m.get(k)).cloned();
            let mut special_bos = cfg_get(&config, "bos_token");
            let mut special_cls = cfg_get(&config, "cls_token");
            let mut special_eos = cfg_get(&config, "eos_token");
            let mut special_sep = cfg_get(&config, "sep_token");
            if !truthy(special_bos.as_ref())
                && truthy(special_cls.as_ref())
                && config_truthy(&config)
            {
                special_bos = special_cls.clone();
                config
                    .as_mut()
                    .unwrap()
                    .insert("bos_token".into(), special_bos.clone().unwrap());
            }
            if !truthy(special_eos.as_ref())
                && truthy(special_sep.as_ref())
                && config_truthy(&config)
            {
                special_eos = special_sep.clone();
                config
                    .as_mut()
                    .unwrap()
                    .insert("eos_token".into(), special_eos.clone().unwrap());
            }
            if let Some(pp) = tok
                .get("post_processor")
                .filter(|p| super::sentencepiece::py_truthy(p))
            {
                let processors: Vec<Json> = match pp.get("processors") {
                    Some(Json::Array(a)) => a.clone(),
                    _ => vec![pp.clone()],
                };
                for processor in &processors {
                    match processor.get("type").and_then(Json::as_str) {
                        Some("ByteLevel") => {
                            set_default(&mut self.add_special_token, "bos", false);
                            set_default(&mut self.add_special_token, "eos", false);
                        }
                        Some("RobertaProcessing") => {
                            set_value(&mut self.add_special_token, "bos", true);
                            set_value(&mut self.add_special_token, "eos", true);
                            set_value(&mut self.add_special_token, "sep", true);
                            if !truthy(special_cls.as_ref()) && config_truthy(&config) {
                                special_cls = processor
                                    .get("cls")
                                    .and_then(|c| c.get(0))
                                    .cloned()
                                    .or(special_bos.clone());
                                config.as_mut().unwrap().insert(
                                    "cls_token".into(),
                                    special_cls.clone().unwrap_or(Json::Null),
                                );
                            }
                            if !truthy(special_sep.as_ref()) && config_truthy(&config) {
                                special_sep = processor
                                    .get("sep")
                                    .and_then(|c| c.get(0))
                                    .cloned()
                                    .or(special_eos.clone());
                                config.as_mut().unwrap().insert(
                                    "sep_token".into(),
                                    special_sep.clone().unwrap_or(Json::Null),
                                );
                            }
                        }
                        Some("TemplateProcessing") => {
                            let empty = Vec::new();
                            let single = processor
                                .get("single")
                                .and_then(Json::as_array)
                                .unwrap_or(&empty);
                            let pair = processor
                                .get("pair")
                                .and_then(Json::as_array)
                                .unwrap_or(&empty);
                            let mut special_first: Option<Json> = None;
                            let mut special_last: Option<Json> = None;
                            if single.len() > 1 {
                                special_first = special_token_id(single.first()).cloned();
                                if truthy(special_first.as_ref()) {
                                    let first = special_first.clone().unwrap();
                                    let known = Some(&first) == special_bos.as_ref()
                                        || Some(&first) == special_cls.as_ref();
                                    if !config_truthy(&config) {
                                        special_bos = Some(first.clone());
                                    } else if !known {
                                        if !truthy(special_bos.as_ref()) {
                                            special_bos = Some(first.clone());
                                            config
                                                .as_mut()
                                                .unwrap()
                                                .insert("bos_token".into(), first.clone());
                                        }
                                        if !truthy(special_cls.as_ref()) {
                                            special_cls = Some(first.clone());
                                            config
                                                .as_mut()
                                                .unwrap()
                                                .insert("cls_token".into(), first.clone());
                                        }
                                    }
                                    let known = Some(&first) == special_bos.as_ref()
                                        || Some(&first) == special_cls.as_ref();
                                    set_value(&mut self.add_special_token, "bos", known);
                                }
                                special_last = special_token_id(single.last()).cloned();
                                if truthy(special_last.as_ref()) {
                                    let last = special_last.clone().unwrap();
                                    if !config_truthy(&config) {
                                        special_eos = Some(last.clone());
                                    } else if Some(&last) != special_eos.as_ref() {
                                        let cfg = config.as_mut().unwrap();
                                        if !self.special_token_types.iter().any(|t| t == "eot") {
                                            self.special_token_types.push("eot".into());
                                            cfg.insert(
                                                "eot_token".into(),
                                                special_eos.clone().unwrap_or(Json::Null),
                                            );
                                        } else if !self
                                            .special_token_types
                                            .iter()
                                            .any(|t| t == "eom")
                                        {
                                            self.special_token_types.push("eom".into());
                                            cfg.insert(
                                                "eom_token".into(),
                                                special_eos.clone().unwrap_or(Json::Null),
                                            );
                                        }
                                        special_eos = Some(last.clone());
                                        cfg.insert("eos_token".into(), last.clone());
                                    }
                                    let same = Some(&last) == special_eos.as_ref();
                                    set_value(&mut self.add_special_token, "eos", same);
                                }
                            }
                            if !pair.is_empty() {
                                let first_ok = truthy(special_first.as_ref());
                                let last_ok = truthy(special_last.as_ref());
                                let seq_start = if first_ok
                                    && special_token_id(pair.first()) == special_first.as_ref()
                                {
                                    1
                                } else {
                                    0
                                };
                                let drop_last = last_ok
                                    && special_token_id(pair.last()) == special_last.as_ref();
                                let end = if drop_last {
                                    pair.len().saturating_sub(1)
                                } else {
                                    pair.len()
                                };
                                let mid: &[Json] = if seq_start <= end {
                                    &pair[seq_start..end]
                                } else {
                                    &[]
                                };
                                if !mid.is_empty() {
                                    let seq_id = |e: Option<&Json>| {
                                        e.and_then(|x| x.get("Sequence"))
                                            .and_then(|x| x.get("id"))
                                            .and_then(Json::as_str)
                                            .map(str::to_string)
                                    };
                                    let a = seq_id(mid.first());
                                    let b = seq_id(mid.last());
                                    if a.as_deref() == Some("A")
                                        && b.as_deref() == Some("B")
                                        && mid.len() > 2
                                    {
                                        let inner = &mid[1..mid.len() - 1];
                                        let mut add_sep = false;
                                        let is_sep_or_eos = |e: &Json| {
                                            Some(e) == special_sep.as_ref()
                                                || Some(e) == special_eos.as_ref()
                                        };
                                        if let Some(entry) = special_token_id(inner.first())
                                            .filter(|e| super::sentencepiece::py_truthy(e))
                                        {
                                            if is_sep_or_eos(entry) && !last_ok {
                                                add_sep = true;
                                            }
                                        }
                                        if inner.len() == 2 {
                                            if let Some(entry) = special_token_id(inner.get(1))
                                                .filter(|e| super::sentencepiece::py_truthy(e))
                                            {
                                                if is_sep_or_eos(entry) {
                                                    add_sep = true;
                                                }
                                            }
                                        }
                                        set_value(&mut self.add_special_token, "sep", add_sep);
                                        if add_sep
                                            && !truthy(special_sep.as_ref())
                                            && config_truthy(&config)
                                        {
                                            config.as_mut().unwrap().insert(
                                                "sep_token".into(),
                                                special_eos.clone().unwrap_or(Json::Null),
                                            );
                                        }
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let Some(config) = config.filter(|c| !c.is_empty()) else {
            return Ok(());
        };

        // Chat template: tokenizer_config's own, else chat_template.jinja (+ additional
        // templates), else chat_template.json.
        let jinja = dir.join("chat_template.jinja");
        let json_file = dir.join("chat_template.json");
        let mut alt: Option<Json> = None;
        if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja)
                .map_err(|e| VocabError::file(&jinja, e.to_string()))?;
            let extra_dir = dir.join("additional_chat_templates");
            let mut extra = Vec::new();
            if let Ok(rd) = std::fs::read_dir(&extra_dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "jinja") {
                        extra.push(p);
                    }
                }
            }
            if extra.is_empty() {
                alt = Some(Json::String(text));
            } else {
                // glob order is the directory's; sort for a stable result.
                extra.sort();
                let mut list = vec![serde_json::json!({"name": "default", "template": text})];
                for p in extra {
                    let t = std::fs::read_to_string(&p)
                        .map_err(|e| VocabError::file(&p, e.to_string()))?;
                    let stem = p
                        .file_stem()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    list.push(serde_json::json!({"name": stem, "template": t}));
                }
                alt = Some(Json::Array(list));
            }
        } else if json_file.is_file() {
            alt = read_json(&json_file)?.get("chat_template").cloned();
        }
        let template = match config.get("chat_template") {
            Some(v) => Some(v.clone()),
            None => alt,
        };
        self.chat_template = match template {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(ChatTemplate::Single(s)),
            Some(Json::Array(items)) => {
                let mut named = Vec::new();
                for it in items {
                    let name = it
                        .get("name")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string();
                    let t = it
                        .get("template")
                        .and_then(Json::as_str)
                        .map(str::to_string);
                    named.push((name, t));
                }
                Some(ChatTemplate::Named(named))
            }
            // gguf-py warns and ignores other types.
            Some(_) => None,
        };

        let types = self.special_token_types.clone();
        for typ in &types {
            if let Some(Json::Bool(add)) = config.get(&format!("add_{typ}_token")) {
                if !self.add_special_token.iter().any(|(t, _)| t == typ) {
                    self.add_special_token.push((typ.clone(), *add));
                }
            }
            let content = match config.get(&format!("{typ}_token")) {
                Some(Json::String(s)) => s.clone(),
                Some(Json::Object(o)) => match o.get("content") {
                    Some(Json::String(s)) => s.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added_tokens
                .iter()
                .find(|a| a.get("content").and_then(Json::as_str) == Some(content.as_str()))
                .and_then(|a| a.get("id"))
                .cloned();
            self.set_special_token(typ, id.as_ref())?;
        }
        Ok(())
    }

    fn load_from_config_json(&mut self, dir: &Path) -> Result<(), VocabError> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Ok(());
        }
        let config = read_json(&path)?;
        let types = self.special_token_types.clone();
        for typ in &types {
            let key = format!("{typ}_token_id");
            let mut id = config.get(&key).filter(|v| !v.is_null());
            if id.is_none() {
                id = config.get("text_config").and_then(|t| t.get(&key));
            }
            let id = id.cloned();
            self.set_special_token(typ, id.as_ref())?;
        }
        Ok(())
    }

    fn parse_normalizer(&mut self, n: &Json) {
        match n.get("type").and_then(Json::as_str) {
            Some("Lowercase") => self.normalizer_lowercase = Some(true),
            Some("StripAccents") => self.normalizer_strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.normalizer_lowercase = v.as_bool();
                }
                if let Some(v) = n.get("strip_accents") {
                    self.normalizer_strip_accents = v.as_bool();
                }
            }
            Some("Sequence") => {
                if let Some(Json::Array(list)) = n.get("normalizers") {
                    for x in list {
                        self.parse_normalizer(x);
                    }
                }
            }
            _ => {}
        }
    }

    /// `add_to_gguf`: merges, special ids, add-token flags, chat template, normalizer flags.
    pub fn write(&self, kv: &mut KvList) {
        kv.add_str_array("tokenizer.ggml.merges", self.merges.clone());
        for (typ, id) in &self.special_token_ids {
            let key = match typ.as_str() {
                "bos" => "tokenizer.ggml.bos_token_id",
                "eos" => "tokenizer.ggml.eos_token_id",
                "unk" => "tokenizer.ggml.unknown_token_id",
                "sep" => "tokenizer.ggml.seperator_token_id",
                "pad" => "tokenizer.ggml.padding_token_id",
                "mask" => "tokenizer.ggml.mask_token_id",
                "eot" => "tokenizer.ggml.eot_token_id",
                "eom" => "tokenizer.ggml.eom_token_id",
                // gguf-py has no writer for cls/prefix/suffix/middle ids and skips them.
                _ => continue,
            };
            kv.add_u32(key, *id as u32);
        }
        for (typ, add) in &self.add_special_token {
            let key = match typ.as_str() {
                "bos" => "tokenizer.ggml.add_bos_token",
                "eos" => "tokenizer.ggml.add_eos_token",
                "sep" => "tokenizer.ggml.add_sep_token",
                _ => continue,
            };
            kv.add_bool(key, *add);
        }
        if let Some(t) = &self.chat_template {
            write_chat_template(kv, t);
        }
        if let Some(v) = self.normalizer_lowercase {
            kv.add_bool("tokenizer.ggml.normalizer.lowercase", v);
        }
        if let Some(v) = self.normalizer_strip_accents {
            kv.add_bool("tokenizer.ggml.normalizer.strip_accents", v);
        }
    }
}

/// `GGUFWriter.add_chat_template`.
fn write_chat_template(kv: &mut KvList, t: &ChatTemplate) {
    match t {
        ChatTemplate::Single(s) => kv.add_str("tokenizer.chat_template", s),
        ChatTemplate::Named(list) => {
            let mut default = None;
            let mut names: Vec<String> = Vec::new();
            for (name, template) in list {
                let name: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let Some(template) = template else { continue };
                if name.is_empty() {
                    continue;
                }
                if name == "default" {
                    default = Some(template.clone());
                } else {
                    if !names.contains(&name) {
                        names.push(name.clone());
                    }
                    kv.add_str(&format!("tokenizer.chat_template.{name}"), template);
                }
            }
            // gguf-py collects the names in a Python set; its order is not defined. Keep ours
            // sorted so at least it is stable.
            names.sort();
            kv.add_str_array("tokenizer.chat_templates", names);
            if let Some(d) = default {
                kv.add_str("tokenizer.chat_template", &d);
            }
        }
    }
}

/// tokenizer.json merges: `"a b"` strings, or `["a", "b"]` pairs whose spaces become U+0120+256.
fn convert_merges(merges: &[Json]) -> Result<Vec<String>, String> {
    let Some(first) = merges.first() else {
        return Ok(Vec::new());
    };
    if first.is_string() {
        return merges
            .iter()
            .map(|m| {
                m.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "mixed merges format".to_string())
            })
            .collect();
    }
    let is_pair = |m: &Json| {
        m.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(Json::is_string))
    };
    if !is_pair(first) {
        return Err("unknown tokenizer merges format".into());
    }
    merges
        .iter()
        .map(|m| {
            let a = m.as_array().ok_or("mixed merges format")?;
            let enc = |s: &Json| -> Result<String, &'static str> {
                Ok(s.as_str()
                    .ok_or("mixed merges format")?
                    .chars()
                    .map(|c| {
                        if c == ' ' {
                            char::from_u32(' ' as u32 + 256).unwrap()
                        } else {
                            c
                        }
                    })
                    .collect())
            };
            let parts = a.iter().map(enc).collect::<Result<Vec<_>, _>>()?;
            Ok(parts.join(" "))
        })
        .collect::<Result<Vec<String>, &str>>()
        .map_err(str::to_string)
}
