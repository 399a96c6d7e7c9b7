//! What can go wrong in a pipeline job (convert, quantize, `convert --lora`, placing a model on
//! a device). Causes from the layers below pass through unchanged; the job's own refusals name
//! the source, the tensor and the argument at fault, one line each.

use std::num::{ParseFloatError, ParseIntError};
use std::path::PathBuf;

use crate::convert::checkpoint::HfError;
use crate::formats::gguf::GgufError;
use crate::formats::tensor_source::SourceError;
use crate::lora::LoraError;
use crate::quant::rules::RuleError;
use crate::runtime::RuntimeError;
use crate::threads::ThreadsError;

/// Errors of the pipeline's jobs.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The Hugging Face checkpoint could not be opened or planned.
    #[error(transparent)]
    Checkpoint(#[from] HfError),
    /// A LoRA adapter could not be opened, planned or merged.
    #[error(transparent)]
    Lora(#[from] LoraError),
    /// Writing the output GGUF failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The worker pool could not be set up.
    #[error(transparent)]
    Threads(#[from] ThreadsError),
    /// The converter could not produce a tensor of the checkpoint.
    #[error("{}: converting tensor '{tensor}'", dir.display())]
    ConvertTensor {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The checkpoint's name for the tensor.
        tensor: String,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// The quantizer's source could not produce a tensor's bytes.
    #[error("{source_name}: tensor '{tensor}'")]
    ReadTensor {
        /// The source (its description, usually a path).
        source_name: String,
        /// The GGUF tensor name.
        tensor: String,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// llama-quantize's type rules refused the model (a missing or malformed key, an
    /// impossible mix).
    #[error("{source_name}: {detail}")]
    Rules {
        /// The source (its description, usually a path).
        source_name: String,
        /// The rule that failed.
        detail: RuleError,
    },
    /// A tensor the quantize job refuses (requantizing, an unsupported type, an imatrix that
    /// does not fit, non-finite or invalid data, a kernel failure).
    #[error("{source_name}: tensor '{tensor}': {what}")]
    Tensor {
        /// The source (its description, usually a path).
        source_name: String,
        /// The GGUF tensor name.
        tensor: String,
        /// What is wrong, with the row and column where there is one.
        what: String,
    },
    /// A `--override-kv` argument of the wrong shape.
    #[error("malformed KV override '{arg}': {what}")]
    MalformedOverride {
        /// The argument as given.
        arg: String,
        /// What is malformed.
        what: &'static str,
    },
    /// An `int:` override whose value is not an integer.
    #[error("KV override '{arg}': not an integer")]
    OverrideInt {
        /// The argument as given.
        arg: String,
        /// Why it does not parse.
        #[source]
        source: ParseIntError,
    },
    /// A `float:` override whose value is not a number.
    #[error("KV override '{arg}': not a number")]
    OverrideFloat {
        /// The argument as given.
        arg: String,
        /// Why it does not parse.
        #[source]
        source: ParseFloatError,
    },
    /// A `bool:` override that is neither `true` nor `false`.
    #[error("invalid boolean value for KV override '{arg}'")]
    OverrideBool {
        /// The argument as given.
        arg: String,
    },
    /// An override with a type other than `int:`, `float:`, `bool:` or `str:`.
    #[error("invalid type for KV override '{arg}': use int:, float:, bool: or str:")]
    OverrideType {
        /// The argument as given.
        arg: String,
    },
    /// A KV override that would make a file llama.cpp rejects.
    #[error(transparent)]
    Override(#[from] crate::pipeline::override_check::OverrideError),
    /// `--prune-layers` names layers the model lacks, or all of them.
    #[error("{source_name}: {what}")]
    PruneLayers {
        /// The input.
        source_name: String,
        /// What is wrong.
        what: String,
    },
    /// An imatrix with no entry for any tensor quantized (made for another model).
    #[error("{source_name}: the imatrix has no entry for any tensor of this model (it has e.g. '{example}'); was it made for another model?")]
    ImatrixMatchesNothing {
        /// The input.
        source_name: String,
        /// One of the imatrix's entry names.
        example: String,
    },
    /// A converted tensor holds a value its output type cannot store (or the checkpoint's is
    /// not finite).
    #[error("{output}: tensor '{tensor}': {value} in the {ty} output; refusing to write a non-finite value (the weight is out of the type's range, or not finite in the checkpoint)")]
    NonFiniteOutput {
        /// The output file.
        output: String,
        /// The tensor.
        tensor: String,
        /// Where and what the value is.
        value: String,
        /// The output type.
        ty: String,
    },
    /// A `--target-size` / `--target-bpw` no file of this model can meet (below the smallest
    /// file the candidate types and protections allow).
    #[error("{source_name}: the target of {target} bytes is below the smallest file possible ({minimum} bytes: {why})")]
    TargetTooSmall {
        /// The input.
        source_name: String,
        /// The target, in bytes of the whole file.
        target: u64,
        /// The smallest file possible, in bytes.
        minimum: u64,
        /// What the minimum is made of.
        why: String,
    },
    /// A size target that cannot be used as given (malformed, or with options it contradicts).
    #[error("{what}")]
    TargetSize {
        /// What is wrong.
        what: String,
    },
    /// The size-targeted plan could not be written beside the output.
    #[error("writing the plan report {}: {source}", path.display())]
    WritePlan {
        /// The report's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Under a strict `--device`, the model could not be placed on the GPU.
    #[error("loading the model on the GPU")]
    GpuModel {
        /// Why.
        #[source]
        source: RuntimeError,
    },
}

impl PipelineError {
    /// [`PipelineError::Tensor`]: `source_name`'s tensor `tensor` is refused because `what`.
    pub fn tensor(source_name: &str, tensor: &str, what: impl Into<String>) -> PipelineError {
        PipelineError::Tensor {
            source_name: source_name.to_string(),
            tensor: tensor.to_string(),
            what: what.into(),
        }
    }
}
