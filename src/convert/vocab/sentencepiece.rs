//! SentencePiece `tokenizer.model` → GGUF vocab, as llama.cpp's `_create_vocab_sentencepiece`
//! (llama.cpp 0c1e57098).
//!
//! The model file is a protobuf `ModelProto`; only its `pieces` (field 1: a `SentencePiece`
//! message of piece = 1, score = 2, type = 3) matter here, so the reader decodes the wire format
//! directly and steps over every other field.

use std::path::Path;

use serde_json::Value as Json;

use super::{does_token_look_special, TokenType, VocabError};

/// A piece's type in the model (sentencepiece_model.proto `SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    /// An ordinary piece.
    Normal,
    /// The unknown piece.
    Unknown,
    /// A control piece (`<s>`, `</s>`).
    Control,
    /// A user-defined piece, matched verbatim.
    UserDefined,
    /// An unused placeholder piece.
    Unused,
    /// A byte-fallback piece (`<0x0A>`).
    Byte,
}

#[derive(Clone, Debug, PartialEq)]
/// One entry of tokenizer.model's piece list.
pub struct Piece {
    /// The piece's text (with `▁` for spaces).
    pub piece: String,
    /// Its log-probability score.
    pub score: f32,
    /// Its type.
    pub kind: PieceType,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self, n: u64) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(usize::try_from(n).ok()?)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Next (field number, wire type, payload) — payload for length-delimited fields, the
    /// value for varints and fixed-width fields.
    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?)),
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.bytes(n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?)),
            _ => return None,
        };
        Some((num, f))
    }
}

enum Field<'a> {
    Varint(u64),
    Fixed64(#[allow(dead_code)] u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The pieces of a serialized `ModelProto`, in id order.
pub fn parse_model(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut pieces = Vec::new();
    while !r.done() {
        let at = r.pos;
        let (num, f) = r
            .field()
            .ok_or_else(|| format!("malformed protobuf at byte {at}"))?;
        if num == 1 {
            let Field::Bytes(msg) = f else {
                return Err(format!("piece at byte {at} is not a message"));
            };
            pieces.push(parse_piece(msg).ok_or_else(|| format!("malformed piece at byte {at}"))?);
        }
    }
    if pieces.is_empty() {
        return Err("no pieces (not a SentencePiece model)".into());
    }
    Ok(pieces)
}

fn parse_piece(msg: &[u8]) -> Option<Piece> {
    let mut r = Reader { buf: msg, pos: 0 };
    let mut piece = None;
    let mut score = 0.0f32;
    let mut kind = PieceType::Normal;
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(b)) => piece = Some(String::from_utf8(b.to_vec()).ok()?),
            (2, Field::Fixed32(bits)) => score = f32::from_bits(bits),
            (3, Field::Varint(t)) => {
                kind = match t {
                    1 => PieceType::Normal,
                    2 => PieceType::Unknown,
                    3 => PieceType::Control,
                    4 => PieceType::UserDefined,
                    5 => PieceType::Unused,
                    6 => PieceType::Byte,
                    _ => return None,
                }
            }
            _ => {}
        }
    }
    Some(Piece {
        piece: piece?,
        score,
        kind,
    })
}

/// Tokens, scores and token types, ready for the GGUF keys.
pub struct SpmVocab {
    /// Token strings, index = token id.
    pub tokens: Vec<String>,
    /// Each token's score (`tokenizer.ggml.scores`).
    pub scores: Vec<f32>,
    /// Each token's type (`tokenizer.ggml.token_type`).
    pub types: Vec<TokenType>,
}

/// `_create_vocab_sentencepiece`: `vocab_size` is the config's (or `None` to use the model's).
pub fn create_vocab(dir: &Path, vocab_size: Option<usize>) -> Result<SpmVocab, VocabError> {
    let path = dir.join("tokenizer.model");
    let bytes = std::fs::read(&path).map_err(|e| VocabError::file(&path, e.to_string()))?;
    let pieces = parse_model(&bytes).map_err(|e| VocabError::file(&path, e))?;
    let vocab_size = vocab_size.unwrap_or(pieces.len());

    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; vocab_size];
    let mut types = vec![TokenType::Unused; vocab_size];
    for (id, p) in pieces.iter().enumerate().take(vocab_size) {
        tokens[id] = p.piece.clone();
        scores[id] = p.score;
        // User-defined pieces stay NORMAL: SentencePieceProcessor has no IsUserDefined check here.
        types[id] = match p.kind {
            PieceType::Unknown => TokenType::Unknown,
            PieceType::Control => TokenType::Control,
            PieceType::Unused => TokenType::Unused,
            PieceType::Byte => TokenType::Byte,
            PieceType::Normal | PieceType::UserDefined => TokenType::Normal,
        };
    }

    let added_path = dir.join("added_tokens.json");
    if added_path.is_file() {
        let json = super::read_json(&added_path)?;
        let Json::Object(map) = json else {
            return Err(VocabError::file(&added_path, "not a JSON object".into()));
        };
        for (text, id) in map {
            let id = id.as_u64().ok_or_else(|| {
                VocabError::file(&added_path, format!("id of '{text}' is not an integer"))
            })? as usize;
            if id >= vocab_size {
                continue;
            }
            tokens[id] = text;
            scores[id] = -1000.0;
            types[id] = TokenType::UserDefined;
        }
    }

    let config_path = dir.join("tokenizer_config.json");
    if config_path.is_file() {
        let json = super::read_json(&config_path)?;
        if let Some(Json::Object(decoder)) = json.get("added_tokens_decoder") {
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
                if id >= vocab_size {
                    continue;
                }
                let special = data.get("special").is_some_and(py_truthy);
                let text = if special || does_token_look_special(content) {
                    types[id] = TokenType::Control;
                    content.to_string()
                } else {
                    types[id] = TokenType::UserDefined;
                    content.replace('\u{2581}', " ")
                };
                scores[id] = -1000.0;
                tokens[id] = text;
            }
        }
    }
    Ok(SpmVocab {
        tokens,
        scores,
        types,
    })
}

/// Python truthiness of a JSON value.
pub(crate) fn py_truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(p: &str, score: f32, kind: u8) -> Vec<u8> {
        let mut m = vec![0x0a, p.len() as u8];
        m.extend_from_slice(p.as_bytes());
        m.push(0x15);
        m.extend_from_slice(&score.to_le_bytes());
        m.extend_from_slice(&[0x18, kind]);
        let mut out = vec![0x0a, m.len() as u8];
        out.extend(m);
        out
    }

    #[test]
    fn pieces_parse_and_other_fields_are_skipped() {
        let mut model = piece("<unk>", 0.0, 2);
        model.extend(piece("<0x0A>", 0.0, 6));
        model.extend(piece("\u{2581}a", -1.5, 1));
        // trainer_spec (field 2) with a varint inside, then a fixed32 field 9.
        model.extend_from_slice(&[0x12, 0x02, 0x08, 0x01, 0x4d, 1, 2, 3, 4]);
        let p = parse_model(&model).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].kind, PieceType::Unknown);
        assert_eq!(p[1].kind, PieceType::Byte);
        assert_eq!(p[2].piece, "\u{2581}a");
        assert_eq!(p[2].score, -1.5);
    }

    #[test]
    fn truncated_model_is_refused() {
        let model = piece("<unk>", 0.0, 2);
        assert!(parse_model(&model[..model.len() - 2]).is_err());
        assert!(parse_model(b"").is_err());
    }
}
