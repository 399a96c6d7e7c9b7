//! `qforge quantize`: llama-quantize's job (src/llama-quant.cpp `llama_model_quantize_impl`),
//! streamed tensor by tensor from a [`TensorSource`] into a [`GgufWriter`].
//!
//! What we reproduce: key order (input keys, then `general.quantization_version` and
//! `general.file_type` re-set, `split.*` removed, then overrides, then `quantize.imatrix.*`), the
//! sorted tensor order, the per-tensor type plan, alignment 32. What we do better: every check
//! runs before the output file exists, output goes through a temporary file, and a tensor is
//! processed in bounded slabs of rows.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::pipeline::error::PipelineError;

/// What the quantize job's functions return.
type Result<T, E = PipelineError> = std::result::Result<T, E>;
use rayon::prelude::*;

use crate::formats::gguf::{trim_dims, GgufWriter, Metadata, Value};
use crate::formats::tensor_source::TensorSource;
use crate::ggml::ftype::{FileType, QuantTarget};
use crate::pipeline::backend::{Backend, CpuBackend};
use crate::pipeline::override_check;
use crate::quant::rules::{self, ModelInfo, RuleError, TypeOptions, MAX_LAYERS};
use crate::quant::{self, validate, GgmlType};

/// Rows are converted in slabs of about this many f32 bytes, so a huge embedding never needs
/// its whole f32 copy in memory.
const SLAB_BYTES: usize = 64 << 20;

/// Everything `qforge quantize` was asked to do.
#[derive(Clone, Debug)]
pub struct QuantizeJob {
    /// The GGUF file to write.
    pub output: PathBuf,
    /// The file type to quantize to, or a plain copy.
    pub target: QuantTarget,
    /// llama-quantize's per-tensor type options (`--output-tensor-type`, `--pure`, …).
    pub type_options: TypeOptions,
    /// `--allow-requantize`: quantized input tensors may be quantized again.
    pub allow_requantize: bool,
    /// `--imatrix`, read and prepared.
    pub imatrix: Option<ImatrixInput>,
    /// `--override-kv` keys and values, written into the output's metadata.
    pub overrides: Vec<(String, Value)>,
}

/// An importance matrix as the pipeline uses it (the file formats live in `formats::imatrix`,
/// which also builds the `quantize.imatrix.*` keys).
#[derive(Clone, Debug, Default)]
pub struct ImatrixInput {
    /// Per-tensor weights (one per column, experts back to back), by tensor name.
    pub weights: std::collections::BTreeMap<String, Vec<f32>>,
    /// The `quantize.imatrix.*` keys, in the order llama-quantize sets them.
    pub kv: Vec<(String, Value)>,
}

/// What happened to one tensor.
#[derive(Clone, Debug)]
pub struct TensorReport {
    /// GGUF tensor name in the output.
    pub name: String,
    /// ggml shape.
    pub ne: Vec<u64>,
    /// Type in the source.
    pub from: GgmlType,
    /// Type written.
    pub to: GgmlType,
    /// Bytes in the source.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Whether the importance matrix weighted its quantization.
    pub used_imatrix: bool,
}

/// What a quantize job did, tensor by tensor and in total.
#[derive(Clone, Debug, Default)]
pub struct QuantizeReport {
    /// Every output tensor, in file order.
    pub tensors: Vec<TensorReport>,
    /// Elements over all tensors.
    pub n_elements: u64,
    /// Tensor bytes read.
    pub bytes_in: u64,
    /// Tensor bytes written.
    pub bytes_out: u64,
    /// Wall time of the job.
    pub seconds: f64,
    /// Tensors whose rows do not fit the chosen type, given a fallback type (llama-quantize's count).
    pub n_fallback: usize,
}

/// Parse `KEY=int:V|float:V|bool:true|false|str:V` as llama.cpp's `string_parse_kv_override`,
/// and convert it to the value llama-quantize writes (ints as u32 of the absolute value, floats
/// as f32). Unlike `atol`/`atof`, a malformed number is an error.
pub fn parse_override(s: &str) -> Result<(String, Value)> {
    let (key, rest) = s
        .split_once('=')
        .ok_or_else(|| PipelineError::MalformedOverride {
            arg: s.to_string(),
            what: "expected KEY=TYPE:VALUE",
        })?;
    if key.len() >= 128 {
        return Err(PipelineError::MalformedOverride {
            arg: s.to_string(),
            what: "key longer than 127 bytes",
        });
    }
    let value = if let Some(v) = rest.strip_prefix("int:") {
        let i: i64 = v
            .trim()
            .parse()
            .map_err(|source| PipelineError::OverrideInt {
                arg: s.to_string(),
                source,
            })?;
        Value::U32(override_check::check_int(s, i)?)
    } else if let Some(v) = rest.strip_prefix("float:") {
        let f: f64 = v
            .trim()
            .parse()
            .map_err(|source| PipelineError::OverrideFloat {
                arg: s.to_string(),
                source,
            })?;
        Value::F32(f as f32)
    } else if let Some(v) = rest.strip_prefix("bool:") {
        match v {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(PipelineError::OverrideBool { arg: s.to_string() }),
        }
    } else if let Some(v) = rest.strip_prefix("str:") {
        if v.len() > 127 {
            return Err(PipelineError::MalformedOverride {
                arg: s.to_string(),
                what: "value cannot exceed 127 bytes",
            });
        }
        Value::Str(v.to_string())
    } else {
        return Err(PipelineError::OverrideType { arg: s.to_string() });
    };
    override_check::check_override(s, key, &value)?;
    Ok((key.to_string(), value))
}

/// The file type llama.cpp's loader reports for a model: `general.file_type`, else guessed from
/// the most common tensor type (flagged with LLAMA_FTYPE_GUESSED = 1024).
fn input_file_type(source: &dyn TensorSource, order: &[usize]) -> u32 {
    if let Some(v) = source.metadata().get_u64("general.file_type") {
        return v as u32;
    }
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    let (mut best, mut best_n) = (GgmlType::F32, 0);
    for &i in order {
        let ty = source.tensors()[i].ty;
        let n = match counts.iter_mut().find(|(t, _)| *t == ty) {
            Some(e) => {
                e.1 += 1;
                e.1
            }
            None => {
                counts.push((ty, 1));
                1
            }
        };
        if n > best_n {
            best_n = n;
            best = ty;
        }
    }
    let guessed = FileType::guess_from_type(best)
        .map(FileType::id)
        .unwrap_or(0);
    guessed | 1024
}

/// The output metadata, in llama-quantize's key order.
fn output_metadata(
    source: &dyn TensorSource,
    job: &QuantizeJob,
    file_type: u32,
    block_count: Option<u32>,
    arch: &str,
) -> Metadata {
    let mut md = source.metadata().clone();
    md.set("general.quantization_version", Value::U32(2));
    md.set("general.file_type", Value::U32(file_type));
    md.remove("split.no");
    md.remove("split.count");
    md.remove("split.tensors.count");
    for (k, v) in &job.overrides {
        md.set(k, v.clone());
    }
    if let Some(im) = &job.imatrix {
        for (k, v) in &im.kv {
            md.set(k, v.clone());
        }
    }
    // --prune-layers re-sets the block count after everything else.
    if let Some(n) = block_count {
        md.set(&format!("{arch}.block_count"), Value::U32(n));
    }
    md
}

/// Run a quantize job on `source` with `backend`, returning what was done. Nothing is written
/// under `job.output` unless every tensor succeeded.
pub fn quantize(
    source: &dyn TensorSource,
    job: &QuantizeJob,
    backend: &Backend,
) -> Result<QuantizeReport> {
    let start = Instant::now();
    let planned = plan_job(source, job)?;
    write_planned(source, job, backend, &planned, start)
}

/// A job's plan before anything is written: the rules' type per tensor (in output order) and
/// the output metadata, whose encoded size does not depend on the tensor types.
#[derive(Clone, Debug)]
pub(crate) struct PlannedJob {
    /// The source as error messages name it.
    pub src_name: String,
    /// llama-quantize's plan (types may be replaced before writing).
    pub plan: rules::QuantPlan,
    /// The output's keys, in llama-quantize's order.
    pub metadata: Metadata,
}

/// Read the model's hyper-parameters, plan every tensor's type with llama-quantize's rules and
/// build the output metadata; nothing is read but the header, nothing is written.
pub(crate) fn plan_job(source: &dyn TensorSource, job: &QuantizeJob) -> Result<PlannedJob> {
    let src_name = source.describe();
    let tensors = source.tensors();
    let model =
        model_info_from_metadata(source.metadata()).map_err(|detail| PipelineError::Rules {
            source_name: src_name.clone(),
            detail,
        })?;
    check_prune_layers(&src_name, &job.type_options.prune_layers, model.n_layer)?;

    // Plan: order, names after pruning, types.
    let input: Vec<(String, GgmlType, Vec<u64>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let opts = TypeOptions {
        has_imatrix: job
            .imatrix
            .as_ref()
            .is_some_and(|im| !im.weights.is_empty()),
        ..job.type_options.clone()
    };
    let full_plan = rules::plan(&model, &input, &opts).map_err(|detail| PipelineError::Rules {
        source_name: src_name.clone(),
        detail,
    })?;

    let file_type = match job.target {
        QuantTarget::Mix(f) => f.id(),
        QuantTarget::Copy => {
            let order: Vec<usize> = full_plan.tensors.iter().map(|p| p.source_index).collect();
            input_file_type(source, &order)
        }
    };
    override_check::check_against_source(&src_name, source.metadata(), &job.overrides)?;
    let metadata = output_metadata(source, job, file_type, full_plan.block_count, &model.arch);
    Ok(PlannedJob {
        src_name,
        plan: full_plan,
        metadata,
    })
}

/// The imatrix entry of a planned tensor, if the job has one of the right length. An entry of
/// the wrong length is an error, except for token embeddings (llama-quantize ignores those).
pub(crate) fn imatrix_row<'a>(
    src_name: &str,
    job: &'a QuantizeJob,
    p: &rules::TensorPlan,
) -> Result<Option<&'a [f32]>> {
    let Some(im) = &job.imatrix else {
        return Ok(None);
    };
    let Some(w) = im.weights.get(&p.imatrix_name) else {
        return Ok(None);
    };
    let expect = p.ne[0] * p.ne.get(2).copied().unwrap_or(1);
    if w.len() as u64 == expect {
        Ok(Some(w.as_slice()))
    } else if rules::is_token_embd(&p.name) {
        Ok(None)
    } else {
        Err(PipelineError::tensor(
            src_name,
            &p.name,
            format!(
                "imatrix entry has {} values, the tensor needs {expect}",
                w.len()
            ),
        ))
    }
}

/// Check a plan the way every refusal must happen before the output file exists, and return
/// the imatrix rows each tensor is quantized with.
fn check_plan<'a>(
    source: &dyn TensorSource,
    job: &'a QuantizeJob,
    planned: &PlannedJob,
) -> Result<Vec<Option<&'a [f32]>>> {
    let src_name = &planned.src_name;
    let tensors = source.tensors();
    let plan = &planned.plan.tensors;
    let mut imatrix_rows: Vec<Option<&[f32]>> = Vec::with_capacity(plan.len());
    for p in plan {
        let t = &tensors[p.source_index];
        let mut qw = None;
        if p.quantize {
            if t.ty.is_quantized() && !job.allow_requantize {
                return Err(PipelineError::tensor(
                    src_name,
                    &t.name,
                    format!(
                        "requantizing from type {} is disabled (use --allow-requantize)",
                        t.ty
                    ),
                ));
            }
            if quant::quantizer(p.new_type).is_none() {
                return Err(PipelineError::tensor(
                    src_name,
                    &p.name,
                    format!("quantizing to {} is not supported yet", p.new_type),
                ));
            }
            if t.ty != GgmlType::F32 && quant::dequantizer(t.ty).is_none() {
                return Err(PipelineError::tensor(
                    src_name,
                    &t.name,
                    format!("reading {} tensors is not supported yet", t.ty),
                ));
            }
            qw = imatrix_row(src_name, job, p)?;
            // llama-quantize asks for an imatrix by its rules; IQ2_XXS/IQ2_XS/IQ1_S cannot run
            // without one wherever they are used (llama.cpp aborts on, e.g., token_embd forced
            // to them).
            if qw.is_none() && (p.requires_imatrix || quant::needs_weights(p.new_type)) {
                return Err(PipelineError::tensor(
                    src_name,
                    &p.name,
                    format!(
                        "quantizing to {} requires an importance matrix (--imatrix)",
                        p.new_type
                    ),
                ));
            }
        }
        imatrix_rows.push(qw);
    }
    // An imatrix made for another model matches nothing: quantizing "with" it would silently
    // be quantizing without it.
    if let Some(im) = job.imatrix.as_ref().filter(|im| !im.weights.is_empty()) {
        let matched = plan
            .iter()
            .any(|p| p.quantize && im.weights.contains_key(&p.imatrix_name));
        if !matched {
            return Err(PipelineError::ImatrixMatchesNothing {
                source_name: src_name.clone(),
                example: im.weights.keys().next().cloned().unwrap_or_default(),
            });
        }
    }
    Ok(imatrix_rows)
}

/// The tensor infos of a plan as the writer takes them (name, type, shape), in file order.
pub(crate) fn planned_infos(
    source: &dyn TensorSource,
    plan: &rules::QuantPlan,
) -> Vec<(String, GgmlType, Vec<u64>)> {
    let tensors = source.tensors();
    plan.tensors
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.new_type,
                trim_dims(&tensors[p.source_index].ne),
            )
        })
        .collect()
}

/// Check `planned`, then (unless a dry run) quantize and write it. `start` is when the job
/// began (for the report's wall time).
pub(crate) fn write_planned(
    source: &dyn TensorSource,
    job: &QuantizeJob,
    backend: &Backend,
    planned: &PlannedJob,
    start: Instant,
) -> Result<QuantizeReport> {
    let src_name = planned.src_name.clone();
    let tensors = source.tensors();
    let full_plan = &planned.plan;
    let plan = &full_plan.tensors;
    let metadata = &planned.metadata;
    let imatrix_rows = check_plan(source, job, planned)?;

    let mut report = QuantizeReport {
        n_fallback: full_plan.n_fallback,
        ..Default::default()
    };
    for p in plan {
        let t = &tensors[p.source_index];
        let bytes_in = t.ty.row_size(t.ne[0]).unwrap_or(0) * t.ne.iter().skip(1).product::<u64>();
        let bytes_out =
            p.new_type.row_size(t.ne[0]).unwrap_or(0) * t.ne.iter().skip(1).product::<u64>();
        report.n_elements += t.ne.iter().product::<u64>();
        report.bytes_in += bytes_in;
        report.bytes_out += bytes_out;
        report.tensors.push(TensorReport {
            name: p.name.clone(),
            ne: t.ne.clone(),
            from: t.ty,
            to: p.new_type,
            bytes_in,
            bytes_out,
            used_imatrix: false,
        });
    }
    if job.type_options.dry_run {
        report.seconds = start.elapsed().as_secs_f64();
        return Ok(report);
    }

    // llama-quantize writes each tensor's ggml dimension count, which drops trailing 1s: the
    // converter's [n_embd, 1] shared-expert gate comes out 1-D.
    let infos = planned_infos(source, full_plan);
    let mut writer = GgufWriter::create(&job.output, metadata, &infos)?;
    for (i, p) in plan.iter().enumerate() {
        let t = &tensors[p.source_index];
        let data =
            source
                .tensor_bytes(p.source_index)
                .map_err(|source| PipelineError::ReadTensor {
                    source_name: src_name.clone(),
                    tensor: t.name.clone(),
                    source,
                })?;
        let n_per_row = t.ne[0] as usize;
        if !p.quantize {
            // The loader validates every tensor it reads (check_tensors): refuse NaN/Inf input.
            let row = t.ty.row_size(t.ne[0]).unwrap() as usize;
            for (r, chunk) in data.chunks(row.max(1)).enumerate() {
                validate::validate_row(t.ty, chunk).map_err(|e| {
                    PipelineError::tensor(&src_name, &t.name, format!("row {r}: {e}"))
                })?;
            }
            writer.write_tensor(&data)?;
            drop(data);
            source.release(p.source_index);
            continue;
        }
        report.tensors[i].used_imatrix = imatrix_rows[i].is_some();
        convert_tensor(
            &src_name,
            t.ty,
            &p.name,
            p.new_type,
            n_per_row,
            t.ne.get(1).copied().unwrap_or(1) as usize,
            &data,
            imatrix_rows[i],
            backend,
            &mut writer,
        )?;
        writer.end_tensor()?;
        drop(data);
        source.release(p.source_index);
    }
    writer.finish()?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Dequantize (if needed), quantize and write one tensor in slabs of rows.
#[allow(clippy::too_many_arguments)]
fn convert_tensor(
    src_name: &str,
    from: GgmlType,
    name: &str,
    to: GgmlType,
    n_per_row: usize,
    rows_per_expert: usize,
    data: &[u8],
    qw_all: Option<&[f32]>,
    backend: &Backend,
    writer: &mut GgufWriter,
) -> Result<()> {
    let row_in = from.row_size(n_per_row as u64).unwrap() as usize;
    let row_out = to.row_size(n_per_row as u64).unwrap() as usize;
    let n_rows = data.len() / row_in;
    let slab_rows = (SLAB_BYTES / (n_per_row * 4)).clamp(1, n_rows.max(1));
    let cpu = backend.cpu_side();
    // Expert tensors (3-D) use the imatrix slice of their expert.
    let qw_of = |row: usize| {
        qw_all.map(|w| {
            let e = row / rows_per_expert.max(1);
            &w[e * n_per_row..(e + 1) * n_per_row]
        })
    };
    let mut f32_buf: Vec<f32> = Vec::new();
    let mut out_buf: Vec<u8> = Vec::new();
    let mut first = 0;
    while first < n_rows {
        let rows = slab_rows.min(n_rows - first);
        let src = &data[first * row_in..(first + rows) * row_in];
        out_buf.resize(rows * row_out, 0);
        let fault = if let Backend::Cpu(cpu) = backend {
            // One pass per row: dequantize into a small per-worker buffer, check, quantize,
            // validate; the slab never exists as f32 (half the memory traffic of two passes).
            convert_rows_fused(cpu, from, to, n_per_row, src, first, &qw_of, &mut out_buf)
        } else {
            f32_buf.resize(rows * n_per_row, 0.0);
            let deq = quant::dequantizer(from).expect("checked before writing");
            cpu.install(|| {
                f32_buf
                    .par_chunks_mut(n_per_row)
                    .zip(src.par_chunks(row_in))
                    .for_each(|(o, b)| deq(b, o))
            });
            match first_non_finite_row(cpu, &f32_buf, n_per_row) {
                Some(f) => Some(f),
                None => {
                    let expert_of = |row: usize| (first + row) / rows_per_expert.max(1);
                    backend
                        .quantize_rows(to, &f32_buf, n_per_row, qw_all, expert_of, &mut out_buf)
                        .map_err(|e| PipelineError::tensor(src_name, name, e.to_string()))?;
                    first_invalid_row(cpu, to, &out_buf, row_out)
                }
            }
        };
        if let Some((r, fault)) = fault {
            let r = first + r;
            return Err(match fault {
                RowFault::NonFinite { col, value } => PipelineError::tensor(
                    src_name,
                    name,
                    format!("row {r}, column {col}: value {value} is not finite"),
                ),
                RowFault::Invalid(e) => PipelineError::tensor(
                    src_name,
                    name,
                    format!("row {r}: quantized data invalid: {e}"),
                ),
            });
        }
        writer.write_part(&out_buf)?;
        first += rows;
    }
    Ok(())
}

/// Why a row was refused. The lowest refused row of a slab is reported, so the message does not
/// depend on the thread count.
enum RowFault {
    /// The input holds NaN or ±Inf (llama.cpp's loader refuses such tensors).
    NonFinite { col: usize, value: f32 },
    /// The quantized row fails llama.cpp's post-quantization check (e.g. a scale overflowed f16).
    Invalid(String),
}

/// Rows smaller than this many elements are grouped into one task.
const MIN_TASK_ELEMENTS: usize = 16384;

#[allow(clippy::too_many_arguments)]
fn convert_rows_fused<'a>(
    cpu: &CpuBackend,
    from: GgmlType,
    to: GgmlType,
    n_per_row: usize,
    src: &[u8],
    first_row: usize,
    qw_of: &(dyn Fn(usize) -> Option<&'a [f32]> + Sync),
    out: &mut [u8],
) -> Option<(usize, RowFault)> {
    let row_in = from.row_size(n_per_row as u64).unwrap() as usize;
    let row_out = to.row_size(n_per_row as u64).unwrap() as usize;
    let deq = quant::dequantizer(from).expect("checked before writing");
    let q = quant::quantizer(to).expect("checked before writing");
    let min_rows = (MIN_TASK_ELEMENTS / n_per_row.max(1)).max(1);
    cpu.install(|| {
        src.par_chunks(row_in)
            .zip(out.par_chunks_mut(row_out))
            .enumerate()
            .with_min_len(min_rows)
            .map_init(Vec::<f32>::new, |buf, (r, (b, o))| {
                // Aligned F32 input is quantized in place, without a copy.
                let x: &[f32] = match bytemuck::try_cast_slice::<u8, f32>(b) {
                    Ok(x) if from == GgmlType::F32 && cfg!(target_endian = "little") => x,
                    _ => {
                        if buf.len() != n_per_row {
                            buf.resize(n_per_row, 0.0);
                        }
                        deq(b, buf);
                        buf
                    }
                };
                if let Some((col, value)) = validate::first_non_finite(x) {
                    return Some((r, RowFault::NonFinite { col, value }));
                }
                q(x, qw_of(first_row + r), o);
                validate::validate_row(to, o)
                    .err()
                    .map(|e| (r, RowFault::Invalid(e)))
            })
            .flatten()
            .min_by_key(|(r, _)| *r)
    })
}

fn first_non_finite_row(
    cpu: &CpuBackend,
    x: &[f32],
    n_per_row: usize,
) -> Option<(usize, RowFault)> {
    cpu.install(|| {
        x.par_chunks(n_per_row)
            .enumerate()
            .filter_map(|(r, row)| {
                validate::first_non_finite(row)
                    .map(|(col, value)| (r, RowFault::NonFinite { col, value }))
            })
            .min_by_key(|(r, _)| *r)
    })
}

fn first_invalid_row(
    cpu: &CpuBackend,
    to: GgmlType,
    out: &[u8],
    row_out: usize,
) -> Option<(usize, RowFault)> {
    cpu.install(|| {
        out.par_chunks(row_out)
            .enumerate()
            .filter_map(|(r, row)| {
                validate::validate_row(to, row)
                    .err()
                    .map(|e| (r, RowFault::Invalid(e)))
            })
            .min_by_key(|(r, _)| *r)
    })
}

/// Where `quantize` should write when `--keep-split` is given (llama.cpp's split naming).
pub fn keep_split_path(output: &Path) -> PathBuf {
    let s = output.to_string_lossy();
    let prefix = s.strip_suffix(".gguf").unwrap_or(&s);
    PathBuf::from(format!("{prefix}-00001-of-00001.gguf"))
}

/// The [`ModelInfo`] llama-quantize's rules need, read from GGUF metadata. Integer keys of any integer type are
/// accepted; per-layer arrays (head counts) are read at layer 0, as `n_gqa()` does.
pub fn model_info_from_metadata(md: &Metadata) -> Result<ModelInfo, RuleError> {
    let arch = match md.get("general.architecture") {
        Some(Value::Str(s)) => s.clone(),
        Some(other) => {
            return Err(RuleError::WrongType {
                key: "general.architecture".into(),
                found: format!("{:?}", other.value_type()),
                expected: "a string",
            })
        }
        None => {
            return Err(RuleError::MissingKey {
                key: "general.architecture".into(),
            })
        }
    };
    let wrong = |k: String, v: &Value| RuleError::WrongType {
        key: k,
        found: format!("{:?}", v.value_type()),
        expected: "an integer",
    };
    let key = |k: &str| format!("{arch}.{k}");
    let scalar = |k: &str| -> Result<Option<u64>, RuleError> {
        match md.get(&key(k)) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| wrong(key(k), v)),
        }
    };
    // Head counts may be one value or one per layer.
    let layer0 = |k: &str| -> Result<Option<u64>, RuleError> {
        match md.get(&key(k)) {
            Some(Value::Array(_, items)) => items
                .first()
                .and_then(Value::as_u64)
                .map(Some)
                .ok_or_else(|| RuleError::MissingKey { key: key(k) }),
            _ => scalar(k),
        }
    };
    let n_layer = scalar("block_count")?.ok_or_else(|| RuleError::MissingKey {
        key: key("block_count"),
    })?;
    if n_layer == 0 || n_layer > MAX_LAYERS {
        return Err(RuleError::BadMetadata {
            what: format!(
                "{} = {n_layer} is outside 1..={MAX_LAYERS}",
                key("block_count")
            ),
        });
    }
    let to_u32 = |k: &str, v: u64| {
        u32::try_from(v).map_err(|_| RuleError::BadMetadata {
            what: format!("{} = {v} is too large", key(k)),
        })
    };
    let n_layer_nextn = to_u32(
        "nextn_predict_layers",
        scalar("nextn_predict_layers")?.unwrap_or(0),
    )?;
    let n_head = to_u32(
        "attention.head_count",
        layer0("attention.head_count")?.unwrap_or(0),
    )?;
    let n_head_kv = match layer0("attention.head_count_kv")? {
        Some(v) => to_u32("attention.head_count_kv", v)?,
        None => n_head,
    };
    let n_expert = to_u32("expert_count", scalar("expert_count")?.unwrap_or(0))?;
    Ok(ModelInfo {
        arch,
        n_layer: n_layer as u32,
        n_layer_nextn,
        n_head,
        n_head_kv,
        n_expert,
    })
}

/// `--prune-layers` must name layers the model has and leave at least one.
fn check_prune_layers(src_name: &str, prune: &[u32], n_layer: u32) -> Result<(), PipelineError> {
    if let Some(&bad) = prune.iter().find(|&&l| l >= n_layer) {
        return Err(PipelineError::PruneLayers {
            source_name: src_name.to_string(),
            what: format!("--prune-layers {bad}: the model has layers 0..{n_layer} only"),
        });
    }
    if !prune.is_empty() && prune.len() as u64 >= n_layer as u64 {
        return Err(PipelineError::PruneLayers {
            source_name: src_name.to_string(),
            what: format!("--prune-layers would remove all {n_layer} layers"),
        });
    }
    Ok(())
}
