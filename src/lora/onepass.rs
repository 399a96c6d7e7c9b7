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

use anyhow::Context;

use crate::formats::gguf::Metadata;
use crate::model::hf::{HfModel, HfOptions};
use crate::pipeline::convert::{write_converted, ConvertOptions, ConvertReport};
use crate::pipeline::source::{SourceTensor, TensorSource};

use super::hf::{AdapterSpec, PlannedMerge};
use super::merge::MergeDevice;

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
    ) -> anyhow::Result<LoraMergedModel> {
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

    fn merged_tensor_bytes(&self, index: usize) -> anyhow::Result<Option<Vec<u8>>> {
        let name = self.model.source_name(index);
        if self.plan.steps(name).is_none() {
            return Ok(None);
        }
        let ck = self.model.checkpoint();
        let loc = ck
            .find(name)
            .expect("a converted tensor comes from the checkpoint");
        let (file, t) = (ck.file(loc), ck.tensor(loc));
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

    fn tensor_bytes(&self, index: usize) -> anyhow::Result<Cow<'_, [u8]>> {
        match self.merged_tensor_bytes(index)? {
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
) -> anyhow::Result<ConvertReport> {
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
    match opts.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .context("cannot start the worker threads")?
            .install(run),
        None => run(),
    }
}
