//! Runtime tokenization equal to llama.cpp's `llama-tokenize` on real text: byte-level BPE
//! (tiny-bpe, SmolLM2's vocabulary, pre-tokenizer `smollm`) and SentencePiece (tiny-llama).
//! The id files were made by tests/runtime_data/make_tokenize_ids.sh.

use crate::support;

use std::path::{Path, PathBuf};

use qforge::convert::checkpoint::{HfModel, HfOptions};
use qforge::convert::encode::OutType;
use qforge::eval::tokenize_eval_text;
use qforge::formats::gguf::GgufFile;
use qforge::formats::tensor_source::TensorSource;
use qforge::runtime::tokenize_bpe::{BpeTokenizer, PreTokenizer};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runtime_data")
        .join(name)
}

/// `llama-tokenize --ids` output: `[1, 2, 3]`.
fn reference_ids(name: &str) -> Vec<u32> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

fn tiny_bpe_metadata() -> qforge::formats::gguf::Metadata {
    let hf = HfModel::open(
        &support::golden("tiny-bpe"),
        &HfOptions {
            outtype: OutType::F32,
            model_name: None,
        },
    )
    .unwrap();
    hf.metadata().clone()
}

#[test]
fn bpe_smollm_ids_equal_llama_tokenize() {
    let md = tiny_bpe_metadata();
    assert_eq!(md.get_str("tokenizer.ggml.pre"), Some("smollm"));
    let tok = BpeTokenizer::from_metadata(&md).unwrap();
    assert_eq!(tok.pre_tokenizer(), PreTokenizer::DigitsThenGpt2);
    let text = std::fs::read(data("bpe_text.txt")).unwrap();
    let want = reference_ids("tiny-bpe.bpe_text.ids");
    let got = tok.encode(&text, true, false).unwrap();
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(got.len(), want.len(), "first difference at {first_diff:?}");
    assert_eq!(got, want, "first difference at {first_diff:?}");
    // The eval commands go through the same tokenizer.
    assert_eq!(tokenize_eval_text(&md, &text, false).unwrap(), want);
}

#[test]
fn bpe_pre_tokenizer_words() {
    let md = tiny_bpe_metadata();
    let tok = BpeTokenizer::from_metadata(&md).unwrap();
    // Digits one by one, contractions, a space kept before words, `\s+(?!\S)`.
    assert_eq!(
        tok.split_words("I'm 123 ok!!  go\n"),
        ["I", "'m", " ", "1", "2", "3", " ok", "!!", " ", " go", "\n"]
    );
}

#[test]
fn spm_ids_equal_llama_tokenize_on_the_same_text() {
    let md = GgufFile::open(support::golden("tiny-llama.f16.gguf"))
        .unwrap()
        .metadata
        .clone();
    let text = std::fs::read(data("bpe_text.txt")).unwrap();
    let want = reference_ids("tiny-llama.bpe_text.ids");
    assert_eq!(tokenize_eval_text(&md, &text, false).unwrap(), want);
}

#[test]
fn unsupported_pre_tokenizer_is_refused() {
    let mut md = tiny_bpe_metadata();
    md.set(
        "tokenizer.ggml.pre",
        qforge::formats::gguf::Value::Str("deepseek-llm".into()),
    );
    let err = BpeTokenizer::from_metadata(&md).unwrap_err().to_string();
    assert!(err.contains("not supported yet"), "{err}");
}
