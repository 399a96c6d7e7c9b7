//! `qforge validate PATH [--json]`: is a GGUF file (or split set), safetensors file or Hugging
//! Face directory sound? One line per problem naming the file and the tensor or key; exit 1
//! when there is any.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use qforge::inspect::{validate, ValidateEvent};

#[derive(Args)]
pub struct ValidateArgs {
    /// A .gguf file (any shard of a split set), a .safetensors file, or a Hugging Face directory.
    path: PathBuf,
    /// Print the report as JSON on stdout instead of lines.
    #[arg(long)]
    json: bool,
}

/// Exit status: 0 when sound, 1 when a problem was found.
pub fn run(a: ValidateArgs) -> Result<i32> {
    let progress = std::io::stderr().is_terminal() && !a.json;
    let mut on_event = |e: ValidateEvent<'_>| match e {
        ValidateEvent::Tensor { index, total, .. } if progress => {
            eprint!("\rqforge: scanning tensor {}/{total}", index + 1);
        }
        _ => {}
    };
    let report = validate(&a.path, &mut on_event)?;
    if progress {
        eprint!("\r\x1b[2K");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("{p}");
        }
        for n in &report.notes {
            eprintln!("qforge: note: {n}");
        }
        let kind = report
            .kind
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|| "unreadable".into());
        if report.is_sound() {
            eprintln!(
                "qforge: {}: sound ({kind}, {} files, {} tensors scanned)",
                a.path.display(),
                report.files.len(),
                report.tensors_checked
            );
        } else {
            eprintln!(
                "qforge: {}: {} problem(s) ({kind}, {} tensors scanned)",
                a.path.display(),
                report.problems.len(),
                report.tensors_checked
            );
        }
    }
    Ok(if report.is_sound() { 0 } else { 1 })
}
