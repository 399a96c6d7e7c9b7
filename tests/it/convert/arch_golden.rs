//! `qforge convert` of Mistral, Qwen2, Qwen3, Llama-3-RoPE-scaled, Gemma 2, Gemma 3 (text-only
//! and multimodal), Phi-3, SmolLM3, Granite, OLMo 2, EXAONE 4, ERNIE 4.5 and
//! Command R7B checkpoints, compared
//! byte for byte with what llama.cpp's `convert_hf_to_gguf.py` wrote for the same checkpoints.
//!
//! The checkpoints are not committed: [`SyntheticHf`] regenerates them bit-for-bit from a seed
//! (tokenizer files copied from the shared goldens). The goldens are manifests under
//! tests/data/convert_arch/<arch>/; tests/data/convert_arch/README.md has the commands that
//! made them, and `cargo run --example write_fixtures -- arch-checkpoints DIR` writes the same
//! checkpoints for them.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use qforge::convert::synthetic_hf::{HfFlavor, SyntheticHf};
use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

/// Where the tokenizer files of a flavor come from.
fn tokenizer_source(flavor: HfFlavor) -> PathBuf {
    support::golden(if flavor.uses_bpe() {
        "tiny-bpe"
    } else {
        "tiny-llama"
    })
}

/// Write the preset checkpoint of `flavor` under `root`, returning its directory.
fn write_checkpoint(flavor: HfFlavor, root: &Path) -> PathBuf {
    let m = SyntheticHf::preset(flavor);
    let dir = root.join(m.dir_name());
    m.write(&dir, &tokenizer_source(flavor)).unwrap();
    dir
}

/// The preset checkpoint of `flavor`, written once per test process.
fn checkpoint(flavor: HfFlavor) -> PathBuf {
    static DIRS: [OnceLock<PathBuf>; HfFlavor::ALL.len()] =
        [const { OnceLock::new() }; HfFlavor::ALL.len()];
    let slot = HfFlavor::ALL.iter().position(|f| *f == flavor).unwrap();
    DIRS[slot]
        .get_or_init(|| {
            write_checkpoint(flavor, &support::temp_dir(&format!("c2-{}", flavor.name())))
        })
        .clone()
}

/// The golden manifest of `flavor` converted to `outtype`.
fn golden_manifest(flavor: HfFlavor, outtype: &str) -> support::Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/convert_arch")
        .join(flavor.name())
        .join(format!("{outtype}.json"));
    support::Manifest::load_path(&path)
}

/// Convert the preset checkpoint of `flavor` to `outtype` and compare with the golden.
fn converts_like_llama_cpp(flavor: HfFlavor, outtype: &str) {
    let dir = checkpoint(flavor);
    let out = dir
        .parent()
        .unwrap()
        .join(format!("{}.{outtype}.gguf", flavor.name()));
    let opts = ConvertOptions {
        outtype: OutType::parse(outtype).unwrap(),
        ..Default::default()
    };
    convert(&dir, &out, &opts).unwrap();
    support::assert_matches_manifest(&out, &golden_manifest(flavor, outtype));
    std::fs::remove_file(&out).unwrap();
}

macro_rules! golden_tests {
    ($($name:ident: $flavor:ident, $outtype:literal;)*) => {
        $(
            #[test]
            fn $name() {
                converts_like_llama_cpp(HfFlavor::$flavor, $outtype);
            }
        )*
    };
}

golden_tests! {
    mistral_f32: Mistral, "f32";
    mistral_f16: Mistral, "f16";
    mistral_bf16: Mistral, "bf16";
    mistral_q8_0: Mistral, "q8_0";
    qwen2_f32: Qwen2, "f32";
    qwen2_f16: Qwen2, "f16";
    qwen2_bf16: Qwen2, "bf16";
    qwen2_q8_0: Qwen2, "q8_0";
    qwen3_f32: Qwen3, "f32";
    qwen3_f16: Qwen3, "f16";
    qwen3_bf16: Qwen3, "bf16";
    qwen3_q8_0: Qwen3, "q8_0";
    llama3_f32: Llama3, "f32";
    llama3_f16: Llama3, "f16";
    llama3_bf16: Llama3, "bf16";
    llama3_q8_0: Llama3, "q8_0";
    gemma2_f32: Gemma2, "f32";
    gemma2_f16: Gemma2, "f16";
    gemma2_bf16: Gemma2, "bf16";
    gemma2_q8_0: Gemma2, "q8_0";
    gemma3_f32: Gemma3, "f32";
    gemma3_f16: Gemma3, "f16";
    gemma3_bf16: Gemma3, "bf16";
    gemma3_q8_0: Gemma3, "q8_0";
    gemma3mm_f32: Gemma3Mm, "f32";
    gemma3mm_f16: Gemma3Mm, "f16";
    gemma3mm_bf16: Gemma3Mm, "bf16";
    gemma3mm_q8_0: Gemma3Mm, "q8_0";
    phi3_f32: Phi3, "f32";
    phi3_f16: Phi3, "f16";
    phi3_bf16: Phi3, "bf16";
    phi3_q8_0: Phi3, "q8_0";
    smollm3_f32: SmolLm3, "f32";
    smollm3_f16: SmolLm3, "f16";
    smollm3_bf16: SmolLm3, "bf16";
    smollm3_q8_0: SmolLm3, "q8_0";
    granite_f32: Granite, "f32";
    granite_f16: Granite, "f16";
    granite_bf16: Granite, "bf16";
    granite_q8_0: Granite, "q8_0";
    olmo2_f32: Olmo2, "f32";
    olmo2_f16: Olmo2, "f16";
    olmo2_bf16: Olmo2, "bf16";
    olmo2_q8_0: Olmo2, "q8_0";
    exaone4_f32: Exaone4, "f32";
    exaone4_f16: Exaone4, "f16";
    exaone4_bf16: Exaone4, "bf16";
    exaone4_q8_0: Exaone4, "q8_0";
    ernie4_5_f32: Ernie4_5, "f32";
    ernie4_5_f16: Ernie4_5, "f16";
    ernie4_5_bf16: Ernie4_5, "bf16";
    ernie4_5_q8_0: Ernie4_5, "q8_0";
    cohere2_f32: Cohere2, "f32";
    cohere2_f16: Cohere2, "f16";
    cohere2_bf16: Cohere2, "bf16";
    cohere2_q8_0: Cohere2, "q8_0";
}

/// `qforge quantize` of the f16 conversion to Q4_K_M equals `llama-quantize f16.gguf out.gguf
/// Q4_K_M 2` of llama.cpp's own f16 conversion (the same bytes, checked above).
fn quantizes_like_llama_quantize(flavor: HfFlavor) {
    use qforge::formats::GgufSource;
    use qforge::ggml::ftype::{FileType, QuantTarget};
    use qforge::pipeline::quantize::{quantize, QuantizeJob};
    use qforge::pipeline::Backend;
    use qforge::quant::rules::TypeOptions;

    let dir = checkpoint(flavor);
    let root = dir.parent().unwrap();
    let f16 = root.join(format!("{}.q4km-src.f16.gguf", flavor.name()));
    let opts = ConvertOptions {
        outtype: OutType::F16,
        ..Default::default()
    };
    convert(&dir, &f16, &opts).unwrap();
    let out = root.join(format!("{}.Q4_K_M.gguf", flavor.name()));
    let job = QuantizeJob {
        output: out.clone(),
        target: QuantTarget::Mix(FileType::Q4_K_M),
        type_options: TypeOptions::new(FileType::Q4_K_M),
        allow_requantize: false,
        imatrix: None,
        overrides: Vec::new(),
    };
    let source = GgufSource::open(&f16).unwrap();
    quantize(&source, &job, &Backend::cpu(2)).unwrap();
    drop(source);
    support::assert_matches_manifest(&out, &golden_manifest(flavor, "Q4_K_M"));
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&f16).unwrap();
}

#[test]
fn gemma2_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Gemma2);
}

#[test]
fn gemma3_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Gemma3);
}

#[test]
fn gemma3mm_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Gemma3Mm);
}

#[test]
fn phi3_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Phi3);
}

#[test]
fn smollm3_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::SmolLm3);
}

#[test]
fn granite_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Granite);
}

#[test]
fn olmo2_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Olmo2);
}

#[test]
fn exaone4_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Exaone4);
}

#[test]
fn ernie4_5_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Ernie4_5);
}

#[test]
fn cohere2_q4_k_m() {
    quantizes_like_llama_quantize(HfFlavor::Cohere2);
}
