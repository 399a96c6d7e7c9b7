//! `qforge imatrix`: collect an importance matrix the way llama-imatrix does (Σ of squared
//! activations per input column of every `blk.*` matmul weight, token counts, CTX-token chunks)
//! and save it as llama.cpp's GGUF imatrix or its legacy `.dat` format.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use qforge::eval::perplexity::chunk_count;
use qforge::eval::{collect_imatrix_with_progress, tokenize_eval_text, ImatrixOptions, PplOptions};
use qforge::formats::same_file::{check_file_output, JobInput};

use super::runtime::{load_causal_lm, read_text, set_threads, ChunkBar, EvalDevice};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImatrixFormat {
    /// GGUF (`<name>.in_sum2` / `<name>.counts` tensors), llama-imatrix's default.
    Gguf,
    /// The legacy binary format (`.dat`).
    Dat,
}

#[derive(Args)]
pub struct ImatrixArgs {
    /// Model: a GGUF file or a Hugging Face directory, or one on the Hub (ORG/NAME[@REV], hf://…).
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Calibration text.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Output file.
    #[arg(short = 'o', long = "output-file", default_value = "imatrix.gguf")]
    output: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Process at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// File format (default gguf, whatever the output's suffix, as llama-imatrix).
    #[arg(long = "output-format", value_enum)]
    output_format: Option<ImatrixFormat>,
    /// Also collect output.weight.
    #[arg(long = "process-output")]
    process_output: bool,
    /// Threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    #[arg(long, value_enum, default_value_t = EvalDevice::Auto)]
    device: EvalDevice,
}

pub fn run(a: ImatrixArgs) -> Result<()> {
    // As llama-imatrix: GGUF unless `--output-format dat`, with a warning for another suffix.
    let format = a.output_format.unwrap_or(ImatrixFormat::Gguf);
    if a.output_format.is_none() && a.output.extension().is_none_or(|e| e != "gguf") {
        eprintln!(
            "qforge: warning: saving {} in GGUF format; use --output-format dat for the legacy format",
            a.output.display()
        );
    }
    check_file_output(
        &a.output,
        &[
            JobInput::new(&a.model, "model"),
            JobInput::new(&a.file, "text"),
        ],
    )?;
    set_threads(a.threads)?;
    let text = read_text(&a.file)?;
    let local = super::pull::local_model(&a.model)?;
    let model = load_causal_lm(&local.path, a.device)?;
    // llama-imatrix's default: special-token texts are not parsed (no --parse-special).
    let tokens = tokenize_eval_text(model.metadata(), &text, false)?;
    let opts = ImatrixOptions {
        chunks: PplOptions {
            n_ctx: a.ctx,
            n_chunks: a.chunks,
            // llama-imatrix's default micro-batch; chunks longer than it run in pieces.
            n_ubatch: 512,
        },
        process_output: a.process_output,
        dataset: Some(a.file.to_string_lossy().into_owned()),
    };
    let n_chunks = chunk_count(tokens.len(), &opts.chunks)?;
    eprintln!(
        "qforge: {} tokens, {n_chunks} chunks of {} on the CPU",
        tokens.len(),
        a.ctx
    );
    let bar = ChunkBar::new(n_chunks, "imatrix");
    let mut line = String::new();
    let run = collect_imatrix_with_progress(model.as_ref(), &tokens, &opts, &mut |p| {
        bar.update(&p);
        line.push_str(&format!("[{}]{:.4},", p.done, p.ppl));
    })?;
    bar.finish();
    println!("{line}");
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        run.perplexity.ppl, run.perplexity.ppl_uncertainty
    );
    match format {
        ImatrixFormat::Gguf => run.stats.write_gguf(&a.output)?,
        ImatrixFormat::Dat => run.stats.write_legacy(&a.output)?,
    }
    println!(
        "wrote {} ({} entries, {} chunks, {:.2} s)",
        a.output.display(),
        run.stats.entries.len(),
        run.stats.chunk_count,
        run.perplexity.seconds
    );
    Ok(())
}
