//! `qforge demo`: the whole job on a model made here — generate, quantize to several types,
//! dequantize, and print size and error for each.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use qforge::eval::tensor_errors;
use qforge::formats::gguf::GgufFile;
use qforge::formats::GgufSource;
use qforge::ggml::ftype::QuantTarget;
use qforge::pipeline::quantize::{quantize, QuantizeJob};
use qforge::pipeline::Backend;
use qforge::quant::rules::TypeOptions;
use qforge::runtime::synthetic::SyntheticLlama;

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the generated model and its quantizations.
    #[arg(long, default_value = "qforge-demo")]
    out: PathBuf,
    /// Quant types to produce (comma-separated ftype names).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,IQ4_XS,Q3_K_M,Q2_K"
    )]
    types: Vec<String>,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let model = SyntheticLlama::default();
    let base = a.out.join("synthetic-llama.f16.gguf");
    model.write_gguf(&base)?;
    let base_len = std::fs::metadata(&base)?.len();
    println!(
        "generated {} ({:.2} MiB, {} layers, F16)",
        base.display(),
        base_len as f64 / 1048576.0,
        model.n_layer
    );
    let source = GgufSource::open(&base)?;
    let backend = Backend::cpu(a.threads);
    println!(
        "{:<8} {:>10} {:>7} {:>10} {:>12}",
        "type", "MiB", "BPW", "seconds", "rel. RMSE"
    );
    for name in &a.types {
        let Some(QuantTarget::Mix(ftype)) = QuantTarget::parse(name) else {
            println!("{name:<8} unknown type");
            continue;
        };
        let out = a.out.join(format!("synthetic-llama.{}.gguf", ftype.name()));
        let job = QuantizeJob {
            output: out.clone(),
            target: QuantTarget::Mix(ftype),
            type_options: TypeOptions::new(ftype),
            allow_requantize: false,
            imatrix: None,
            overrides: Vec::new(),
        };
        match quantize(&source, &job, &backend) {
            Ok(r) => {
                let rmse = tensor_errors(&source, &GgufFile::open(&out)?)?.overall_rel_rmse;
                println!(
                    "{:<8} {:>10.3} {:>7.3} {:>10.3} {:>12.5}",
                    ftype.name(),
                    r.bytes_out as f64 / 1048576.0,
                    r.bytes_out as f64 * 8.0 / r.n_elements as f64,
                    r.seconds,
                    rmse
                );
            }
            Err(e) => println!("{:<8} {:#}", ftype.name(), anyhow::Error::from(e)),
        }
    }
    Ok(())
}
