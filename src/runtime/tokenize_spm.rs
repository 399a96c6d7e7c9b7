//! SentencePiece-style tokenization from a GGUF vocabulary (`tokenizer.ggml.model = "llama"`),
//! reproducing llama.cpp's `llm_tokenizer_spm_session` and the SPM branch of
//! `llama_vocab::impl::tokenize`:
//! special-token partitioning, a "▁" prefix, spaces escaped to "▁", greedy merging of the
//! adjacent pair whose merged text is the best-scoring token, and `<0xXX>` byte fallback.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::runtime::error::TokenizeError;

/// What the tokenizer functions return.
type Result<T, E = TokenizeError> = std::result::Result<T, E>;

use crate::formats::gguf::{Metadata, Value};

/// `tokenizer.ggml.token_type` values as the integers stored, for matching on them; defined by
/// the one [`TokenType`](crate::ggml::TokenType).
pub mod token_type {
    use crate::ggml::TokenType;
    /// [`TokenType::Normal`].
    pub const NORMAL: i32 = TokenType::Normal as i32;
    /// [`TokenType::Unknown`].
    pub const UNKNOWN: i32 = TokenType::Unknown as i32;
    /// [`TokenType::Control`].
    pub const CONTROL: i32 = TokenType::Control as i32;
    /// [`TokenType::UserDefined`].
    pub const USER_DEFINED: i32 = TokenType::UserDefined as i32;
    /// [`TokenType::Unused`].
    pub const UNUSED: i32 = TokenType::Unused as i32;
    /// [`TokenType::Byte`].
    pub const BYTE: i32 = TokenType::Byte as i32;
}

/// "▁" (U+2581), SentencePiece's visible space.
const SPACE_MARK: &[u8] = "\u{2581}".as_bytes();

/// A GGUF SentencePiece ("llama") vocabulary ready to tokenize, as llama.cpp's SPM tokenizer.
#[derive(Clone, Debug)]
pub struct SpmTokenizer {
    tokens: Vec<Vec<u8>>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: HashMap<Vec<u8>, u32>,
    /// Control, user-defined and unknown tokens, longest text first: the strings cut out of
    /// the text before SentencePiece sees it.
    specials: Vec<u32>,
    /// `tokenizer.ggml.bos_token_id` (default 1).
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id` (default 2).
    pub eos: Option<u32>,
    /// Whether encoding with special tokens prepends BOS.
    pub add_bos: bool,
    /// Whether encoding with special tokens appends EOS.
    pub add_eos: bool,
    /// Whether a space is put before the text (`tokenizer.ggml.add_space_prefix`).
    pub add_space_prefix: bool,
}

pub(crate) fn array<'a>(md: &'a Metadata, key: &str) -> Option<&'a [Value]> {
    match md.get(key)? {
        Value::Array(_, items) => Some(items),
        _ => None,
    }
}

pub(crate) fn flag(md: &Metadata, key: &str) -> Option<bool> {
    match md.get(key)? {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

impl SpmTokenizer {
    /// Build from GGUF metadata, with llama.cpp's SPM defaults (BOS 1, EOS 2, add BOS, no EOS,
    /// space prefix) wherever a key is absent.
    pub fn from_metadata(md: &Metadata) -> Result<SpmTokenizer> {
        match md.get_str("tokenizer.ggml.model") {
            Some("llama") => {}
            Some(other) => {
                return Err(TokenizeError::NotSpm {
                    model: other.to_string(),
                })
            }
            None => return Err(TokenizeError::NoModel),
        }
        let tokens: Vec<Vec<u8>> = array(md, "tokenizer.ggml.tokens")
            .ok_or_else(|| TokenizeError::MissingKey {
                key: "tokenizer.ggml.tokens".into(),
            })?
            .iter()
            .map(|v| {
                v.as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| {
                    TokenizeError::WrongElement {
                        key: "tokenizer.ggml.tokens".into(),
                        expected: "string",
                    }
                })
            })
            .collect::<Result<_>>()?;
        let n = tokens.len();
        let scores = match array(md, "tokenizer.ggml.scores") {
            Some(items) => items
                .iter()
                .map(|v| match v {
                    Value::F32(f) => Ok(*f),
                    _ => Err(TokenizeError::WrongElement {
                        key: "tokenizer.ggml.scores".into(),
                        expected: "f32",
                    }),
                })
                .collect::<Result<Vec<f32>>>()?,
            None => vec![0.0; n],
        };
        let types = match array(md, "tokenizer.ggml.token_type") {
            Some(items) => items
                .iter()
                .map(|v| match v {
                    Value::I32(t) => Ok(*t),
                    other => other.as_u64().map(|t| t as i32).ok_or_else(|| {
                        TokenizeError::WrongElement {
                            key: "tokenizer.ggml.token_type".into(),
                            expected: "integer",
                        }
                    }),
                })
                .collect::<Result<Vec<i32>>>()?,
            None => vec![token_type::NORMAL; n],
        };
        if scores.len() != n || types.len() != n {
            return Err(TokenizeError::ArraysDisagree {
                what: format!("{n} tokens, {} scores, {} types", scores.len(), types.len()),
            });
        }
        // A later duplicate wins, as in llama.cpp's token_to_id map.
        let ids: HashMap<Vec<u8>, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(
                    types[i as usize],
                    token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
                )
            })
            .collect();
        // llama.cpp's std::sort leaves equal lengths in an unspecified order; ours keeps id
        // order, which only matters for two equally long specials overlapping in the text.
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        let id = |key: &str, default: u32| -> Option<u32> {
            let v = md.get_u64(key).map_or(default as i64, |v| v as i64);
            // Values outside the vocabulary mean "none" (llama.cpp ignores them with a warning).
            (0..n as i64).contains(&v).then_some(v as u32)
        };
        Ok(SpmTokenizer {
            bos: id("tokenizer.ggml.bos_token_id", 1),
            eos: id("tokenizer.ggml.eos_token_id", 2),
            add_bos: flag(md, "tokenizer.ggml.add_bos_token").unwrap_or(true),
            add_eos: flag(md, "tokenizer.ggml.add_eos_token").unwrap_or(false),
            add_space_prefix: flag(md, "tokenizer.ggml.add_space_prefix").unwrap_or(true),
            tokens,
            scores,
            types,
            ids,
            specials,
        })
    }

    /// Vocabulary size.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The stored text of a token (with "▁" for spaces, `<0xXX>` for bytes).
    pub fn token_text(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice)
    }

    /// `llama_tokenize(text, add_special, parse_special)`: BOS/EOS per the vocabulary when
    /// `add_special`; control tokens' texts are matched only when `parse_special`
    /// (user-defined ones always). Token attributes lstrip/rstrip are not applied (llama.cpp
    /// sets them only for other vocab types).
    pub fn encode(&self, text: &[u8], add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.push(
                self.bos
                    .ok_or(TokenizeError::NoSpecialToken { which: "BOS" })?,
            );
        }
        let mut prev_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    let mut escaped = Vec::with_capacity(t.len() + 3);
                    if self.add_space_prefix && prev_special {
                        escaped.extend_from_slice(SPACE_MARK);
                    }
                    for &b in t {
                        if b == b' ' {
                            escaped.extend_from_slice(SPACE_MARK);
                        } else {
                            escaped.push(b);
                        }
                    }
                    self.encode_piece(&escaped, &mut out)?;
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.push(
                self.eos
                    .ok_or(TokenizeError::NoSpecialToken { which: "EOS" })?,
            );
        }
        Ok(out)
    }

    /// `encode` for UTF-8 text.
    pub fn encode_str(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        self.encode(text.as_bytes(), add_special, parse_special)
    }

    /// Cut special-token texts out of `text` (`tokenizer_st_partition`): tokens are tried longest
    /// first, each splitting every remaining text fragment at all its occurrences.
    fn partition<'a>(&self, text: &'a [u8], parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = if text.is_empty() {
            Vec::new()
        } else {
            vec![Fragment::Text(text)]
        };
        for &id in &self.specials {
            let ty = self.types[id as usize];
            if !parse_special && (ty == token_type::CONTROL || ty == token_type::UNKNOWN) {
                continue;
            }
            let needle = &self.tokens[id as usize];
            if needle.is_empty() {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = find(rest, needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    /// SentencePiece BPE over one escaped fragment (`llm_tokenizer_spm_session::tokenize`).
    fn encode_piece(&self, text: &[u8], out: &mut Vec<u32>) -> Result<()> {
        // Symbols start as single UTF-8 characters (by lead byte, clipped at the end).
        let mut syms: Vec<Symbol> = Vec::new();
        let mut off = 0;
        while off < text.len() {
            let len = utf8_len(text[off]).min(text.len() - off);
            syms.push(Symbol {
                start: off,
                len,
                prev: syms.len() as isize - 1,
                next: if off + len == text.len() {
                    -1
                } else {
                    syms.len() as isize + 1
                },
            });
            off += len;
        }
        let mut queue = BinaryHeap::new();
        // Which pair of symbols a merged text came from, for splitting non-tokens back up.
        let mut merged_from: HashMap<Vec<u8>, (usize, usize)> = HashMap::new();
        for i in 1..syms.len() {
            self.push_pair(&syms, text, i - 1, i, &mut queue, &mut merged_from);
        }
        while let Some(p) = queue.pop() {
            let (l, r) = (p.left, p.right);
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != p.size {
                continue; // stale: one side has merged since this pair was queued
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            let after = syms[r].next;
            syms[l].next = after;
            if after >= 0 {
                syms[after as usize].prev = l as isize;
            }
            if syms[l].prev >= 0 {
                let pl = syms[l].prev as usize;
                self.push_pair(&syms, text, pl, l, &mut queue, &mut merged_from);
            }
            if syms[l].next >= 0 {
                let nr = syms[l].next as usize;
                self.push_pair(&syms, text, l, nr, &mut queue, &mut merged_from);
            }
        }
        let mut i: isize = if syms.is_empty() { -1 } else { 0 };
        while i >= 0 {
            self.resegment(&syms, text, i as usize, &merged_from, out)?;
            i = syms[i as usize].next;
        }
        Ok(())
    }

    fn push_pair(
        &self,
        syms: &[Symbol],
        text: &[u8],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Pair>,
        merged_from: &mut HashMap<Vec<u8>, (usize, usize)>,
    ) {
        let start = syms[left].start;
        let piece = &text[start..start + syms[left].len + syms[right].len];
        let Some(&id) = self.ids.get(piece) else {
            return;
        };
        queue.push(Pair {
            left,
            right,
            score: self.scores[id as usize],
            size: piece.len(),
        });
        merged_from.insert(piece.to_vec(), (left, right));
    }

    /// Emit a final symbol: its token if it is one, else the pieces it was merged from, else
    /// its bytes as `<0xXX>` tokens (`llm_tokenizer_spm_session::resegment`).
    fn resegment(
        &self,
        syms: &[Symbol],
        text: &[u8],
        i: usize,
        merged_from: &HashMap<Vec<u8>, (usize, usize)>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let piece = &text[syms[i].start..syms[i].start + syms[i].len];
        if let Some(&id) = self.ids.get(piece) {
            out.push(id);
            return Ok(());
        }
        if let Some(&(l, r)) = merged_from.get(piece) {
            self.resegment(syms, text, l, merged_from, out)?;
            return self.resegment(syms, text, r, merged_from, out);
        }
        for &b in piece {
            out.push(self.byte_token(b)?);
        }
        Ok(())
    }

    /// `llama_vocab::byte_to_token` for SPM: `<0xXX>`, else the byte itself as a token.
    pub fn byte_token(&self, b: u8) -> Result<u32> {
        let hex = format!("<0x{b:02X}>");
        self.ids
            .get(hex.as_bytes())
            .or_else(|| self.ids.get(&[b][..]))
            .copied()
            .ok_or(TokenizeError::NoByteToken { byte: b })
    }

    /// Bytes of a token as text (inverse of the escaping: "▁" → space, `<0xXX>` → the byte;
    /// control tokens render as nothing).
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        let Some(t) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        match self.types[id as usize] {
            token_type::CONTROL => Vec::new(),
            token_type::BYTE => parse_byte_token(t).map(|b| vec![b]).unwrap_or_default(),
            _ => {
                let mut out = Vec::with_capacity(t.len());
                let mut k = 0;
                while k < t.len() {
                    if t[k..].starts_with(SPACE_MARK) {
                        out.push(b' ');
                        k += SPACE_MARK.len();
                    } else {
                        out.push(t[k]);
                        k += 1;
                    }
                }
                out
            }
        }
    }
}

fn parse_byte_token(t: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(t).ok()?;
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// Length of a UTF-8 sequence from its lead byte (`unicode_len_utf8`; stray continuation bytes
/// count as 1).
pub(crate) fn utf8_len(lead: u8) -> usize {
    match lead >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

enum Fragment<'a> {
    Text(&'a [u8]),
    Token(u32),
}

/// A piece of the text being merged, in a doubly linked list over the symbol array (-1 ends
/// it); `len` 0 marks a symbol merged into its left neighbour. Both tokenizers use it.
pub(crate) struct Symbol {
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) prev: isize,
    pub(crate) next: isize,
}

/// A candidate merge; the heap pops the highest score, ties to the leftmost pair
/// (`llm_bigram_spm::comparator`).
struct Pair {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}
