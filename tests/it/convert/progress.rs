//! Progress reporting of `convert`: the events add up to what is written, and the CLI prints
//! no progress bar when stderr is not a terminal.

use crate::support;

use std::process::Command;

use qforge::convert::synthetic_hf::{HfFlavor, SyntheticHf};
use qforge::pipeline::convert::{convert_with_progress, ConvertOptions, ConvertProgress, OutType};

fn mistral_checkpoint(tag: &str) -> std::path::PathBuf {
    let m = SyntheticHf::preset(HfFlavor::Mistral);
    let dir = support::temp_dir(tag).join(m.dir_name());
    m.write(&dir, &support::golden("tiny-llama")).unwrap();
    dir
}

#[test]
fn events_cover_every_tensor_in_order() {
    let dir = mistral_checkpoint("c2prog-events");
    let out = dir.parent().unwrap().join("out.gguf");
    let mut total = None;
    let mut seen = Vec::new();
    let mut sum = 0u64;
    let opts = ConvertOptions {
        outtype: OutType::Q8_0,
        ..Default::default()
    };
    let report = convert_with_progress(&dir, &out, &opts, &mut |p| match p {
        ConvertProgress::Start {
            n_tensors,
            total_bytes,
            ..
        } => total = Some((n_tensors, total_bytes)),
        ConvertProgress::Tensor { index, name, bytes } => {
            seen.push((index, name.to_string()));
            sum += bytes;
        }
    })
    .unwrap();
    let (n, total_bytes) = total.expect("a Start event");
    assert_eq!(n, report.n_tensors);
    assert_eq!(total_bytes, report.tensor_bytes);
    assert_eq!(sum, report.tensor_bytes);
    let f = qforge::formats::gguf::GgufFile::open(&out).unwrap();
    let names: Vec<(usize, String)> = f
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (i, t.name.clone()))
        .collect();
    assert_eq!(seen, names);
}

#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let dir = mistral_checkpoint("c2prog-cli");
    let out = dir.parent().unwrap().join("cli.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .arg("convert")
        .arg(&dir)
        .args(["--outtype", "f16", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("wrote "), "{stdout}");
}
