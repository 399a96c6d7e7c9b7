//! `qforge convert` of Mistral, Qwen2, Qwen3, Llama-3-RoPE-scaled, Mixtral, Qwen2-MoE,
//! Qwen3-MoE, Gemma 2, Gemma 3 (text-only and multimodal), Phi-3, SmolLM3, Granite, OLMo 2,
//! EXAONE 4, ERNIE 4.5 and Command R7B checkpoints, compared byte for byte with what llama.cpp's
//! `convert_hf_to_gguf.py` wrote for the same checkpoints; and `qforge quantize` of the MoE
//! conversions and of the dense families' f16 conversions against llama-quantize.
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
    mixtral_f32: Mixtral, "f32";
    mixtral_f16: Mixtral, "f16";
    mixtral_bf16: Mixtral, "bf16";
    mixtral_q8_0: Mixtral, "q8_0";
    qwen2moe_f32: Qwen2Moe, "f32";
    qwen2moe_f16: Qwen2Moe, "f16";
    qwen2moe_bf16: Qwen2Moe, "bf16";
    qwen2moe_q8_0: Qwen2Moe, "q8_0";
    qwen3moe_f32: Qwen3Moe, "f32";
    qwen3moe_f16: Qwen3Moe, "f16";
    qwen3moe_bf16: Qwen3Moe, "bf16";
    qwen3moe_q8_0: Qwen3Moe, "q8_0";
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

/// `qforge quantize` of qforge's f16 conversion of `flavor` to `mix`, against
/// `llama-quantize <arch>.f16.gguf out.gguf <mix> 2` (the f16 file itself is checked by the
/// `*_f16` tests).
fn quantizes_like_llama_quantize(flavor: HfFlavor, mix: &str) {
    use qforge::formats::GgufSource;
    use qforge::ggml::ftype::QuantTarget;
    use qforge::pipeline::quantize::{quantize, QuantizeJob};
    use qforge::pipeline::Backend;
    use qforge::quant::rules::TypeOptions;

    let dir = checkpoint(flavor);
    let f16 = dir
        .parent()
        .unwrap()
        .join(format!("{}.f16-for-{mix}.gguf", flavor.name()));
    let opts = ConvertOptions {
        outtype: OutType::F16,
        ..Default::default()
    };
    convert(&dir, &f16, &opts).unwrap();
    let Some(QuantTarget::Mix(ftype)) = QuantTarget::parse(mix) else {
        panic!("{mix} is not a mix")
    };
    let out = f16.with_extension(format!("{mix}.gguf"));
    let job = QuantizeJob {
        output: out.clone(),
        target: QuantTarget::Mix(ftype),
        type_options: TypeOptions::new(ftype),
        allow_requantize: false,
        imatrix: None,
        overrides: Vec::new(),
    };
    let source = GgufSource::open(&f16).unwrap();
    quantize(&source, &job, &Backend::cpu(2)).unwrap();
    drop(source);
    support::assert_matches_manifest(&out, &golden_manifest(flavor, mix));
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&f16).unwrap();
}

macro_rules! quantize_golden_tests {
    ($($name:ident: $flavor:ident, $mix:literal;)*) => {
        $(
            #[test]
            fn $name() {
                quantizes_like_llama_quantize(HfFlavor::$flavor, $mix);
            }
        )*
    };
}

quantize_golden_tests! {
    mixtral_quantize_q4_k_m: Mixtral, "Q4_K_M";
    mixtral_quantize_q3_k_m: Mixtral, "Q3_K_M";
    mixtral_quantize_q2_k: Mixtral, "Q2_K";
    mixtral_quantize_mxfp4_moe: Mixtral, "MXFP4_MOE";
    qwen2moe_quantize_q4_k_m: Qwen2Moe, "Q4_K_M";
    qwen2moe_quantize_q3_k_m: Qwen2Moe, "Q3_K_M";
    qwen2moe_quantize_q2_k: Qwen2Moe, "Q2_K";
    qwen2moe_quantize_mxfp4_moe: Qwen2Moe, "MXFP4_MOE";
    qwen3moe_quantize_q4_k_m: Qwen3Moe, "Q4_K_M";
    qwen3moe_quantize_q3_k_m: Qwen3Moe, "Q3_K_M";
    qwen3moe_quantize_q2_k: Qwen3Moe, "Q2_K";
    qwen3moe_quantize_mxfp4_moe: Qwen3Moe, "MXFP4_MOE";
    gemma2_q4_k_m: Gemma2, "Q4_K_M";
    gemma3_q4_k_m: Gemma3, "Q4_K_M";
    gemma3mm_q4_k_m: Gemma3Mm, "Q4_K_M";
    phi3_q4_k_m: Phi3, "Q4_K_M";
    smollm3_q4_k_m: SmolLm3, "Q4_K_M";
    granite_q4_k_m: Granite, "Q4_K_M";
    olmo2_q4_k_m: Olmo2, "Q4_K_M";
    exaone4_q4_k_m: Exaone4, "Q4_K_M";
    ernie4_5_q4_k_m: Ernie4_5, "Q4_K_M";
    cohere2_q4_k_m: Cohere2, "Q4_K_M";
}
