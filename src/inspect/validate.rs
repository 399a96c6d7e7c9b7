//! `validate`: is a model file sound? Every problem found is one [`Problem`] naming the file and
//! the tensor or key; nothing stops at the first one unless the file cannot be parsed at all.
//!
//! - GGUF (one file, or a split set `NAME-00001-of-0000N.gguf`): the header as gguf.cpp reads it
//!   (the parser checks counts, lengths and truncation; here offsets are checked too: alignment,
//!   overlaps, and the contiguous order gguf.cpp insists on), every tensor decoded tensor by
//!   tensor — NaN/Inf in values and in the f16 block scales (d, dmin) of every quantized type —
//!   and, for a model, what llama.cpp's loader requires ([`super::required`]): keys, tensors and
//!   shapes, vocabulary length equal to the embedding's rows, special token ids in range, a
//!   known `tokenizer.ggml.pre`, a chat template that parses.
//! - safetensors file: the header, dtypes, a NaN/Inf scan.
//! - Hugging Face directory: config.json parses and names a supported architecture, every shard
//!   the index names is present and holds what the index lists, dtypes readable, NaN/Inf scan,
//!   a tokenizer present; finally the directory is opened as `convert` opens it.
//!
//! A GGUF file with neither a vocabulary nor `token_embd.weight` (a test tensor collection) is
//! checked as a tensor file: structure and values, not loader requirements. Imatrix and LoRA
//! adapter files (`general.type`) likewise, plus their own pairing rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;

use super::required::{self, Finding};
use super::{InspectError, Problem};
use crate::arch::Architecture;
use crate::convert::checkpoint::{HfModel, HfOptions};
use crate::formats::gguf::{GgufError, GgufFile, Metadata, TensorInfo, Value, ValueType};
use crate::formats::peft::{self, PeftAdapter};
use crate::formats::safetensors::{float_dtype_size, floats_to_f32, SafetensorsFile};
use crate::quant::validate::{first_non_finite, validate_row};
use crate::quant::{self, GgmlType};

/// What kind of file was validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A GGUF model llama.cpp loads (it has a vocabulary or a token embedding).
    GgufModel,
    /// A GGUF file of tensors that is not a runnable model (no vocabulary, no embedding).
    GgufTensors,
    /// An importance matrix (`general.type = "imatrix"`).
    GgufImatrix,
    /// A LoRA adapter (`general.type = "adapter"`).
    GgufAdapter,
    /// One safetensors file.
    Safetensors,
    /// A Hugging Face checkpoint directory.
    HfDir,
    /// A PEFT LoRA adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    PeftAdapterDir,
}

/// What `validate` found.
#[derive(Clone, Debug, Serialize)]
pub struct ValidateReport {
    /// The path given.
    pub path: PathBuf,
    /// `None` when the file could not be parsed far enough to tell.
    pub kind: Option<FileKind>,
    /// Every file read (the shards of a split set or a checkpoint).
    pub files: Vec<PathBuf>,
    /// `general.architecture`, or the GGUF architecture of a Hugging Face checkpoint.
    pub architecture: Option<String>,
    /// Tensors whose data was decoded and scanned.
    pub tensors_checked: usize,
    /// Everything wrong; empty when the file is sound.
    pub problems: Vec<Problem>,
    /// What was not checked, and why (not problems).
    pub notes: Vec<String>,
}

impl ValidateReport {
    /// True when no problem was found.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Progress of a validation, for a front end to render.
#[derive(Clone, Copy, Debug)]
pub enum ValidateEvent<'a> {
    /// Tensor `index` of `total` (over all files) is about to be scanned.
    Tensor {
        /// The file holding it.
        file: &'a Path,
        /// Its name.
        name: &'a str,
        /// 0-based position over all files.
        index: usize,
        /// Tensors over all files.
        total: usize,
    },
    /// Something that was not checked, and why.
    Note(&'a str),
}

struct Ctx<'a, 'b> {
    report: ValidateReport,
    on_event: &'a mut (dyn FnMut(ValidateEvent<'_>) + 'b),
}

impl Ctx<'_, '_> {
    fn note(&mut self, msg: String) {
        (self.on_event)(ValidateEvent::Note(&msg));
        self.report.notes.push(msg);
    }

    fn problem(&mut self, p: Problem) {
        self.report.problems.push(p);
    }
}

/// Validate `path`: a GGUF file (or the first or any shard of a split set), a safetensors file,
/// or a Hugging Face checkpoint directory. Problems are in the report; an error is returned
/// only when the path cannot be read at all.
pub fn validate(
    path: &Path,
    on_event: &mut dyn FnMut(ValidateEvent<'_>),
) -> Result<ValidateReport, InspectError> {
    let meta = std::fs::metadata(path).map_err(|source| InspectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut ctx = Ctx {
        report: ValidateReport {
            path: path.to_path_buf(),
            kind: None,
            files: Vec::new(),
            architecture: None,
            tensors_checked: 0,
            problems: Vec::new(),
            notes: Vec::new(),
        },
        on_event,
    };
    if meta.is_dir() {
        if !path.join("config.json").exists() && path.join(peft::CONFIG_FILE).is_file() {
            validate_peft_dir(path, &mut ctx);
        } else {
            validate_hf_dir(path, &mut ctx);
        }
    } else {
        // Sniff the format: GGUF by its magic; safetensors by its extension or by a JSON header
        // right after the 8-byte length; anything else goes to the GGUF parser, which says why
        // it is not one.
        let mut head = [0u8; 9];
        let n = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|source| InspectError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let is_gguf = n >= 4 && &head[..4] == b"GGUF";
        let is_st =
            path.extension().is_some_and(|e| e == "safetensors") || (n == 9 && head[8] == b'{');
        if !is_gguf && is_st {
            validate_safetensors_file(path, &mut ctx);
        } else {
            validate_gguf(path, &mut ctx);
        }
    }
    Ok(ctx.report)
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// The shards of a split set named like llama-gguf-split names them
/// (`PREFIX-00001-of-00003.gguf`), or just `path`.
fn split_paths(path: &Path) -> Option<Vec<PathBuf>> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    if count.len() != 5 || no.len() != 5 {
        return None;
    }
    let count: usize = count.parse().ok()?;
    no.parse::<usize>().ok()?;
    let dir = path.parent().unwrap_or(Path::new(""));
    Some(
        (1..=count)
            .map(|i| dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf")))
            .collect(),
    )
}

/// A parse error as a problem, without repeating the path the error message starts with.
fn gguf_error_problem(path: &Path, e: &GgufError) -> Problem {
    let msg = e.to_string();
    let prefix = format!("{}: ", path.display());
    let msg = msg.strip_prefix(&prefix).unwrap_or(&msg).to_string();
    match e {
        GgufError::UnknownType { tensor, id, .. } => {
            Problem::tensor(path, tensor.clone(), format!("unknown ggml type id {id}"))
        }
        _ => Problem::file(path, msg),
    }
}

fn validate_gguf(path: &Path, ctx: &mut Ctx) {
    let paths = split_paths(path).unwrap_or_else(|| vec![path.to_path_buf()]);
    let mut files: Vec<GgufFile> = Vec::new();
    for p in &paths {
        if !p.is_file() {
            ctx.problem(Problem::file(
                p,
                format!(
                    "shard of the split set of {} is missing",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ),
            ));
            continue;
        }
        ctx.report.files.push(p.clone());
        match GgufFile::open(p) {
            Ok(f) => files.push(f),
            Err(e) => ctx.problem(gguf_error_problem(p, &e)),
        }
    }
    if files.is_empty() {
        return;
    }
    for f in &files {
        check_layout(f, ctx);
    }
    check_splits(&paths, &files, ctx);

    // Tensors over all shards, in order; a name may occur once.
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    let mut all: Vec<(String, Vec<u64>)> = Vec::new();
    for f in &files {
        for t in &f.tensors {
            if let Some(prev) = seen.insert(&t.name, f.path()) {
                ctx.problem(Problem::tensor(
                    f.path(),
                    t.name.clone(),
                    format!("also in {}", prev.display()),
                ));
            }
            all.push((t.name.clone(), t.ne.clone()));
        }
    }
    let first = &files[0];
    let md = &first.metadata;
    let kind = match md.get_str("general.type") {
        Some("imatrix") => FileKind::GgufImatrix,
        Some("adapter") => FileKind::GgufAdapter,
        _ if md.get("tokenizer.ggml.model").is_some()
            || all.iter().any(|(n, _)| n == "token_embd.weight") =>
        {
            FileKind::GgufModel
        }
        _ => FileKind::GgufTensors,
    };
    ctx.report.kind = Some(kind);
    ctx.report.architecture = md.get_str("general.architecture").map(str::to_string);
    match kind {
        FileKind::GgufModel => check_model(first.path(), md, &all, ctx),
        FileKind::GgufAdapter => check_adapter(first.path(), md, &all, ctx),
        FileKind::GgufImatrix => check_imatrix(first.path(), &all, ctx),
        _ => ctx.note(format!(
            "{}: no vocabulary and no token_embd.weight: checked as a tensor file (structure and values), not as a model llama.cpp loads",
            first.path().display()
        )),
    }
    scan_gguf_tensors(&files, ctx);
}

/// Offsets and alignment, as gguf.cpp checks them after parsing: `general.alignment` must be a
/// U32, and each tensor's data must start where the previous one's padded data ends (so no
/// tensor is misaligned, overlaps another, or leaves a gap).
fn check_layout(f: &GgufFile, ctx: &mut Ctx) {
    let path = f.path();
    if let Some(v) = f.metadata.get("general.alignment") {
        if v.value_type() != ValueType::U32 {
            ctx.problem(Problem::key(
                path,
                "general.alignment",
                format!("has type {:?}, gguf.cpp requires U32", v.value_type()),
            ));
        }
    }
    let align = f.metadata.alignment();
    let size = |t: &TensorInfo| t.n_bytes().unwrap_or(0);
    let mut expected = 0u64;
    for (i, t) in f.tensors.iter().enumerate() {
        if t.offset != expected {
            let overlap = f.tensors.iter().enumerate().find(|(j, o)| {
                *j != i && t.offset < o.offset + size(o) && o.offset < t.offset + size(t)
            });
            let msg = if !t.offset.is_multiple_of(align) {
                format!(
                    "data offset {} is not a multiple of the alignment {align}",
                    t.offset
                )
            } else if let Some((_, o)) = overlap {
                format!(
                    "data [{}, {}) overlaps tensor '{}' [{}, {})",
                    t.offset,
                    t.offset + size(t),
                    o.name,
                    o.offset,
                    o.offset + size(o)
                )
            } else {
                format!(
                    "data offset {}, expected {expected}: gguf.cpp requires tensor data in order, each padded to {align} bytes",
                    t.offset
                )
            };
            ctx.problem(Problem::tensor(path, t.name.clone(), msg));
        }
        expected = crate::formats::gguf::align_up(t.offset + size(t), align);
    }
}

/// The `split.*` keys of a split set agree with its files.
fn check_splits(paths: &[PathBuf], files: &[GgufFile], ctx: &mut Ctx) {
    let n = paths.len() as u64;
    let total: u64 = files.iter().map(|f| f.tensors.len() as u64).sum();
    for f in files {
        let path = f.path();
        let no = paths.iter().position(|p| p == path).unwrap_or(0) as u64;
        let count = f.metadata.get_u64("split.count");
        if n == 1 {
            if count.is_some_and(|c| c > 1) {
                ctx.problem(Problem::key(
                    path,
                    "split.count",
                    format!(
                        "is {}, but the file is not named as a shard (NAME-00001-of-{:05}.gguf)",
                        count.unwrap(),
                        count.unwrap()
                    ),
                ));
            }
            continue;
        }
        if count != Some(n) {
            ctx.problem(Problem::key(
                path,
                "split.count",
                format!("is {count:?}, the split set has {n} files"),
            ));
        }
        if f.metadata.get_u64("split.no") != Some(no) {
            ctx.problem(Problem::key(
                path,
                "split.no",
                format!(
                    "is {:?}, expected {no} for this file",
                    f.metadata.get_u64("split.no")
                ),
            ));
        }
        if no == 0 && files.len() == paths.len() {
            let declared = f.metadata.get_u64("split.tensors.count");
            if declared != Some(total) {
                ctx.problem(Problem::key(
                    path,
                    "split.tensors.count",
                    format!("is {declared:?}, the shards hold {total} tensors"),
                ));
            }
        }
    }
}

/// The tokenizer models llama.cpp's vocabulary loader knows (`llama_vocab::impl::load`).
const TOKENIZER_MODELS: &[&str] = &[
    "no_vocab",
    "none",
    "llama",
    "bert",
    "gpt2",
    "hybriddna",
    "whitespace",
    "t5",
    "rwkv",
    "plamo2",
    "gemma4",
];

/// Every `tokenizer.ggml.pre` llama.cpp's BPE vocabulary accepts (src/llama-vocab.cpp); any
/// other value fails to load with "unknown pre-tokenizer type".
pub const KNOWN_PRE_TOKENIZERS: &[&str] = &[
    "default",
    "minicpm5",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "spark2_5",
    "youtu",
    "falcon",
    "mpt",
    "starcoder",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "whitespace",
    "refact",
    "command-r",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "qwen35",
    "stablelm2",
    "olmo",
    "dbrx",
    "smaug-bpe",
    "poro-chat",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "viking",
    "jais",
    "tekken",
    "smollm",
    "codeshell",
    "bloom",
    "gpt3-finnish",
    "exaone",
    "exaone4",
    "exaone-moe",
    "chameleon",
    "minerva-7b",
    "megrez",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "trillion",
    "granite-docling",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "hunyuan",
    "hunyuan-dense",
    "hy_v4",
    "joyai-llm",
    "kimi-k2",
    "ufakzeka",
    "grok-2",
    "afmoe",
    "laguna",
    "minimax-m2",
    "solar-open",
    "mellum2",
];

/// The special-token keys llama.cpp reads (`special_token_types`); an id past the vocabulary is
/// ignored with a warning, so the token silently falls back to the default.
const SPECIAL_TOKEN_KEYS: &[&str] = &[
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
];

/// Parse a Jinja chat template; the parser's message when it does not parse.
pub fn parse_chat_template(source: &str) -> Result<(), String> {
    let env = minijinja::Environment::new();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| match e.line() {
            Some(line) => format!("line {line}: {}", e.detail().unwrap_or(&e.to_string())),
            None => e.to_string(),
        })
}

/// Keys, vocabulary and tensors of a model, as llama.cpp's loader needs them.
fn check_model(path: &Path, md: &Metadata, tensors: &[(String, Vec<u64>)], ctx: &mut Ctx) {
    let n_vocab = check_vocab(path, md, ctx);
    let Some(arch) = md.get_str("general.architecture") else {
        ctx.problem(Problem::key(
            path,
            "general.architecture",
            "missing: llama.cpp cannot tell which loader to use",
        ));
        return;
    };
    match required::check_model(arch, md, n_vocab, tensors) {
        Some(findings) => {
            for f in findings {
                ctx.problem(match f {
                    Finding::Key { key, message } => Problem::key(path, key, message),
                    Finding::Tensor { tensor, message } => Problem::tensor(path, tensor, message),
                });
            }
        }
        None => ctx.note(format!(
            "{}: architecture '{arch}': required tensors and keys not checked (known: {})",
            path.display(),
            required::KNOWN_ARCHITECTURES.join(", ")
        )),
    }
}

/// The vocabulary: a known tokenizer model, a string token list (whose length is returned),
/// per-token arrays of the same length, merges for BPE, a known pre-tokenizer, special ids in
/// range, chat templates that parse.
fn check_vocab(path: &Path, md: &Metadata, ctx: &mut Ctx) -> Option<u64> {
    let Some(model) = md.get("tokenizer.ggml.model") else {
        ctx.problem(Problem::key(
            path,
            "tokenizer.ggml.model",
            "missing: llama.cpp cannot load a model without a vocabulary",
        ));
        return None;
    };
    let Some(model) = model.as_str() else {
        ctx.problem(Problem::key(
            path,
            "tokenizer.ggml.model",
            format!("has type {:?}, expected a string", model.value_type()),
        ));
        return None;
    };
    if !TOKENIZER_MODELS.contains(&model) {
        ctx.problem(Problem::key(
            path,
            "tokenizer.ggml.model",
            format!("'{model}' is not a tokenizer llama.cpp knows (\"unknown tokenizer\")"),
        ));
    }
    let n_vocab = match md.get("tokenizer.ggml.tokens") {
        Some(Value::Array(ValueType::Str, items)) => Some(items.len() as u64),
        Some(v) => {
            ctx.problem(Problem::key(
                path,
                "tokenizer.ggml.tokens",
                format!(
                    "has type {:?}, expected an array of strings",
                    v.value_type()
                ),
            ));
            None
        }
        None if matches!(model, "none" | "no_vocab") => None,
        None => {
            ctx.problem(Problem::key(
                path,
                "tokenizer.ggml.tokens",
                "missing: llama.cpp cannot find the tokenizer vocab",
            ));
            None
        }
    };
    if let Some(n) = n_vocab {
        for key in ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"] {
            if let Some(Value::Array(_, items)) = md.get(key) {
                if items.len() as u64 != n {
                    ctx.problem(Problem::key(
                        path,
                        key,
                        format!("has {} entries, tokenizer.ggml.tokens has {n}", items.len()),
                    ));
                }
            }
        }
        for key in SPECIAL_TOKEN_KEYS {
            if let Some(v) = md.get(key) {
                match v.as_u64() {
                    Some(id) if id < n => {}
                    Some(id) => ctx.problem(Problem::key(
                        path,
                        *key,
                        format!("token id {id} is out of range: the vocabulary has {n} tokens"),
                    )),
                    None => ctx.problem(Problem::key(
                        path,
                        *key,
                        format!("has value {v:?}, expected a token id"),
                    )),
                }
            }
        }
    }
    if model == "gpt2" {
        let pre = md.get_str("tokenizer.ggml.pre");
        if md.get("tokenizer.ggml.merges").is_none() && pre != Some("kimi-k2") {
            ctx.problem(Problem::key(
                path,
                "tokenizer.ggml.merges",
                "missing: llama.cpp cannot load a BPE vocabulary without merges",
            ));
        }
        match pre {
            Some(p) if KNOWN_PRE_TOKENIZERS.contains(&p) => {}
            Some(p) => ctx.problem(Problem::key(
                path,
                "tokenizer.ggml.pre",
                format!("'{p}' is not a pre-tokenizer llama.cpp knows (\"unknown pre-tokenizer type\")"),
            )),
            None => ctx.problem(Problem::key(
                path,
                "tokenizer.ggml.pre",
                "missing: llama.cpp falls back to 'default' and warns that generation quality will be degraded",
            )),
        }
    }
    let templates: Vec<(&str, &Value)> = md
        .iter()
        .filter(|(k, _)| {
            *k == "tokenizer.chat_template" || k.starts_with("tokenizer.chat_template.")
        })
        .collect();
    for (key, v) in templates {
        match v.as_str() {
            Some(src) => {
                if let Err(e) = parse_chat_template(src) {
                    ctx.problem(Problem::key(
                        path,
                        key,
                        format!("chat template does not parse: {e}"),
                    ));
                }
            }
            None => ctx.problem(Problem::key(
                path,
                key,
                format!("has type {:?}, expected a string", v.value_type()),
            )),
        }
    }
    n_vocab
}

/// A LoRA adapter: `adapter.type`, and every `.lora_a` paired with a `.lora_b` of matching rank.
fn check_adapter(path: &Path, md: &Metadata, tensors: &[(String, Vec<u64>)], ctx: &mut Ctx) {
    if md.get_str("adapter.type").is_none() {
        ctx.problem(Problem::key(
            path,
            "adapter.type",
            "missing: llama.cpp needs it to load an adapter",
        ));
    }
    let by_name: BTreeMap<&str, &Vec<u64>> =
        tensors.iter().map(|(n, ne)| (n.as_str(), ne)).collect();
    for (name, ne) in tensors {
        if let Some(base) = name.strip_suffix(".lora_a") {
            let b = format!("{base}.lora_b");
            match by_name.get(b.as_str()) {
                None => ctx.problem(Problem::tensor(path, name.clone(), format!("has no {b}"))),
                Some(bne) if bne.first() != ne.get(1) => ctx.problem(Problem::tensor(
                    path,
                    name.clone(),
                    format!("rank {:?} differs from {b}'s {:?}", ne.get(1), bne.first()),
                )),
                _ => {}
            }
        } else if let Some(base) = name.strip_suffix(".lora_b") {
            if !by_name.contains_key(format!("{base}.lora_a").as_str()) {
                ctx.problem(Problem::tensor(
                    path,
                    name.clone(),
                    format!("has no {base}.lora_a"),
                ));
            }
        }
    }
}

/// An importance matrix: every `.in_sum2` has its `.counts`.
fn check_imatrix(path: &Path, tensors: &[(String, Vec<u64>)], ctx: &mut Ctx) {
    let names: BTreeSet<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    for (name, _) in tensors {
        if let Some(base) = name.strip_suffix(".in_sum2") {
            if !names.contains(format!("{base}.counts").as_str()) {
                ctx.problem(Problem::tensor(
                    path,
                    name.clone(),
                    format!("has no {base}.counts"),
                ));
            }
        }
    }
}

/// Rows decoded at once per task while scanning.
const SLAB_ROWS: usize = 64;

/// What is non-finite in a tensor's data, if anything. Stored f16 scales are checked first
/// (`ggml_validate_row_data`'s rule), then every value is decoded; `Ok(None)` means finite.
/// `Err` carries a note: the type has no decoder, so only its scales were checked.
fn scan_ggml(ty: GgmlType, ne0: usize, data: &[u8]) -> Result<Option<String>, String> {
    let row_bytes = ty.row_size(ne0 as u64).unwrap_or(0) as usize;
    if row_bytes == 0 {
        return Ok(None);
    }
    match ty {
        GgmlType::I8 | GgmlType::I16 | GgmlType::I32 | GgmlType::I64 => return Ok(None),
        GgmlType::F64 => {
            let bad = data
                .chunks_exact(8)
                .position(|c| !f64::from_le_bytes(c.try_into().unwrap()).is_finite());
            return Ok(bad.map(|i| {
                format!(
                    "non-finite F64 value at row {}, column {}",
                    i / ne0,
                    i % ne0
                )
            }));
        }
        _ => {}
    }
    // Scales (and for float types the values themselves) through validate_row, slab by slab.
    let slab = row_bytes * SLAB_ROWS;
    let scale_bad =
        data.par_chunks(slab)
            .enumerate()
            .find_map_first(|(s, bytes)| {
                bytes.chunks(row_bytes).enumerate().find_map(|(r, row)| {
                    validate_row(ty, row).err().map(|e| (s * SLAB_ROWS + r, e))
                })
            });
    if let Some((row, e)) = scale_bad {
        return Ok(Some(format!("row {row}: {e}")));
    }
    if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Ok(None);
    }
    let Some(dequant) = quant::dequantizer(ty) else {
        return Err(format!(
            "{ty} values are not decoded (no {ty} dequantizer); only its block scales were checked"
        ));
    };
    let bad = data
        .par_chunks(slab)
        .enumerate()
        .map_init(
            || vec![0f32; ne0],
            |buf, (s, bytes)| {
                for (r, row) in bytes.chunks(row_bytes).enumerate() {
                    dequant(row, buf);
                    if let Some((c, v)) = first_non_finite(buf) {
                        return Some((s * SLAB_ROWS + r, c, v));
                    }
                }
                None
            },
        )
        .find_first(Option::is_some)
        .flatten();
    Ok(bad.map(|(r, c, v)| format!("decodes to {v} at row {r}, column {c}")))
}

fn scan_gguf_tensors(files: &[GgufFile], ctx: &mut Ctx) {
    let total: usize = files.iter().map(|f| f.tensors.len()).sum();
    let mut index = 0;
    let mut undecoded: BTreeSet<GgmlType> = BTreeSet::new();
    for f in files {
        for t in &f.tensors {
            (ctx.on_event)(ValidateEvent::Tensor {
                file: f.path(),
                name: &t.name,
                index,
                total,
            });
            index += 1;
            let data = f.tensor_data(t);
            match scan_ggml(t.ty, t.ne[0] as usize, data) {
                Ok(None) => {}
                Ok(Some(msg)) => ctx.problem(Problem::tensor(
                    f.path(),
                    t.name.clone(),
                    format!("{} {msg}", t.ty),
                )),
                Err(_) => {
                    undecoded.insert(t.ty);
                }
            }
            f.release_tensor_pages(t);
            ctx.report.tensors_checked += 1;
        }
    }
    for ty in undecoded {
        ctx.note(format!(
            "{ty} tensors: values not decoded (qforge has no {ty} dequantizer); their f16 block scales were checked"
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors and Hugging Face directories

/// Integer and boolean dtypes hold no NaN; they are read as they are.
fn is_integer_dtype(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64
    )
}

/// Elements converted at once per task while scanning safetensors data.
const SLAB_ELEMS: usize = 1 << 16;

/// Scan one safetensors tensor; problems go to `ctx`.
fn scan_st_tensor(f: &SafetensorsFile, name: &str, ctx: &mut Ctx) {
    let Some(t) = f.tensor(name) else { return };
    let path = f.path();
    if let Some(size) = float_dtype_size(t.dtype) {
        let data = f.data(t);
        let bad = data
            .par_chunks(SLAB_ELEMS * size)
            .enumerate()
            .map_init(
                || vec![0f32; SLAB_ELEMS],
                |buf, (s, bytes)| {
                    let n = bytes.len() / size;
                    floats_to_f32(t.dtype, bytes, &mut buf[..n]);
                    first_non_finite(&buf[..n]).map(|(i, v)| (s * SLAB_ELEMS + i, v))
                },
            )
            .find_first(Option::is_some)
            .flatten();
        if let Some((i, v)) = bad {
            ctx.problem(Problem::tensor(
                path,
                name,
                format!(
                    "{:?} value {v} at element {i} (shape {:?})",
                    t.dtype, t.shape
                ),
            ));
        }
        f.release(t);
    } else if t.dtype == Dtype::F64 {
        let bad = f
            .data(t)
            .chunks_exact(8)
            .position(|c| !f64::from_le_bytes(c.try_into().unwrap()).is_finite());
        if let Some(i) = bad {
            ctx.problem(Problem::tensor(
                path,
                name,
                format!("non-finite F64 value at element {i}"),
            ));
        }
    } else if !is_integer_dtype(t.dtype) {
        ctx.problem(Problem::tensor(
            path,
            name,
            format!(
                "dtype {:?} is not readable by qforge (F32, F16, BF16, F64 and integer types are)",
                t.dtype
            ),
        ));
    }
    ctx.report.tensors_checked += 1;
}

fn scan_st_file(f: &SafetensorsFile, index: &mut usize, total: usize, ctx: &mut Ctx) {
    let names: Vec<String> = f.tensors().iter().map(|t| t.name.clone()).collect();
    for name in &names {
        (ctx.on_event)(ValidateEvent::Tensor {
            file: f.path(),
            name,
            index: *index,
            total,
        });
        *index += 1;
        scan_st_tensor(f, name, ctx);
    }
}

fn st_error_problem(path: &Path, e: &crate::formats::safetensors::SafetensorsError) -> Problem {
    let msg = e.to_string();
    let prefix = format!("{}: ", path.display());
    Problem::file(path, msg.strip_prefix(&prefix).unwrap_or(&msg).to_string())
}

fn validate_safetensors_file(path: &Path, ctx: &mut Ctx) {
    ctx.report.files.push(path.to_path_buf());
    match SafetensorsFile::open(path) {
        Ok(f) => {
            ctx.report.kind = Some(FileKind::Safetensors);
            let total = f.tensors().len();
            let mut index = 0;
            scan_st_file(&f, &mut index, total, ctx);
        }
        Err(e) => ctx.problem(st_error_problem(path, &e)),
    }
}

/// A PEFT adapter: what `merge-lora` and `lora-to-gguf` check on opening it (config fields,
/// every lora_A paired with its lora_B, ranks), then a NaN/Inf scan of its weights.
fn validate_peft_dir(dir: &Path, ctx: &mut Ctx) {
    ctx.report.kind = Some(FileKind::PeftAdapterDir);
    match PeftAdapter::open(dir) {
        Err(e) => ctx.problem(Problem::file(dir, e.to_string())),
        Ok(adapter) => {
            ctx.report.files.push(adapter.weights_path().to_path_buf());
            let f = adapter.file();
            let total = f.tensors().len();
            let mut index = 0;
            scan_st_file(f, &mut index, total, ctx);
        }
    }
}

fn validate_hf_dir(dir: &Path, ctx: &mut Ctx) {
    ctx.report.kind = Some(FileKind::HfDir);
    let config_path = dir.join("config.json");
    match std::fs::read_to_string(&config_path) {
        Err(e) => ctx.problem(Problem::file(&config_path, format!("cannot read: {e}"))),
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Err(e) => ctx.problem(Problem::file(&config_path, format!("does not parse: {e}"))),
            Ok(cfg) => {
                let arch = cfg
                    .get("architectures")
                    .and_then(|a| a.get(0))
                    .and_then(|a| a.as_str());
                match arch {
                    None => ctx.problem(Problem::key(
                        &config_path,
                        "architectures",
                        "missing or empty: the converter picks its model class from architectures[0]",
                    )),
                    Some(a) => match Architecture::for_hf_class(a) {
                        Some(c) => ctx.report.architecture = Some(c.gguf_arch.to_string()),
                        None => ctx.problem(Problem::key(
                            &config_path,
                            "architectures",
                            format!(
                                "'{a}' is not supported (supported: {})",
                                Architecture::supported_hf_classes().join(", ")
                            ),
                        )),
                    },
                }
            }
        },
    }

    // Weights: the shards the index names, or every model*.safetensors file.
    let index_path = dir.join("model.safetensors.index.json");
    let mut weight_map: Option<BTreeMap<String, String>> = None;
    let mut shard_names: Vec<String> = Vec::new();
    if index_path.is_file() {
        let parsed = std::fs::read_to_string(&index_path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()));
        match parsed {
            Err(e) => ctx.problem(Problem::file(&index_path, format!("does not parse: {e}"))),
            Ok(j) => match j.get("weight_map").and_then(|m| m.as_object()) {
                None => ctx.problem(Problem::key(
                    &index_path,
                    "weight_map",
                    "missing or not an object",
                )),
                Some(m) => {
                    let mut wm = BTreeMap::new();
                    for (k, v) in m {
                        match v.as_str() {
                            Some(s) => {
                                wm.insert(k.clone(), s.to_string());
                            }
                            None => ctx.problem(Problem::tensor(
                                &index_path,
                                k.clone(),
                                "weight_map entry is not a file name",
                            )),
                        }
                    }
                    shard_names = wm.values().cloned().collect();
                    shard_names.sort();
                    shard_names.dedup();
                    weight_map = Some(wm);
                }
            },
        }
    } else if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Some(name) = e.file_name().to_str() {
                if name.starts_with("model") && name.ends_with(".safetensors") {
                    shard_names.push(name.to_string());
                }
            }
        }
        shard_names.sort();
        if shard_names.is_empty() {
            let pickled = [
                "pytorch_model.bin",
                "pytorch_model.bin.index.json",
                "model.pt",
            ]
            .iter()
            .any(|n| dir.join(n).is_file());
            ctx.problem(Problem::file(
                dir,
                if pickled {
                    "only PyTorch pickle weights (pytorch_model*.bin / model.pt): validate reads safetensors checkpoints"
                } else {
                    "no safetensors weights (model.safetensors, model-*.safetensors or model.safetensors.index.json)"
                },
            ));
        }
    }
    let mut files: Vec<SafetensorsFile> = Vec::new();
    for name in &shard_names {
        let p = dir.join(name);
        if !p.is_file() {
            let example = weight_map
                .as_ref()
                .and_then(|m| m.iter().find(|(_, s)| *s == name).map(|(t, _)| t.clone()));
            ctx.problem(Problem {
                file: index_path.clone(),
                tensor: example,
                key: None,
                message: format!("shard '{name}' named by the index is missing"),
            });
            continue;
        }
        ctx.report.files.push(p.clone());
        match SafetensorsFile::open(&p) {
            Ok(f) => files.push(f),
            Err(e) => ctx.problem(st_error_problem(&p, &e)),
        }
    }
    // The index and the shards must agree tensor by tensor.
    if let Some(wm) = &weight_map {
        let mut held: HashMap<&str, &Path> = HashMap::new();
        for f in &files {
            for t in f.tensors() {
                if let Some(prev) = held.insert(&t.name, f.path()) {
                    ctx.problem(Problem::tensor(
                        f.path(),
                        t.name.clone(),
                        format!("also in {}", prev.display()),
                    ));
                }
                match wm.get(&t.name) {
                    None => ctx.problem(Problem::tensor(
                        f.path(),
                        t.name.clone(),
                        "not listed in model.safetensors.index.json",
                    )),
                    Some(s) if f.path().file_name().and_then(|n| n.to_str()) != Some(s) => ctx
                        .problem(Problem::tensor(
                            f.path(),
                            t.name.clone(),
                            format!("the index places it in '{s}'"),
                        )),
                    _ => {}
                }
            }
        }
        let opened: BTreeSet<String> = files
            .iter()
            .filter_map(|f| f.path().file_name()?.to_str().map(str::to_string))
            .collect();
        for (t, s) in wm {
            if opened.contains(s) && !held.contains_key(t.as_str()) {
                ctx.problem(Problem::tensor(
                    dir.join(s),
                    t.clone(),
                    "listed in model.safetensors.index.json but not in this shard",
                ));
            }
        }
    }
    let total: usize = files.iter().map(|f| f.tensors().len()).sum();
    let mut index = 0;
    for f in &files {
        scan_st_file(f, &mut index, total, ctx);
    }

    // A tokenizer the converter can read.
    let tok_json = dir.join("tokenizer.json");
    let tok_model = dir.join("tokenizer.model");
    if tok_json.is_file() {
        if let Err(e) = std::fs::read_to_string(&tok_json)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
        {
            ctx.problem(Problem::file(&tok_json, format!("does not parse: {e}")));
        }
    } else if !tok_model.is_file() {
        ctx.problem(Problem::file(
            dir,
            "no tokenizer: neither tokenizer.json nor tokenizer.model is present",
        ));
    }
    let tc_path = dir.join("tokenizer_config.json");
    if let Ok(text) = std::fs::read_to_string(&tc_path) {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Err(e) => ctx.problem(Problem::file(&tc_path, format!("does not parse: {e}"))),
            Ok(j) => {
                if let Some(src) = j.get("chat_template").and_then(|t| t.as_str()) {
                    if let Err(e) = parse_chat_template(src) {
                        ctx.problem(Problem::key(
                            &tc_path,
                            "chat_template",
                            format!("chat template does not parse: {e}"),
                        ));
                    }
                }
            }
        }
    }

    // Last, what convert itself would refuse (hyper-parameters against tensor shapes, the
    // vocabulary): only worth asking when nothing above failed, or it repeats those problems.
    if ctx.report.problems.is_empty() {
        if let Err(e) = HfModel::open(dir, &HfOptions::default()) {
            let msg = e.to_string();
            let prefix = format!("{}: ", dir.display());
            ctx.problem(Problem::file(
                dir,
                format!(
                    "convert refuses it: {}",
                    msg.strip_prefix(&prefix).unwrap_or(&msg)
                ),
            ));
        }
    }
}
