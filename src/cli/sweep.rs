//! `qforge sweep`: quantize one model to several types and measure each against it (size,
//! bits per weight, perplexity, KL divergence); writes DIR/report.{md,csv,json,svg}.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use qforge::convert::checkpoint::{HfModel, HfOptions};
use qforge::convert::encode::OutType;
use qforge::eval::perplexity::chunk_count;
use qforge::eval::{sweep_with_progress, tokenize_eval_text, PplOptions, SweepOptions, SweepStep};
use qforge::formats::gguf::GgufFile;
use qforge::formats::tensor_source::TensorSource;
use qforge::runtime::forward::LoadOptions;

use super::runtime::{read_text, set_threads, EvalDevice};

#[derive(Args)]
pub struct SweepArgs {
    /// The unquantized model: a GGUF file (F32/F16/BF16) or a Hugging Face directory, local or
    /// on the Hub (ORG/NAME[@REV], hf://ORG/NAME[@REV]/FILE.gguf).
    model: PathBuf,
    /// Comma-separated llama-quantize types (Q2_K,Q3_K_M,Q4_K_M,Q8_0,…); TYPE@Bbpw is a
    /// size-targeted file (as --target-bpw) with TYPE as its baseline.
    #[arg(long, value_delimiter = ',', required_unless_present = "target_bpw")]
    types: Vec<String>,
    /// Also size-targeted files of these bits per weight (comma-separated), beside the fixed
    /// mixes: each is `quantize --target-bpw B` with --target-baseline as TYPE.
    #[arg(long, value_delimiter = ',')]
    target_bpw: Vec<f64>,
    /// The baseline mix of the --target-bpw rows.
    #[arg(long, default_value = "Q4_K_M")]
    target_baseline: String,
    /// Importance matrix used for every quantization (GGUF or .dat).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Text to measure perplexity and KL divergence on.
    #[arg(long)]
    eval: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Output directory (created if missing).
    #[arg(short = 'o', long = "output-dir")]
    output: PathBuf,
    /// Delete each quantized file once measured.
    #[arg(long)]
    remove_files: bool,
    /// Threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Where to quantize and evaluate: auto (a hardware GPU, else the CPU), cpu, gpu.
    #[arg(long, value_enum, default_value_t = EvalDevice::Auto)]
    device: EvalDevice,
}

pub fn run(mut a: SweepArgs) -> Result<()> {
    for b in std::mem::take(&mut a.target_bpw) {
        if !(b.is_finite() && b > 0.0) {
            bail!("--target-bpw {b}: must be a positive number");
        }
        a.types.push(format!("{}@{b}bpw", a.target_baseline));
    }
    let local = super::pull::local_model(&a.model)?;
    a.model = local.path.clone();
    if !a.model.exists() {
        bail!("{}: no such model file or directory", a.model.display());
    }
    set_threads(a.threads)?;
    let text = read_text(&a.eval)?;
    // Tokenize with the model's own vocabulary before any quantization starts.
    let metadata = if a.model.is_dir() {
        HfModel::open(
            &a.model,
            &HfOptions {
                outtype: OutType::F32,
                model_name: None,
            },
        )?
        .metadata()
        .clone()
    } else {
        GgufFile::open(&a.model)?.metadata.clone()
    };
    let tokens = tokenize_eval_text(&metadata, &text, false)?;
    let ppl = PplOptions {
        n_ctx: a.ctx,
        n_chunks: a.chunks,
        ..Default::default()
    };
    let n_chunks = chunk_count(tokens.len(), &ppl)?;
    eprintln!(
        "qforge: sweeping {} types; {} tokens, {n_chunks} chunks of {}",
        a.types.len(),
        tokens.len(),
        a.ctx
    );
    let opts = SweepOptions {
        model: a.model.clone(),
        types: a.types.clone(),
        out_dir: a.output.clone(),
        ppl,
        imatrix: a.imatrix.clone(),
        threads: a.threads,
        remove_files: a.remove_files,
        load: LoadOptions::default(),
        device: a.device.spec(),
    };
    let report = sweep_with_progress(&opts, &tokens, &mut |step| {
        match step {
        SweepStep::Base(row) => eprintln!(
            "qforge: base {}: PPL {:.4} ({:.1} s)",
            row.name,
            row.ppl.as_ref().map_or(f64::NAN, |p| p.ppl),
            row.eval_seconds
        ),
        SweepStep::Quantizing { index, total, name } => {
            eprintln!("qforge: [{}/{total}] {name}: quantizing…", index + 1)
        }
        SweepStep::Done { index, total, row } => match &row.error {
            Some(e) => eprintln!("qforge: [{}/{total}] {}: failed: {e}", index + 1, row.name),
            None => eprintln!(
                "qforge: [{}/{total}] {}: {:.3} bpw, PPL {:.4}, mean KLD {:.6} (quantize {:.1} s, eval {:.1} s)",
                index + 1,
                row.name,
                row.bpw,
                row.ppl.as_ref().map_or(f64::NAN, |p| p.ppl),
                row.kld.as_ref().map_or(f64::NAN, |k| k.mean_kld),
                row.quantize_seconds,
                row.eval_seconds
            ),
        },
    }
    })?;
    print!(
        "{}",
        std::fs::read_to_string(a.output.join("report.md")).unwrap_or_default()
    );
    let failed = report.rows.iter().filter(|r| r.error.is_some()).count();
    println!(
        "wrote {}/report.md, report.csv, report.json, report.svg",
        a.output.display()
    );
    if failed > 0 {
        bail!(
            "{failed} of {} types failed (see the report)",
            a.types.len()
        );
    }
    Ok(())
}
