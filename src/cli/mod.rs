//! Command-line front end. Errors become one line on stderr and a non-zero exit.

mod batch;
mod bench;
mod child_process;
mod compare;
mod config;
mod convert;
mod demo;
mod doctor;
mod export;
mod imatrix;
mod info;
mod job_args;
mod limits;
mod lora;
mod perplexity;
mod pull;
mod quantize;
mod recipe;
mod runtime;
mod serve;
mod signals;
mod sweep;
mod synth;
mod validate;

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
    /// Download a model repository from the Hugging Face Hub into huggingface_hub's cache.
    Pull(pull::PullArgs),
    /// Write a Hugging Face directory (safetensors, config, tokenizer) from a GGUF model.
    Export(export::ExportArgs),
    /// Generate a tiny random llama model, quantize it to several types, print sizes and errors.
    Demo(demo::DemoArgs),
    /// Run a recipe of quantize/convert/sweep jobs, resumable and shardable across machines.
    Batch(Box<batch::BatchArgs>),
    /// Print the merged defaults (.qforge.toml, the user's config file) and where each came from.
    Config(config::ConfigArgs),
    /// Serve a REST API that queues and runs qforge jobs inside a root directory.
    Serve(Box<serve::ServeArgs>),
    /// Check a GGUF file, safetensors file or Hugging Face directory: one line per problem, exit 1 if any.
    Validate(validate::ValidateArgs),
    /// Compare two models: metadata diff, per-tensor error of B against A, optional PPL/KLD.
    Compare(Box<compare::CompareArgs>),
}

/// Prints the library's notices on stderr, one line each.
struct StderrNotices;

impl qforge::notice::Observer for StderrNotices {
    fn notice(&self, notice: &qforge::notice::Notice) {
        eprintln!("qforge: {notice}");
    }
}

pub fn run() -> i32 {
    // Defaults from .qforge.toml and the user's config file: flags on the command line win.
    let argv = match config::Settings::load()
        .and_then(|s| config::apply_defaults(std::env::args_os().collect(), &s))
    {
        Ok(argv) => argv,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("qforge: error: {}", msg.join(": "));
            return 1;
        }
    };
    let cli = Cli::parse_from(argv);
    qforge::notice::set_observer(Some(std::sync::Arc::new(StderrNotices)));
    signals::install();
    let result = match cli.command {
        // validate's exit status says whether the file is sound, not only whether it ran.
        Command::Validate(a) => validate::run(a).map(|code| {
            if code != 0 {
                std::process::exit(code)
            }
        }),
        Command::Compare(a) => compare::run(*a),
        Command::Quantize(a) => quantize::run(*a),
        Command::Info(a) => info::run(a),
        Command::Convert(a) => convert::run(*a),
        Command::MergeLora(a) => lora::merge(a),
        Command::LoraToGguf(a) => lora::to_gguf(a),
        Command::Demo(a) => demo::run(a),
        Command::Export(a) => export::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Imatrix(a) => imatrix::run(*a),
        Command::Perplexity(a) => perplexity::run(*a),
        Command::Sweep(a) => sweep::run(*a),
        Command::Batch(a) => batch::run(*a),
        Command::Config(a) => config::run(a),
        Command::Serve(a) => serve::run(*a),
        Command::Pull(a) => pull::run(a),
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
