//! `qforge compare A B [--eval TEXT [-c N]] [--json]`: metadata diff, tensors side by side with
//! the error of B's dequantized values against A's, a summary per tensor kind, and with
//! `--eval` perplexity of both and KL divergence of B against A.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use qforge::eval::PplOptions;
use qforge::inspect::{compare, compare_eval, CompareEvent, CompareReport};

use super::runtime::{load_causal_lm, read_text, set_threads, EvalDevice};

#[derive(Args)]
pub struct CompareArgs {
    /// The reference model: a GGUF file or a Hugging Face directory.
    a: PathBuf,
    /// The model measured against A (e.g. a quantization of it).
    b: PathBuf,
    /// Text to measure perplexity and KL divergence on.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Tokens per evaluation chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Where the evaluation's forward pass runs.
    #[arg(long, value_enum, default_value_t = EvalDevice::Cpu)]
    device: EvalDevice,
}

pub fn run(a: CompareArgs) -> Result<()> {
    set_threads(a.threads)?;
    let progress = std::io::stderr().is_terminal();
    let mut on_event = |e: CompareEvent<'_>| {
        if !progress {
            return;
        }
        match e {
            CompareEvent::Tensor { index, total, .. } => {
                eprint!("\rqforge: comparing tensor {}/{total}\x1b[K", index + 1)
            }
            CompareEvent::Chunk { model, done, total } => {
                eprint!("\rqforge: evaluating {model}: chunk {done}/{total}\x1b[K")
            }
        }
    };
    let mut report = compare(&a.a, &a.b, &mut on_event)?;
    if let Some(text_path) = &a.eval {
        let text = read_text(text_path)?;
        let ma = load_causal_lm(&a.a, a.device)?;
        let mb = load_causal_lm(&a.b, a.device)?;
        let opts = PplOptions {
            n_ctx: a.ctx,
            n_chunks: a.chunks,
            ..Default::default()
        };
        report.eval = Some(compare_eval(
            ma.as_ref(),
            mb.as_ref(),
            text_path,
            &text,
            &opts,
            &mut on_event,
        )?);
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn shape(s: &Option<Vec<u64>>) -> String {
    match s {
        Some(ne) => ne.iter().map(u64::to_string).collect::<Vec<_>>().join("x"),
        None => "-".into(),
    }
}

fn print_report(r: &CompareReport) {
    println!("A: {}", r.a.display());
    println!("B: {}", r.b.display());
    println!(
        "metadata: {} added, {} removed, {} changed",
        r.kv.added.len(),
        r.kv.removed.len(),
        r.kv.changed.len()
    );
    for e in &r.kv.added {
        println!("  + {} = {}", e.key, e.value);
    }
    for e in &r.kv.removed {
        println!("  - {} = {}", e.key, e.value);
    }
    for c in &r.kv.changed {
        println!("  ~ {}: {} -> {}", c.key, c.a, c.b);
    }
    println!(
        "{:<36} {:>8} {:>8} {:>14} {:>14} {:>11} {:>11}",
        "tensor", "type A", "type B", "shape A", "shape B", "rel RMSE", "max |d|"
    );
    let num = |v: Option<f64>| v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into());
    for t in &r.tensors {
        println!(
            "{:<36} {:>8} {:>8} {:>14} {:>14} {:>11} {:>11}{}",
            t.name,
            t.type_a.as_deref().unwrap_or("-"),
            t.type_b.as_deref().unwrap_or("-"),
            shape(&t.shape_a),
            shape(&t.shape_b),
            num(t.rel_rmse),
            num(t.max_abs),
            t.note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
    }
    println!("by kind:");
    for k in &r.kinds {
        println!(
            "  {:<28} {:>4} tensors  rel RMSE {:.3e}  worst {:.3e}  max |d| {:.3e}",
            k.kind, k.count, k.rel_rmse, k.worst_rel_rmse, k.max_abs
        );
    }
    println!("overall rel RMSE: {:.4e}", r.overall_rel_rmse);
    if let Some(e) = &r.eval {
        println!(
            "eval on {} ({} tokens, {} chunks of {}):",
            e.text.display(),
            e.tokens,
            e.chunks,
            e.n_ctx
        );
        println!("  PPL(A) = {:.4} +/- {:.5}", e.ppl_a, e.ppl_a_uncertainty);
        println!("  PPL(B) = {:.4} +/- {:.5}", e.ppl_b, e.ppl_b_uncertainty);
        println!(
            "  KLD(B||A) mean {:.6} +/- {:.6}, median {:.6}, max {:.6}; same top token {:.2} %",
            e.kld.mean_kld,
            e.kld.kld_uncertainty,
            e.kld.median_kld,
            e.kld.max_kld,
            e.kld.same_top_pct
        );
    }
}
