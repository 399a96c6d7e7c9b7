//! Phi-3's vocabulary: `Phi3MiniModel.set_vocab` (llama.cpp's `conversion/phi.py`), which reads
//! SentencePiece itself rather than through `_create_vocab_sentencepiece`: every added token of
//! tokenizer_config.json's `added_tokens_decoder` and tokenizer.json's `added_tokens` becomes
//! user-defined (control when `special`), without the range check or the `▁` rewrite of the
//! common path. A `GPT2Tokenizer` (Phi-4) takes the GPT-2 BPE path instead.

use std::path::Path;

use serde_json::Value as Json;

use super::sentencepiece::{parse_model, py_truthy, PieceType, SpmVocab};
use super::special::SpecialVocab;
use super::{read_json, write_gpt2, write_tokens, write_types, TokenType, VocabError};
use crate::formats::gguf::{Value, ValueType};
use crate::formats::gguf_kv::KvList;

/// Overwrite token `id` with an added token, as the class does for both added-token lists.
fn add_token(
    path: &Path,
    v: &mut SpmVocab,
    id: usize,
    content: &str,
    special: bool,
) -> Result<(), VocabError> {
    if id >= v.tokens.len() {
        // Python indexes past the list and stops with IndexError.
        return Err(VocabError::file(
            path,
            format!(
                "added token {id} ('{content}') is past the vocabulary of {}",
                v.tokens.len()
            ),
        ));
    }
    v.tokens[id] = content.to_string();
    v.scores[id] = -1000.0;
    v.types[id] = if special {
        TokenType::Control
    } else {
        TokenType::UserDefined
    };
    Ok(())
}

/// `Phi3MiniModel.set_vocab`; `vocab_size` is config.json's (`None`: the model's piece count).
pub fn write_phi3_vocab(
    dir: &Path,
    vocab_size: Option<usize>,
    kv: &mut KvList,
) -> Result<(), VocabError> {
    let config_path = dir.join("tokenizer_config.json");
    let config = if config_path.is_file() {
        let json = read_json(&config_path)?;
        match json.get("tokenizer_class") {
            Some(Json::String(c)) if c == "GPT2Tokenizer" => {
                return write_gpt2(dir, vocab_size, kv)
            }
            Some(_) => {}
            // The class reads tokenizer_config_json['tokenizer_class'] unguarded.
            None => {
                return Err(VocabError::file(
                    &config_path,
                    "no 'tokenizer_class' (Phi-3's converter requires it)".into(),
                ))
            }
        }
        Some(json)
    } else {
        None
    };

    let model_path = dir.join("tokenizer.model");
    if !model_path.is_file() {
        return Err(VocabError::NoTokenizer {
            dir: dir.to_path_buf(),
        });
    }
    let bytes =
        std::fs::read(&model_path).map_err(|e| VocabError::file(&model_path, e.to_string()))?;
    let pieces = parse_model(&bytes).map_err(|e| VocabError::file(&model_path, e))?;
    let n = vocab_size.unwrap_or(pieces.len());
    if pieces.len() > n {
        return Err(VocabError::file(
            &model_path,
            format!(
                "{} pieces do not fit the configured vocab_size {n}",
                pieces.len()
            ),
        ));
    }
    let mut v = SpmVocab {
        tokens: (0..n).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; n],
        types: vec![TokenType::Unused; n],
    };
    for (id, p) in pieces.iter().enumerate() {
        v.tokens[id] = p.piece.clone();
        v.scores[id] = p.score;
        v.types[id] = match p.kind {
            PieceType::Unknown => TokenType::Unknown,
            PieceType::Control => TokenType::Control,
            PieceType::Unused => TokenType::Unused,
            PieceType::Byte => TokenType::Byte,
            PieceType::Normal | PieceType::UserDefined => TokenType::Normal,
        };
    }

    let added_path = dir.join("added_tokens.json");
    if added_path.is_file() {
        let Json::Object(map) = read_json(&added_path)? else {
            return Err(VocabError::file(&added_path, "not a JSON object".into()));
        };
        for (text, id) in map {
            let id = id.as_u64().ok_or_else(|| {
                VocabError::file(&added_path, format!("id of '{text}' is not an integer"))
            })? as usize;
            if id < n {
                v.tokens[id] = text;
                v.scores[id] = -1000.0;
                v.types[id] = TokenType::UserDefined;
            }
        }
    }

    if let Some(Json::Object(decoder)) = config.as_ref().and_then(|c| c.get("added_tokens_decoder"))
    {
        for (id, data) in decoder {
            let id: usize = id.parse().map_err(|_| {
                VocabError::file(
                    &config_path,
                    format!("added_tokens_decoder key '{id}' is not an id"),
                )
            })?;
            let content = data.get("content").and_then(Json::as_str).ok_or_else(|| {
                VocabError::file(&config_path, format!("added token {id} has no content"))
            })?;
            let special = data.get("special").is_some_and(py_truthy);
            add_token(&config_path, &mut v, id, content, special)?;
        }
    }

    let json_path = dir.join("tokenizer.json");
    if json_path.is_file() {
        let json = read_json(&json_path)?;
        if let Some(Json::Array(added)) = json.get("added_tokens") {
            for data in added {
                let id = data.get("id").and_then(Json::as_u64).ok_or_else(|| {
                    VocabError::file(&json_path, "an added token without an integer id".into())
                })? as usize;
                let content = data.get("content").and_then(Json::as_str).ok_or_else(|| {
                    VocabError::file(&json_path, format!("added token {id} has no content"))
                })?;
                let special = data.get("special").is_some_and(py_truthy);
                add_token(&json_path, &mut v, id, content, special)?;
            }
        }
    }

    let SpmVocab {
        tokens,
        scores,
        types,
    } = v;
    let count = tokens.len();
    kv.add_str("tokenizer.ggml.model", "llama");
    kv.add_str("tokenizer.ggml.pre", "default");
    write_tokens(kv, tokens);
    kv.add_array(
        "tokenizer.ggml.scores",
        ValueType::F32,
        scores.into_iter().map(Value::F32).collect(),
    );
    write_types(kv, &types);
    SpecialVocab::load(dir, false, None, Some(count))?.write(kv);
    Ok(())
}
