//! The tokenizer files of an export, rebuilt from the GGUF's `tokenizer.ggml.*` keys so that the
//! converter's vocabulary code reads the same keys back:
//! - SentencePiece (`tokenizer.ggml.model = "llama"`): `tokenizer.model`, a `ModelProto`
//!   protobuf hand-encoded (pieces with score and type, a BPE trainer spec, an identity
//!   normalizer), user-defined tokens in `added_tokens.json`;
//! - byte-level BPE (`"gpt2"`): `tokenizer.json` with vocab, merges, added tokens and the
//!   pre-tokenizer `tokenizer.ggml.pre` names (the converter identifies it again by hashing the
//!   tokenization of its check text, so it must be the exact one);
//! - `tokenizer_config.json`: special tokens, add-BOS/EOS flags, chat template. Special ids go
//!   where the converter's `SpecialVocab` finds them in the GGUF's key order: tokens named in
//!   tokenizer_config.json first, then `<type>_token_id` in config.json.

use serde_json::{json, Map, Value as Json};

use super::{json_bytes, ExportError, Meta};
use crate::formats::gguf::Value;

/// The tokenizer files and what config.json needs from them.
pub struct Tokenizer {
    /// (file name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    pub n_tokens: usize,
    /// Special ids to write into config.json as `<type>_token_id`.
    pub config_ids: Vec<(String, u64)>,
    /// Every special id of the GGUF.
    pub all_ids: Vec<(String, u64)>,
}

/// SpecialVocab's default types, in its order, with their GGUF key names.
const SPECIAL_TYPES: &[(&str, &str)] = &[
    ("bos", "bos"),
    ("eos", "eos"),
    ("unk", "unknown"),
    ("sep", "seperator"),
    ("pad", "padding"),
    ("cls", "cls"),
    ("mask", "mask"),
];

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// Pre-tokenizers by `tokenizer.ggml.pre`: (pre_tokenizer, normalizer). `smollm` is SmolLM2's
/// tokenizer.json (checked by the round-trip tests); the others are those of the published
/// tokenizer.json files of the families llama.cpp names so (GPT-2, Llama 3, Qwen2).
fn pre_tokenizer(pre: &str) -> Option<(Json, Json)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        "smollm" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            Json::Null,
        ),
        "gpt-2" | "gpt2" => (byte_level(true), Json::Null),
        "llama-bpe" => (
            json!({"type": "Sequence", "pretokenizers": [
                split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
                byte_level(false),
            ]}),
            Json::Null,
        ),
        "qwen2" => (
            json!({"type": "Sequence", "pretokenizers": [
                split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}),
            ]}),
            json!({"type": "NFC"}),
        ),
        _ => return None,
    })
}

/// Protobuf wire-format writer for the few fields of `ModelProto`.
struct Proto(Vec<u8>);

impl Proto {
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                break;
            }
            self.0.push(b | 0x80);
        }
    }
    fn key(&mut self, field: u64, wire: u64) {
        self.varint(field << 3 | wire);
    }
    fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn int(&mut self, field: u64, v: i64) {
        self.key(field, 0);
        // int32 fields encode negatives as 10-byte two's complement varints.
        self.varint(v as u64);
    }
    fn float(&mut self, field: u64, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

/// The GGUF's special ids in key order, as (type, id).
fn special_ids(meta: &Meta<'_>) -> Result<Vec<(String, u64)>, ExportError> {
    let mut out = Vec::new();
    for (key, _) in meta.gguf.metadata.iter() {
        let Some(name) = key
            .strip_prefix("tokenizer.ggml.")
            .and_then(|k| k.strip_suffix("_token_id"))
        else {
            continue;
        };
        let Some((typ, _)) = SPECIAL_TYPES.iter().find(|(_, g)| *g == name) else {
            return Err(ExportError::NotSupported {
                path: meta.path().to_path_buf(),
                what: format!("special token key '{key}'"),
            });
        };
        out.push((typ.to_string(), meta.require_uint(key)?));
    }
    Ok(out)
}

fn type_rank(typ: &str) -> usize {
    SPECIAL_TYPES
        .iter()
        .position(|(t, _)| *t == typ)
        .expect("known type")
}

/// Split the special ids into those tokenizer_config.json names (a prefix in SpecialVocab's type
/// order whose tokens are added tokens) and those config.json carries (the rest, also in order).
fn split_ids(
    meta: &Meta<'_>,
    ids: &[(String, u64)],
    is_added: &dyn Fn(u64) -> bool,
) -> Result<(usize, Vec<(String, u64)>), ExportError> {
    let mut a = 0;
    while a < ids.len()
        && is_added(ids[a].1)
        && (a == 0 || type_rank(&ids[a].0) > type_rank(&ids[a - 1].0))
    {
        a += 1;
    }
    let rest = ids[a..].to_vec();
    for w in rest.windows(2) {
        if type_rank(&w[1].0) <= type_rank(&w[0].0) {
            return Err(ExportError::NotSupported {
                path: meta.path().to_path_buf(),
                what: format!(
                    "special token ids in this order ({})",
                    ids.iter()
                        .map(|(t, _)| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    Ok((a, rest))
}

/// Build the tokenizer files.
pub fn build(meta: &Meta<'_>) -> Result<Tokenizer, ExportError> {
    let model = meta
        .str("tokenizer.ggml.model")?
        .ok_or_else(|| meta.bad("tokenizer.ggml.model", "missing"))?;
    let tokens = meta
        .strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| meta.bad("tokenizer.ggml.tokens", "missing"))?;
    let n = tokens.len();
    let types: Vec<i32> = match meta.array("tokenizer.ggml.token_type")? {
        Some(items) => items
            .iter()
            .map(|v| match v {
                Value::I32(t) => Ok(*t),
                _ => Err(meta.bad("tokenizer.ggml.token_type", "holds a non-i32")),
            })
            .collect::<Result<_, _>>()?,
        None => vec![NORMAL; n],
    };
    if types.len() != n {
        return Err(meta.bad("tokenizer.ggml.token_type", "length differs from tokens"));
    }
    let ids = special_ids(meta)?;
    for (typ, id) in &ids {
        if *id as usize >= n {
            return Err(meta.bad(
                &format!("tokenizer.ggml.{typ}_token_id"),
                format!("{id} is not below the {n} tokens"),
            ));
        }
    }
    let mut files = Vec::new();
    let mut tcfg = Map::new();
    let (named, config_ids, post_processor_sets_flags) = match model {
        "llama" => {
            let scores: Vec<f32> = match meta.array("tokenizer.ggml.scores")? {
                Some(items) => items
                    .iter()
                    .map(|v| match v {
                        Value::F32(s) => Ok(*s),
                        _ => Err(meta.bad("tokenizer.ggml.scores", "holds a non-f32")),
                    })
                    .collect::<Result<_, _>>()?,
                None => vec![0.0; n],
            };
            if scores.len() != n {
                return Err(meta.bad("tokenizer.ggml.scores", "length differs from tokens"));
            }
            let pre = meta.str("tokenizer.ggml.pre")?.unwrap_or("default");
            if pre != "default" {
                return Err(ExportError::NotSupported {
                    path: meta.path().to_path_buf(),
                    what: format!("a SentencePiece vocabulary with pre-tokenizer '{pre}'"),
                });
            }
            let add_space = meta.boolean("tokenizer.ggml.add_space_prefix")?;
            files.push((
                "tokenizer.model".to_string(),
                sentencepiece_model(&tokens, &scores, &types, &ids, add_space.unwrap_or(true)),
            ));
            // User-defined tokens come from added_tokens.json (the model's own type reads back
            // as normal).
            let user: Map<String, Json> = tokens
                .iter()
                .enumerate()
                .filter(|(i, _)| types[*i] == USER_DEFINED)
                .map(|(i, t)| (t.to_string(), json!(i)))
                .collect();
            if !user.is_empty() {
                files.push((
                    "added_tokens.json".to_string(),
                    json_bytes(&Json::Object(user)),
                ));
            }
            tcfg.insert("tokenizer_class".into(), json!("LlamaTokenizer"));
            // SentencePiece has no added tokens to name: every id goes to config.json.
            let (_, rest) = split_ids(meta, &ids, &|_| false)?;
            (Vec::new(), rest, false)
        }
        "gpt2" => {
            let pre = meta
                .str("tokenizer.ggml.pre")?
                .ok_or_else(|| meta.bad("tokenizer.ggml.pre", "missing"))?;
            let (pre_tok, normalizer) =
                pre_tokenizer(pre).ok_or_else(|| ExportError::NotSupported {
                    path: meta.path().to_path_buf(),
                    what: format!("BPE pre-tokenizer '{pre}'"),
                })?;
            let merges = meta.strings("tokenizer.ggml.merges")?.unwrap_or_default();
            let is_added = |id: u64| matches!(types[id as usize], CONTROL | USER_DEFINED);
            let (a, rest) = split_ids(meta, &ids, &is_added)?;
            let add_bos = meta.boolean("tokenizer.ggml.add_bos_token")?;
            let add_eos = meta.boolean("tokenizer.ggml.add_eos_token")?;
            // A ByteLevel post-processor makes the converter default both flags to false, as
            // SmolLM2-style files have them.
            let byte_level_post = add_bos == Some(false) && add_eos == Some(false);
            let mut vocab = Map::new();
            let mut added = Vec::new();
            for (i, t) in tokens.iter().enumerate() {
                let pad = format!("[PAD{i}]");
                if types[i] == UNUSED && *t == pad {
                    continue;
                }
                vocab.insert(t.to_string(), json!(i));
                if matches!(types[i], CONTROL | USER_DEFINED) {
                    added.push(json!({
                        "id": i, "content": t, "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": types[i] == CONTROL,
                    }));
                }
            }
            let tok = json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added,
                "normalizer": normalizer,
                "pre_tokenizer": pre_tok,
                "post_processor": if byte_level_post {
                    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true})
                } else { Json::Null },
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": null,
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                    "vocab": vocab, "merges": merges,
                },
            });
            files.push(("tokenizer.json".to_string(), json_bytes(&tok)));
            tcfg.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
            (ids[..a].to_vec(), rest, byte_level_post)
        }
        other => {
            return Err(ExportError::NotSupported {
                path: meta.path().to_path_buf(),
                what: format!("tokenizer model '{other}'"),
            })
        }
    };
    // The llama converter reads add_prefix_space from tokenizer_config.json for any vocabulary.
    if let Some(b) = meta.boolean("tokenizer.ggml.add_space_prefix")? {
        tcfg.insert("add_prefix_space".into(), json!(b));
    }
    if !post_processor_sets_flags {
        for typ in ["bos", "eos", "sep"] {
            if let Some(b) = meta.boolean(&format!("tokenizer.ggml.add_{typ}_token"))? {
                tcfg.insert(format!("add_{typ}_token"), json!(b));
            }
        }
    }
    for (typ, id) in &named {
        tcfg.insert(format!("{typ}_token"), json!(tokens[*id as usize]));
    }
    if let Some(t) = meta.str("tokenizer.chat_template")? {
        tcfg.insert("chat_template".into(), json!(t));
    }
    tcfg.insert("clean_up_tokenization_spaces".into(), json!(false));
    files.push((
        "tokenizer_config.json".to_string(),
        json_bytes(&Json::Object(tcfg)),
    ));
    Ok(Tokenizer {
        files,
        n_tokens: n,
        config_ids,
        all_ids: ids,
    })
}

/// A serialized SentencePiece `ModelProto`.
fn sentencepiece_model(
    tokens: &[&str],
    scores: &[f32],
    types: &[i32],
    ids: &[(String, u64)],
    add_dummy_prefix: bool,
) -> Vec<u8> {
    let mut m = Proto(Vec::new());
    for ((t, s), ty) in tokens.iter().zip(scores).zip(types) {
        let mut p = Proto(Vec::new());
        p.bytes(1, t.as_bytes());
        p.float(2, *s);
        // USER_DEFINED reads back as NORMAL from the model; added_tokens.json restores it.
        let ty = if (1..=6).contains(ty) { *ty } else { NORMAL };
        p.int(3, ty as i64);
        m.bytes(1, &p.0);
    }
    let id = |typ: &str| {
        ids.iter()
            .find(|(t, _)| t == typ)
            .map(|(_, i)| *i as i64)
            .unwrap_or(-1)
    };
    let mut trainer = Proto(Vec::new());
    trainer.int(3, 2); // model_type BPE
    trainer.int(4, tokens.len() as i64); // vocab_size
    trainer.int(35, types.contains(&BYTE) as i64); // byte_fallback
    let unk = types.iter().position(|&t| t == 2).map(|i| i as i64);
    trainer.int(40, unk.unwrap_or(id("unk")).max(0)); // unk_id
    trainer.int(41, id("bos"));
    trainer.int(42, id("eos"));
    trainer.int(43, id("pad"));
    m.bytes(2, &trainer.0);
    let mut norm = Proto(Vec::new());
    norm.bytes(1, b"identity");
    norm.int(3, add_dummy_prefix as i64);
    norm.int(4, 0); // remove_extra_whitespaces
    norm.int(5, 1); // escape_whitespaces
    m.bytes(3, &norm.0);
    m.0
}
