//! `qforge info FILE`: metadata and a tensor table.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use qforge::formats::gguf::{GgufFile, Value};

#[derive(Args)]
pub struct InfoArgs {
    /// A .gguf file.
    file: PathBuf,
    /// Print arrays in full instead of their length.
    #[arg(long)]
    full: bool,
}

fn show(v: &Value, full: bool) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        Value::Array(t, items) if !full && items.len() > 8 => format!("[{t:?}; {}]", items.len()),
        Value::Array(_, items) => {
            let inner: Vec<String> = items.iter().map(|i| show(i, full)).collect();
            format!("[{}]", inner.join(", "))
        }
        other => {
            let s = format!("{other:?}");
            // "U32(5)" → "5"
            s.split_once('(')
                .map(|(_, r)| r.trim_end_matches(')').to_string())
                .unwrap_or(s)
        }
    }
}

pub fn run(a: InfoArgs) -> Result<()> {
    let f = GgufFile::open(&a.file)?;
    println!(
        "{}: GGUF v{}, {} keys, {} tensors",
        a.file.display(),
        f.version,
        f.metadata.len(),
        f.tensors.len()
    );
    for (k, v) in f.metadata.iter() {
        println!(
            "  {k:<44} {:<6} {}",
            format!("{:?}", v.value_type()),
            show(v, a.full)
        );
    }
    println!(
        "  {:<40} {:>8} {:>22} {:>12}",
        "tensor", "type", "shape", "bytes"
    );
    let mut total = 0;
    for t in &f.tensors {
        let n = t.n_bytes().unwrap_or(0);
        total += n;
        let shape: Vec<String> = t.ne.iter().map(|d| d.to_string()).collect();
        println!(
            "  {:<40} {:>8} {:>22} {:>12}",
            t.name,
            t.ty.name(),
            shape.join(" x "),
            n
        );
    }
    println!("  total tensor bytes: {total}");
    Ok(())
}
