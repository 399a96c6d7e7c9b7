//! config.json as the converter sees it: `AutoConfig.from_pretrained(dir).to_dict()` —
//! the file plus transformers' defaults for its `model_type` (each family declares its own in
//! its registry file), read through gguf-py's `find_hparam` lookups.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use super::ArchError;

/// The effective hyper-parameters: config.json with transformers' defaults for its model type,
/// as `AutoConfig.from_pretrained(dir).to_dict()` returns them.
#[derive(Clone, Debug)]
pub struct Hparams {
    path: PathBuf,
    map: Map<String, Json>,
}

/// Keys transformers validates as integers.
const INT_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "head_dim",
];

fn num(v: f64) -> Json {
    if v.fract() == 0.0 {
        Json::from(v as i64)
    } else {
        Json::from(v)
    }
}

/// transformers' defaults for `map`'s `model_type` (the config class `AutoConfig` picks), as
/// `to_dict()` shows them. A map without a model type is left as read.
fn apply_defaults(path: &Path, map: &mut Map<String, Json>) -> Result<(), ArchError> {
    let bad = |what: String| ArchError::Config {
        path: path.to_path_buf(),
        what,
    };
    // transformers picks the config class by model_type; without one, AutoConfig fails and
    // the converter falls back to the raw file.
    if let Some(mt) = map
        .get("model_type")
        .and_then(Json::as_str)
        .map(str::to_string)
    {
        let Some(defaults) = super::config_defaults(&mt) else {
            return Err(ArchError::NotSupported {
                path: path.to_path_buf(),
                what: format!("model_type '{mt}'"),
            });
        };
        for key in INT_KEYS {
            if let Some(v) = map.get(*key) {
                if !(v.is_null() || v.is_i64() || v.is_u64()) {
                    return Err(bad(format!("'{key}' must be an integer, got {v}")));
                }
            }
        }
        for (key, default) in defaults {
            let absent = map.get(*key).is_none_or(Json::is_null);
            if !absent {
                continue;
            }
            match (*key, default) {
                (_, Some(v)) => {
                    map.insert(key.to_string(), num(*v));
                }
                ("num_key_value_heads", None) => {
                    let heads = map
                        .get("num_attention_heads")
                        .cloned()
                        .unwrap_or(Json::Null);
                    map.insert(key.to_string(), heads);
                }
                ("head_dim", None) => {
                    let h = map.get("hidden_size").and_then(Json::as_u64);
                    let n = map.get("num_attention_heads").and_then(Json::as_u64);
                    if let Some(d) = h.zip(n).and_then(|(h, n)| h.checked_div(n)) {
                        map.insert(key.to_string(), Json::from(d));
                    }
                }
                _ => {}
            }
        }
        if !map.contains_key("rope_theta") && !map.contains_key("rope_parameters") {
            map.insert("rope_theta".into(), Json::from(10000.0));
        }
    }
    Ok(())
}

impl Hparams {
    /// Read `dir/config.json` and apply transformers' defaults for its `model_type`.
    pub fn load(dir: &Path) -> Result<Hparams, ArchError> {
        let path = dir.join("config.json");
        let bad = |what: String| ArchError::Config {
            path: path.clone(),
            what,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let json: Json =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let Json::Object(mut map) = json else {
            return Err(bad("not a JSON object".into()));
        };
        // `TextModel.__init__` lifts a multimodal config's text part to the top level; where a
        // family declares the pair, the text part takes its own model type's defaults first.
        let outer_type = map
            .get("model_type")
            .and_then(Json::as_str)
            .map(str::to_string);
        if let (Some(Json::Object(_)), Some(inner_type)) = (
            map.get("text_config"),
            outer_type
                .as_deref()
                .and_then(super::text_config_model_type),
        ) {
            let Some(Json::Object(mut text)) = map.remove("text_config") else {
                unreachable!("matched above")
            };
            text.insert("model_type".into(), Json::from(inner_type));
            apply_defaults(&path, &mut text)?;
            apply_defaults(&path, &mut map)?;
            map.extend(text);
            return Ok(Hparams { path, map });
        }
        for nested in [
            "text_config",
            "llm_config",
            "lm_config",
            "thinker_config",
            "language_config",
            "lfm",
        ] {
            if map.contains_key(nested) {
                return Err(ArchError::NotSupported {
                    path: path.clone(),
                    what: format!("a nested '{nested}' (multimodal) config"),
                });
            }
        }
        apply_defaults(&path, &mut map)?;
        Ok(Hparams { path, map })
    }

    /// The same hyper-parameters without `key` (a class that pops it before reading any).
    pub fn without(&self, key: &str) -> Hparams {
        let mut h = self.clone();
        h.map.remove(key);
        h
    }

    /// The config.json this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of `key`; a JSON null reads as absent.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// `find_hparam(keys, optional=True)`: the first key present (a null value counts as
    /// present, as in Python, and reads as absent).
    pub fn find(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter()
            .find_map(|k| self.map.get(*k))
            .filter(|v| !v.is_null())
    }

    /// The key of `keys` that [`Self::find`] reads (for messages: name the key the file has).
    pub fn found_key<'k>(&self, keys: &[&'k str]) -> &'k str {
        keys.iter()
            .copied()
            .find(|k| self.map.contains_key(*k))
            .unwrap_or(keys[0])
    }

    /// An error naming config.json: `what` is wrong with it. Generic so callers of any layer
    /// above can return it as their own error type.
    pub fn bad<E: From<ArchError>>(&self, what: String) -> E {
        E::from(ArchError::Config {
            path: self.path.clone(),
            what,
        })
    }

    /// An optional unsigned 32-bit value.
    pub fn find_u32(&self, keys: &[&str]) -> Result<Option<u32>, ArchError> {
        match self.find(keys) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.bad(format!(
                        "'{}' must be an unsigned 32-bit integer, got {v}",
                        self.found_key(keys)
                    ))
                }),
        }
    }

    /// A required unsigned value.
    pub fn require_u32(&self, keys: &[&str]) -> Result<u32, ArchError> {
        self.find_u32(keys)?
            .ok_or_else(|| self.bad(format!("missing '{}'", keys[0])))
    }

    /// An optional float (from an integer or float).
    pub fn find_f64(&self, keys: &[&str]) -> Result<Option<f64>, ArchError> {
        match self.find(keys) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                self.bad(format!(
                    "'{}' must be a number, got {v}",
                    self.found_key(keys)
                ))
            }),
        }
    }
    /// A required float.
    pub fn require_f64(&self, keys: &[&str]) -> Result<f64, ArchError> {
        self.find_f64(keys)?
            .ok_or_else(|| self.bad(format!("missing '{}'", keys[0])))
    }

    /// The RoPE parameters as `TextModel.__init__` gathers them: `rope_parameters` (or
    /// `rope_scaling`) with the top-level base frequency, type, rotary fraction and original
    /// context mirrored in, and a sliding-window base (`rope_local_base_freq` and its
    /// spellings) as `sliding_attention.rope_theta`.
    pub fn rope_parameters(&self) -> Result<Map<String, Json>, ArchError> {
        let mut rope: Map<String, Json> = match self
            .get("rope_parameters")
            .or_else(|| self.get("rope_scaling"))
        {
            Some(Json::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if rope.contains_key("full_attention") || rope.contains_key("sliding_attention") {
            return Err(ArchError::NotSupported {
                path: self.path.clone(),
                what: "per-layer-type RoPE parameters".into(),
            });
        }
        if let Some(local) = self.find(&[
            "local_rope_theta",
            "rope_local_theta",
            "rope_theta_local",
            "swa_rope_theta",
            "rope_local_base_freq",
        ]) {
            let mut swa = Map::new();
            swa.insert("rope_theta".into(), local.clone());
            rope.insert("sliding_attention".into(), Json::Object(swa));
        }
        if !rope.contains_key("rope_theta") {
            if let Some(theta) = self.find(&[
                "global_rope_theta",
                "rope_global_theta",
                "rope_theta_global",
                "rope_theta",
                "rotary_emb_base",
            ]) {
                rope.insert("rope_theta".into(), theta.clone());
            }
        }
        if !rope.contains_key("rope_type") {
            if let Some(t) = rope.get("type").cloned() {
                rope.insert("rope_type".into(), t);
            }
        }
        if !rope.contains_key("partial_rotary_factor") {
            if let Some(v) = self.find(&["partial_rotary_factor", "rope_pct", "rope_percent"]) {
                rope.insert("partial_rotary_factor".into(), v.clone());
            }
        }
        if !rope.contains_key("original_max_position_embeddings") {
            if let Some(v) = self.find(&["original_max_position_embeddings"]) {
                rope.insert("original_max_position_embeddings".into(), v.clone());
            }
        }
        Ok(rope)
    }
}
