//! qforge: LLM checkpoints → GGUF, byte-identical with llama.cpp's tools.
//!
//! # Layers
//!
//! Each module may use only the modules above it in this list (a text scan of `crate::X`
//! references finds no edge pointing up):
//!
//! 1. [`ggml`] — the shared vocabulary: tensor types, block geometry, file types; and [`rng`],
//!    the one seeded generator; [`notice`], how the library speaks without printing.
//! 2. [`formats`] — bytes on disk only (GGUF, safetensors, imatrix, PEFT, atomic outputs, the
//!    `TensorSource` seam). Knows nothing of models, kernels or GPUs. Beside it, [`hub`]: the
//!    Hugging Face Hub client and huggingface_hub's cache layout (files, not models); and
//!    [`threads`], the one way worker pools are sized (capped, with a notice).
//! 3. [`quant`] — CPU kernels and llama-quantize's type rules, on plain data.
//! 4. [`gpu`] — the wgpu device, pipelines built once, and the WGSL twins of the quantizers.
//! 5. [`arch`] — the architecture registry: one file per model family.
//! 6. [`convert`] (HF checkpoint → GGUF metadata and tensors) and [`runtime`] (forward pass,
//!    text → token ids), side by side; neither uses the other.
//! 7. [`lora`] — LoRA adapters: merge kernels (CPU and GPU), PEFT → GGUF adapters, merges;
//!    [`export`] — GGUF → Hugging Face directory, the inverse of `convert`.
//! 8. [`pipeline`] — the one streaming read → plan → quantize → write loop, device choice,
//!    doctor and bench.
//! 9. [`eval`] — perplexity, KL divergence, imatrix collection, sweeps.
//! 10. [`inspect`] — `validate` and `compare`: soundness checks and model-to-model error.
//!
//! The command-line front end (`src/cli/`, in the binary) sits on top and is the only code that
//! prints or uses `anyhow`.

#![warn(missing_docs)]

pub mod arch;
pub mod convert;
pub mod eval;
pub mod export;
pub mod formats;
pub mod ggml;
pub mod gpu;
pub mod hub;
pub mod inspect;
pub mod lora;
pub mod notice;
pub mod pipeline;
pub mod quant;
pub mod rng;
pub mod runtime;
pub mod threads;

#[cfg(test)]
mod layering {
    //! The layer list above, checked: every `crate::X` reference in a module's files points to
    //! a module at the same rank or below.

    use std::path::Path;

    /// Top-level modules by rank (the numbered list in the crate docs).
    const RANKS: &[(&str, u32)] = &[
        ("ggml", 1),
        ("rng", 1),
        ("notice", 1),
        ("threads", 2),
        ("formats", 2),
        ("hub", 2),
        ("quant", 3),
        ("gpu", 4),
        ("arch", 5),
        ("convert", 6),
        ("runtime", 6),
        ("lora", 7),
        ("export", 7),
        ("pipeline", 8),
        ("eval", 9),
        ("inspect", 10),
    ];

    fn rank(module: &str) -> Option<u32> {
        RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
    }

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn no_module_uses_a_higher_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut bad = Vec::new();
        for (module, own) in RANKS {
            let mut files = Vec::new();
            let dir = src.join(module);
            if dir.is_dir() {
                rust_files(&dir, &mut files);
            } else {
                files.push(src.join(format!("{module}.rs")));
            }
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                for (i, _) in text.match_indices("crate::") {
                    let rest = &text[i + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    match rank(&name) {
                        Some(r) if r > *own || (r == *own && name != *module) => bad.push(format!(
                            "{} uses crate::{name} (rank {r} > {own})",
                            f.display()
                        )),
                        _ => {}
                    }
                }
            }
        }
        assert!(bad.is_empty(), "layering violated:\n{}", bad.join("\n"));
    }

    #[test]
    fn every_top_level_module_has_a_rank() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for entry in std::fs::read_dir(&src).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            if ["lib", "main", "cli"].contains(&name.as_str()) {
                continue;
            }
            assert!(rank(&name).is_some(), "src/{name} is not in the layer list");
        }
    }
}
