//! Byte-level BPE tokenization from a GGUF vocabulary (`tokenizer.ggml.model = "gpt2"`),
//! reproducing llama.cpp's `llm_tokenizer_bpe_session` and the BPE branch of
//! `llama_vocab::impl::tokenize`: special-token partitioning, the pre-tokenizer of
//! `tokenizer.ggml.pre` splitting the text into words (`unicode_regex_split` with the
//! hand-written splitters llama.cpp uses for the GPT-2, llama3 and qwen2 expressions), GPT-2's
//! byte→character encoding, then rank-ordered merging of adjacent symbols within each word.
//!
//! Pre-tokenizers supported: `gpt2` family (plain GPT-2 expression), `smollm` family (digits
//! split one by one, then GPT-2), `llama3` family (`\p{N}{1,3}`) and `qwen2` family (`\p{N}`).
//! Others are refused with "not supported yet" rather than tokenized differently.
//!
//! Character classes (`\p{L}`, `\p{N}`, whitespace) come from Rust's Unicode tables, which may
//! be a newer Unicode version than llama.cpp's `unicode-data.cpp`; they agree on every
//! character assigned in both.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::runtime::error::TokenizeError;

/// What the tokenizer functions return.
type Result<T, E = TokenizeError> = std::result::Result<T, E>;
use regex::Regex;

use crate::formats::gguf::{Metadata, Value};
// Vocabulary access and UTF-8 helpers are shared with the SentencePiece tokenizer.
use crate::runtime::tokenize_spm::{array, flag, token_type, utf8_len, Symbol};

/// How a pre-tokenizer cuts text into words before merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (GPT-2).
    Gpt2,
    /// `\p{N}` (each digit its own word), then the GPT-2 expression (StarCoder, SmolLM, …).
    DigitsThenGpt2,
    /// The llama3 expression, with digit runs cut into groups of at most `max_digits`
    /// (3 for llama3, 1 for qwen2).
    Llama3 {
        /// Longest digit run kept as one word.
        max_digits: usize,
    },
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp picks for a `tokenizer.ggml.pre` name (`llama_vocab::impl::
    /// load`), and whether that name sets `ignore_merges` and forces BOS by default.
    pub fn for_name(pre: &str) -> Result<(PreTokenizer, bool, bool)> {
        Ok(match pre {
            "default" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
            | "trillion" | "granite-docling" => (PreTokenizer::Gpt2, false, false),
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => (PreTokenizer::DigitsThenGpt2, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => {
                (PreTokenizer::Llama3 { max_digits: 3 }, true, true)
            }
            "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" | "hunyuan" | "solar-open" => {
                (PreTokenizer::Llama3 { max_digits: 1 }, false, false)
            }
            other => {
                return Err(TokenizeError::UnsupportedPreTokenizer {
                    name: other.to_string(),
                })
            }
        })
    }
}

/// A GGUF byte-level BPE vocabulary ready to tokenize.
#[derive(Clone, Debug)]
pub struct BpeTokenizer {
    tokens: Vec<Vec<u8>>,
    types: Vec<i32>,
    ids: HashMap<Vec<u8>, u32>,
    /// Merge rank of each (left, right) pair: its index in `tokenizer.ggml.merges`.
    ranks: HashMap<(Vec<u8>, Vec<u8>), u32>,
    /// Control, user-defined and unknown tokens, longest first (see `SpmTokenizer`).
    specials: Vec<u32>,
    pre: PreTokenizer,
    /// A word that is itself a token is emitted whole (llama3-style vocabularies).
    ignore_merges: bool,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// Whether encoding with special tokens prepends BOS.
    pub add_bos: bool,
    /// Whether encoding with special tokens appends EOS.
    pub add_eos: bool,
    classes: CharClasses,
}

fn strings(md: &Metadata, key: &str) -> Result<Vec<Vec<u8>>> {
    array(md, key)
        .ok_or_else(|| TokenizeError::MissingKey {
            key: key.to_string(),
        })?
        .iter()
        .map(|v| {
            v.as_str()
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| TokenizeError::WrongElement {
                    key: key.to_string(),
                    expected: "string",
                })
        })
        .collect()
}

impl BpeTokenizer {
    /// Build from GGUF metadata, with llama.cpp's defaults where a key is absent.
    pub fn from_metadata(md: &Metadata) -> Result<BpeTokenizer> {
        match md.get_str("tokenizer.ggml.model") {
            Some("gpt2") => {}
            Some(other) => {
                return Err(TokenizeError::NotBpe {
                    model: other.to_string(),
                })
            }
            None => return Err(TokenizeError::NoModel),
        }
        let pre_name = md.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let (pre, ignore_merges, default_add_bos) = PreTokenizer::for_name(pre_name)?;
        let tokens = strings(md, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
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
        if types.len() != n {
            return Err(TokenizeError::ArraysDisagree {
                what: format!("{n} tokens, {} types", types.len()),
            });
        }
        let mut ranks = HashMap::new();
        for (rank, m) in strings(md, "tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
        {
            // llama.cpp splits at the first space after the first byte.
            let at = m
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| TokenizeError::MergeWithoutSpace {
                    rank,
                    merge: String::from_utf8_lossy(&m).into_owned(),
                })?;
            ranks
                .entry((m[..at].to_vec(), m[at + 1..].to_vec()))
                .or_insert(rank as u32);
        }
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
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        let id = |key: &str| -> Option<u32> {
            md.get_u64(key)
                .filter(|&v| (v as usize) < n)
                .map(|v| v as u32)
        };
        Ok(BpeTokenizer {
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: flag(md, "tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos),
            add_eos: flag(md, "tokenizer.ggml.add_eos_token").unwrap_or(false),
            tokens,
            types,
            ids,
            ranks,
            specials,
            pre,
            ignore_merges,
            classes: CharClasses::new(),
        })
    }

    /// Vocabulary size.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The pre-tokenizer `tokenizer.ggml.pre` selected.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// `llama_tokenize(text, add_special, parse_special)`. Token attributes lstrip/rstrip are
    /// not applied (llama.cpp sets them only for a few named tokens of other models).
    pub fn encode(&self, text: &[u8], add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let text = std::str::from_utf8(text).map_err(|detail| TokenizeError::NotUtf8 { detail })?;
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.push(
                self.bos
                    .ok_or(TokenizeError::NoSpecialToken { which: "BOS" })?,
            );
        }
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(t) => self.encode_text(t, &mut out),
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

    /// Cut special-token texts out of `text` (`tokenizer_st_partition`), longest first.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
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
            let Ok(needle) = std::str::from_utf8(&self.tokens[id as usize]) else {
                continue;
            };
            if needle.is_empty() {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
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

    /// Pre-tokenize one text fragment into words (code point ranges).
    pub fn split_words(&self, text: &str) -> Vec<String> {
        let cpts: Vec<char> = text.chars().collect();
        let flags: Vec<CharFlags> = cpts.iter().map(|&c| self.classes.flags(c)).collect();
        let whole = vec![cpts.len()];
        let lens = match self.pre {
            PreTokenizer::Gpt2 => split_gpt2(&cpts, &flags, &whole),
            PreTokenizer::DigitsThenGpt2 => {
                let digits = split_each_number(&flags, &whole);
                split_gpt2(&cpts, &flags, &digits)
            }
            PreTokenizer::Llama3 { max_digits } => split_llama3(&cpts, &flags, &whole, max_digits),
        };
        let mut words = Vec::with_capacity(lens.len());
        let mut start = 0;
        for len in lens {
            words.push(cpts[start..start + len].iter().collect());
            start += len;
        }
        words
    }

    /// Pre-tokenize, byte-encode and merge one text fragment
    /// (`llm_tokenizer_bpe_session::tokenize`).
    fn encode_text(&self, text: &str, out: &mut Vec<u32>) {
        for word in self.split_words(text) {
            let encoded = byte_encode(word.as_bytes());
            if self.ignore_merges {
                if let Some(&id) = self.ids.get(encoded.as_bytes()) {
                    out.push(id);
                    continue;
                }
            }
            for piece in self.merge_word(encoded.as_bytes()) {
                match self.ids.get(piece) {
                    Some(&id) => out.push(id),
                    // Unknown symbol: one token per byte of its text, when the byte is a token.
                    None => {
                        for &b in piece {
                            if let Some(&id) = self.ids.get(&[b][..]) {
                                out.push(id);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Merge adjacent symbols of one byte-encoded word, lowest merge rank first, ties to the
    /// leftmost pair (`llm_bigram_bpe::comparator`); returns the final symbols' texts.
    fn merge_word<'w>(&self, word: &'w [u8]) -> Vec<&'w [u8]> {
        let mut syms: Vec<Symbol> = Vec::new();
        let mut off = 0;
        while off < word.len() {
            let len = utf8_len(word[off]).min(word.len() - off);
            syms.push(Symbol {
                start: off,
                len,
                prev: syms.len() as isize - 1,
                next: if off + len == word.len() {
                    -1
                } else {
                    syms.len() as isize + 1
                },
            });
            off += len;
        }
        let mut queue = BinaryHeap::new();
        for i in 1..syms.len() {
            self.push_pair(word, &syms, i - 1, i, &mut queue);
        }
        while let Some(pair) = queue.pop() {
            let (l, r) = (pair.left, pair.right);
            if syms[l].len == 0 || syms[r].len == 0 {
                continue;
            }
            // Stale: one side has grown since the pair was queued.
            if syms[l].len + syms[r].len != pair.len || syms[l].start + syms[l].len != syms[r].start
            {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            let after = syms[r].next;
            if after >= 0 {
                syms[after as usize].prev = l as isize;
            }
            if syms[l].prev >= 0 {
                self.push_pair(word, &syms, syms[l].prev as usize, l, &mut queue);
            }
            if syms[l].next >= 0 {
                self.push_pair(word, &syms, l, syms[l].next as usize, &mut queue);
            }
        }
        syms.iter()
            .filter(|s| s.len > 0)
            .map(|s| &word[s.start..s.start + s.len])
            .collect()
    }

    fn push_pair(
        &self,
        word: &[u8],
        syms: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Pair>,
    ) {
        let (a, b) = (&syms[left], &syms[right]);
        let key = (
            word[a.start..a.start + a.len].to_vec(),
            word[b.start..b.start + b.len].to_vec(),
        );
        if let Some(&rank) = self.ranks.get(&key) {
            queue.push(Pair {
                left,
                right,
                rank,
                len: a.len + b.len,
            });
        }
    }
}

enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A candidate merge; the heap pops the lowest rank, ties to the leftmost pair.
struct Pair {
    left: usize,
    right: usize,
    rank: u32,
    /// Bytes of the merged text when queued (a different sum later means the pair is stale).
    len: usize,
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
        // BinaryHeap pops the greatest: lower rank, then lower left index, is greater.
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// U+0100.. in byte order, so every byte string becomes printable text.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("U+0100..U+0143 are chars")
}

fn byte_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}

/// llama.cpp's `unicode_cpt_flags` bits the splitters read. `in_range` is false past the end
/// of a fragment (where llama.cpp returns empty flags).
#[derive(Clone, Copy, Debug, Default)]
struct CharFlags {
    in_range: bool,
    letter: bool,
    number: bool,
    space: bool,
}

#[derive(Clone, Debug)]
struct CharClasses {
    letter: Regex,
    number: Regex,
}

impl CharClasses {
    fn new() -> CharClasses {
        CharClasses {
            letter: Regex::new(r"^\p{L}$").expect("valid class"),
            number: Regex::new(r"^\p{N}$").expect("valid class"),
        }
    }

    fn flags(&self, c: char) -> CharFlags {
        if c.is_ascii() {
            return CharFlags {
                in_range: true,
                letter: c.is_ascii_alphabetic(),
                number: c.is_ascii_digit(),
                space: matches!(c, '\t' | '\n' | '\x0B' | '\x0C' | '\r' | ' '),
            };
        }
        let mut buf = [0u8; 4];
        let s = c.encode_utf8(&mut buf);
        CharFlags {
            in_range: true,
            letter: self.letter.is_match(s),
            number: self.number.is_match(s),
            // White_Space: U+85, U+A0, U+1680, U+2000–200A, U+2028/9, U+202F, U+205F, U+3000,
            // the same set as llama.cpp's unicode_set_whitespace.
            space: c.is_whitespace(),
        }
    }
}

/// Each `\p{N}` code point becomes its own word; the text between stays whole
/// (`unicode_regex_split_stl` with `\p{N}`).
fn split_each_number(flags: &[CharFlags], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut start = 0;
    for &len in offsets {
        let mut run = 0;
        for f in &flags[start..start + len] {
            if f.number {
                if run > 0 {
                    out.push(run);
                    run = 0;
                }
                out.push(1);
            } else {
                run += 1;
            }
        }
        if run > 0 {
            out.push(run);
        }
        start += len;
    }
    out
}

/// Cursor over one fragment: code points and flags, empty past the end.
struct Fragmented<'a> {
    cpts: &'a [char],
    flags: &'a [CharFlags],
    lo: usize,
    hi: usize,
    prev_end: usize,
    out: &'a mut Vec<usize>,
}

impl Fragmented<'_> {
    fn cpt(&self, pos: usize) -> Option<char> {
        (self.lo <= pos && pos < self.hi).then(|| self.cpts[pos])
    }

    fn flags(&self, pos: usize) -> CharFlags {
        if self.lo <= pos && pos < self.hi {
            self.flags[pos]
        } else {
            CharFlags::default()
        }
    }

    /// End the current word at `end`; returns its length.
    fn cut(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (optionally case-insensitive): the contraction's
    /// length.
    fn contraction(&self, pos: usize, fold: bool) -> Option<usize> {
        if self.cpt(pos) != Some('\'') || pos + 1 >= self.hi {
            return None;
        }
        let low = |c: Option<char>| {
            c.map(|c| {
                if fold {
                    c.to_lowercase().next().unwrap_or(c)
                } else {
                    c
                }
            })
        };
        let n1 = low(self.cpt(pos + 1));
        if matches!(n1, Some('s' | 't' | 'm' | 'd')) {
            return Some(2);
        }
        if pos + 2 < self.hi {
            let n2 = low(self.cpt(pos + 2));
            if matches!(
                (n1, n2),
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
            ) {
                return Some(3);
            }
        }
        None
    }

    /// Whitespace run at `pos`: its length and the end of its last \r or \n (0 if none).
    fn whitespace_run(&self, pos: usize) -> (usize, usize) {
        let mut n = 0;
        let mut last_newline_end = 0;
        while self.flags(pos + n).space {
            if matches!(self.cpt(pos + n), Some('\r' | '\n')) {
                last_newline_end = pos + n + 1;
            }
            n += 1;
        }
        (n, last_newline_end)
    }
}

fn other_symbol(f: CharFlags) -> bool {
    f.in_range && !(f.space || f.letter || f.number)
}

/// The GPT-2 expression (`unicode_regex_split_custom_gpt2`).
fn split_gpt2(cpts: &[char], flags: &[CharFlags], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let mut s = Fragmented {
            cpts,
            flags,
            lo: start,
            hi: start + len,
            prev_end: start,
            out: &mut out,
        };
        start += len;
        let mut pos = s.lo;
        while pos < s.hi {
            if let Some(n) = s.contraction(pos, false) {
                pos += s.cut(pos + n);
                continue;
            }
            let space = s.cpt(pos) == Some(' ');
            let f2 = if space {
                s.flags(pos + 1)
            } else {
                s.flags(pos)
            };
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            let class: Option<fn(CharFlags) -> bool> = if f2.letter {
                Some(|f| f.letter)
            } else if f2.number {
                Some(|f| f.number)
            } else if other_symbol(f2) {
                Some(other_symbol)
            } else {
                None
            };
            if let Some(class) = class {
                pos += space as usize;
                while class(s.flags(pos)) {
                    pos += 1;
                }
                s.cut(pos);
                continue;
            }
            let (n_space, _) = s.whitespace_run(pos);
            // `\s+(?!\S)`: leave the last space to prefix the next word.
            if n_space > 1 && s.cpt(pos + n_space).is_some() {
                pos += n_space - 1;
                s.cut(pos);
                continue;
            }
            if n_space > 0 {
                pos += n_space;
                s.cut(pos);
                continue;
            }
            pos += 1;
            s.cut(pos);
        }
    }
    out
}

/// The llama3 expression (`unicode_regex_split_custom_llama3`; with `max_digits` 1 it is
/// `unicode_regex_split_custom_qwen2`).
fn split_llama3(
    cpts: &[char],
    flags: &[CharFlags],
    offsets: &[usize],
    max_digits: usize,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let mut s = Fragmented {
            cpts,
            flags,
            lo: start,
            hi: start + len,
            prev_end: start,
            out: &mut out,
        };
        start += len;
        let mut pos = s.lo;
        while pos < s.hi {
            let c = s.cpt(pos);
            let f = s.flags(pos);
            if let Some(n) = s.contraction(pos, true) {
                pos += s.cut(pos + n);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(matches!(c, Some('\r' | '\n')) || f.number)
                && (f.letter || s.flags(pos + 1).letter)
            {
                pos += 1;
                while s.flags(pos).letter {
                    pos += 1;
                }
                s.cut(pos);
                continue;
            }
            // `\p{N}{1,max}`
            if f.number {
                let mut first = pos;
                while s.flags(pos).number {
                    pos += 1;
                    if pos - first >= max_digits {
                        s.cut(pos);
                        first = pos;
                    }
                }
                s.cut(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let space = c == Some(' ');
            let f2 = if space { s.flags(pos + 1) } else { f };
            if !(f2.space || f2.letter || f2.number) && f.in_range {
                pos += space as usize;
                while other_symbol(s.flags(pos)) {
                    pos += 1;
                }
                while matches!(s.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                s.cut(pos);
                continue;
            }
            let (n_space, last_newline_end) = s.whitespace_run(pos);
            // `\s*[\r\n]+`
            if last_newline_end > 0 {
                pos = last_newline_end;
                s.cut(pos);
                continue;
            }
            if n_space > 1 && s.cpt(pos + n_space).is_some() {
                pos += n_space - 1;
                s.cut(pos);
                continue;
            }
            if n_space > 0 {
                pos += n_space;
                s.cut(pos);
                continue;
            }
            pos += 1;
            s.cut(pos);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_encoding_is_gpt2s() {
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(0), '\u{100}');
        assert_eq!(byte_char(0xAD), '\u{143}');
    }
}
