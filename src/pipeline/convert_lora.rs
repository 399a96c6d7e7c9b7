//! `qforge convert MODEL_DIR --lora ADAPTER[:SCALE] …`: merge, convert and quantize in one
//! streaming pass, with no intermediate checkpoint on disk.
//!
//! [`LoraMergedModel`] is a [`TensorSource`] wrapping the converter's [`HfModel`]. Each tensor an
//! adapter changes is merged exactly as `merge-lora` merges it (same plan, same kernel, the
//! result rounded once to the base tensor's dtype) and then handed to the converter as if the
//! checkpoint held those bytes ([`HfModel::tensor_bytes_from`]). Everything downstream —
//! permutation, encoding, quantization — therefore sees the bytes `merge-lora` would have
//! written, and the output equals `merge-lora` followed by `convert` with the same options.
//! (The converter derives `general.name` from the model directory's name when the config has no
//! better one, so the two-step equivalent is a merged directory of the same name.)

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use crate::convert::checkpoint::{HfModel, HfOptions};
use crate::formats::gguf::Metadata;
use crate::formats::tensor_source::{SourceError, SourceTensor, TensorSource};
use crate::pipeline::convert::{write_converted, ConvertOptions, ConvertReport};
use crate::pipeline::error::PipelineError;

use crate::formats::safetensors::{float_dtype_size, floats_to_f32};
use crate::lora::hf::{AdapterSpec, PlannedMerge, TensorMerge};
use crate::lora::merge::{merge_row_block, round_through, LowRankUpdate, MergeDevice};
use crate::lora::LoraError;

/// A Hugging Face checkpoint seen through its conversion, with LoRA adapters merged in.
pub struct LoraMergedModel {
    model: HfModel,
    plan: PlannedMerge,
    device: MergeDevice,
}

impl LoraMergedModel {
    /// Open the checkpoint for conversion (`opts`) and the adapters, proving every adapter fits
    /// the base before any tensor is produced.
    pub fn open(
        model_dir: &Path,
        opts: &HfOptions,
        adapters: &[AdapterSpec],
        device: MergeDevice,
    ) -> Result<LoraMergedModel, PipelineError> {
        let model = HfModel::open(model_dir, opts)?;
        let plan = PlannedMerge::open(model.checkpoint(), adapters)?;
        Ok(LoraMergedModel {
            model,
            plan,
            device,
        })
    }

    /// The converter underneath (file naming, resolved outtype, architecture).
    pub fn model(&self) -> &HfModel {
        &self.model
    }

    /// How many output tensors an adapter changes.
    pub fn n_merged(&self) -> usize {
        (0..self.model.tensors().len())
            .filter(|&i| self.plan.steps(self.model.source_name(i)).is_some())
            .count()
    }

    fn merged_tensor_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, PipelineError> {
        let name = self.model.source_name(index);
        if self.plan.steps(name).is_none() {
            return Ok(None);
        }
        let ck = self.model.checkpoint();
        let loc = ck
            .find(name)
            .expect("a converted tensor comes from the checkpoint");
        let (file, t) = (ck.file(loc), ck.tensor(loc));
        if matches!(self.device, MergeDevice::Cpu) {
            if let Some(bytes) = self.fused_tensor_bytes(index, file, t)? {
                file.release(t);
                return Ok(Some(bytes));
            }
        }
        let mut merged = Vec::with_capacity(t.n_bytes());
        self.plan
            .merge_tensor(file, t, &self.device, file.path(), &mut |b| {
                merged.extend_from_slice(b);
                Ok(())
            })?;
        file.release(t);
        Ok(Some(self.model.tensor_bytes_from(index, &merged)?))
    }
}

impl LoraMergedModel {
    /// The CPU path without an intermediate tensor: each checkpoint row is decoded, merged,
    /// rounded to the base dtype and back (the value `merge-lora` would have written, as the
    /// converter reads it) and encoded to the output type while still in cache. None when the
    /// tensor is not merged row for row (a pure replacement, or a layout the converter
    /// reshapes): the caller takes the two-stage path.
    fn fused_tensor_bytes(
        &self,
        index: usize,
        file: &crate::formats::safetensors::SafetensorsFile,
        t: &crate::formats::safetensors::StTensor,
    ) -> Result<Option<Vec<u8>>, PipelineError> {
        let TensorMerge {
            src_file,
            src_tensor,
            updates,
            ty,
        } = self.plan.prepare_tensor(file, t)?;
        if updates.is_empty() || t.shape.len() != 2 || src_tensor.shape != t.shape {
            return Ok(None);
        }
        let cols = t.shape[1];
        let refs: Vec<&LowRankUpdate> = updates.iter().collect();
        let dtype = src_tensor.dtype;
        let row_bytes = cols * float_dtype_size(dtype).expect("checked float");
        let data = src_file.data(src_tensor);
        let fill = |rows: &[usize], block: &mut [f32]| -> Result<(), (usize, usize)> {
            for (&r, row) in rows.iter().zip(block.chunks_exact_mut(cols)) {
                floats_to_f32(dtype, &data[r * row_bytes..(r + 1) * row_bytes], row);
            }
            merge_row_block(block, cols, rows, &refs);
            // The lowest refused row (with permuted heads, rows are not in source order).
            let mut refused: Option<(usize, usize)> = None;
            for (&r, row) in rows.iter().zip(block.chunks_exact_mut(cols)) {
                if let Err(i) = round_through(ty, row) {
                    if refused.is_none_or(|(lowest, _)| r < lowest) {
                        refused = Some((r, r * cols + i));
                    }
                }
            }
            refused.map_or(Ok(()), Err)
        };
        let Some(result) = self.model.tensor_bytes_from_rows(index, &fill) else {
            return Ok(None);
        };
        if !std::ptr::eq(src_tensor, t) {
            src_file.release(src_tensor);
        }
        match result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(i) => Err(LoraError::NonFiniteResult {
                path: file.path().to_path_buf(),
                tensor: t.name.clone(),
                dtype: ty.name().to_string(),
                index: i,
            }
            .into()),
        }
    }
}

impl TensorSource for LoraMergedModel {
    fn describe(&self) -> String {
        format!("{} (+ LoRA)", self.model.describe())
    }

    fn metadata(&self) -> &Metadata {
        self.model.metadata()
    }

    fn tensors(&self) -> &[SourceTensor] {
        self.model.tensors()
    }

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, SourceError> {
        match self
            .merged_tensor_bytes(index)
            .map_err(SourceError::produce)?
        {
            Some(bytes) => Ok(Cow::Owned(bytes)),
            None => self.model.tensor_bytes(index),
        }
    }
}

/// `convert MODEL_DIR --outtype f32|f16|bf16|q8_0|auto --lora …`: the GGUF `convert` writes for
/// the merged checkpoint, in one pass. Nothing is written at `out` unless everything succeeds.
pub fn convert_with_lora(
    model_dir: &Path,
    adapters: &[AdapterSpec],
    out: &Path,
    opts: &ConvertOptions,
    device: MergeDevice,
) -> Result<ConvertReport, PipelineError> {
    let run = || {
        let start = Instant::now();
        let source = LoraMergedModel::open(
            model_dir,
            &HfOptions {
                outtype: opts.outtype,
                model_name: opts.model_name.clone(),
            },
            adapters,
            device.clone(),
        )?;
        write_converted(source.model(), &source, out, start, &mut |_| {})
    };
    crate::threads::install(opts.threads, run)?
}
