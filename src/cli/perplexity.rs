//! `qforge perplexity`: llama-perplexity's default mode (chunks of CTX tokens, the second half
//! of each scored) and its KL-divergence mode: `--kl-divergence-base FILE` alone saves the
//! scored logits of this model; with `--kl-divergence` it reads them back and compares.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use qforge::eval::kld::{read_scored_logits, write_scored_logits};
use qforge::eval::perplexity::chunk_count;
use qforge::eval::{
    kl_divergence, perplexity_with_progress, score_logits_with_progress, tokenize_eval_text,
    KldReport, PplOptions, PplReport,
};
use qforge::formats::same_file::{check_file_output, JobInput};

use super::runtime::{load_causal_lm, read_text, set_threads, ChunkBar, EvalDevice};

#[derive(Args)]
pub struct PerplexityArgs {
    /// Model: a GGUF file or a Hugging Face directory, or one on the Hub (ORG/NAME[@REV], hf://…).
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Text to evaluate.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Logits file of the base model: written when --kl-divergence is absent, read when given.
    #[arg(long = "kl-divergence-base")]
    kl_divergence_base: Option<PathBuf>,
    /// Compare with the --kl-divergence-base logits and print KL-divergence statistics.
    #[arg(long = "kl-divergence")]
    kl_divergence: bool,
    /// Threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    #[arg(long, value_enum, default_value_t = EvalDevice::Auto)]
    device: EvalDevice,
}

pub fn run(a: PerplexityArgs) -> Result<()> {
    if a.kl_divergence && a.kl_divergence_base.is_none() {
        bail!("--kl-divergence needs --kl-divergence-base FILE (the base model's saved logits)");
    }
    let base = match (&a.kl_divergence_base, a.kl_divergence) {
        (Some(path), true) => Some(read_scored_logits(path)?),
        (Some(path), false) => {
            // The base logits are written: never over the model or the text.
            check_file_output(
                path,
                &[
                    JobInput::new(&a.model, "model"),
                    JobInput::new(&a.file, "text"),
                ],
            )?;
            None
        }
        _ => None,
    };
    set_threads(a.threads)?;
    let text = read_text(&a.file)?;
    let local = super::pull::local_model(&a.model)?;
    let model = load_causal_lm(&local.path, a.device)?;
    let tokens = tokenize_eval_text(model.metadata(), &text, false)?;
    let opts = PplOptions {
        n_ctx: a.ctx,
        n_chunks: a.chunks,
        ..Default::default()
    };
    let n_chunks = chunk_count(tokens.len(), &opts)?;
    eprintln!(
        "qforge: {} tokens, {n_chunks} chunks of {} on the CPU",
        tokens.len(),
        a.ctx
    );
    let bar = ChunkBar::new(n_chunks, "perplexity");
    let mut line = String::new();
    let mut progress = |p: qforge::eval::ChunkProgress| {
        bar.update(&p);
        line.push_str(&format!("[{}]{:.4},", p.done, p.ppl));
    };
    match (&a.kl_divergence_base, base) {
        (Some(path), None) => {
            let scored = score_logits_with_progress(model.as_ref(), &tokens, &opts, &mut progress)?;
            bar.finish();
            write_scored_logits(&scored, path)?;
            println!("{line}");
            print_ppl(&scored.perplexity());
            eprintln!("qforge: saved the base logits to {}", path.display());
        }
        (_, Some(base)) => {
            let scored = score_logits_with_progress(model.as_ref(), &tokens, &opts, &mut progress)?;
            bar.finish();
            let kld = kl_divergence(&base, &scored)?;
            println!("{line}");
            print_ppl(&scored.perplexity());
            print_kld(&kld);
        }
        (None, None) => {
            let r = perplexity_with_progress(model.as_ref(), &tokens, &opts, &mut progress)?;
            bar.finish();
            println!("{line}");
            print_ppl(&r);
        }
    }
    Ok(())
}

fn print_ppl(r: &PplReport) {
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        r.ppl, r.ppl_uncertainty
    );
    eprintln!(
        "qforge: {} tokens in {:.2} s ({:.1} tokens/s)",
        r.tokens_evaluated,
        r.seconds,
        r.tokens_evaluated as f64 / r.seconds.max(1e-9)
    );
}

fn print_kld(k: &KldReport) {
    println!();
    println!("====== Perplexity statistics ======");
    println!("Mean PPL(Q)                   : {:10.6}", k.ppl);
    println!("Mean PPL(base)                : {:10.6}", k.ppl_base);
    println!("Mean ln(PPL(Q)/PPL(base))     : {:10.6}", k.ln_ppl_ratio);
    println!();
    println!("====== KL divergence statistics ======");
    println!(
        "Mean    KLD: {:10.6} ± {:10.6}",
        k.mean_kld, k.kld_uncertainty
    );
    println!("Maximum KLD: {:10.6}", k.max_kld);
    for &(f, v) in k.kld_percentiles.iter().filter(|(f, _)| *f > 0.5) {
        println!("{:4.1}%   KLD: {v:10.6}", 100.0 * f);
    }
    println!("Median  KLD: {:10.6}", k.median_kld);
    for &(f, v) in k.kld_percentiles.iter().filter(|(f, _)| *f < 0.5) {
        println!("{:4.1}%   KLD: {v:10.6}", 100.0 * f);
    }
    println!("Minimum KLD: {:10.6}", k.min_kld);
    println!();
    println!("====== Token probability statistics ======");
    println!("Mean    Δp: {:6.3} %", 100.0 * k.mean_delta_p);
    println!("RMS Δp    : {:6.3} %", 100.0 * k.rms_delta_p);
    println!("Same top p: {:6.3} %", k.same_top_pct);
}
