//! Byte-level BPE `tokenizer.json` → GGUF vocab, as llama.cpp's (0c1e57098) `get_vocab_base` and
//! `get_vocab_base_pre`: the tokens in id order with their types, and the pre-tokenizer name,
//! found by tokenizing a check text with the model's own tokenizer and hashing the ids.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::pre_hashes::{CHECK_TEXT, PRE_TOKENIZER_HASHES};
use super::{does_token_look_special, read_json, TokenType, VocabError};

/// Tokens and types in id order, and `tokenizer.ggml.pre`.
pub struct BpeVocab {
    /// Token strings, index = token id.
    pub tokens: Vec<String>,
    /// Each token's type (normal, control, user-defined, ...), index = token id.
    pub types: Vec<TokenType>,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name llama.cpp selects by check-text hash.
    pub pre: String,
}

/// An added token as transformers sees it (tokenizer.json's `added_tokens`, plus the special
/// tokens tokenizer_config.json names).
#[derive(Clone, Debug)]
struct Added {
    special: bool,
    normalized: bool,
}

/// Python's `str(list_of_ints)`.
fn python_list_repr(ids: &[u32]) -> String {
    let items: Vec<String> = ids.iter().map(u32::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// The sha256 of Python's `str(list_of_ints)`, as hex.
pub fn ids_hash(ids: &[u32]) -> String {
    let d = Sha256::digest(python_list_repr(ids).as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `tokenizer.ggml.pre` for a tokenizer, or an error naming the unknown hash.
pub fn detect_pre_tokenizer(tok: &Tokenizer, path: &Path) -> Result<String, VocabError> {
    let enc = tok
        .encode(CHECK_TEXT, true)
        .map_err(|e| VocabError::file(path, format!("cannot tokenize the check text: {e}")))?;
    let hash = ids_hash(enc.get_ids());
    PRE_TOKENIZER_HASHES
        .iter()
        .find(|(h, _)| *h == hash)
        .map(|(_, name)| name.to_string())
        .ok_or_else(|| VocabError::UnknownPreTokenizer {
            path: path.to_path_buf(),
            hash,
        })
}

/// transformers' `clean_up_tokenization`.
fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// `get_vocab_base` for `dir/tokenizer.json`; `vocab_size` is the config's, if it has one.
pub fn vocab_base(dir: &Path, vocab_size: Option<usize>) -> Result<BpeVocab, VocabError> {
    let path = dir.join("tokenizer.json");
    // The tokenizers crate panics (`expect("Helper")`) on some malformed files instead of
    // returning an error (found by fuzz/tokenizer_json): check the JSON syntax first, so such
    // a file gets our one-line error, and contain any panic left.
    read_json(&path)?;
    let loaded = std::panic::catch_unwind(|| Tokenizer::from_file(&path));
    let tok = match loaded {
        Ok(r) => r.map_err(|e| VocabError::file(&path, e.to_string()))?,
        Err(_) => {
            return Err(VocabError::file(
                &path,
                "the tokenizers library cannot read this file (it panicked)".to_string(),
            ))
        }
    };
    let cfg_path = dir.join("tokenizer_config.json");
    let config = if cfg_path.is_file() {
        read_json(&cfg_path)?
    } else {
        Json::Null
    };

    // The vocabulary with added tokens, and the added tokens by id.
    let mut vocab: HashMap<String, u32> = tok.get_vocab(true);
    let mut added: HashMap<u32, Added> = tok
        .get_added_tokens_decoder()
        .into_iter()
        .map(|(id, t)| {
            (
                id,
                Added {
                    special: t.special,
                    normalized: t.normalized,
                },
            )
        })
        .collect();
    let mut added_content: HashMap<String, u32> = tok
        .get_added_tokens_decoder()
        .into_iter()
        .map(|(id, t)| (t.content, id))
        .collect();
    // tokenizer_config.json's added_tokens_decoder overrides flags by id.
    if let Some(Json::Object(dec)) = config.get("added_tokens_decoder") {
        for (id, data) in dec {
            let Ok(id) = id.parse::<u32>() else { continue };
            let Some(content) = data.get("content").and_then(Json::as_str) else {
                continue;
            };
            let flag =
                |k: &str, default: bool| data.get(k).and_then(Json::as_bool).unwrap_or(default);
            added.insert(
                id,
                Added {
                    special: flag("special", false),
                    normalized: flag("normalized", !flag("special", false)),
                },
            );
            added_content.insert(content.to_string(), id);
            vocab.entry(content.to_string()).or_insert(id);
        }
    }
    // Special tokens named in tokenizer_config.json that are not added tokens yet become added
    // special tokens (transformers adds them when it loads the tokenizer).
    let mut named: Vec<String> = Vec::new();
    for key in [
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    ] {
        match config.get(key) {
            Some(Json::String(s)) => named.push(s.clone()),
            Some(Json::Object(o)) => {
                if let Some(Json::String(s)) = o.get("content") {
                    named.push(s.clone());
                }
            }
            _ => {}
        }
    }
    if let Some(Json::Array(extra)) = config
        .get("additional_special_tokens")
        .or_else(|| config.get("extra_special_tokens"))
    {
        for e in extra {
            match e {
                Json::String(s) => named.push(s.clone()),
                Json::Object(o) => {
                    if let Some(Json::String(s)) = o.get("content") {
                        named.push(s.clone());
                    }
                }
                _ => {}
            }
        }
    }
    for content in named {
        if added_content.contains_key(&content) {
            continue;
        }
        let id = match vocab.get(&content) {
            Some(&id) => id,
            None => vocab.len() as u32,
        };
        vocab.insert(content.clone(), id);
        added_content.insert(content, id);
        added.insert(
            id,
            Added {
                special: true,
                normalized: false,
            },
        );
    }

    let vocab_size = vocab_size.unwrap_or(vocab.len());
    let max_id = vocab.values().copied().max().unwrap_or(0) as usize;
    if max_id >= vocab_size {
        return Err(VocabError::file(
            &path,
            format!("token id {max_id} is not below the config's vocab_size {vocab_size}"),
        ));
    }

    let pre = detect_pre_tokenizer(&tok, &path)?;

    let mut reverse: Vec<Option<&str>> = vec![None; vocab_size];
    for (text, &id) in &vocab {
        reverse[id as usize] = Some(text);
    }
    let clean_up = config
        .get("clean_up_tokenization_spaces")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, tok_text) in reverse.iter().enumerate() {
        let Some(text) = tok_text else {
            tokens.push(format!("[PAD{i}]"));
            types.push(TokenType::Unused);
            continue;
        };
        let mut token = text.to_string();
        if added_content.contains_key(&token) {
            let info = added.get(&(i as u32)).cloned().unwrap_or(Added {
                special: false,
                normalized: true,
            });
            if !info.normalized {
                // llama.cpp expects added tokens pre-normalized: round-trip them.
                let enc = tok
                    .encode(token.as_str(), false)
                    .map_err(|e| VocabError::file(&path, e.to_string()))?;
                let mut dec = tok
                    .decode(enc.get_ids(), false)
                    .map_err(|e| VocabError::file(&path, e.to_string()))?;
                if clean_up {
                    dec = clean_up_tokenization(&dec);
                }
                token = dec;
            }
            if info.special || does_token_look_special(&token) {
                types.push(TokenType::Control);
            } else {
                token = token.replace('\u{2581}', " ");
                types.push(TokenType::UserDefined);
            }
        } else {
            types.push(TokenType::Normal);
        }
        tokens.push(token);
    }
    Ok(BpeVocab { tokens, types, pre })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_print_like_python() {
        assert_eq!(python_list_repr(&[1, 2, 3]), "[1, 2, 3]");
        assert_eq!(python_list_repr(&[]), "[]");
        assert_eq!(python_list_repr(&[42]), "[42]");
    }
}
