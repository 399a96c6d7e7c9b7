//! `qforge convert MODEL_DIR`: convert_hf_to_gguf.py's job, and — with a quantize TYPE as
//! `--outtype` — convert + llama-quantize in one pass with no intermediate file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Args;

use qforge::convert::checkpoint::{HfModel, HfOptions};
use qforge::convert::encode::OutType;
use qforge::formats::same_file::{check_file_output, check_output, JobInput};
use qforge::ggml::ftype::QuantTarget;
use qforge::lora::AdapterSpec;
use qforge::pipeline::convert::{
    convert, convert_with_progress, ConvertOptions, ConvertProgress, ConvertReport,
};
use qforge::pipeline::convert_lora::{convert_with_lora, LoraMergedModel};

use super::lora::merge_device;
use super::quantize::QuantOptions;

#[derive(Args)]
pub struct ConvertArgs {
    /// Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer files), or a Hub
    /// repository ORG/NAME[@REV] (pulled first; the output then defaults to the current folder).
    model_dir: PathBuf,
    /// Output file, or a directory to put the script-named file in (default: MODEL_DIR).
    #[arg(short = 'o', long = "outfile")]
    outfile: Option<PathBuf>,
    /// f32, f16, bf16, q8_0, auto (as the script), or any quantize TYPE (Q4_K_M, …).
    #[arg(long, default_value = "auto")]
    outtype: String,
    /// Override general.name.
    #[arg(long)]
    model_name: Option<String>,
    /// Merge these PEFT LoRA adapters in the same pass (ADAPTER_DIR[:SCALE], repeatable, folded
    /// in order): the output equals `merge-lora` then `convert`. `--device` picks where.
    /// An adapter may be on the Hub: ORG/NAME[@REV][:SCALE] or hf://….
    #[arg(long)]
    lora: Vec<String>,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    quant: QuantOptions,
}

pub fn run(mut a: ConvertArgs) -> Result<()> {
    let model = super::pull::local_model(&a.model_dir)?;
    (a.model_dir, a.outfile) = (
        model.path.clone(),
        a.outfile.or(model.from_hub.then(|| ".".into())),
    );
    let mut adapters = a
        .lora
        .iter()
        .map(|s| AdapterSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let _pulled = super::pull::local_models(adapters.iter_mut().map(|s| &mut s.dir))?;
    let mut inputs = vec![JobInput::new(&a.model_dir, "model")];
    inputs.extend(adapters.iter().map(|s| JobInput::new(&s.dir, "adapter")));
    inputs.extend(a.quant.inputs());
    if let Some(outtype) = OutType::parse(&a.outtype) {
        let out = a.outfile.clone().unwrap_or_else(|| a.model_dir.clone());
        // A directory output gets the script's `.gguf` name inside it.
        if !out.is_dir() {
            check_output(&out, &inputs)?;
        }
        let opts = ConvertOptions {
            outtype,
            model_name: a.model_name.clone(),
            threads: (a.threads > 0).then(|| super::limits::cap_threads(a.threads, "--threads")),
        };
        let r = if !adapters.is_empty() {
            // No quantize backend here: the device is for the merge alone.
            let device = merge_device(a.quant.device_spec()?, None)?;
            convert_with_lora(&a.model_dir, &adapters, &out, &opts, device)?
        } else if std::io::stderr().is_terminal() {
            convert_with_bar(&a.model_dir, &out, &opts)?
        } else {
            convert(&a.model_dir, &out, &opts)?
        };
        println!(
            "wrote {} ({}, {:?}, {} tensors, {:.1} MiB) in {:.2} s",
            r.output.display(),
            r.architecture,
            r.outtype,
            r.n_tensors,
            r.tensor_bytes as f64 / 1048576.0,
            r.seconds
        );
        return Ok(());
    }
    let target = QuantTarget::parse(&a.outtype).ok_or_else(|| {
        anyhow!(
            "--outtype {}: not f32/f16/bf16/q8_0/auto nor a quantize type",
            a.outtype
        )
    })?;
    let out = match a.outfile {
        Some(p) if p.is_dir() => p.join(format!(
            "ggml-model-{}.gguf",
            a.outtype.to_ascii_uppercase()
        )),
        Some(p) => p,
        None => a.model_dir.join(format!(
            "ggml-model-{}.gguf",
            a.outtype.to_ascii_uppercase()
        )),
    };
    if !a.quant.dry_run() {
        check_file_output(&out, &inputs)?;
    }
    // One pass: the checkpoint seen as its f32 conversion, fed to the quantize pipeline.
    let hf_opts = HfOptions {
        outtype: OutType::F32,
        model_name: a.model_name.clone(),
    };
    let backend = a.quant.backend(a.threads)?;
    if adapters.is_empty() {
        let source = HfModel::open(&a.model_dir, &hf_opts)?;
        return a.quant.run_on(&source, target, out, &backend);
    }
    // The merge runs where the quantization runs (one device, one self-check policy).
    let device = merge_device(a.quant.device_spec()?, Some(&backend))?;
    let source = LoraMergedModel::open(&a.model_dir, &hf_opts, &adapters, device)?;
    eprintln!(
        "qforge: merging {} adapter(s) into {} tensor(s) in the same pass",
        adapters.len(),
        source.n_merged()
    );
    a.quant.run_on(&source, target, out, &backend)
}

/// [`convert`] with a progress bar on stderr (bytes written, current tensor). Only for a
/// terminal: logs and pipes get the plain summary line alone.
fn convert_with_bar(model_dir: &Path, out: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    let bar = indicatif::ProgressBar::hidden();
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} \
         ({binary_bytes_per_sec}) {msg}",
    )
    .expect("valid template");
    let result = convert_with_progress(model_dir, out, opts, &mut |p| match p {
        ConvertProgress::Start {
            output,
            n_tensors,
            total_bytes,
        } => {
            bar.set_length(total_bytes);
            bar.set_style(style.clone());
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.println(format!(
                "writing {} ({n_tensors} tensors)",
                output.display()
            ));
            // Redraw while one big tensor (an embedding) is converting, so time visibly moves.
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
        }
        ConvertProgress::Tensor { name, bytes, .. } => {
            bar.set_message(name.to_string());
            bar.inc(bytes);
        }
    });
    bar.finish_and_clear();
    Ok(result?)
}
