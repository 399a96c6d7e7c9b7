//! Merge PEFT LoRA adapters into a Hugging Face safetensors checkpoint.
//!
//! The output directory is a drop-in replacement of the base: the same shard files with the
//! same tensors, dtypes and shapes (in each shard, tensors sorted by name, as Python's
//! `safetensors` writes them), the shard index and every side file (config, tokenizer,
//! generation config, …) copied unchanged. Targeted tensors follow the contract in
//! [`super::merge`]; replacement tensors (`modules_to_save`, trained biases) are converted to the
//! base tensor's dtype with one round-to-nearest-even; everything else is copied byte for byte.
//!
//! Files not copied: other weight files (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.h5`,
//! `*.msgpack`, `*.gguf`, `*.onnx`, and any `*.safetensors` that is not part of the checkpoint),
//! which would hold the unmerged weights, hidden files and subdirectories.
//!
//! Memory stays bounded: a tensor is merged a slab of rows at a time, and the pages of each
//! source tensor are released once it is written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::formats::atomic::AtomicDir;
use crate::formats::peft::{LoraKind, PeftAdapter};

use crate::formats::safetensors::{
    float_dtype_size, floats_to_f32, Checkpoint, Dtype, SafetensorsFile, SafetensorsWriter,
    StTensor,
};
use crate::quant::GgmlType;

use super::merge::{LowRankUpdate, MergeDevice};
use super::{thread_pool, LoraError};

/// f32 values merged per slab: 16 Mi elements, 64 MiB.
const SLAB_ELEMENTS: usize = 1 << 24;

/// One base tensor's merge, ready to run (see [`PlannedMerge::prepare_tensor`]).
pub(crate) struct TensorMerge<'a> {
    /// Where the starting values are read: the base tensor or a full replacement.
    pub src_file: &'a SafetensorsFile,
    pub src_tensor: &'a StTensor,
    /// The updates to fold in, in order (empty for a pure replacement).
    pub updates: Vec<LowRankUpdate>,
    /// The base tensor's dtype, which the merged values are rounded to once.
    pub ty: GgmlType,
}

/// One adapter to merge, with the user's extra scale (1 = the adapter as trained).
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterSpec {
    /// The PEFT adapter directory.
    pub dir: PathBuf,
    /// Multiplies the adapter's alpha/r scale (1 = as trained).
    pub scale: f32,
}

impl AdapterSpec {
    /// An adapter spec for `dir` at `scale`.
    pub fn new(dir: impl Into<PathBuf>, scale: f32) -> AdapterSpec {
        AdapterSpec {
            dir: dir.into(),
            scale,
        }
    }

    /// Parse the command-line form `ADAPTER_DIR[:SCALE]`. The text after the last `:` is a
    /// scale only if it parses as a number; otherwise the whole text is the directory.
    pub fn parse(spec: &str) -> Result<AdapterSpec, LoraError> {
        if let Some((dir, tail)) = spec.rsplit_once(':') {
            if let Ok(scale) = tail.trim().parse::<f32>() {
                if !scale.is_finite() {
                    return Err(LoraError::BadAdapterSpec {
                        spec: spec.to_string(),
                        what: format!("scale {tail} is not a finite number"),
                    });
                }
                if dir.is_empty() {
                    return Err(LoraError::BadAdapterSpec {
                        spec: spec.to_string(),
                        what: "no adapter directory before the scale".into(),
                    });
                }
                return Ok(AdapterSpec::new(dir, scale));
            }
        }
        if spec.is_empty() {
            return Err(LoraError::BadAdapterSpec {
                spec: String::new(),
                what: "empty adapter path".into(),
            });
        }
        Ok(AdapterSpec::new(spec, 1.0))
    }
}

impl FromStr for AdapterSpec {
    type Err = LoraError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AdapterSpec::parse(s)
    }
}

/// Knobs of a merge; none changes the output bytes.
#[derive(Clone, Debug, Default)]
pub struct MergeOptions {
    /// Worker threads (0 = every core).
    pub threads: usize,
    /// Where the merge arithmetic runs (the CPU, or a GPU that passed its merge self-check).
    pub device: MergeDevice,
}

/// What a merge did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergeReport {
    /// Tensors that received at least one LoRA update.
    pub merged: usize,
    /// Tensors replaced by an adapter's full tensor (and not updated afterwards).
    pub replaced: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
    /// Files written in the output directory (weights and side files), by name.
    pub files: Vec<String>,
}

/// One step applied to a base tensor, in adapter order (indices into the loaded adapters, so a
/// plan can live beside them).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    /// Fold module `module` of adapter `adapter` in.
    Update { adapter: usize, module: usize },
    /// Replace the tensor with full tensor `full` of adapter `adapter`.
    Replace { adapter: usize, full: usize },
}

/// PEFT adapters opened, proven to fit a base checkpoint, and planned per base tensor: what
/// `merge-lora` and `convert --lora` share, so both merge every tensor the same way.
pub(crate) struct PlannedMerge {
    adapters: Vec<PeftAdapter>,
    specs: Vec<AdapterSpec>,
    /// Steps per base tensor name.
    steps: HashMap<String, Vec<Step>>,
}

impl PlannedMerge {
    /// Open every adapter, check it against `base`, and plan the steps of each base tensor.
    /// Fails (before anything is written) on any adapter that does not fit or any targeted
    /// tensor that is not F32, F16 or BF16.
    pub(crate) fn open(
        base: &Checkpoint,
        specs: &[AdapterSpec],
    ) -> Result<PlannedMerge, LoraError> {
        let adapters = specs
            .iter()
            .map(|s| PeftAdapter::open(&s.dir))
            .collect::<Result<Vec<_>, _>>()?;
        let shape_of = |name: &str| base.find(name).map(|l| base.tensor(l).shape.clone());
        for a in &adapters {
            a.check_base(&shape_of)?;
        }
        let mut steps: HashMap<String, Vec<Step>> = HashMap::new();
        for (ai, a) in adapters.iter().enumerate() {
            // An adapter's replacements come before its updates: a module trained in full and
            // also given LoRA factors gets the factors on top of its new weights.
            for (fi, f) in a.full_tensors.iter().enumerate() {
                steps
                    .entry(f.base_name.clone())
                    .or_default()
                    .push(Step::Replace {
                        adapter: ai,
                        full: fi,
                    });
            }
            for (mi, m) in a.modules.iter().enumerate() {
                let name = base
                    .find(&m.base_tensor())
                    .map(|l| base.tensor(l).name.clone())
                    .expect("check_base found it");
                steps.entry(name).or_default().push(Step::Update {
                    adapter: ai,
                    module: mi,
                });
            }
        }
        for loc in base.order() {
            let t = base.tensor(*loc);
            if steps.contains_key(t.name.as_str()) && merge_type(t.dtype).is_none() {
                return Err(LoraError::UnsupportedDtype {
                    path: base.file(*loc).path().to_path_buf(),
                    tensor: t.name.clone(),
                    dtype: format!("{:?}", t.dtype),
                });
            }
        }
        Ok(PlannedMerge {
            adapters,
            specs: specs.to_vec(),
            steps,
        })
    }

    /// The steps of base tensor `name`, if any adapter changes it.
    pub(crate) fn steps(&self, name: &str) -> Option<&[Step]> {
        self.steps.get(name).map(|s| s.as_slice())
    }

    /// What merging base tensor `t` of `file` takes: where the starting values come from (the
    /// base, or the last full replacement), the updates after it (loaded as f32, in the
    /// kernel's orientation), and the type the result is rounded to (`t`'s dtype).
    pub(crate) fn prepare_tensor<'a>(
        &'a self,
        file: &'a SafetensorsFile,
        t: &'a StTensor,
    ) -> Result<TensorMerge<'a>, LoraError> {
        let steps = self.steps(&t.name).unwrap_or(&[]);
        let ty = merge_type(t.dtype).ok_or_else(|| LoraError::UnsupportedDtype {
            path: file.path().to_path_buf(),
            tensor: t.name.clone(),
            dtype: format!("{:?}", t.dtype),
        })?;
        // The last replacement is the starting point; only updates after it count.
        let start = steps
            .iter()
            .rposition(|s| matches!(s, Step::Replace { .. }))
            .unwrap_or(0);
        let (src_file, src_tensor) = match steps.get(start) {
            Some(Step::Replace { adapter, full }) => {
                let ad = &self.adapters[*adapter];
                (ad.file(), &ad.full_tensors[*full].tensor)
            }
            _ => (file, t),
        };
        let mut updates = Vec::new();
        for s in steps.iter().skip(start) {
            if let Step::Update { adapter, module } = *s {
                let ad = &self.adapters[adapter];
                let module = &ad.modules[module];
                let a = ad.read_f32(&module.a)?;
                let b = ad.read_f32(&module.b)?;
                let scale = ad.scale(module, self.specs[adapter].scale as f64)?;
                let transposed = module.kind == LoraKind::Embedding || ad.config.fan_in_fan_out;
                updates.push(if transposed {
                    LowRankUpdate::in_out(&b, &a, module.rank, scale)
                } else {
                    LowRankUpdate::out_in(b, a, module.rank, scale)
                });
            }
        }
        src_file.check_float(src_tensor)?;
        Ok(TensorMerge {
            src_file,
            src_tensor,
            updates,
            ty,
        })
    }

    /// Merge the steps into base tensor `t` of `file`, handing the result (in `t`'s dtype) to
    /// `sink` a slab of rows at a time. `out_path` is the file errors name. Returns whether any
    /// LoRA update was applied (false: a pure replacement).
    pub(crate) fn merge_tensor(
        &self,
        file: &SafetensorsFile,
        t: &StTensor,
        device: &MergeDevice,
        out_path: &Path,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), LoraError>,
    ) -> Result<bool, LoraError> {
        let TensorMerge {
            src_file,
            src_tensor,
            updates,
            ty,
        } = self.prepare_tensor(file, t)?;
        let update_refs: Vec<&LowRankUpdate> = updates.iter().collect();
        let n = t.n_elements();
        // Updates exist only for 2-D tensors; a replacement of any shape is one long row.
        let cols = if updates.is_empty() {
            n.max(1)
        } else {
            t.shape[1]
        };
        let rows_per_slab = (SLAB_ELEMENTS / cols).max(1);
        let total_rows = n / cols;
        let src_dtype = src_tensor.dtype;
        let src_row = cols * float_dtype_size(src_dtype).expect("checked float");
        let src_data = src_file.data(src_tensor);
        let decode = move |b: &[u8], o: &mut [f32]| floats_to_f32(src_dtype, b, o);
        let mut bytes = vec![0u8; rows_per_slab.min(total_rows) * cols * ty.type_size()];
        let mut row = 0;
        while row < total_rows {
            let nrows = rows_per_slab.min(total_rows - row);
            let out = &mut bytes[..nrows * cols * ty.type_size()];
            device
                .merge_decoded(
                    ty,
                    &src_data[row * src_row..(row + nrows) * src_row],
                    src_row,
                    &decode,
                    cols,
                    row,
                    &update_refs,
                    out,
                )
                .map_err(|e| e.into_lora(out_path, &t.name, ty, row * cols))?;
            sink(out)?;
            row += nrows;
        }
        if !std::ptr::eq(src_tensor, t) {
            src_file.release(src_tensor);
        }
        Ok(!updates.is_empty())
    }
}

/// Merge `adapters`, in order, into the checkpoint in `base_dir`, writing a complete checkpoint
/// to `out_dir` (which must not exist or be empty). On any error nothing is left behind.
pub fn merge_lora_hf(
    base_dir: &Path,
    adapters: &[AdapterSpec],
    out_dir: &Path,
    options: &MergeOptions,
) -> Result<MergeReport, LoraError> {
    if out_dir.exists() {
        let mut entries = std::fs::read_dir(out_dir).map_err(LoraError::io(out_dir))?;
        if entries.next().is_some() {
            return Err(LoraError::OutputExists {
                path: out_dir.to_path_buf(),
            });
        }
    }
    let base = Checkpoint::open_dir(base_dir)?;
    let plan = PlannedMerge::open(&base, adapters)?;

    let staging = AtomicDir::create(out_dir).map_err(LoraError::io(out_dir))?;
    let pool = thread_pool(options.threads)?;
    let mut report = MergeReport::default();
    for file in base.files() {
        let name = file
            .path()
            .file_name()
            .expect("a checkpoint file has a name")
            .to_os_string();
        let out_path = staging.path().join(&name);
        let specs: Vec<(String, Dtype, Vec<usize>)> = file
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
            .collect();
        let metadata: Option<BTreeMap<String, String>> = file
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let mut writer = SafetensorsWriter::create(&out_path, &specs, metadata.as_ref())?;
        for t in file.tensors() {
            if plan.steps(&t.name).is_none() {
                writer.write_tensor(file.data(t))?;
                report.copied += 1;
            } else {
                // Errors name the file as it will be, not its staging name.
                let final_path = out_dir.join(&name);
                let merged = pool.install(|| {
                    plan.merge_tensor(file, t, &options.device, &final_path, &mut |b| {
                        Ok(writer.write_part(b)?)
                    })
                })?;
                if merged {
                    report.merged += 1;
                } else {
                    report.replaced += 1;
                }
            }
            file.release(t);
        }
        writer.finish()?;
        report.files.push(name.to_string_lossy().into_owned());
    }
    report
        .files
        .extend(copy_side_files(base_dir, &base, staging.path())?);
    staging.commit().map_err(LoraError::io(out_dir))?;
    Ok(report)
}

/// The merge output type of a safetensors dtype, if it is a float we merge into.
fn merge_type(d: Dtype) -> Option<GgmlType> {
    match d {
        Dtype::F32 => Some(GgmlType::F32),
        Dtype::F16 => Some(GgmlType::F16),
        Dtype::BF16 => Some(GgmlType::BF16),
        _ => None,
    }
}

/// Weight formats never copied: they would hold unmerged weights.
const WEIGHT_EXTENSIONS: &[&str] = &[
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "gguf",
    "onnx",
];

/// Copy the base directory's side files (config, tokenizer, shard index, …) into `dest`.
fn copy_side_files(
    base_dir: &Path,
    base: &Checkpoint,
    dest: &Path,
) -> Result<Vec<String>, LoraError> {
    let weights: Vec<&std::ffi::OsStr> = base
        .files()
        .iter()
        .filter_map(|f| f.path().file_name())
        .collect();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(base_dir).map_err(LoraError::io(base_dir))? {
        let entry = entry.map_err(LoraError::io(base_dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(text) = name.to_str() else { continue };
        let ext = Path::new(text)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        if text.starts_with('.')
            || !path.is_file()
            || weights.contains(&name.as_os_str())
            || WEIGHT_EXTENSIONS.contains(&ext)
        {
            continue;
        }
        std::fs::copy(&path, dest.join(&name)).map_err(LoraError::io(&path))?;
        names.push(text.to_string());
    }
    names.sort();
    Ok(names)
}
