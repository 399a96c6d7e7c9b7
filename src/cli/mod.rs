//! Command-line front end. Errors become one line on stderr and a non-zero exit.

mod bench;
mod convert;
mod demo;
mod doctor;
mod imatrix;
mod info;
mod limits;
mod lora;
mod perplexity;
mod quantize;
mod runtime;
mod signals;
mod sweep;
mod synth;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "qforge",
    version,
    about = "LLM checkpoints → GGUF, byte-identical with llama.cpp, on GPU or CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quantize a GGUF file (llama-quantize's grammar: INPUT [OUTPUT] TYPE [NTHREADS]).
    Quantize(Box<quantize::QuantizeArgs>),
    /// Convert a Hugging Face checkpoint directory to GGUF (optionally quantizing in one pass).
    Convert(Box<convert::ConvertArgs>),
    /// Merge PEFT LoRA adapters into a base (HF directory or GGUF file).
    MergeLora(lora::MergeLoraArgs),
    /// Convert a PEFT LoRA adapter to the GGUF adapter llama.cpp loads with --lora.
    LoraToGguf(lora::LoraToGgufArgs),
    /// Show a GGUF file's metadata and tensor table.
    Info(info::InfoArgs),
    /// Write a random llama GGUF of a chosen size (nothing downloaded).
    Synth(synth::SynthArgs),
    /// Quantization throughput per type, CPU vs GPU, measured in one run.
    Bench(bench::BenchArgs),
    /// List GPU adapters and self-check every GPU kernel on them.
    Doctor(doctor::DoctorArgs),
    /// Collect an importance matrix from a text (llama-imatrix).
    Imatrix(Box<imatrix::ImatrixArgs>),
    /// Perplexity of a model on a text, and KL divergence against a saved base (llama-perplexity).
    Perplexity(Box<perplexity::PerplexityArgs>),
    /// Quantize to several types and report size, perplexity and KL divergence of each.
    Sweep(Box<sweep::SweepArgs>),
    /// Generate a tiny random llama model, quantize it to several types, print sizes and errors.
    Demo(demo::DemoArgs),
}

pub fn run() -> i32 {
    let cli = Cli::parse();
    signals::install();
    let result = match cli.command {
        Command::Quantize(a) => quantize::run(*a),
        Command::Info(a) => info::run(a),
        Command::Convert(a) => convert::run(*a),
        Command::MergeLora(a) => lora::merge(a),
        Command::LoraToGguf(a) => lora::to_gguf(a),
        Command::Demo(a) => demo::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Imatrix(a) => imatrix::run(*a),
        Command::Perplexity(a) => perplexity::run(*a),
        Command::Sweep(a) => sweep::run(*a),
    };
    for p in qforge::formats::atomic::take_removed_stale() {
        eprintln!(
            "qforge: removed {}, left by a process that no longer runs",
            p.display()
        );
    }
    if signals::interrupted() {
        eprintln!("qforge: interrupted; no output written");
        return signals::EXIT_INTERRUPTED;
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("qforge: error: {}", one_line(&e));
            1
        }
    }
}

/// The chain of causes joined on one line, skipping a cause whose text the previous message
/// already ends with (an error that prints its source, as `"{path}: {source}"` does, would
/// otherwise show an OS error twice).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
