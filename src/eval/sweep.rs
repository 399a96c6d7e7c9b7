//! Quantization sweep: quantize one model to several types, then measure each result against
//! the unquantized model on the same tokens — file size, bits per weight, quantization time,
//! perplexity and KL divergence — and write report.md / report.csv / report.json and a
//! size-vs-KLD plot, report.svg.
//!
//! Quantization and evaluation run on the device asked for: with a GPU, the quantizer's GPU
//! kernels (byte-identical to the CPU's) and the GPU forward pass; the reference model is
//! measured on the same device as the quantized ones, so KL divergence compares like with like.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::eval::error::EvalError;

/// What the evaluation functions return.
type Result<T, E = EvalError> = std::result::Result<T, E>;
use serde::Serialize;

use super::kld::{kl_divergence, KldReport};
use super::perplexity::{score_logits, PplOptions, PplReport, ScoredLogits};
use super::tensor_error::{tensor_errors, TensorErrorSummary};
use crate::convert::checkpoint::{HfModel, HfOptions};
use crate::convert::encode::OutType;
use crate::formats::gguf::GgufFile;
use crate::formats::imatrix;
use crate::formats::{GgufSource, TensorSource};
use crate::ggml::ftype::QuantTarget;
use crate::gpu::DeviceSpec;
use crate::pipeline::quantize::{quantize, ImatrixInput, QuantizeJob};
use crate::pipeline::target_size::{quantize_to_size, SizeGoal, SizeTarget};
use crate::pipeline::{Backend, DeviceChoice};
use crate::quant::rules::TypeOptions;
use crate::runtime::error::error_chain_text;
use crate::runtime::forward::{LlamaModel, LoadOptions};

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The unquantized model (F32/F16/BF16 GGUF) — the reference for KL divergence.
    pub model: PathBuf,
    /// ftype names as llama-quantize takes them (Q4_K_M, Q8_0, IQ4_XS, …), or `TYPE@Bbpw`
    /// (`Q4_K_M@4.5bpw`): a size-targeted file of B bits per weight with TYPE as its baseline
    /// (`pipeline::target_size`).
    pub types: Vec<String>,
    /// Where the quantized files and the reports go (created if missing).
    pub out_dir: PathBuf,
    /// Context, chunk count and micro-batch of every evaluation.
    pub ppl: PplOptions,
    /// Importance matrix for every quantization (GGUF or legacy .dat).
    pub imatrix: Option<PathBuf>,
    /// Quantizer threads (0 = all cores).
    pub threads: usize,
    /// Delete each quantized file after measuring it.
    pub remove_files: bool,
    /// How the runtime holds the weights of each model it measures.
    pub load: LoadOptions,
    /// Where quantization and evaluation run (`Auto` never picks a software adapter).
    pub device: DeviceSpec,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    /// The ftype name (or the reference model's type).
    pub name: String,
    /// The quantized file, unless removed after measuring.
    pub file: Option<PathBuf>,
    /// Size of the file on disk.
    pub file_bytes: u64,
    /// Tensor data bits per weight (all tensors, as `qforge demo` counts them).
    pub bpw: f64,
    /// Time quantizing.
    pub quantize_seconds: f64,
    /// Time loading and evaluating.
    pub eval_seconds: f64,
    /// Perplexity of the model.
    pub ppl: Option<PplReport>,
    /// None for the reference row.
    pub kld: Option<KldReport>,
    /// Relative RMSE of every tensor the type changed (None for the reference row).
    pub tensor_error: Option<TensorErrorSummary>,
    /// Why this type produced no numbers.
    pub error: Option<String>,
}

/// Everything a sweep measured: what report.json holds.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// The unquantized model swept.
    pub model: PathBuf,
    /// Context length of each chunk.
    pub n_ctx: usize,
    /// Chunks scored per model.
    pub n_chunks: usize,
    /// Tokens in the evaluation text.
    pub n_tokens: usize,
    /// The importance matrix every type was quantized with.
    pub imatrix: Option<PathBuf>,
    /// Where the types were quantized and evaluated (`Backend::describe`).
    pub device: String,
    /// The unquantized model first, then each type in the order asked.
    pub rows: Vec<SweepRow>,
}

fn model_stem(path: &Path) -> String {
    let s = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    s.strip_suffix(".gguf").unwrap_or(&s).to_string()
}

/// What [`sweep_with_progress`] reports as it goes.
#[derive(Clone, Debug)]
pub enum SweepStep<'a> {
    /// The reference model was measured.
    Base(&'a SweepRow),
    /// Type `index` (0-based, of `total`) is being quantized.
    Quantizing {
        /// Position of the type in the list asked for.
        index: usize,
        /// Types asked for.
        total: usize,
        /// The type's name.
        name: &'a str,
    },
    /// Type `index` is done (or failed: see `row.error`).
    Done {
        /// Position of the type in the list asked for.
        index: usize,
        /// Types asked for.
        total: usize,
        /// What was measured.
        row: &'a SweepRow,
    },
}

/// The model to sweep, as a quantization source and as the reference runtime model. A Hugging
/// Face directory is converted in memory at F32 (its exact weights), as `qforge quantize` does.
enum SweepSource {
    Gguf(GgufSource),
    Hf(Box<HfModel>),
}

impl SweepSource {
    fn open(path: &Path) -> Result<SweepSource> {
        if path.is_dir() {
            let hf = HfModel::open(
                path,
                &HfOptions {
                    outtype: OutType::F32,
                    model_name: None,
                },
            )?;
            return Ok(SweepSource::Hf(Box::new(hf)));
        }
        Ok(SweepSource::Gguf(GgufSource::open(path).map_err(
            |source| EvalError::Open {
                path: path.to_path_buf(),
                source,
            },
        )?))
    }

    fn tensor_source(&self) -> &dyn TensorSource {
        match self {
            SweepSource::Gguf(g) => g,
            SweepSource::Hf(h) => h.as_ref(),
        }
    }

    fn load(&self, path: &Path, load: &LoadOptions) -> Result<LlamaModel> {
        match self {
            SweepSource::Gguf(_) => Ok(LlamaModel::load_with(path, load)?),
            SweepSource::Hf(h) => Ok(LlamaModel::from_source(h.as_ref())?),
        }
    }

    /// Bytes on disk: the GGUF file, or every safetensors file of the checkpoint.
    fn file_bytes(&self, path: &Path) -> Result<u64> {
        match self {
            SweepSource::Gguf(_) => Ok(std::fs::metadata(path)
                .map_err(|e| EvalError::io("reading", path, e))?
                .len()),
            SweepSource::Hf(_) => {
                let mut n = 0;
                let read_err = |e| EvalError::io("reading", path, e);
                for e in std::fs::read_dir(path).map_err(read_err)? {
                    let e = e.map_err(read_err)?;
                    if e.path().extension().is_some_and(|x| x == "safetensors") {
                        n += e
                            .metadata()
                            .map_err(|err| EvalError::io("reading", e.path(), err))?
                            .len();
                    }
                }
                Ok(n)
            }
        }
    }
}

/// Run the sweep over `tokens` (already tokenized with the model's vocabulary) and write the
/// reports into `opts.out_dir`. A type that fails to quantize or load is reported, not fatal.
pub fn sweep(opts: &SweepOptions, tokens: &[u32]) -> Result<SweepReport> {
    sweep_with_progress(opts, tokens, &mut |_| {})
}

/// `sweep`, telling `progress` about each step. `opts.model` may be a GGUF file or a Hugging
/// Face directory.
pub fn sweep_with_progress(
    opts: &SweepOptions,
    tokens: &[u32],
    progress: &mut dyn FnMut(SweepStep<'_>),
) -> Result<SweepReport> {
    if opts.types.is_empty() {
        return Err(EvalError::NoTypes);
    }
    let source = SweepSource::open(&opts.model)?;
    // One device for the whole sweep: quantizers and forward passes alike.
    let device = DeviceChoice::select(opts.device)?;
    let backend = Backend::on(&device, opts.threads, 0.0);
    let t0 = Instant::now();
    let base_model = device.causal_lm(source.load(&opts.model, &opts.load)?)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let base = score_logits(base_model.as_ref(), tokens, &opts.ppl)?;
    drop(base_model);
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| EvalError::io("creating", &opts.out_dir, e))?;
    let base_bytes = source.file_bytes(&opts.model)?;
    let src = source.tensor_source();
    let n_elements: u64 = src
        .tensors()
        .iter()
        .map(|t| t.ne.iter().product::<u64>())
        .sum();
    let data_bytes: u64 = match &source {
        SweepSource::Gguf(g) => g
            .file()
            .tensors
            .iter()
            .map(|t| t.n_bytes().unwrap_or(0))
            .sum(),
        // The checkpoint's own dtypes are not kept by the converter: count its files.
        SweepSource::Hf(_) => base_bytes,
    };
    let base_name = match &source {
        SweepSource::Gguf(g) => g
            .file()
            .metadata
            .get_u64("general.file_type")
            .and_then(|id| crate::quant::FileType::all().find(|f| f.id() as u64 == id))
            .map_or_else(|| "base".to_string(), |f| f.name().to_string()),
        SweepSource::Hf(_) => "HF".to_string(),
    };
    let mut rows = vec![SweepRow {
        name: base_name,
        file: Some(opts.model.clone()),
        file_bytes: base_bytes,
        bpw: data_bytes as f64 * 8.0 / n_elements as f64,
        quantize_seconds: 0.0,
        eval_seconds: load_seconds + base.seconds,
        ppl: Some(base.perplexity()),
        kld: None,
        tensor_error: None,
        error: None,
    }];
    progress(SweepStep::Base(&rows[0]));

    let imatrix_input = match &opts.imatrix {
        Some(path) => imatrix::prepare(path, &[], &[])?.map(|w| ImatrixInput {
            kv: w.quantize_kv(&path.to_string_lossy()),
            weights: w.entries,
        }),
        None => None,
    };
    let stem = model_stem(&opts.model);
    let total = opts.types.len();
    for (index, name) in opts.types.iter().enumerate() {
        progress(SweepStep::Quantizing { index, total, name });
        let mut row = SweepRow {
            name: name.clone(),
            file: None,
            file_bytes: 0,
            bpw: 0.0,
            quantize_seconds: 0.0,
            eval_seconds: 0.0,
            ppl: None,
            kld: None,
            tensor_error: None,
            error: None,
        };
        if let Err(e) = measure_one(
            opts,
            &source,
            &backend,
            &device,
            imatrix_input.as_ref(),
            &stem,
            tokens,
            &base,
            &mut row,
        ) {
            row.error = Some(error_chain_text(&e));
        }
        progress(SweepStep::Done {
            index,
            total,
            row: &row,
        });
        rows.push(row);
    }
    let report = SweepReport {
        model: opts.model.clone(),
        n_ctx: opts.ppl.n_ctx,
        n_chunks: base.n_chunks,
        n_tokens: tokens.len(),
        imatrix: opts.imatrix.clone(),
        device: backend.describe(),
        rows,
    };
    write_reports(&report, &opts.out_dir)?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn measure_one(
    opts: &SweepOptions,
    source: &SweepSource,
    backend: &Backend,
    device: &DeviceChoice,
    imatrix_input: Option<&ImatrixInput>,
    stem: &str,
    tokens: &[u32],
    base: &ScoredLogits,
    row: &mut SweepRow,
) -> Result<()> {
    let unknown = || EvalError::UnknownType {
        name: row.name.clone(),
    };
    // `TYPE@Bbpw`: a size-targeted file with TYPE as its baseline.
    let (type_name, bpw) = match row.name.split_once('@') {
        Some((t, b)) => {
            let bpw: f64 = b
                .strip_suffix("bpw")
                .and_then(|b| b.parse().ok())
                .filter(|b: &f64| b.is_finite() && *b > 0.0)
                .ok_or_else(unknown)?;
            (t, Some(bpw))
        }
        None => (row.name.as_str(), None),
    };
    let Some(QuantTarget::Mix(ftype)) = QuantTarget::parse(type_name) else {
        return Err(unknown());
    };
    let (label, file_label) = match bpw {
        Some(b) => (
            format!("{}@{b}bpw", ftype.name()),
            format!("{}-{b}bpw", ftype.name()),
        ),
        None => (ftype.name().to_string(), ftype.name().to_string()),
    };
    row.name = label;
    let out = opts.out_dir.join(format!("{stem}.{file_label}.gguf"));
    let job = QuantizeJob {
        output: out.clone(),
        target: QuantTarget::Mix(ftype),
        type_options: TypeOptions::new(ftype),
        allow_requantize: false,
        imatrix: imatrix_input.cloned(),
        overrides: Vec::new(),
    };
    let q = match bpw {
        None => quantize(source.tensor_source(), &job, backend)?,
        Some(b) => {
            let target = SizeTarget::new(SizeGoal::Bpw(b));
            quantize_to_size(source.tensor_source(), &job, &target, backend)?.0
        }
    };
    row.quantize_seconds = q.seconds;
    row.bpw = q.bytes_out as f64 * 8.0 / q.n_elements as f64;
    row.file_bytes = std::fs::metadata(&out)
        .map_err(|e| EvalError::io("reading", &out, e))?
        .len();
    row.file = Some(out.clone());
    row.tensor_error = Some(
        backend
            .cpu_side()
            .install(|| tensor_errors(source.tensor_source(), &GgufFile::open(&out)?))?,
    );
    let t0 = Instant::now();
    let model = device.causal_lm(LlamaModel::load_with(&out, &opts.load)?)?;
    let logits = score_logits(model.as_ref(), tokens, &opts.ppl)?;
    row.eval_seconds = t0.elapsed().as_secs_f64();
    row.ppl = Some(logits.perplexity());
    row.kld = Some(kl_divergence(base, &logits)?);
    if opts.remove_files {
        std::fs::remove_file(&out).ok();
        row.file = None;
    }
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(String::new, |x| format!("{x:.digits$}"))
}

fn kld_99(k: &KldReport) -> Option<f64> {
    k.kld_percentiles
        .iter()
        .find(|(f, _)| (*f - 0.99).abs() < 1e-9)
        .map(|p| p.1)
}

/// Write report.md, report.csv and report.json.
pub fn write_reports(r: &SweepReport, dir: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(r)?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| EvalError::io("writing", path, e))
    };
    write("report.json", &json)?;

    let mut csv = String::from(
        "type,file_bytes,bpw,quantize_seconds,eval_seconds,ppl,ppl_uncertainty,ln_ppl_ratio,\
         mean_kld,kld_uncertainty,median_kld,kld_p99,max_kld,same_top_pct,rms_delta_p,\
         tensor_rel_rmse,worst_tensor,worst_tensor_rel_rmse,error\n",
    );
    for row in &r.rows {
        let p = row.ppl.as_ref();
        let k = row.kld.as_ref();
        let te = row.tensor_error.as_ref();
        let worst = te.and_then(|t| t.worst.as_ref());
        writeln!(
            csv,
            "{},{},{:.4},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            row.name,
            row.file_bytes,
            row.bpw,
            row.quantize_seconds,
            row.eval_seconds,
            opt(p.map(|p| p.ppl), 6),
            opt(p.map(|p| p.ppl_uncertainty), 6),
            opt(k.map(|k| k.ln_ppl_ratio), 6),
            opt(k.map(|k| k.mean_kld), 6),
            opt(k.map(|k| k.kld_uncertainty), 6),
            opt(k.map(|k| k.median_kld), 6),
            opt(k.and_then(kld_99), 6),
            opt(k.map(|k| k.max_kld), 6),
            opt(k.map(|k| k.same_top_pct), 3),
            opt(k.map(|k| 100.0 * k.rms_delta_p), 3),
            opt(te.map(|t| t.overall_rel_rmse), 6),
            worst.map_or("", |w| w.name.as_str()),
            opt(worst.map(|w| w.rel_rmse), 6),
            row.error
                .as_deref()
                .map(|e| format!("\"{}\"", e.replace('"', "\"\"")))
                .unwrap_or_default()
        )?;
    }
    write("report.csv", &csv)?;

    let mut md = String::new();
    writeln!(md, "# Quantization sweep: {}\n", r.model.display())?;
    writeln!(
        md,
        "{} tokens, {} chunks of {} (second half of each scored, llama-perplexity method){}; \
         quantized and evaluated on {}.\n",
        r.n_tokens,
        r.n_chunks,
        r.n_ctx,
        r.imatrix
            .as_ref()
            .map_or(String::new(), |p| format!(", imatrix {}", p.display())),
        r.device
    )?;
    writeln!(
        md,
        "| type | MiB | BPW | quantize s | PPL | ln(PPL/PPL base) | mean KLD | 99% KLD | same top % \
         | tensor rel. RMSE | worst tensor |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for row in &r.rows {
        if let Some(e) = &row.error {
            writeln!(
                md,
                "| {} | failed: {} |||||||||",
                row.name,
                e.replace('|', "\\|")
            )?;
            continue;
        }
        let p = row.ppl.as_ref();
        let k = row.kld.as_ref();
        let te = row.tensor_error.as_ref();
        let worst = te
            .and_then(|t| t.worst.as_ref())
            .map_or(String::new(), |w| {
                format!("{} ({}, {:.5})", w.name, w.ty, w.rel_rmse)
            });
        writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.2} | {} ± {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            row.file_bytes as f64 / 1048576.0,
            row.bpw,
            row.quantize_seconds,
            opt(p.map(|p| p.ppl), 4),
            opt(p.map(|p| p.ppl_uncertainty), 4),
            opt(k.map(|k| k.ln_ppl_ratio), 5),
            opt(k.map(|k| k.mean_kld), 6),
            opt(k.and_then(kld_99), 6),
            opt(k.map(|k| k.same_top_pct), 2),
            opt(te.map(|t| t.overall_rel_rmse), 5),
            worst,
        )?;
    }
    write("report.md", &md)?;
    write_plot(r, &dir.join("report.svg"))?;
    Ok(())
}

/// File size (MiB) against mean KL divergence, one labelled point per quantized type, as SVG.
/// Types without numbers are left out; with none at all the plot is an empty frame.
pub fn write_plot(r: &SweepReport, path: &Path) -> Result<()> {
    use plotters::prelude::*;

    let points: Vec<(f64, f64, &str)> = r
        .rows
        .iter()
        .filter_map(|row| {
            let k = row.kld.as_ref()?;
            Some((
                row.file_bytes as f64 / 1048576.0,
                k.mean_kld,
                row.name.as_str(),
            ))
        })
        .collect();
    let (mut x_max, mut y_max) = (1e-6f64, 1e-9f64);
    for &(x, y, _) in &points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let svg_err = |e: &dyn std::fmt::Display| EvalError::Plot {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    {
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| svg_err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("file size vs mean KL divergence", ("sans-serif", 20))
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max * 1.1, 0f64..y_max * 1.15)
            .map_err(|e| svg_err(&e))?;
        chart
            .configure_mesh()
            .x_desc("file size (MiB)")
            .y_desc("mean KLD")
            .draw()
            .map_err(|e| svg_err(&e))?;
        let mut by_size = points.clone();
        by_size.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(
                by_size.iter().map(|&(x, y, _)| (x, y)),
                &BLUE,
            ))
            .map_err(|e| svg_err(&e))?;
        chart
            .draw_series(points.iter().map(|&(x, y, name)| {
                EmptyElement::at((x, y))
                    + Circle::new((0, 0), 4, BLUE.filled())
                    + Text::new(name.to_string(), (6, -14), ("sans-serif", 13))
            }))
            .map_err(|e| svg_err(&e))?;
        root.present().map_err(|e| svg_err(&e))?;
    }
    Ok(())
}
