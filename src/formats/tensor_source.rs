//! Where tensors come from: a GGUF file, or a Hugging Face checkpoint converted on the fly.
//! The quantize pipeline sees only this trait, so one streaming loop serves every job.

use std::borrow::Cow;
use std::path::Path;

use crate::formats::gguf::{GgufError, GgufFile, Metadata};
use crate::ggml::GgmlType;

/// One tensor as the source offers it (GGUF name, type and ggml shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTensor {
    pub name: String,
    pub ty: GgmlType,
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
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, anyhow::Error>;
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

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, anyhow::Error> {
        Ok(Cow::Borrowed(
            self.file.tensor_data(&self.file.tensors[index]),
        ))
    }

    fn release(&self, index: usize) {
        self.file.release_tensor_pages(&self.file.tensors[index]);
    }
}
