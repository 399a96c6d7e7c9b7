//! Tokenizers → GGUF vocab keys (`tokenizer.ggml.*`), as llama.cpp's converter writes them
//! (llama.cpp 0c1e57098).

pub mod bpe;
pub mod phi3;
pub mod pre_hashes;
pub mod sentencepiece;
pub mod special;

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::formats::gguf::{Value, ValueType};
use crate::formats::gguf_kv::KvList;
use special::SpecialVocab;

/// Errors building the vocabulary; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// A tokenizer file is unreadable or malformed.
    #[error("{path}: {what}")]
    File {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The BPE pre-tokenizer's check-text hash is not one llama.cpp knows.
    #[error("{path}: BPE pre-tokenizer not recognized (check-text hash {hash}); llama.cpp's converter refuses it too")]
    UnknownPreTokenizer {
        /// The tokenizer.json whose pre-tokenizer was hashed.
        path: PathBuf,
        /// sha256 of the check text's token ids, as the converter prints it.
        hash: String,
    },
    /// Neither tokenizer.model nor tokenizer.json is there.
    #[error("{dir}: no tokenizer found (expected tokenizer.model or tokenizer.json)")]
    NoTokenizer {
        /// The model directory searched.
        dir: PathBuf,
    },
    /// A tokenizer kind the converter handles but qforge does not yet.
    #[error("{path}: {what} is not supported yet")]
    NotSupported {
        /// The tokenizer file.
        path: PathBuf,
        /// The unsupported feature.
        what: String,
    },
    /// An impossible value.
    #[error("{0}")]
    Invalid(String),
}

impl VocabError {
    pub(crate) fn file(path: &Path, what: String) -> VocabError {
        VocabError::File {
            path: path.to_path_buf(),
            what,
        }
    }
}

pub use crate::ggml::TokenType;

pub(crate) fn read_json(path: &Path) -> Result<Json, VocabError> {
    let text = std::fs::read_to_string(path).map_err(|e| VocabError::file(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| VocabError::file(path, format!("invalid JSON: {e}")))
}

/// The converter's `does_token_look_special`: added tokens that ought to be control tokens.
pub fn does_token_look_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

fn write_tokens(kv: &mut KvList, tokens: Vec<String>) {
    kv.add_str_array("tokenizer.ggml.tokens", tokens);
}

fn write_types(kv: &mut KvList, types: &[TokenType]) {
    kv.add_array(
        "tokenizer.ggml.token_type",
        ValueType::I32,
        types.iter().map(|t| Value::I32(*t as i32)).collect(),
    );
}

/// `_set_vocab_sentencepiece`.
pub fn write_sentencepiece(
    dir: &Path,
    vocab_size: Option<usize>,
    kv: &mut KvList,
) -> Result<(), VocabError> {
    let v = sentencepiece::create_vocab(dir, vocab_size)?;
    let n = v.tokens.len();
    kv.add_str("tokenizer.ggml.model", "llama");
    kv.add_str("tokenizer.ggml.pre", "default");
    write_tokens(kv, v.tokens);
    kv.add_array(
        "tokenizer.ggml.scores",
        ValueType::F32,
        v.scores.into_iter().map(Value::F32).collect(),
    );
    write_types(kv, &v.types);
    SpecialVocab::load(dir, false, None, Some(n))?.write(kv);
    Ok(())
}

/// `_set_vocab_gpt2`.
pub fn write_gpt2(
    dir: &Path,
    vocab_size: Option<usize>,
    kv: &mut KvList,
) -> Result<(), VocabError> {
    let v = bpe::vocab_base(dir, vocab_size)?;
    kv.add_str("tokenizer.ggml.model", "gpt2");
    kv.add_str("tokenizer.ggml.pre", &v.pre);
    write_tokens(kv, v.tokens);
    write_types(kv, &v.types);
    SpecialVocab::load(dir, true, None, None)?.write(kv);
    Ok(())
}

/// What `LlamaHfVocab` would do with tokenizer.json: `Err` when it refuses the file (so the
/// converter falls through to the GPT-2 path), `Ok` when it would take it.
fn llama_hf_accepts(tokenizer_json: &Path) -> Result<bool, VocabError> {
    let json = read_json(tokenizer_json)?;
    let model = json.get("model").cloned().unwrap_or(Json::Null);
    let ty = model.get("type").and_then(Json::as_str);
    let flag = |k: &str, d: bool| model.get(k).and_then(Json::as_bool).unwrap_or(d);
    let is_llama3 =
        ty == Some("BPE") && flag("ignore_merges", false) && !flag("byte_fallback", true);
    if is_llama3 {
        return Ok(false);
    }
    let decoder_is_sequence = json
        .get("decoder")
        .and_then(|d| d.get("type"))
        .and_then(Json::as_str)
        == Some("Sequence");
    Ok(ty == Some("BPE") && flag("byte_fallback", false) && decoder_is_sequence)
}

/// `LlamaModel.set_vocab` for a Hugging Face directory: SentencePiece if tokenizer.model
/// exists, else byte-level BPE from tokenizer.json; then the CodeLlama and 49152-token fixes.
pub fn write_llama_vocab(
    dir: &Path,
    vocab_size: Option<usize>,
    kv: &mut KvList,
) -> Result<(), VocabError> {
    let tekken = dir.join("tekken.json");
    let tok_json = dir.join("tokenizer.json");
    if tekken.is_file() && !tok_json.is_file() {
        return Err(VocabError::NotSupported {
            path: tekken,
            what: "a Mistral tekken tokenizer".into(),
        });
    }
    let cfg_path = dir.join("tokenizer_config.json");
    if cfg_path.is_file() {
        let cfg = read_json(&cfg_path)?;
        if let Some(v) = cfg.get("add_prefix_space").filter(|v| !v.is_null()) {
            let b = match v {
                Json::Bool(b) => *b,
                other => sentencepiece::py_truthy(other),
            };
            kv.add_bool("tokenizer.ggml.add_space_prefix", b);
        }
        if cfg.get("tokenizer_class").and_then(Json::as_str) == Some("HybridDNATokenizer") {
            return Err(VocabError::NotSupported {
                path: cfg_path,
                what: "HybridDNATokenizer".into(),
            });
        }
    }
    if dir.join("tokenizer.model").is_file() {
        write_sentencepiece(dir, vocab_size, kv)?;
    } else if tok_json.is_file() {
        if llama_hf_accepts(&tok_json)? {
            return Err(VocabError::NotSupported {
                path: tok_json,
                what: "a byte-fallback (SentencePiece-style) BPE tokenizer.json without tokenizer.model".into(),
            });
        }
        write_gpt2(dir, vocab_size, kv)?;
    } else {
        return Err(VocabError::NoTokenizer {
            dir: dir.to_path_buf(),
        });
    }
    let effective_vocab = vocab_size.unwrap_or(32000);
    if effective_vocab == 32016 {
        // CodeLlama: of prefix/suffix/middle/eot only eot has a GGUF writer.
        let mut sv = SpecialVocab::load(
            dir,
            false,
            Some(&["prefix", "suffix", "middle", "eot"]),
            None,
        )?;
        for (typ, id) in [
            ("prefix", 32007),
            ("suffix", 32008),
            ("middle", 32009),
            ("eot", 32010),
        ] {
            sv.set_special_token(typ, Some(&Json::from(id)))?;
        }
        sv.write(kv);
    }
    if effective_vocab == 49152 {
        kv.add_bool("tokenizer.ggml.add_bos_token", false);
    }
    Ok(())
}

/// `Qwen2Model.set_vocab`: SentencePiece if tokenizer.model exists, else byte-level BPE.
pub fn write_qwen2_vocab(
    dir: &Path,
    vocab_size: Option<usize>,
    kv: &mut KvList,
) -> Result<(), VocabError> {
    if dir.join("tokenizer.model").is_file() {
        write_sentencepiece(dir, vocab_size, kv)
    } else if dir.join("tokenizer.json").is_file() {
        write_gpt2(dir, vocab_size, kv)
    } else {
        Err(VocabError::NoTokenizer {
            dir: dir.to_path_buf(),
        })
    }
}

/// `Gemma2Model.set_vocab` / `Gemma3Model.set_vocab`: SentencePiece (sized by `spm_size`)
/// with `add_space_prefix` false; without `tokenizer.model`, Gemma 3 (`bpe_fallback`) reads
/// byte-level BPE from tokenizer.json (sized by `vocab_size`) instead.
pub fn write_gemma_vocab(
    dir: &Path,
    spm_size: Option<usize>,
    vocab_size: Option<usize>,
    bpe_fallback: bool,
    kv: &mut KvList,
) -> Result<(), VocabError> {
    if bpe_fallback && !dir.join("tokenizer.model").is_file() {
        return write_gpt2(dir, vocab_size, kv);
    }
    write_sentencepiece(dir, spm_size, kv)?;
    kv.add_bool("tokenizer.ggml.add_space_prefix", false);
    Ok(())
}

/// `Ernie4_5Model.set_vocab`: `_set_vocab_sentencepiece`, then `add_space_prefix` from
/// tokenizer_config.json's `add_prefix_space` when the key is there.
pub fn write_ernie4_5_vocab(
    dir: &Path,
    spm_size: Option<usize>,
    kv: &mut KvList,
) -> Result<(), VocabError> {
    write_sentencepiece(dir, spm_size, kv)?;
    let cfg_path = dir.join("tokenizer_config.json");
    if cfg_path.is_file() {
        if let Some(v) = read_json(&cfg_path)?.get("add_prefix_space") {
            let b = match v {
                Json::Bool(b) => *b,
                Json::Null => {
                    return Err(VocabError::file(
                        &cfg_path,
                        "'add_prefix_space' is null (the converter cannot write it)".into(),
                    ))
                }
                other => sentencepiece::py_truthy(other),
            };
            kv.add_bool("tokenizer.ggml.add_space_prefix", b);
        }
    }
    Ok(())
}

/// How many tokens the vocabulary written for `dir` has, as `Gemma3Model.modify_tensors`
/// counts them to cut the embedding: the SentencePiece vocabulary's length, else
/// tokenizer.json's `model.vocab` plus its `added_tokens`.
pub fn gemma3_token_count(dir: &Path, spm_size: Option<usize>) -> Result<usize, VocabError> {
    if dir.join("tokenizer.model").is_file() {
        return Ok(sentencepiece::create_vocab(dir, spm_size)?.tokens.len());
    }
    let path = dir.join("tokenizer.json");
    let json = read_json(&path)?;
    let count = |v: Option<&Json>| match v {
        Some(Json::Object(m)) => Some(m.len()),
        Some(Json::Array(a)) => Some(a.len()),
        _ => None,
    };
    let vocab = count(json.get("model").and_then(|m| m.get("vocab")))
        .ok_or_else(|| VocabError::file(&path, "no model.vocab".into()))?;
    let added = count(json.get("added_tokens"))
        .ok_or_else(|| VocabError::file(&path, "no added_tokens".into()))?;
    Ok(vocab + added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn check_text_is_the_scripts() {
        // sha256 of the UTF-8 check text as extracted from conversion/base.py.
        let d = Sha256::digest(pre_hashes::CHECK_TEXT.as_bytes());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da"
        );
    }

    #[test]
    fn special_looking_tokens() {
        assert!(does_token_look_special("<|im_start|>"));
        assert!(does_token_look_special("<pad>"));
        assert!(does_token_look_special("<unused12>"));
        assert!(!does_token_look_special("<s>"));
    }
}
