//! `qforge quantize --target-size BYTES | --target-bpw B`: choose every tensor's type so the file
//! is as good as we can make it without exceeding the size.
//!
//! **The file.** TYPE is the baseline: its llama-quantize plan is where the search starts, what
//! `general.file_type` says and where the protections come from; apart from the types, the file
//! is the one `quantize` writes for TYPE (same keys, `quantize.imatrix.*` included, same order).
//! Its size is counted exactly before anything is written — the header (every key and tensor
//! info, padded to the alignment) plus each tensor's rows padded to the alignment — and checked
//! again on disk afterwards.
//!
//! **The damage estimate.** For each searched tensor and each candidate type, the importance-
//! weighted squared error Σ wⱼ(q − x)² of actually quantizing it with qforge's kernels (and the
//! imatrix the file is quantized with), measured by [`crate::quant::weighted_error`] on an evenly
//! spaced sample of rows (at most [`SizeTarget::sample_elements`] elements per tensor) and
//! scaled to the whole tensor. The weights wⱼ: the tensor's imatrix entry (per expert for 3-D
//! tensors); for a matmul weight without one, the column-wise mean of the imatrix entries of the
//! same row length (its input is a hidden state like theirs); without any imatrix, 1. A token
//! embedding that is not also the output head is a lookup, not a matmul: its error counts as the
//! expected squared error of one looked-up row, Σ(q − x)² / n_vocab.
//!
//! **Candidates.** Every type with a CPU quantizer in [`crate::quant::quantizer`] (so new kernels
//! join automatically) whose block divides the rows, except activation-only types, and except
//! the types that need an importance matrix where the tensor has none.
//!
//! **Protections** (decided here, after what llama-quantize always does):
//! - tensors llama-quantize never quantizes (1-D tensors, norms, …) keep their type;
//! - tensors the user typed explicitly (`--tensor-type`, `--output-tensor-type`,
//!   `--token-embedding-type`) keep that type;
//! - the output head (`output.weight`, or `token_embd.weight` when the embeddings are tied) never
//!   goes below the bits per weight of the type the baseline's rules give it (Q6_K in most mixes;
//!   every mix keeps it higher than the rest), but may go above.
//!
//! **Allocation.** [`crate::quant::size_allocation::allocate`]: the Lagrangian path over each
//! tensor's convex hull (greedy by marginal error per byte), then fill and pairwise greedy
//! exchange; the baseline mix is also tried as a start, so where the baseline fits the target
//! the chosen plan's estimated error is never above the baseline's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::formats::gguf::{align_up, encode_header, Metadata, TensorInfo};
use crate::formats::tensor_source::TensorSource;
use crate::ggml::ftype::QuantTarget;
use crate::pipeline::backend::Backend;
use crate::pipeline::error::PipelineError;
use crate::pipeline::quantize::{
    imatrix_row, plan_job, planned_infos, write_planned, PlannedJob, QuantizeJob, QuantizeReport,
};
use crate::quant::rules::{self, first_matching_type, TensorCategory, TensorPlan};
use crate::quant::size_allocation::{allocate, minimum_bytes, Choice};
use crate::quant::weighted_error::{quantization_error, ErrorScratch};
use crate::quant::{self, validate, GgmlType};

/// What the functions of this module return.
type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Elements per tensor measured for each candidate type by default (rows are sampled evenly;
/// smaller tensors are measured whole).
pub const DEFAULT_SAMPLE_ELEMENTS: usize = 1 << 17;

/// How big the file may be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SizeGoal {
    /// The whole file, in bytes.
    Bytes(u64),
    /// Bits per weight of the tensor data (padding included) over all tensors' elements; the
    /// header comes on top, so the file may hold `header + floor(bpw · elements / 8)` bytes.
    Bpw(f64),
}

impl SizeGoal {
    /// The goal as a user would write it back (`4294967296 bytes`, `4.85 bpw`).
    pub fn describe(&self) -> String {
        match self {
            SizeGoal::Bytes(b) => format!("{b} bytes"),
            SizeGoal::Bpw(b) => format!("{b} bpw"),
        }
    }
}

/// A size-targeted quantization: the goal and how carefully to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeTarget {
    /// How big the file may be.
    pub goal: SizeGoal,
    /// Elements per tensor measured for each candidate type (at least one row).
    pub sample_elements: usize,
    /// Only these candidate types (`None`: every type with a quantizer). Protections still
    /// apply, and each tensor keeps only those its rows allow.
    pub candidates: Option<Vec<GgmlType>>,
}

impl SizeTarget {
    /// `goal` with the default sample size.
    pub fn new(goal: SizeGoal) -> SizeTarget {
        SizeTarget {
            goal,
            sample_elements: DEFAULT_SAMPLE_ELEMENTS,
            candidates: None,
        }
    }
}

/// Parse a size: plain bytes (`4200000000`), or a number with a unit — `K`, `M`, `G`, `T` (and
/// `KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024, `KB`, `MB`, `GB`, `TB` powers of 1000 — as
/// in `4.2G`. Fractions are rounded down to a whole byte.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = |why: &str| PipelineError::TargetSize {
        what: format!("--target-size '{s}': {why}"),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KIB" => 1024.0,
        "M" | "MIB" => 1024f64.powi(2),
        "G" | "GIB" => 1024f64.powi(3),
        "T" | "TIB" => 1024f64.powi(4),
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => {
            return Err(bad(
                "unknown unit (use bytes, K/M/G/T = 1024ⁿ, KB/MB/GB/TB = 1000ⁿ)",
            ))
        }
    };
    if unit.is_empty() {
        return num
            .parse::<u64>()
            .map_err(|_| bad("not a whole number of bytes"));
    }
    let v: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let bytes = (v * scale).floor();
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad("out of range"));
    }
    Ok(bytes as u64)
}

/// The JSON report's path: the output's full name with `.plan.json` appended
/// (`model.gguf` → `model.gguf.plan.json`).
pub fn plan_report_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".plan.json");
    PathBuf::from(s)
}

/// One measured candidate of one tensor.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CandidateReport {
    /// The ggml type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The tensor's bytes in this type, padded to the alignment.
    pub bytes: u64,
    /// Estimated weighted squared error.
    pub error: f64,
}

/// What the plan did with one tensor.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TargetTensorReport {
    /// Name in the output.
    pub name: String,
    /// Shape (ggml `ne`).
    pub ne: Vec<u64>,
    /// Type the baseline mix gives it.
    pub baseline_type: String,
    /// Type chosen.
    #[serde(rename = "type")]
    pub ty: String,
    /// Bytes in the file (padded to the alignment).
    pub bytes: u64,
    /// Estimated error of the chosen type (`None` for tensors kept fixed).
    pub error: Option<f64>,
    /// Estimated error of the baseline type, where it was a candidate.
    pub baseline_error: Option<f64>,
    /// Why the tensor was not searched, if it was not (`not quantized`, `user type`, `no
    /// allowed candidate`).
    pub fixed: Option<String>,
    /// The lowest bits per weight the search could give it (the output head's floor).
    pub min_bpw: Option<f64>,
    /// Rows measured per candidate, of `n_rows`.
    pub sampled_rows: u64,
    /// Rows of the tensor.
    pub n_rows: u64,
    /// Every candidate measured.
    pub candidates: Vec<CandidateReport>,
}

/// What a size-targeted quantization chose and achieved: what the JSON report holds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SizePlanReport {
    /// The goal as asked (`… bytes` or `… bpw`).
    pub goal: String,
    /// The file may hold at most this many bytes.
    pub target_bytes: u64,
    /// The baseline mix (TYPE).
    pub baseline: String,
    /// How the bytes were allocated.
    pub method: String,
    /// Header bytes (keys and tensor infos, padded).
    pub header_bytes: u64,
    /// Bytes of the tensors kept fixed (padded).
    pub fixed_bytes: u64,
    /// The smallest file the candidates and protections allow.
    pub minimum_bytes: u64,
    /// The file size the plan predicts.
    pub predicted_bytes: u64,
    /// The size of the file written (`None` on a dry run).
    pub achieved_bytes: Option<u64>,
    /// The file size of the baseline mix.
    pub baseline_bytes: u64,
    /// Tensor-data bits per weight of the plan (all tensors).
    pub bpw: f64,
    /// Σ estimated error of the searched tensors under the plan.
    pub estimated_error: f64,
    /// Σ estimated error of the searched tensors under the baseline mix (`None` where a
    /// baseline type was not a candidate).
    pub baseline_error: Option<f64>,
    /// Whether an importance matrix weighted the errors.
    pub imatrix: bool,
    /// Seconds spent measuring candidates.
    pub measure_seconds: f64,
    /// Every tensor, in file order.
    pub tensors: Vec<TargetTensorReport>,
}

/// Types llama.cpp has kernels for only as activations (matmul right-hand sides), never as
/// stored weights.
const ACTIVATION_ONLY: &[GgmlType] = &[GgmlType::Q8_K, GgmlType::Q8_1];

/// Bits per weight of a type.
fn bpw_of(ty: GgmlType) -> f64 {
    ty.type_size() as f64 * 8.0 / ty.block_size() as f64
}

/// The size of a GGUF file with `metadata` and these tensors, as [`crate::formats::gguf::GgufWriter`]
/// lays it out: the padded header, then every tensor padded to the alignment.
pub fn planned_file_bytes(metadata: &Metadata, infos: &[(String, GgmlType, Vec<u64>)]) -> u64 {
    let (header, data) = header_and_data_bytes(metadata, infos);
    header + data.iter().sum::<u64>()
}

/// The padded header size and every tensor's padded data size.
fn header_and_data_bytes(
    metadata: &Metadata,
    infos: &[(String, GgmlType, Vec<u64>)],
) -> (u64, Vec<u64>) {
    let alignment = metadata.alignment();
    let mut offset = 0;
    let mut sizes = Vec::with_capacity(infos.len());
    let tensors: Vec<TensorInfo> = infos
        .iter()
        .map(|(name, ty, ne)| {
            let t = TensorInfo {
                name: name.clone(),
                ty: *ty,
                ne: ne.clone(),
                offset,
            };
            let size = align_up(t.n_bytes().unwrap_or(0), alignment);
            offset += size;
            sizes.push(size);
            t
        })
        .collect();
    (
        encode_header(metadata, &tensors, alignment).len() as u64,
        sizes,
    )
}

/// How one tensor takes part in the search.
enum Role {
    /// Kept at its planned type, for this reason.
    Fixed(&'static str),
    /// Searched over candidates of at least this many bits per weight (0: any).
    Searched { min_bpw: f64 },
}

/// Whether the tensor is the output head: `output.weight`, or the token embedding when there is
/// no separate output (tied embeddings).
fn is_output_head(name: &str, tied: bool) -> bool {
    name == "output.weight" || (tied && TensorCategory::of(name) == TensorCategory::TokenEmbd)
}

fn role_of(
    p: &TensorPlan,
    job: &QuantizeJob,
    patterns: &[(regex::bytes::Regex, GgmlType)],
    tied: bool,
) -> Role {
    if !p.allows_quantization {
        return Role::Fixed("not quantized");
    }
    let cat = TensorCategory::of(&p.name);
    let opts = &job.type_options;
    if first_matching_type(patterns, &p.name).is_some()
        || (cat == TensorCategory::Output && opts.output_tensor_type.is_some())
        || (cat == TensorCategory::TokenEmbd && opts.token_embedding_type.is_some())
        || (is_output_head(&p.name, tied) && opts.output_tensor_type.is_some())
    {
        return Role::Fixed("user type");
    }
    if is_output_head(&p.name, tied) {
        return Role::Searched {
            min_bpw: bpw_of(p.new_type),
        };
    }
    Role::Searched { min_bpw: 0.0 }
}

/// The importance weights a tensor's error is measured with, and a factor on the sum.
struct ErrorWeights<'a> {
    /// One weight per column (experts back to back), or `None` for all ones.
    w: Option<std::borrow::Cow<'a, [f32]>>,
    scale: f64,
}

/// Column-wise means of the imatrix entries of each row length.
fn mean_entries(job: &QuantizeJob) -> BTreeMap<usize, Vec<f32>> {
    let mut sums: BTreeMap<usize, (Vec<f64>, usize)> = BTreeMap::new();
    if let Some(im) = &job.imatrix {
        for w in im.weights.values() {
            let e = sums
                .entry(w.len())
                .or_insert_with(|| (vec![0.0; w.len()], 0));
            for (s, v) in e.0.iter_mut().zip(w) {
                *s += *v as f64;
            }
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(len, (s, n))| (len, s.iter().map(|v| (v / n as f64) as f32).collect()))
        .collect()
}

/// Measure every candidate of one tensor on its sampled rows.
#[allow(clippy::too_many_arguments)]
fn measure_tensor(
    src_name: &str,
    from: GgmlType,
    p: &TensorPlan,
    data: &[u8],
    candidates: &[GgmlType],
    qw_all: Option<&[f32]>,
    weights: &ErrorWeights,
    sample_elements: usize,
    backend: &Backend,
) -> Result<(Vec<f64>, u64)> {
    let n_per_row = p.ne[0] as usize;
    let rows_per_expert = p.ne.get(1).copied().unwrap_or(1) as usize;
    let row_in = from.row_size(p.ne[0]).unwrap_or(0) as usize;
    let n_rows = data.len().checked_div(row_in).unwrap_or(0);
    let m = (sample_elements / n_per_row.max(1)).clamp(1, n_rows.max(1));
    let rows: Vec<usize> = (0..m).map(|k| k * n_rows / m).collect();
    let deq = quant::dequantizer(from).ok_or_else(|| {
        PipelineError::tensor(
            src_name,
            &p.name,
            format!("reading {from} tensors is not supported yet"),
        )
    })?;
    let mut x = vec![0f32; m * n_per_row];
    for (k, &r) in rows.iter().enumerate() {
        let out = &mut x[k * n_per_row..(k + 1) * n_per_row];
        deq(&data[r * row_in..(r + 1) * row_in], out);
        if let Some((col, value)) = validate::first_non_finite(out) {
            return Err(PipelineError::tensor(
                src_name,
                &p.name,
                format!("row {r}, column {col}: value {value} is not finite"),
            ));
        }
    }
    let slice_of = |w: &[f32], r: usize| -> std::ops::Range<usize> {
        let e = r / rows_per_expert.max(1);
        let range = e * n_per_row..(e + 1) * n_per_row;
        if w.len() >= range.end {
            range
        } else {
            0..n_per_row
        }
    };
    let scale = weights.scale * n_rows as f64 / m as f64;
    let cpu = backend.cpu_side();
    let mut errors = Vec::with_capacity(candidates.len());
    for &ty in candidates {
        if ty == from {
            // Kept as in the source: the bytes are copied, nothing changes.
            errors.push(0.0);
            continue;
        }
        let per_row: Vec<std::result::Result<f64, quant::QuantError>> = cpu.install(|| {
            rows.par_iter()
                .enumerate()
                .map_init(ErrorScratch::default, |scratch, (k, &r)| {
                    let xr = &x[k * n_per_row..(k + 1) * n_per_row];
                    let qw = qw_all.map(|w| &w[slice_of(w, r)]);
                    let w = weights.w.as_deref().map(|w| &w[slice_of(w, r)]);
                    quantization_error(ty, xr, qw, w, scratch)
                })
                .collect()
        });
        let mut sum = 0f64;
        for e in per_row {
            sum += e.map_err(|e| PipelineError::tensor(src_name, &p.name, e.to_string()))?;
        }
        errors.push(sum * scale);
    }
    Ok((errors, m as u64))
}

/// The size-targeted plan: the baseline plan with every searched tensor's type replaced, and
/// the report of what was chosen (sizes predicted; nothing written).
pub fn plan_to_size(
    source: &dyn TensorSource,
    job: &QuantizeJob,
    target: &SizeTarget,
    backend: &Backend,
) -> Result<(PlannedJobHandle, SizePlanReport)> {
    let QuantTarget::Mix(ftype) = job.target else {
        return Err(PipelineError::TargetSize {
            what: "a size target needs a mix TYPE to start from, not COPY".into(),
        });
    };
    if target.sample_elements == 0 {
        return Err(PipelineError::TargetSize {
            what: "the error sample must hold at least one element".into(),
        });
    }
    let mut planned = plan_job(source, job)?;
    let src_name = planned.src_name.clone();
    let tensors = source.tensors();
    let baseline_infos = planned_infos(source, &planned.plan);
    let (header_bytes, baseline_sizes) = header_and_data_bytes(&planned.metadata, &baseline_infos);
    let baseline_bytes = header_bytes + baseline_sizes.iter().sum::<u64>();
    let n_elements: u64 = baseline_infos
        .iter()
        .map(|(_, _, ne)| ne.iter().product::<u64>())
        .sum();
    let target_bytes = match target.goal {
        SizeGoal::Bytes(b) => b,
        SizeGoal::Bpw(bpw) => {
            if !(bpw.is_finite() && bpw > 0.0) {
                return Err(PipelineError::TargetSize {
                    what: format!("--target-bpw {bpw}: must be a positive number"),
                });
            }
            header_bytes + (bpw * n_elements as f64 / 8.0).floor() as u64
        }
    };
    let alignment = planned.metadata.alignment();
    let patterns = rules::compile_patterns(&job.type_options.tensor_types).map_err(|detail| {
        PipelineError::Rules {
            source_name: src_name.clone(),
            detail,
        }
    })?;
    let tied = !planned
        .plan
        .tensors
        .iter()
        .any(|p| p.name == "output.weight");
    let means = mean_entries(job);
    let has_imatrix = job
        .imatrix
        .as_ref()
        .is_some_and(|im| !im.weights.is_empty());
    let registry: Vec<GgmlType> = GgmlType::all()
        .filter(|&t| quant::quantizer(t).is_some() && !ACTIVATION_ONLY.contains(&t))
        .filter(|t| target.candidates.as_ref().is_none_or(|c| c.contains(t)))
        .collect();

    // Measure.
    let t0 = Instant::now();
    let mut reports = Vec::with_capacity(planned.plan.tensors.len());
    let mut items: Vec<Vec<Choice>> = Vec::new();
    let mut item_types: Vec<Vec<GgmlType>> = Vec::new();
    let mut item_tensor: Vec<usize> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut fixed_bytes = 0u64;
    for (i, p) in planned.plan.tensors.iter().enumerate() {
        let t = &tensors[p.source_index];
        let n_rows: u64 = p.ne.iter().skip(1).product();
        let mut rep = TargetTensorReport {
            name: p.name.clone(),
            ne: p.ne.clone(),
            baseline_type: p.new_type.name().to_string(),
            ty: p.new_type.name().to_string(),
            bytes: baseline_sizes[i],
            error: None,
            baseline_error: None,
            fixed: None,
            min_bpw: None,
            sampled_rows: 0,
            n_rows,
            candidates: Vec::new(),
        };
        let min_bpw = match role_of(p, job, &patterns, tied) {
            Role::Fixed(why) => {
                rep.fixed = Some(why.to_string());
                fixed_bytes += baseline_sizes[i];
                reports.push(rep);
                continue;
            }
            Role::Searched { min_bpw } => min_bpw,
        };
        if t.ty.is_quantized() && !job.allow_requantize {
            return Err(PipelineError::tensor(
                &src_name,
                &t.name,
                format!(
                    "requantizing from type {} is disabled (use --allow-requantize)",
                    t.ty
                ),
            ));
        }
        let qw = imatrix_row(&src_name, job, p)?;
        let candidates: Vec<GgmlType> = registry
            .iter()
            .copied()
            .filter(|&ty| {
                p.ne[0].is_multiple_of(ty.block_size() as u64)
                    && bpw_of(ty) >= min_bpw
                    && !(qw.is_none()
                        && (quant::requires_imatrix(ty)
                            || rules::tensor_requires_imatrix(&p.name, ty, ftype)))
            })
            .collect();
        if candidates.is_empty() {
            // Only possible with a candidate list (F32 fits every row): keep the baseline.
            rep.fixed = Some("no allowed candidate".to_string());
            fixed_bytes += baseline_sizes[i];
            reports.push(rep);
            continue;
        }
        let weights = if qw.is_some() {
            ErrorWeights {
                w: qw.map(std::borrow::Cow::Borrowed),
                scale: 1.0,
            }
        } else if TensorCategory::of(&p.name) == TensorCategory::TokenEmbd && !tied {
            ErrorWeights {
                w: None,
                scale: 1.0 / n_rows.max(1) as f64,
            }
        } else {
            ErrorWeights {
                w: means
                    .get(&(p.ne[0] as usize))
                    .map(|m| std::borrow::Cow::Owned(m.clone())),
                scale: 1.0,
            }
        };
        let data = source
            .tensor_bytes(p.source_index)
            .map_err(|e| PipelineError::ReadTensor {
                source_name: src_name.clone(),
                tensor: t.name.clone(),
                source: e,
            })?;
        let (errors, sampled) = measure_tensor(
            &src_name,
            t.ty,
            p,
            &data,
            &candidates,
            qw,
            &weights,
            target.sample_elements,
            backend,
        )?;
        drop(data);
        source.release(p.source_index);
        let choices: Vec<Choice> = candidates
            .iter()
            .zip(&errors)
            .map(|(&ty, &error)| Choice {
                bytes: align_up(ty.row_size(p.ne[0]).unwrap_or(0) * n_rows, alignment),
                error,
            })
            .collect();
        rep.sampled_rows = sampled;
        rep.min_bpw = (min_bpw > 0.0).then_some(min_bpw);
        rep.candidates = candidates
            .iter()
            .zip(&choices)
            .map(|(ty, c)| CandidateReport {
                ty: ty.name().to_string(),
                bytes: c.bytes,
                error: c.error,
            })
            .collect();
        let baseline_pick = candidates.iter().position(|&ty| ty == p.new_type);
        rep.baseline_error = baseline_pick.map(|k| errors[k]);
        starts.push(baseline_pick.unwrap_or(usize::MAX));
        items.push(choices);
        item_types.push(candidates);
        item_tensor.push(i);
        reports.push(rep);
    }
    let measure_seconds = t0.elapsed().as_secs_f64();

    // Allocate.
    let searched_min = minimum_bytes(&items).unwrap_or(0);
    let minimum = header_bytes + fixed_bytes + searched_min;
    let too_small = || {
        PipelineError::TargetTooSmall {
        source_name: src_name.clone(),
        target: target_bytes,
        minimum,
        why: format!(
            "header {header_bytes}, fixed tensors {fixed_bytes}, searched tensors at their smallest types {searched_min}"
        ),
    }
    };
    let budget = target_bytes
        .checked_sub(header_bytes + fixed_bytes)
        .ok_or_else(too_small)?;
    let baseline_start: Vec<Vec<usize>> = if starts.iter().all(|&s| s != usize::MAX) {
        vec![starts.clone()]
    } else {
        Vec::new()
    };
    let alloc = allocate(&items, budget, &baseline_start).ok_or_else(too_small)?;

    // Apply.
    for (k, &pick) in alloc.picks.iter().enumerate() {
        let i = item_tensor[k];
        let ty = item_types[k][pick];
        let p = &mut planned.plan.tensors[i];
        // The search chose this type for rows it fits; nothing fell back.
        p.fallback = false;
        p.new_type = ty;
        p.quantize = ty != p.current_type;
        p.requires_imatrix = rules::tensor_requires_imatrix(&p.name, ty, ftype);
        let rep = &mut reports[i];
        rep.ty = ty.name().to_string();
        rep.bytes = items[k][pick].bytes;
        rep.error = Some(items[k][pick].error);
    }
    planned.plan.n_fallback = planned.plan.tensors.iter().filter(|p| p.fallback).count();
    let infos = planned_infos(source, &planned.plan);
    let predicted = planned_file_bytes(&planned.metadata, &infos);
    debug_assert_eq!(predicted, header_bytes + fixed_bytes + alloc.bytes);
    let baseline_error = starts
        .iter()
        .zip(&items)
        .map(|(&s, c)| c.get(s).map(|c| c.error))
        .sum::<Option<f64>>();
    let report = SizePlanReport {
        goal: target.goal.describe(),
        target_bytes,
        baseline: ftype.name(),
        method: "lagrangian hull path + fill + greedy pairwise exchange (baseline mix as a second start)"
            .into(),
        header_bytes,
        fixed_bytes,
        minimum_bytes: minimum,
        predicted_bytes: predicted,
        achieved_bytes: None,
        baseline_bytes,
        bpw: (predicted - header_bytes) as f64 * 8.0 / n_elements.max(1) as f64,
        estimated_error: alloc.error,
        baseline_error,
        imatrix: has_imatrix,
        measure_seconds,
        tensors: reports,
    };
    Ok((PlannedJobHandle(planned), report))
}

/// A plan made by [`plan_to_size`], ready for [`write_to_size`].
#[derive(Clone, Debug)]
pub struct PlannedJobHandle(PlannedJob);

/// Quantize `source` to fit `target`: plan, write the GGUF (unless a dry run), check its size on
/// disk against the prediction and write the JSON report beside it
/// ([`plan_report_path`]). Nothing is left under the output on any error.
pub fn quantize_to_size(
    source: &dyn TensorSource,
    job: &QuantizeJob,
    target: &SizeTarget,
    backend: &Backend,
) -> Result<(QuantizeReport, SizePlanReport)> {
    let start = Instant::now();
    let (planned, mut plan) = plan_to_size(source, job, target, backend)?;
    let report = write_to_size(source, job, backend, &planned, &mut plan, start)?;
    Ok((report, plan))
}

/// Write a plan of [`plan_to_size`]: the GGUF, its size check and the JSON report.
fn write_to_size(
    source: &dyn TensorSource,
    job: &QuantizeJob,
    backend: &Backend,
    planned: &PlannedJobHandle,
    plan: &mut SizePlanReport,
    start: Instant,
) -> Result<QuantizeReport> {
    let report = write_planned(source, job, backend, &planned.0, start)?;
    if job.type_options.dry_run {
        return Ok(report);
    }
    let achieved = std::fs::metadata(&job.output)
        .map_err(|e| PipelineError::TargetSize {
            what: format!("{}: {e}", job.output.display()),
        })?
        .len();
    plan.achieved_bytes = Some(achieved);
    if achieved != plan.predicted_bytes || achieved > plan.target_bytes {
        // Cannot happen unless the size accounting is wrong; never leave such a file behind.
        std::fs::remove_file(&job.output).ok();
        return Err(PipelineError::TargetSize {
            what: format!(
                "{}: wrote {achieved} bytes, the plan predicted {} (target {}); file removed",
                job.output.display(),
                plan.predicted_bytes,
                plan.target_bytes
            ),
        });
    }
    let path = plan_report_path(&job.output);
    let json = serde_json::to_string_pretty(&*plan).expect("the report serializes");
    write_plan_report(&path, json.as_bytes())
        .map_err(|source| PipelineError::WritePlan { path, source })?;
    Ok(report)
}

fn write_plan_report(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = crate::formats::atomic::AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("1.5MiB").unwrap(), 1_572_864);
        assert_eq!(parse_size("4.2G").unwrap(), (4.2 * 1073741824f64) as u64);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert!(parse_size("4.2").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn the_report_sits_beside_the_output() {
        assert_eq!(
            plan_report_path(Path::new("/a/m.Q4_K_M.gguf")),
            PathBuf::from("/a/m.Q4_K_M.gguf.plan.json")
        );
    }
}
