//! What can go wrong running a GGUF model: loading it ([`RuntimeError`], also the forward pass
//! on either device) and turning text into token ids ([`TokenizeError`]). Each message is one
//! line naming the key, tensor, file or adapter at fault.

use std::error::Error;
use std::path::PathBuf;

use crate::formats::gguf::GgufError;
use crate::formats::tensor_source::SourceError;

/// Errors loading a model or running its forward pass (CPU or GPU).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A metadata key the runtime needs is absent.
    #[error("no {key}")]
    MissingKey {
        /// The GGUF key.
        key: String,
    },
    /// Neither `{arch}.vocab_size` nor a token list says how large the vocabulary is.
    #[error("no {arch}.vocab_size and no tokenizer.ggml.tokens")]
    NoVocabSize {
        /// `general.architecture`.
        arch: String,
    },
    /// An integer hyper-parameter is absent or not an integer.
    #[error("missing or non-integer {key}")]
    MissingInteger {
        /// The GGUF key.
        key: String,
    },
    /// A float hyper-parameter is absent or not a float.
    #[error("missing {key}")]
    MissingFloat {
        /// The GGUF key.
        key: String,
    },
    /// Hyper-parameters that contradict each other (head counts, RoPE width).
    #[error("{what}")]
    BadHparams {
        /// The values and why they cannot hold together.
        what: String,
    },
    /// A model feature (architecture, MoE, RoPE scaling, tensor layout, a shape on one
    /// adapter) this runtime does not implement yet; refused rather than run wrongly.
    #[error("{what}")]
    Unsupported {
        /// The feature, naming the key, tensor or adapter.
        what: String,
    },
    /// A tensor the model needs is absent.
    #[error("missing tensor {tensor}")]
    MissingTensor {
        /// The GGUF tensor name.
        tensor: String,
    },
    /// A tensor that cannot be used as stored (type without a dequantizer, wrong shape,
    /// truncated data, too large for a GPU binding).
    #[error("{tensor}: {what}")]
    Tensor {
        /// The GGUF tensor name.
        tensor: String,
        /// What is wrong with it.
        what: String,
    },
    /// A token id at or past the vocabulary size.
    #[error("token id {token} is outside the vocabulary ({n_vocab} tokens)")]
    TokenOutOfRange {
        /// The offending id.
        token: u32,
        /// The model's vocabulary size.
        n_vocab: usize,
    },
    /// The model file could not be opened or parsed.
    #[error("opening {}", path.display())]
    Open {
        /// The GGUF file.
        path: PathBuf,
        /// Why.
        #[source]
        source: GgufError,
    },
    /// Building the model from its file or source failed.
    #[error("loading {what}")]
    Load {
        /// The file or source (its description).
        what: String,
        /// Why.
        #[source]
        source: Box<RuntimeError>,
    },
    /// The tensor source could not produce a tensor's bytes.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A GPU operation failed (building, mapping, waiting, a validation or out-of-memory
    /// error); the message names the adapter or buffer.
    #[error("{what}")]
    Gpu {
        /// What failed and the driver's words for it.
        what: String,
    },
    /// The GPU forward pass gave logits other than the CPU's on the canary model.
    #[error("the GPU forward pass failed its self-check on '{adapter}': {detail}")]
    SelfCheck {
        /// The adapter's name.
        adapter: String,
        /// The failure, its causes joined into one line.
        detail: String,
    },
    /// Two logit vectors that should agree do not (CPU against GPU).
    #[error("{what}")]
    LogitsDiffer {
        /// Where they differ and by how much.
        what: String,
    },
    /// A forward pass on a GPU adapter failed.
    #[error("GPU forward pass on '{adapter}'")]
    GpuPass {
        /// The adapter's name.
        adapter: String,
        /// Why.
        #[source]
        source: Box<RuntimeError>,
    },
}

impl RuntimeError {
    /// [`RuntimeError::Unsupported`] with this description.
    pub fn unsupported(what: impl Into<String>) -> RuntimeError {
        RuntimeError::Unsupported { what: what.into() }
    }

    /// [`RuntimeError::Tensor`]: `tensor` cannot be used, because `what`.
    pub fn tensor(tensor: impl Into<String>, what: impl Into<String>) -> RuntimeError {
        RuntimeError::Tensor {
            tensor: tensor.into(),
            what: what.into(),
        }
    }

    /// [`RuntimeError::MissingTensor`] for `tensor`.
    pub fn missing_tensor(tensor: impl Into<String>) -> RuntimeError {
        RuntimeError::MissingTensor {
            tensor: tensor.into(),
        }
    }

    /// [`RuntimeError::Gpu`] with this description.
    pub fn gpu(what: impl Into<String>) -> RuntimeError {
        RuntimeError::Gpu { what: what.into() }
    }
}

/// Errors building a tokenizer from GGUF metadata or encoding text with it.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// A tokenizer key the tokenizer needs is absent.
    #[error("no {key}")]
    MissingKey {
        /// The GGUF key.
        key: String,
    },
    /// `tokenizer.ggml.model` is absent.
    #[error("no tokenizer.ggml.model in the file")]
    NoModel,
    /// `tokenizer.ggml.model` names something other than byte-level BPE.
    #[error("tokenizer model '{model}' is not byte-level BPE ('gpt2')")]
    NotBpe {
        /// The model named.
        model: String,
    },
    /// `tokenizer.ggml.model` names something other than SentencePiece.
    #[error("tokenizer model '{model}' is not supported yet (only SentencePiece 'llama')")]
    NotSpm {
        /// The model named.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer not implemented yet.
    #[error("the BPE pre-tokenizer '{name}' is not supported yet")]
    UnsupportedPreTokenizer {
        /// The pre-tokenizer named.
        name: String,
    },
    /// An array key holds an element of the wrong type.
    #[error("{key} holds a non-{expected}")]
    WrongElement {
        /// The GGUF key.
        key: String,
        /// The element type it should hold.
        expected: &'static str,
    },
    /// The token, score and type arrays have different lengths.
    #[error("tokenizer arrays disagree: {what}")]
    ArraysDisagree {
        /// The lengths.
        what: String,
    },
    /// A BPE merge rule without the space that separates its two halves.
    #[error("merge {rank} ('{merge}') has no space")]
    MergeWithoutSpace {
        /// The merge's rank (its index in `tokenizer.ggml.merges`).
        rank: usize,
        /// The rule, lossily decoded.
        merge: String,
    },
    /// The text to encode is not UTF-8.
    #[error("the text is not valid UTF-8 ({detail})")]
    NotUtf8 {
        /// Where decoding stopped.
        detail: std::str::Utf8Error,
    },
    /// The vocabulary asks for a BOS or EOS token it does not have.
    #[error("the vocabulary adds {which} but has none")]
    NoSpecialToken {
        /// `BOS` or `EOS`.
        which: &'static str,
    },
    /// Byte fallback needs a `<0xNN>` token the vocabulary lacks.
    #[error("the vocabulary has no token for byte 0x{byte:02X}")]
    NoByteToken {
        /// The byte.
        byte: u8,
    },
}

/// `e` and its causes joined by ": " on one line (as the CLI prints an error chain), for
/// messages that carry a failure as text (notices, self-check results, sweep rows).
pub fn error_chain_text(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
