//! `qforge convert`: a Hugging Face checkpoint directory → GGUF, byte-identical with
//! llama.cpp's `convert_hf_to_gguf.py --outtype <t>`. Tensors stream one at a time from the
//! memory-mapped safetensors into the GGUF writer, so memory stays near one tensor's size.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::convert::checkpoint::{HfModel, HfOptions};
use crate::convert::encode::encoded_size;
pub use crate::convert::encode::OutType;
use crate::formats::gguf::GgufWriter;
use crate::formats::tensor_source::TensorSource;
use crate::pipeline::error::PipelineError;
use crate::quant::finite_output::first_non_finite;

/// Options of [`convert`].
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// `--outtype` (default `auto`: bf16 for a BF16 checkpoint, else f16).
    pub outtype: OutType,
    /// Overrides `general.name` (the script's `--model-name`).
    pub model_name: Option<String>,
    /// Worker threads for tensor conversion (`None`: rayon's default). The output does not
    /// depend on it.
    pub threads: Option<usize>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            outtype: OutType::Auto,
            model_name: None,
            threads: None,
        }
    }
}

/// What [`convert`] wrote.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    /// The file written.
    pub output: PathBuf,
    /// The outtype after `auto` was resolved.
    pub outtype: OutType,
    /// `general.architecture`.
    pub architecture: String,
    /// Tensors written.
    pub n_tensors: usize,
    /// Bytes of tensor data written (without padding).
    pub tensor_bytes: u64,
    /// Wall time of the job.
    pub seconds: f64,
}

/// How far a conversion is, for a progress display.
#[derive(Clone, Copy, Debug)]
pub enum ConvertProgress<'a> {
    /// The checkpoint is planned; `total_bytes` of tensor data will be written.
    Start {
        /// The file being written.
        output: &'a Path,
        /// Tensors to write.
        n_tensors: usize,
        /// Bytes of tensor data to write.
        total_bytes: u64,
    },
    /// Tensor `index` (GGUF name `name`, `bytes` long) is written.
    Tensor {
        /// Position in the output.
        index: usize,
        /// GGUF tensor name.
        name: &'a str,
        /// Bytes written for it.
        bytes: u64,
    },
}

/// Convert `model_dir` to GGUF at `out`. If `out` is an existing directory, the file is named
/// as the script names it (`<Name>-<Size>-<OUTTYPE>.gguf`) inside it. Nothing is written at
/// `out` unless the whole conversion succeeds.
pub fn convert(
    model_dir: &Path,
    out: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertReport, PipelineError> {
    convert_with_progress(model_dir, out, opts, &mut |_| {})
}

/// [`convert`], reporting each step to `progress` (called on this thread, in order).
pub fn convert_with_progress(
    model_dir: &Path,
    out: &Path,
    opts: &ConvertOptions,
    progress: &mut (dyn FnMut(ConvertProgress<'_>) + Send),
) -> Result<ConvertReport, PipelineError> {
    crate::threads::install(opts.threads, || {
        convert_in_pool(model_dir, out, opts, progress)
    })?
}

fn convert_in_pool(
    model_dir: &Path,
    out: &Path,
    opts: &ConvertOptions,
    progress: &mut (dyn FnMut(ConvertProgress<'_>) + Send),
) -> Result<ConvertReport, PipelineError> {
    let start = Instant::now();
    let model = HfModel::open(
        model_dir,
        &HfOptions {
            outtype: opts.outtype,
            model_name: opts.model_name.clone(),
        },
    )?;
    write_converted(&model, &model, out, start, progress)
}

/// Write `source` — `model` itself, or a source with exactly `model`'s tensors (names, types,
/// shapes) such as `convert --lora`'s merging wrapper — as the GGUF `convert` writes, on the
/// current rayon pool. `start` is when the job began (for the report).
pub fn write_converted(
    model: &HfModel,
    source: &dyn TensorSource,
    out: &Path,
    start: Instant,
    progress: &mut (dyn FnMut(ConvertProgress<'_>) + Send),
) -> Result<ConvertReport, PipelineError> {
    let model_dir = model.dir();
    let output = if out.is_dir() {
        out.join(model.default_file_name())
    } else {
        out.to_path_buf()
    };
    let specs: Vec<_> = source
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let mut writer = GgufWriter::create(&output, source.metadata(), &specs)?;
    progress(ConvertProgress::Start {
        output: &output,
        n_tensors: specs.len(),
        total_bytes: specs
            .iter()
            .map(|(_, ty, ne)| encoded_size(*ty, ne.iter().product::<u64>() as usize) as u64)
            .sum(),
    });
    // Tensor i+1 is produced (in parallel) while a writer thread writes tensor i: the write
    // is one thread in the kernel, so overlapping hides most of the conversion (and of a LoRA
    // merge) behind it. The channel holds one tensor, so at most three are in memory.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Cow<'_, [u8]>>(1);
    let specs_ref = &specs;
    let output_ref = &output;
    let (writer_result, produce_error) = std::thread::scope(|scope| {
        let writer_thread = scope.spawn(move || -> Result<(GgufWriter, u64), PipelineError> {
            let mut tensor_bytes = 0u64;
            for (i, bytes) in rx.into_iter().enumerate() {
                // Finite input can overflow the output type (1e6 in f16, a Q8_0 scale).
                if let Some(bad) = first_non_finite(specs_ref[i].1, &bytes) {
                    return Err(PipelineError::NonFiniteOutput {
                        output: output_ref.display().to_string(),
                        tensor: specs_ref[i].0.clone(),
                        value: bad.to_string(),
                        ty: specs_ref[i].1.name().to_string(),
                    });
                }
                writer.write_tensor(&bytes)?;
                tensor_bytes += bytes.len() as u64;
                progress(ConvertProgress::Tensor {
                    index: i,
                    name: &specs_ref[i].0,
                    bytes: bytes.len() as u64,
                });
            }
            Ok((writer, tensor_bytes))
        });
        let mut produce_error = None;
        for i in 0..specs_ref.len() {
            match source.tensor_bytes(i) {
                Ok(bytes) => {
                    if tx.send(bytes).is_err() {
                        break; // the writer failed; its error is the one to report
                    }
                }
                Err(e) => {
                    produce_error = Some(PipelineError::ConvertTensor {
                        dir: model_dir.to_path_buf(),
                        tensor: model.source_name(i).to_string(),
                        source: e,
                    });
                    break;
                }
            }
        }
        drop(tx);
        let joined = writer_thread
            .join()
            .expect("the GGUF writer thread panicked");
        (joined, produce_error)
    });
    // On any error the writer is dropped here, which removes its temporary file.
    if let Some(e) = produce_error {
        return Err(e);
    }
    let (writer, tensor_bytes) = writer_result?;
    writer.finish()?;
    Ok(ConvertReport {
        output,
        outtype: model.outtype(),
        architecture: model.arch().gguf_arch.to_string(),
        n_tensors: specs.len(),
        tensor_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}
