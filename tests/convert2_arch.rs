//! `qforge convert` of Mistral, Qwen2, Qwen3 and Llama-3-RoPE-scaled checkpoints, compared
//! byte for byte with what llama.cpp's `convert_hf_to_gguf.py` wrote for the same checkpoints.
//!
//! The checkpoints are not committed: [`SyntheticHf`] regenerates them bit-for-bit from a seed
//! (tokenizer files copied from the shared goldens). The goldens are manifests under
//! tests/data/convert_arch/<arch>/; tests/data/convert_arch/README.md has the commands that
//! made them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use qforge::convert::synthetic_hf::{HfFlavor, SyntheticHf};
use qforge::pipeline::convert::{convert, ConvertOptions, OutType};

/// Where the tokenizer files of a flavor come from.
fn tokenizer_source(flavor: HfFlavor) -> PathBuf {
    common::golden(if flavor.uses_bpe() {
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

/// Not a test: writes every preset checkpoint under $QFORGE_SYNTH_DIR for the golden-making
/// script (tests/data/convert_arch/make_goldens.sh).
#[test]
#[ignore]
fn write_checkpoints() {
    let root = PathBuf::from(
        std::env::var("QFORGE_SYNTH_DIR").expect("set QFORGE_SYNTH_DIR to the output folder"),
    );
    for flavor in HfFlavor::ALL {
        let dir = write_checkpoint(flavor, &root);
        eprintln!("wrote {}", dir.display());
    }
}

/// The preset checkpoint of `flavor`, written once per test process.
fn checkpoint(flavor: HfFlavor) -> PathBuf {
    static DIRS: [OnceLock<PathBuf>; 4] = [const { OnceLock::new() }; 4];
    let slot = HfFlavor::ALL.iter().position(|f| *f == flavor).unwrap();
    DIRS[slot]
        .get_or_init(|| {
            write_checkpoint(flavor, &common::temp_dir(&format!("c2-{}", flavor.name())))
        })
        .clone()
}

/// The golden manifest of `flavor` converted to `outtype`.
fn golden_manifest(flavor: HfFlavor, outtype: &str) -> common::Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/convert_arch")
        .join(flavor.name())
        .join(format!("{outtype}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    common::Manifest {
        file_sha256: json["file_sha256"].as_str().unwrap().to_string(),
        size: json["size"].as_u64().unwrap(),
        json,
    }
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
    common::assert_matches_manifest(&out, &golden_manifest(flavor, outtype));
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
}
