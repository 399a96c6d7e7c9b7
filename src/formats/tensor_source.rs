//! Where tensors come from: a GGUF file, or a Hugging Face checkpoint converted on the fly.
//! The quantize pipeline sees only this trait, so one streaming loop serves every job.

use std::borrow::Cow;
use std::path::Path;

use crate::formats::gguf::{GgufError, GgufFile, Metadata};
use crate::ggml::GgmlType;

/// Why a [`TensorSource`] could not produce a tensor's bytes.
///
/// This layer knows nothing of checkpoints or adapters, so the cause is the producing layer's
/// own typed error (a conversion's, a LoRA merge's), carried whole: its message and its chain
/// of causes print exactly as that error's do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Producing the tensor failed; the cause names the file and tensor.
    #[error(transparent)]
    Produce(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl SourceError {
    /// Wrap the producing layer's error.
    pub fn produce(e: impl std::error::Error + Send + Sync + 'static) -> SourceError {
        SourceError::Produce(Box::new(e))
    }
}

/// One tensor as the source offers it (GGUF name, type and ggml shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTensor {
    /// The GGUF tensor name.
    pub name: String,
    /// The type its bytes are in.
    pub ty: GgmlType,
    /// ggml shape (innermost first).
    pub ne: Vec<u64>,
}

/// A model to read tensor by tensor. Data is produced on demand so memory stays bounded.
pub trait TensorSource: Sync {
    /// What to call the source in messages (usually its path).
    fn describe(&self) -> String;
    /// GGUF metadata, in the order a GGUF file of this model holds it.
    fn metadata(&self) -> &Metadata;
    /// Tensors in the order a GGUF file of this model holds them.
    fn tensors(&self) -> &[SourceTensor];
    /// The bytes of tensor `index`, in its declared type.
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, SourceError>;
    /// The pipeline is done with tensor `index`: a memory-mapped source may drop its pages, which
    /// keeps resident memory bounded by one tensor rather than the model.
    fn release(&self, _index: usize) {}
}

/// A GGUF file as a source: bytes come straight from the memory map.
pub struct GgufSource {
    file: GgufFile,
    tensors: Vec<SourceTensor>,
}

impl GgufSource {
    /// Open the GGUF file at `path` (memory-mapped).
    pub fn open(path: &Path) -> Result<GgufSource, GgufError> {
        let file = GgufFile::open(path)?;
        let tensors = file
            .tensors
            .iter()
            .map(|t| SourceTensor {
                name: t.name.clone(),
                ty: t.ty,
                ne: t.ne.clone(),
            })
            .collect();
        Ok(GgufSource { file, tensors })
    }

    /// The parsed file underneath.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl TensorSource for GgufSource {
    fn describe(&self) -> String {
        self.file.path().display().to_string()
    }

    fn metadata(&self) -> &Metadata {
        &self.file.metadata
    }

    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, SourceError> {
        Ok(Cow::Borrowed(
            self.file.tensor_data(&self.file.tensors[index]),
        ))
    }

    fn release(&self, index: usize) {
        self.file.release_tensor_pages(&self.file.tensors[index]);
    }
}
