//! Hugging Face PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! What the directory holds, checked before anything is merged or written:
//! - the config fields that change the arithmetic (`r`, `lora_alpha`, `use_rslora`,
//!   `fan_in_fan_out`, `rank_pattern`, `alpha_pattern`) and those that say which modules the
//!   adapter may touch (`target_modules`, `exclude_modules`, `modules_to_save`, `bias`);
//! - the weights, paired per module: `base_model.model.<module>.lora_A.weight` ([r, in]) with
//!   `….lora_B.weight` ([out, r]); embeddings use `….lora_embedding_A` ([r, vocab]) and
//!   `….lora_embedding_B` ([hidden, r]). An adapter-name segment (`lora_A.default.weight`) and a
//!   missing `base_model.model.` prefix are accepted. Other tensors are full replacements
//!   (`modules_to_save`, trained biases, the norms mergekit-extract-lora adds);
//! - every value finite, every pair of the same rank as the config says.
//!
//! Adapters that change the arithmetic in ways a LoRA merge cannot express are refused by name:
//! DoRA (`use_dora`, `lora_magnitude_vector`), other PEFT types (LoHa, IA3, …), pickled weights.
//! [`PeftAdapter::check_base`] then proves the adapter fits a given base model (every module
//! found, every shape equal).
//!
//! Not consulted: `layers_to_transform` / `layers_pattern` (the factors present are what PEFT
//! saved, so they are what it would load) and `target_parameters`. JSON objects are read without
//! their key order, so when two `rank_pattern` / `alpha_pattern` keys match one module (PEFT
//! takes the first in file order) the config is refused as ambiguous.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::formats::safetensors::{SafetensorsError, SafetensorsFile, StTensor};

/// The adapter's config file name in a PEFT directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's weights file name in a PEFT directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PICKLED_WEIGHTS_FILE: &str = "adapter_model.bin";

/// Errors of the PEFT layer; each names the adapter file and, when there is one, the module or
/// tensor.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// The config could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// `adapter_config.json` is not JSON, or a field has the wrong type or an impossible value.
    #[error("{path}: bad adapter config: {what}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// `peft_type` is not `LORA` (LoHa, LoKr, IA3, AdaLoRA, prompt tuning, …).
    #[error("{path}: peft_type is '{peft_type}'; only LORA adapters can be merged or converted")]
    NotLora {
        /// The config file.
        path: PathBuf,
        /// The `peft_type` it declares.
        peft_type: String,
    },
    /// A DoRA adapter: its merge rescales every column by a learned magnitude, which is not a
    /// low-rank update.
    #[error("{path}: DoRA adapters (use_dora / lora_magnitude_vector) are not supported: their merge is not W + scale·B·A")]
    Dora {
        /// The config file.
        path: PathBuf,
    },
    /// The directory has no `adapter_model.safetensors`.
    #[error("{dir}: no {WEIGHTS_FILE} found")]
    MissingWeights {
        /// The adapter directory.
        dir: PathBuf,
    },
    /// Only a pickled `adapter_model.bin` is there; qforge never unpickles files.
    #[error("{path}: pickled adapter weights are not supported (a pickle can run code); save the adapter with safe_serialization=True to get {WEIGHTS_FILE}")]
    PickledWeights {
        /// The pickled weights file found.
        path: PathBuf,
    },
    /// The safetensors file itself is unreadable or corrupt, or a tensor is not a float type.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// A module has one LoRA factor but not the other.
    #[error("{path}: module '{module}' has {present} but no {missing}")]
    MissingFactor {
        /// The weights file.
        path: PathBuf,
        /// The module path.
        module: String,
        /// The factor present (`lora_A` or `lora_B`).
        present: String,
        /// The factor missing.
        missing: String,
    },
    /// The two factors of a module disagree on the rank, or disagree with the config's rank.
    #[error("{path}: module '{module}': inconsistent rank: A has rank {rank_a}, B has rank {rank_b}, the config says r = {config_rank}")]
    InconsistentRank {
        /// The weights file.
        path: PathBuf,
        /// The module path.
        module: String,
        /// Rank of `lora_A` (its rows).
        rank_a: usize,
        /// Rank of `lora_B` (its columns).
        rank_b: usize,
        /// The rank the config gives this module.
        config_rank: usize,
    },
    /// A factor that is not a 2-D matrix (conv LoRA, corrupt shapes).
    #[error("{path}: tensor '{tensor}' has shape {shape:?}; only 2-D LoRA factors are supported")]
    NotMatrix {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A NaN or infinity in the adapter's weights.
    #[error("{path}: tensor '{tensor}' holds a non-finite value ({value}) at element {index}")]
    NonFinite {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Element index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The adapter touches a module the base model does not have: it was made for another base.
    #[error("{path}: module '{module}' needs base tensor '{base_tensor}', which the base model does not have (is this adapter for another base model?)")]
    ModuleNotFound {
        /// The adapter's weights file.
        path: PathBuf,
        /// The module path.
        module: String,
        /// The base tensor it would update.
        base_tensor: String,
    },
    /// The factors' shapes do not fit the base tensor.
    #[error("{path}: module '{module}': base tensor '{base_tensor}' has shape {base_shape:?}, but {factors} (is this adapter for another base model?)")]
    ShapeMismatch {
        /// The adapter's weights file.
        path: PathBuf,
        /// The module path.
        module: String,
        /// The base tensor it updates.
        base_tensor: String,
        /// The base tensor's shape.
        base_shape: Vec<usize>,
        /// The factors' shapes and the update they make, in words.
        factors: String,
    },
    /// A replacement tensor whose shape differs from the base tensor it replaces.
    #[error("{path}: tensor '{tensor}' has shape {shape:?} but base tensor '{base_tensor}' has shape {base_shape:?}")]
    ReplacementShape {
        /// The adapter's weights file.
        path: PathBuf,
        /// The replacement tensor in the adapter.
        tensor: String,
        /// The base tensor it replaces.
        base_tensor: String,
        /// The replacement's shape.
        shape: Vec<usize>,
        /// The base tensor's shape.
        base_shape: Vec<usize>,
    },
    /// LoRA weights for a module that `target_modules` / `exclude_modules` do not select: the
    /// config and the weights disagree.
    #[error("{path}: module '{module}' has LoRA weights but the config's target_modules do not select it")]
    UntargetedModule {
        /// The adapter's weights file.
        path: PathBuf,
        /// The module path.
        module: String,
    },
    /// A tensor that is neither a LoRA factor nor an expected full tensor (modules_to_save, a
    /// trained bias, a norm).
    #[error("{path}: unexpected tensor '{tensor}': not a LoRA factor, and not in modules_to_save")]
    UnexpectedTensor {
        /// The adapter's weights file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// A feature of the config that is understood but not supported yet.
    #[error("{path}: {what} is not supported yet")]
    NotSupported {
        /// The config or weights file.
        path: PathBuf,
        /// The unsupported feature.
        what: String,
    },
}

/// `target_modules` / `exclude_modules`: a list of name suffixes, or one regular expression that
/// must match the whole module name (PEFT's `check_target_module_exists`).
#[derive(Clone, Debug, PartialEq)]
pub enum ModuleSelector {
    /// Module name suffixes (matching at a `.` boundary).
    Names(Vec<String>),
    /// A regular expression over the whole module name (`all-linear` is PEFT's shorthand for every
    /// linear layer but `lm_head`).
    Regex(String),
}

impl ModuleSelector {
    fn from_json(v: &serde_json::Value, field: &str) -> Result<Option<ModuleSelector>, String> {
        match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Ok(Some(ModuleSelector::Regex(s.clone()))),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{field} holds a non-string entry {i}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|names| Some(ModuleSelector::Names(names))),
            other => Err(format!("{field} is {other}, expected a list or a string")),
        }
    }

    /// Does the selector pick `module` (a dotted module path such as
    /// `model.layers.0.self_attn.q_proj`)?
    fn selects(&self, module: &str) -> Result<bool, String> {
        match self {
            ModuleSelector::Names(names) => Ok(names.iter().any(|n| {
                module == n
                    || (module.ends_with(n.as_str())
                        && module[..module.len() - n.len()].ends_with('.'))
            })),
            // PEFT's shorthand for every linear layer but the output head.
            ModuleSelector::Regex(s) if s == "all-linear" => {
                Ok(!(module == "lm_head" || module.ends_with(".lm_head")))
            }
            ModuleSelector::Regex(s) => {
                let re = regex::Regex::new(&format!("^(?:{s})$"))
                    .map_err(|e| format!("regular expression '{s}' does not compile: {e}"))?;
                Ok(re.is_match(module))
            }
        }
    }
}

/// The fields of `adapter_config.json` that matter to a merge or a conversion.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    /// `peft_type`; only `LORA` is accepted.
    pub peft_type: String,
    /// Default rank.
    pub r: usize,
    /// Default alpha; the update is scaled by alpha/r (alpha/√r with rsLoRA).
    pub lora_alpha: f64,
    /// rsLoRA: scale by alpha/√r instead of alpha/r.
    pub use_rslora: bool,
    /// The base layer stores its weight transposed, [in, out] (GPT-2's Conv1D).
    pub fan_in_fan_out: bool,
    /// DoRA (refused: its merge is not a low-rank update).
    pub use_dora: bool,
    /// Which modules carry LoRA factors, when the config says.
    pub target_modules: Option<ModuleSelector>,
    /// Modules excluded from `target_modules`.
    pub exclude_modules: Option<ModuleSelector>,
    /// Modules trained in full and saved whole; they replace the base module's tensors.
    pub modules_to_save: Vec<String>,
    /// `none`, `all` or `lora_only`: whether trained biases are saved too.
    pub bias: String,
    /// Per-module rank overrides: pattern → rank (PEFT `rank_pattern`).
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides: pattern → alpha (PEFT `alpha_pattern`).
    pub alpha_pattern: BTreeMap<String, f64>,
    /// The base model the adapter was trained on, as the config names it.
    pub base_model_name_or_path: Option<String>,
    /// aLoRA: the token ids that switch the adapter on.
    pub alora_invocation_tokens: Option<Vec<u32>>,
    /// aLoRA given as text (needs the base tokenizer to become token ids).
    pub invocation_string: Option<String>,
}

impl PeftConfig {
    /// Parse the text of an `adapter_config.json`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PeftConfig, PeftError> {
        let bad = |what: String| PeftError::BadConfig {
            path: path.to_path_buf(),
            what,
        };
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let obj = json
            .as_object()
            .ok_or_else(|| bad("the file is not a JSON object".into()))?;
        let get = |k: &str| obj.get(k).unwrap_or(&serde_json::Value::Null);
        let opt_bool = |k: &str| -> Result<bool, PeftError> {
            match get(k) {
                serde_json::Value::Null => Ok(false),
                serde_json::Value::Bool(b) => Ok(*b),
                other => Err(bad(format!("{k} is {other}, expected true or false"))),
            }
        };
        let peft_type = match get("peft_type") {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => return Err(bad("no peft_type".into())),
            other => return Err(bad(format!("peft_type is {other}, expected a string"))),
        };
        // Refuse other adapter kinds before reading LoRA-only fields they do not have.
        if peft_type != "LORA" {
            return Err(PeftError::NotLora {
                path: path.to_path_buf(),
                peft_type,
            });
        }
        let r = get("r")
            .as_u64()
            .filter(|&r| r > 0)
            .ok_or_else(|| bad(format!("r is {}, expected a positive integer", get("r"))))?
            as usize;
        // Stored as f32 in a GGUF adapter and multiplied in f32: beyond f32's range it is inf.
        let lora_alpha = get("lora_alpha")
            .as_f64()
            .filter(|a| a.is_finite() && (*a as f32).is_finite())
            .ok_or_else(|| {
                bad(format!(
                    "lora_alpha is {}, expected a finite number within f32's range",
                    get("lora_alpha")
                ))
            })?;
        let target_modules =
            ModuleSelector::from_json(get("target_modules"), "target_modules").map_err(bad)?;
        let exclude_modules =
            ModuleSelector::from_json(get("exclude_modules"), "exclude_modules").map_err(bad)?;
        let modules_to_save = match get("modules_to_save") {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("modules_to_save holds {i}")))
                })
                .collect::<Result<_, _>>()?,
            other => return Err(bad(format!("modules_to_save is {other}, expected a list"))),
        };
        let bias = match get("bias") {
            serde_json::Value::Null => "none".to_string(),
            serde_json::Value::String(s) if ["none", "all", "lora_only"].contains(&s.as_str()) => {
                s.clone()
            }
            other => {
                return Err(bad(format!(
                    "bias is {other}, expected \"none\", \"all\" or \"lora_only\""
                )))
            }
        };
        let mut rank_pattern = BTreeMap::new();
        match get("rank_pattern") {
            serde_json::Value::Null => {}
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let r = v
                        .as_u64()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| bad(format!("rank_pattern['{k}'] is {v}")))?;
                    rank_pattern.insert(k.clone(), r as usize);
                }
            }
            other => return Err(bad(format!("rank_pattern is {other}, expected an object"))),
        }
        let mut alpha_pattern = BTreeMap::new();
        match get("alpha_pattern") {
            serde_json::Value::Null => {}
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let a = v
                        .as_f64()
                        .filter(|a| a.is_finite() && (*a as f32).is_finite())
                        .ok_or_else(|| bad(format!("alpha_pattern['{k}'] is {v}")))?;
                    alpha_pattern.insert(k.clone(), a);
                }
            }
            other => return Err(bad(format!("alpha_pattern is {other}, expected an object"))),
        }
        let alora_invocation_tokens = match get("alora_invocation_tokens") {
            serde_json::Value::Null => None,
            serde_json::Value::Array(items) => Some(
                items
                    .iter()
                    .map(|i| {
                        i.as_u64()
                            .and_then(|t| u32::try_from(t).ok())
                            .ok_or_else(|| bad(format!("alora_invocation_tokens holds {i}")))
                    })
                    .collect::<Result<Vec<u32>, _>>()?,
            ),
            other => {
                return Err(bad(format!(
                    "alora_invocation_tokens is {other}, expected a list of token ids"
                )))
            }
        };
        Ok(PeftConfig {
            peft_type,
            r,
            lora_alpha,
            use_rslora: opt_bool("use_rslora")?,
            fan_in_fan_out: opt_bool("fan_in_fan_out")?,
            use_dora: opt_bool("use_dora")?,
            target_modules,
            exclude_modules,
            modules_to_save,
            bias,
            rank_pattern,
            alpha_pattern,
            base_model_name_or_path: get("base_model_name_or_path").as_str().map(str::to_string),
            alora_invocation_tokens,
            invocation_string: get("invocation_string")
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    /// The pattern of `patterns` that applies to `module`, as PEFT's `get_pattern_key` decides:
    /// the pattern must match a dotted suffix of the module name. More than one matching pattern
    /// is refused: PEFT takes the first in the file's key order, which this parser does not keep.
    fn pattern_for<'a, V>(
        patterns: &'a BTreeMap<String, V>,
        module: &str,
        field: &str,
    ) -> Result<Option<&'a V>, String> {
        let mut found: Option<(&str, &V)> = None;
        for (k, v) in patterns {
            let re = regex::Regex::new(&format!("^(?:.*\\.)?(?:{k})$"))
                .map_err(|e| format!("{field} key '{k}' does not compile: {e}"))?;
            if re.is_match(module) {
                if let Some((first, _)) = found {
                    return Err(format!(
                        "{field}: both '{first}' and '{k}' match module '{module}' (ambiguous)"
                    ));
                }
                found = Some((k, v));
            }
        }
        Ok(found.map(|(_, v)| v))
    }

    /// The rank the config promises for `module` (`rank_pattern`, else `r`).
    pub fn rank_for(&self, module: &str) -> Result<usize, String> {
        Ok(
            Self::pattern_for(&self.rank_pattern, module, "rank_pattern")?
                .copied()
                .unwrap_or(self.r),
        )
    }

    /// The alpha for `module` (`alpha_pattern`, else `lora_alpha`).
    pub fn alpha_for(&self, module: &str) -> Result<f64, String> {
        Ok(
            Self::pattern_for(&self.alpha_pattern, module, "alpha_pattern")?
                .copied()
                .unwrap_or(self.lora_alpha),
        )
    }

    /// Whether target_modules / exclude_modules select `module` (true when the config names no
    /// targets at all).
    pub fn targets(&self, module: &str) -> Result<bool, String> {
        if let Some(ex) = &self.exclude_modules {
            if ex.selects(module)? {
                return Ok(false);
            }
        }
        match &self.target_modules {
            None => Ok(true),
            Some(sel) => sel.selects(module),
        }
    }

    fn saves_module(&self, name: &str) -> bool {
        // `name` is a tensor name: the module is everything before the last dot.
        let module = name.rsplit_once('.').map_or(name, |(m, _)| m);
        self.modules_to_save.iter().any(|m| {
            module == m
                || (module.ends_with(m.as_str()) && module[..module.len() - m.len()].ends_with('.'))
        })
    }
}

/// Which kind of layer a LoRA module adapts; it fixes how A and B combine with the base weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraKind {
    /// `nn.Linear`: W [out, in] += B [out, r] · A [r, in] (W [in, out] with fan_in_fan_out).
    Linear,
    /// `nn.Embedding`: W [vocab, hidden] += (B [hidden, r] · A [r, vocab])ᵀ.
    Embedding,
}

/// One adapted module: its two factors in the adapter file.
#[derive(Clone, Debug)]
pub struct LoraModule {
    /// Module path in the base model, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    /// Linear layer or embedding (the factors' layout differs).
    pub kind: LoraKind,
    /// `lora_A` (or `lora_embedding_A`): [r, in] ([r, vocab] for embeddings).
    pub a: StTensor,
    /// `lora_B` (or `lora_embedding_B`): [out, r] ([hidden, r] for embeddings).
    pub b: StTensor,
    /// The module's rank (rows of A).
    pub rank: usize,
}

impl LoraModule {
    /// The base tensor this module updates.
    pub fn base_tensor(&self) -> String {
        format!("{}.weight", self.module)
    }
}

/// A full tensor of the adapter that replaces the base tensor of the same name.
#[derive(Clone, Debug)]
pub struct FullTensor {
    /// The base tensor's name (the adapter's name without `base_model.model.`).
    pub base_name: String,
    /// The replacement tensor in the adapter file.
    pub tensor: StTensor,
}

/// A validated PEFT LoRA adapter directory.
pub struct PeftAdapter {
    dir: PathBuf,
    /// The parsed `adapter_config.json`.
    pub config: PeftConfig,
    file: SafetensorsFile,
    /// Adapted modules, in the order their first tensor appears in the file (data order).
    pub modules: Vec<LoraModule>,
    /// Replacement tensors, in file (data) order.
    pub full_tensors: Vec<FullTensor>,
}

/// What one adapter tensor name says.
enum NameKind {
    Factor {
        module: String,
        is_a: bool,
        kind: LoraKind,
    },
    Magnitude,
    BaseLayer,
    Full(String),
}

fn classify(name: &str) -> NameKind {
    let rest = name.strip_prefix("base_model.model.").unwrap_or(name);
    if rest.contains("lora_magnitude_vector") {
        return NameKind::Magnitude;
    }
    if rest.ends_with(".base_layer.weight") || rest.ends_with(".base_layer.bias") {
        return NameKind::BaseLayer;
    }
    let parts: Vec<&str> = rest.split('.').collect();
    // Find the factor marker; it may be followed by an adapter name and/or "weight".
    for (i, p) in parts.iter().enumerate().rev() {
        let (is_a, kind) = match *p {
            "lora_A" => (true, LoraKind::Linear),
            "lora_B" => (false, LoraKind::Linear),
            "lora_embedding_A" => (true, LoraKind::Embedding),
            "lora_embedding_B" => (false, LoraKind::Embedding),
            _ => continue,
        };
        let tail = &parts[i + 1..];
        let tail_ok = match kind {
            LoraKind::Linear => matches!(tail, ["weight"]) || matches!(tail, [_, "weight"]),
            LoraKind::Embedding => tail.is_empty() || tail.len() == 1,
        };
        if i == 0 || !tail_ok {
            break;
        }
        return NameKind::Factor {
            module: parts[..i].join("."),
            is_a,
            kind,
        };
    }
    NameKind::Full(rest.to_string())
}

impl PeftAdapter {
    /// Read and validate the adapter in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<PeftAdapter, PeftError> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|source| PeftError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config = PeftConfig::parse(&text, &config_path)?;
        if config.use_dora {
            return Err(PeftError::Dora { path: config_path });
        }
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            let pickled = dir.join(PICKLED_WEIGHTS_FILE);
            if pickled.is_file() {
                return Err(PeftError::PickledWeights { path: pickled });
            }
            return Err(PeftError::MissingWeights { dir });
        }
        let file = SafetensorsFile::open(&weights)?;
        let path = weights;

        struct Pending {
            kind: LoraKind,
            a: Option<StTensor>,
            b: Option<StTensor>,
        }
        let mut order: Vec<String> = Vec::new();
        let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
        let mut full_tensors = Vec::new();
        // Visit tensors in data-offset order, as `safetensors.torch.load_file` (and so
        // convert_lora_to_gguf.py) does; for files PEFT writes this is also name order.
        let mut in_file_order: Vec<&StTensor> = file.tensors().iter().collect();
        in_file_order.sort_by_key(|t| file.data(t).as_ptr() as usize);
        for t in in_file_order {
            file.check_float(t)?;
            match classify(&t.name) {
                NameKind::Magnitude => return Err(PeftError::Dora { path }),
                NameKind::BaseLayer => continue,
                NameKind::Factor { module, is_a, kind } => {
                    let entry = pending.entry(module.clone()).or_insert_with(|| {
                        order.push(module.clone());
                        Pending {
                            kind,
                            a: None,
                            b: None,
                        }
                    });
                    let slot = if is_a { &mut entry.a } else { &mut entry.b };
                    if slot.is_some() || entry.kind != kind {
                        return Err(PeftError::UnexpectedTensor {
                            path,
                            tensor: format!("{} (a second factor for module '{module}')", t.name),
                        });
                    }
                    *slot = Some(t.clone());
                }
                NameKind::Full(base_name) => {
                    let allowed = config.saves_module(&base_name)
                        || (config.bias != "none" && base_name.ends_with(".bias"))
                        || base_name.contains("_layernorm")
                        || base_name.contains(".norm");
                    if !allowed {
                        return Err(PeftError::UnexpectedTensor {
                            path,
                            tensor: t.name.clone(),
                        });
                    }
                    full_tensors.push(FullTensor {
                        base_name,
                        tensor: t.clone(),
                    });
                }
            }
        }

        let mut modules = Vec::with_capacity(order.len());
        for module in order {
            let p = pending
                .remove(&module)
                .expect("every ordered module is pending");
            let (a_name, b_name) = match p.kind {
                LoraKind::Linear => ("lora_A", "lora_B"),
                LoraKind::Embedding => ("lora_embedding_A", "lora_embedding_B"),
            };
            let (a, b) = match (p.a, p.b) {
                (Some(a), Some(b)) => (a, b),
                (a, _) => {
                    let (present, missing) = if a.is_some() {
                        (a_name, b_name)
                    } else {
                        (b_name, a_name)
                    };
                    return Err(PeftError::MissingFactor {
                        path,
                        module,
                        present: present.into(),
                        missing: missing.into(),
                    });
                }
            };
            for t in [&a, &b] {
                if t.shape.len() != 2 || t.shape.contains(&0) {
                    return Err(PeftError::NotMatrix {
                        path,
                        tensor: t.name.clone(),
                        shape: t.shape.clone(),
                    });
                }
            }
            let config_rank = config
                .rank_for(&module)
                .map_err(|what| PeftError::BadConfig {
                    path: config_path.clone(),
                    what,
                })?;
            let (rank_a, rank_b) = (a.shape[0], b.shape[1]);
            if rank_a != rank_b || rank_a != config_rank {
                return Err(PeftError::InconsistentRank {
                    path,
                    module,
                    rank_a,
                    rank_b,
                    config_rank,
                });
            }
            let targeted = config
                .targets(&module)
                .map_err(|what| PeftError::BadConfig {
                    path: config_path.clone(),
                    what,
                })?;
            if !targeted {
                return Err(PeftError::UntargetedModule { path, module });
            }
            modules.push(LoraModule {
                module,
                kind: p.kind,
                a,
                b,
                rank: rank_a,
            });
        }

        let adapter = PeftAdapter {
            dir,
            config,
            file,
            modules,
            full_tensors,
        };
        adapter.check_finite()?;
        Ok(adapter)
    }

    /// The adapter directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The opened `adapter_model.safetensors`.
    pub fn file(&self) -> &SafetensorsFile {
        &self.file
    }

    /// The path of `adapter_model.safetensors`, as errors name it.
    pub fn weights_path(&self) -> &Path {
        self.file.path()
    }

    /// Every value of a tensor of this adapter, as f32 (exact for F32, F16 and BF16).
    pub fn read_f32(&self, t: &StTensor) -> Result<Vec<f32>, PeftError> {
        let mut v = vec![0f32; t.n_elements()];
        self.file.read_f32(t, 0, &mut v)?;
        Ok(v)
    }

    fn check_finite(&self) -> Result<(), PeftError> {
        let all = self
            .modules
            .iter()
            .flat_map(|m| [&m.a, &m.b])
            .chain(self.full_tensors.iter().map(|f| &f.tensor));
        // In slices, so a large saved module (an lm_head) never needs a full f32 copy.
        const SLICE: usize = 1 << 20;
        let mut buf = vec![0f32; SLICE];
        for t in all {
            let n = t.n_elements();
            let mut start = 0;
            while start < n {
                let len = SLICE.min(n - start);
                let v = &mut buf[..len];
                self.file.read_f32(t, start, v)?;
                if let Some((i, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                    return Err(PeftError::NonFinite {
                        path: self.weights_path().to_path_buf(),
                        tensor: t.name.clone(),
                        index: start + i,
                        value,
                    });
                }
                start += len;
            }
        }
        Ok(())
    }

    /// The factor by which `module`'s B·A is multiplied, with the user's extra `user_scale`:
    /// `user_scale · alpha / r`, or `user_scale · alpha / √r` with rsLoRA (PEFT's `scaling`),
    /// computed in f64 as PEFT does in Python, then rounded once to f32.
    pub fn scale(&self, module: &LoraModule, user_scale: f64) -> Result<f32, PeftError> {
        let alpha = self
            .config
            .alpha_for(&module.module)
            .map_err(|what| PeftError::BadConfig {
                path: self.dir.join(CONFIG_FILE),
                what,
            })?;
        let r = module.rank as f64;
        let denom = if self.config.use_rslora { r.sqrt() } else { r };
        Ok((user_scale * alpha / denom) as f32)
    }

    /// The shape of the base tensor `module` updates: [out, in] for a linear layer
    /// ([in, out] with fan_in_fan_out), [vocab, hidden] for an embedding.
    pub fn expected_base_shape(&self, module: &LoraModule) -> Vec<usize> {
        let (r_a_in, b_out) = (module.a.shape[1], module.b.shape[0]);
        match module.kind {
            LoraKind::Linear if self.config.fan_in_fan_out => vec![r_a_in, b_out],
            LoraKind::Linear => vec![b_out, r_a_in],
            LoraKind::Embedding => vec![r_a_in, b_out],
        }
    }

    /// Prove the adapter fits a base model: every adapted module's weight and every replaced
    /// tensor exists in the base (`base_shape(name)` gives its shape) with the right shape.
    pub fn check_base(
        &self,
        base_shape: &dyn Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<(), PeftError> {
        let path = self.weights_path().to_path_buf();
        for m in &self.modules {
            let base_tensor = m.base_tensor();
            let Some(shape) = base_shape(&base_tensor) else {
                return Err(PeftError::ModuleNotFound {
                    path,
                    module: m.module.clone(),
                    base_tensor,
                });
            };
            let expected = self.expected_base_shape(m);
            if shape != expected {
                return Err(PeftError::ShapeMismatch {
                    path,
                    module: m.module.clone(),
                    base_tensor,
                    base_shape: shape,
                    factors: format!(
                        "A {:?} and B {:?} make a {expected:?} update",
                        m.a.shape, m.b.shape
                    ),
                });
            }
        }
        for f in &self.full_tensors {
            let Some(shape) = base_shape(&f.base_name) else {
                let module = f
                    .base_name
                    .rsplit_once('.')
                    .map_or(f.base_name.as_str(), |(m, _)| m);
                return Err(PeftError::ModuleNotFound {
                    path,
                    module: module.to_string(),
                    base_tensor: f.base_name.clone(),
                });
            };
            if shape != f.tensor.shape {
                return Err(PeftError::ReplacementShape {
                    path,
                    tensor: f.tensor.name.clone(),
                    base_tensor: f.base_name.clone(),
                    shape: f.tensor.shape.clone(),
                    base_shape: shape,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_with_their_variants() {
        let f = |n: &str| match classify(n) {
            NameKind::Factor { module, is_a, kind } => format!("{module}|{is_a}|{kind:?}"),
            NameKind::Magnitude => "mag".into(),
            NameKind::BaseLayer => "base".into(),
            NameKind::Full(b) => format!("full:{b}"),
        };
        assert_eq!(
            f("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
            "model.layers.0.self_attn.q_proj|true|Linear"
        );
        assert_eq!(
            f("base_model.model.model.layers.0.mlp.up_proj.lora_B.default.weight"),
            "model.layers.0.mlp.up_proj|false|Linear"
        );
        assert_eq!(
            f("model.layers.1.mlp.up_proj.lora_B.weight"),
            "model.layers.1.mlp.up_proj|false|Linear"
        );
        assert_eq!(
            f("base_model.model.model.embed_tokens.lora_embedding_A"),
            "model.embed_tokens|true|Embedding"
        );
        assert_eq!(
            f("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"),
            "mag"
        );
        assert_eq!(f("base_model.model.lm_head.weight"), "full:lm_head.weight");
        assert_eq!(
            f("base_model.model.model.layers.0.mlp.up_proj.base_layer.weight"),
            "base"
        );
    }

    #[test]
    fn target_modules_match_like_peft() {
        let names = ModuleSelector::Names(vec!["q_proj".into(), "o_proj".into()]);
        assert!(names.selects("model.layers.0.self_attn.q_proj").unwrap());
        assert!(names.selects("q_proj").unwrap());
        assert!(!names.selects("model.layers.0.self_attn.xq_proj").unwrap());
        assert!(!names.selects("model.layers.0.mlp.up_proj").unwrap());
        let re = ModuleSelector::Regex(r".*\.(q|v)_proj".into());
        assert!(re.selects("model.layers.3.self_attn.v_proj").unwrap());
        assert!(!re.selects("model.layers.3.self_attn.k_proj").unwrap());
    }

    #[test]
    fn rank_and_alpha_patterns_apply_to_dotted_suffixes() {
        let text = r#"{"peft_type":"LORA","r":8,"lora_alpha":16,
            "rank_pattern":{"layers.0.self_attn.q_proj":4},"alpha_pattern":{"v_proj":3}}"#;
        let c = PeftConfig::parse(text, Path::new("c.json")).unwrap();
        assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj").unwrap(), 4);
        assert_eq!(c.rank_for("model.layers.10.self_attn.q_proj").unwrap(), 8);
        assert_eq!(c.alpha_for("model.layers.2.self_attn.v_proj").unwrap(), 3.0);
        assert_eq!(
            c.alpha_for("model.layers.2.self_attn.q_proj").unwrap(),
            16.0
        );
    }

    #[test]
    fn other_peft_types_are_refused_by_name() {
        let e = PeftConfig::parse(
            r#"{"peft_type":"LOHA","r":8}"#,
            Path::new("x/adapter_config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("LOHA") && e.contains("adapter_config.json"),
            "{e}"
        );
    }
}
