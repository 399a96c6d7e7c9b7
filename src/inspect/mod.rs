//! Looking at finished model files: [`validate`] says whether a GGUF file (or split set), a
//! safetensors file or a Hugging Face directory is sound — will llama.cpp load it, is any value
//! or block scale NaN/Inf — and [`compare`] measures how far one model is from another
//! (metadata diff, per-tensor error of B's dequantized values against A's, optionally
//! perplexity and KL divergence on a text).

#![warn(missing_docs)]
pub mod compare;
pub mod required;
pub mod validate;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use compare::{
    compare, compare_eval, CompareEvent, CompareReport, EvalComparison, KindSummary, KvChange,
    KvDiff, KvEntry, TensorComparison,
};
pub use validate::{validate, FileKind, ValidateEvent, ValidateReport};

/// One problem `validate` found: the file, the tensor or key it concerns (when there is one),
/// and what is wrong. Displays as one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The tensor it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor: Option<String>,
    /// The metadata key (or config field) it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What is wrong, in one line.
    pub message: String,
}

impl Problem {
    /// A problem of the file as a whole.
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Problem {
        Problem {
            file: file.into(),
            tensor: None,
            key: None,
            message: message.into(),
        }
    }

    /// A problem of one tensor.
    pub fn tensor(
        file: impl Into<PathBuf>,
        tensor: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            file: file.into(),
            tensor: Some(tensor.into()),
            key: None,
            message: message.into(),
        }
    }

    /// A problem of one metadata key (or config field).
    pub fn key(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            file: file.into(),
            tensor: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(t) = &self.tensor {
            write!(f, "tensor '{t}': ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "key '{k}': ")?;
        }
        // Keep the promise of one line per problem even when a message quotes a multi-line
        // parser error.
        f.write_str(&self.message.replace('\n', " "))
    }
}

/// Errors of `validate` and `compare` that stop them (problems with a file's contents are
/// [`Problem`]s in the report instead); each names the path.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The path does not exist or cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path given.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// `compare` could not open one of its two models.
    #[error("{path}: cannot open as a model: {what}")]
    Open {
        /// The model's path.
        path: PathBuf,
        /// The reader's message.
        what: String,
    },
    /// A tensor of one model could not be read or decoded.
    #[error("{path}: tensor '{tensor}': {what}")]
    Tensor {
        /// The model's path.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What failed.
        what: String,
    },
    /// The evaluation (`compare --eval`) failed.
    #[error("evaluation on {text}: {what}")]
    Eval {
        /// The evaluation text.
        text: PathBuf,
        /// What failed.
        what: String,
    },
}
