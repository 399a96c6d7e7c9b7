//! GGUF → Hugging Face directory: the inverse of `convert` for the architectures it handles
//! (llama — which covers Mistral checkpoints —, qwen2, qwen3).
//!
//! Contract: for a GGUF file X that `convert` (or llama.cpp's convert_hf_to_gguf.py) wrote with
//! `--outtype f32|f16|bf16`, `convert(export(X))` with the same outtype is X byte for byte.
//! Every step of the converter is undone: tensor names mapped back, Llama's Q/K row permutation
//! inverted, tensors written in an order the converter reads back in the same order (shards
//! split where the GGUF's order is not sorted), hyper-parameters and special tokens written where
//! the converter looks for them, `general.*` names in the model card's front matter, llama3 RoPE
//! scaling recovered from its `rope_freqs` tensor, and the tokenizer rebuilt (SentencePiece
//! `tokenizer.model`, or byte-level BPE `tokenizer.json` with the pre-tokenizer named by
//! `tokenizer.ggml.pre`). Quantized tensors are dequantized.
//!
//! The output directory appears whole or not at all ([`crate::formats::atomic::AtomicDir`]).

mod card;
mod config;
mod tokenizer;
mod weights;

use std::path::{Path, PathBuf};

use crate::formats::atomic::AtomicDir;
use crate::formats::gguf::{GgufError, GgufFile, Value};
use crate::formats::safetensors::SafetensorsError;

pub use weights::hf_tensor_name;

/// Errors of an export; each names the file and the key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A safetensors shard could not be written.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// Writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A metadata key the export needs is missing or has the wrong type.
    #[error("{path}: metadata key '{key}': {what}")]
    Key {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        what: String,
    },
    /// A tensor cannot be exported.
    #[error("{path}: tensor '{tensor}': {what}")]
    Tensor {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        what: String,
    },
    /// Something this export does not handle (an architecture, a tokenizer, a feature).
    #[error("{path}: {what} is not supported by export")]
    NotSupported {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The output directory exists and is not empty.
    #[error("{path}: output directory exists and is not empty")]
    OutputExists {
        /// The file (or directory) concerned.
        path: PathBuf,
    },
}

/// The dtype of the exported tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportDtype {
    /// 32-bit floats (lossless for every stored type).
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl ExportDtype {
    /// `f32`, `f16`, `bf16` (case-insensitive).
    pub fn parse(s: &str) -> Option<ExportDtype> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(ExportDtype::F32),
            "f16" | "float16" => Some(ExportDtype::F16),
            "bf16" | "bfloat16" => Some(ExportDtype::BF16),
            _ => None,
        }
    }

    /// transformers' name (`torch_dtype` in config.json).
    pub fn torch_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "float32",
            ExportDtype::F16 => "float16",
            ExportDtype::BF16 => "bfloat16",
        }
    }
}

/// Options of [`export`].
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Every tensor in this dtype (values rounded to nearest even). `None`: each F32/F16/BF16
    /// tensor keeps its GGUF type (lossless), quantized tensors are dequantized to F32.
    pub dtype: Option<ExportDtype>,
    /// Largest shard in bytes (transformers' `max_shard_size`); shards are also split where the
    /// GGUF's tensor order needs it.
    pub max_shard_size: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            dtype: None,
            max_shard_size: 5_000_000_000,
        }
    }
}

/// What an export reports while it runs.
#[derive(Clone, Debug)]
pub enum ExportEvent {
    /// A tensor was written (`index` of `total`, 1-based).
    Tensor {
        /// Its name.
        name: String,
        /// Its position, from 1.
        index: usize,
        /// How many there are.
        total: usize,
    },
    /// A file of the directory was written.
    File {
        /// Its name.
        name: String,
    },
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// The files of the directory, in the order written.
    pub files: Vec<String>,
    /// Safetensors shards.
    pub shards: usize,
    /// Tensors written.
    pub tensors: usize,
}

/// Typed access to a GGUF file's metadata, with errors naming the key.
pub(crate) struct Meta<'a> {
    pub gguf: &'a GgufFile,
}

impl<'a> Meta<'a> {
    pub fn path(&self) -> &Path {
        self.gguf.path()
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.gguf.metadata.get(key)
    }

    pub fn bad(&self, key: &str, what: impl Into<String>) -> ExportError {
        ExportError::Key {
            path: self.path().to_path_buf(),
            key: key.to_string(),
            what: what.into(),
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ExportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(key, "not a string")),
        }
    }

    pub fn uint(&self, key: &str) -> Result<Option<u64>, ExportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(key, "not an unsigned integer")),
        }
    }

    pub fn float(&self, key: &str) -> Result<Option<f32>, ExportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v)),
            Some(Value::F64(v)) => Ok(Some(*v as f32)),
            Some(_) => Err(self.bad(key, "not a float")),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ExportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(key, "not a bool")),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a [Value]>, ExportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(_, items)) => Ok(Some(items)),
            Some(_) => Err(self.bad(key, "not an array")),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, ExportError> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.bad(key, "holds a non-string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn require_uint(&self, key: &str) -> Result<u64, ExportError> {
        self.uint(key)?.ok_or_else(|| self.bad(key, "missing"))
    }
}

/// The architectures export handles, as (GGUF `general.architecture`, HF class, model_type).
pub const SUPPORTED: &[(&str, &str, &str)] = &[
    ("llama", "LlamaForCausalLM", "llama"),
    ("qwen2", "Qwen2ForCausalLM", "qwen2"),
    ("qwen3", "Qwen3ForCausalLM", "qwen3"),
];

/// Write the Hugging Face directory `out` for the GGUF model `input`.
pub fn export(
    input: &Path,
    out: &Path,
    opts: &ExportOptions,
    on_event: &mut dyn FnMut(&ExportEvent),
) -> Result<ExportReport, ExportError> {
    let gguf = GgufFile::open(input)?;
    let meta = Meta { gguf: &gguf };
    let arch = meta
        .str("general.architecture")?
        .ok_or_else(|| meta.bad("general.architecture", "missing"))?;
    if !SUPPORTED.iter().any(|(a, _, _)| *a == arch) {
        return Err(ExportError::NotSupported {
            path: input.to_path_buf(),
            what: format!("architecture '{arch}'"),
        });
    }
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .map_err(|source| ExportError::Io {
                    path: out.to_path_buf(),
                    source,
                })?
                .next()
                .is_none();
        if !empty {
            return Err(ExportError::OutputExists {
                path: out.to_path_buf(),
            });
        }
    }
    let plan = weights::plan(&meta, arch, opts)?;
    let tok = tokenizer::build(&meta)?;
    let cfg = config::build(&meta, arch, &plan, &tok)?;

    let dir = AtomicDir::create(out).map_err(|source| ExportError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let mut write = |name: &str, bytes: &[u8], files: &mut Vec<String>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).map_err(|source| ExportError::Io {
            path: out.join(name),
            source,
        })?;
        files.push(name.to_string());
        on_event(&ExportEvent::File {
            name: name.to_string(),
        });
        Ok::<(), ExportError>(())
    };
    write("config.json", &json_bytes(&cfg.config), &mut files)?;
    write(
        "generation_config.json",
        &json_bytes(&cfg.generation),
        &mut files,
    )?;
    for (name, bytes) in &tok.files {
        write(name, bytes, &mut files)?;
    }
    write("README.md", card::readme(&meta)?.as_bytes(), &mut files)?;
    let written = weights::write(&meta, &plan, dir.path(), on_event)?;
    files.extend(written.iter().cloned());
    dir.commit().map_err(|source| ExportError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(ExportReport {
        files,
        shards: plan.shards.len(),
        tensors: plan.tensors.len(),
    })
}

/// Pretty JSON with a trailing newline, as transformers writes its files.
pub(crate) fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).expect("JSON values serialize");
    s.push('\n');
    s.into_bytes()
}

/// An f32 as the shortest decimal that reads back as the same f32 (what the converter stored
/// came from a Python float rounded to f32; any decimal rounding to the same f32 gives it back).
pub(crate) fn f32_json(v: f32) -> serde_json::Value {
    let s = format!("{v:?}");
    let parsed: f64 = s.parse().expect("Rust prints parseable floats");
    serde_json::Number::from_f64(parsed)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}
