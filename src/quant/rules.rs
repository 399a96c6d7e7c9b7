//! llama-quantize's per-tensor type choice, as pure functions of tensor names, shapes, the model's
//! hyper-parameters and the options (src/llama-quant.cpp and tools/quantize/quantize.cpp,
//! llama.cpp 0c1e57098).
//!
//! The decision for one tensor reproduces `llama_tensor_get_type`: tensors that may not be
//! quantized keep their type; `--token-embedding-type` / `--output-tensor-type` win outright;
//! otherwise the mix's default type, replaced by the first `--tensor-type` pattern that matches
//! or (unless `--pure`) by the mix rules of `llama_tensor_get_type_impl`, and finally demoted by
//! `tensor_type_fallback` when rows cannot be blocked. The mix rules keep counters (how many
//! `attn_v` / `ffn_down` / … tensors were seen so far) that advance in output order, so the plan
//! walks the tensors in exactly that order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::bytes::{Regex, RegexBuilder};

use super::{FileType, GgmlType};

/// llama.cpp's `LLAMA_MAX_LAYERS`: the loader refuses larger block counts.
pub const MAX_LAYERS: u64 = 512;

/// Errors of the type rules. Each names the tensor, option or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A metadata key the model loader requires is absent or not an integer.
    #[error("model metadata: key '{key}' is missing or not an integer")]
    MissingKey {
        /// The GGUF key.
        key: String,
    },
    /// A metadata key that is present but holds the wrong type of value.
    #[error("model metadata: key '{key}' is {found}, expected {expected}")]
    WrongType {
        /// The GGUF key.
        key: String,
        /// The value type found.
        found: String,
        /// What the rules need.
        expected: &'static str,
    },
    /// A metadata value outside what llama.cpp's loader accepts.
    #[error("model metadata: {what}")]
    BadMetadata {
        /// The key and its value, in words.
        what: String,
    },
    /// A `--tensor-type` argument that is not `NAME_REGEX=TYPE`.
    #[error("malformed --tensor-type '{arg}': {why}")]
    BadTensorTypeArg {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        why: String,
    },
    /// A type name that is not a ggml type (`--tensor-type`, `--output-tensor-type`, …).
    #[error("invalid ggml type '{0}'")]
    UnknownType(String),
    /// A `--tensor-type` pattern the `regex` crate cannot compile (look-around and
    /// back-references, which std::regex accepts, are among these).
    #[error("--tensor-type pattern '{pattern}' is not a supported regular expression: {why}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// The regex crate's error.
        why: String,
    },
    /// The `--tensor-type-file` could not be read.
    #[error("--tensor-type-file {}: {source}", path.display())]
    TensorTypeFile {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A `--prune-layers` element that is not a non-negative layer number.
    #[error("--prune-layers: invalid layer id '{0}'")]
    BadPruneId(String),
    /// A layer number in a tensor name that does not fit in an `int` (llama.cpp throws).
    #[error("tensor '{0}': layer number out of range")]
    LayerOutOfRange(String),
    /// In a model with experts, a feed-forward tensor whose layer cannot be read from its name
    /// or lies outside `[0, block_count)` (`layer_info` in llama-quant.cpp).
    #[error("tensor '{tensor}': bad layer {layer:?} (block_count {n_layer})")]
    BadLayer {
        /// The tensor.
        tensor: String,
        /// The layer read from its name, if any.
        layer: Option<i32>,
        /// The model's `block_count`.
        n_layer: u32,
    },
    /// `tensor_type_fallback` has no fallback for this block size.
    #[error("tensor '{tensor}': rows of {ncols} cannot be blocked by {ty} and no fallback type is defined for it")]
    NoFallback {
        /// The tensor.
        tensor: String,
        /// The type chosen for it.
        ty: GgmlType,
        /// Its row length.
        ncols: u64,
    },
    /// An explicit `--token-embedding-type` / `--output-tensor-type` whose block does not divide
    /// the rows (llama.cpp applies no fallback there and fails while writing).
    #[error("tensor '{tensor}': rows of {ncols} elements are not a multiple of {ty}'s block size {block}")]
    IncompatibleType {
        /// The tensor.
        tensor: String,
        /// The type asked for.
        ty: GgmlType,
        /// Its row length.
        ncols: u64,
        /// The type's block size.
        block: usize,
    },
    /// The chosen type needs an importance matrix and none was given.
    #[error("tensor '{tensor}': quantizing to {ty} requires an importance matrix (--imatrix)")]
    ImatrixRequired {
        /// The tensor.
        tensor: String,
        /// The type chosen for it.
        ty: GgmlType,
    },
    /// A pruned model's tensor whose layer cannot be mapped back to the imatrix's numbering.
    #[error("tensor '{0}': imatrix layer mapping error")]
    ImatrixRemap(String),
}

/// The model hyper-parameters the rules read (`llama_hparams` as `load_hparams` fills them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub arch: String,
    /// `<arch>.block_count` (`n_layer_all`): also the layer count the ffn counters compare with.
    pub n_layer: u32,
    /// `<arch>.nextn_predict_layers` (0 when absent).
    pub n_layer_nextn: u32,
    /// `<arch>.attention.head_count` of layer 0 (0 when absent).
    pub n_head: u32,
    /// `<arch>.attention.head_count_kv` of layer 0 (defaults to `n_head`).
    pub n_head_kv: u32,
    /// `<arch>.expert_count` (0 when absent).
    pub n_expert: u32,
}

impl ModelInfo {
    /// Query heads per key/value head at layer 0 (`llama_hparams::n_gqa`), 0 without KV heads.
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// Whether llama.cpp classifies the model as `LLM_TYPE_70B`, the only model size the rules
    /// look at (the `load_arch_hparams` of llama, qwen2, deci, olmo and jais2).
    pub fn is_70b(&self) -> bool {
        let n = self.n_layer.saturating_sub(self.n_layer_nextn);
        match self.arch.as_str() {
            "llama" => self.n_expert != 8 && n == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => n == 80,
            "jais2" => n == 68,
            _ => false,
        }
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

/// What the rules know a tensor to be, from its name (`tensor_get_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorCategory {
    /// `token_embd.weight` (and Gemma's `per_layer_token_embd.weight`).
    TokenEmbd,
    /// Names containing `attn_q.weight`.
    AttentionQ,
    /// Names containing `attn_v.weight`.
    AttentionV,
    /// Names containing `attn_k.weight`.
    AttentionK,
    /// Names containing `attn_qkv.weight` (fused Q/K/V).
    AttentionQkv,
    /// Names containing `attn_kv_b.weight` (DeepSeek's latent-attention K/V up-projection).
    AttentionKvB,
    /// Names containing `attn_output.weight`.
    AttentionOutput,
    /// Names containing `ffn_up` (experts included).
    FfnUp,
    /// Names containing `ffn_gate` (experts included).
    FfnGate,
    /// Names containing `ffn_down` (experts included).
    FfnDown,
    /// `output.weight`, the output head.
    Output,
    /// Everything else.
    Other,
}

impl TensorCategory {
    /// Categorize by name; the order of the substring tests matters (`attn_qkv` before `attn_v`).
    pub fn of(name: &str) -> TensorCategory {
        use TensorCategory::*;
        if name == "output.weight" {
            return Output;
        }
        if is_token_embd(name) {
            return TokenEmbd;
        }
        const BY_SUBSTRING: &[(&str, TensorCategory)] = &[
            ("attn_qkv.weight", AttentionQkv),
            ("attn_kv_b.weight", AttentionKvB),
            ("attn_v.weight", AttentionV),
            ("attn_k.weight", AttentionK),
            ("attn_q.weight", AttentionQ),
            ("attn_output.weight", AttentionOutput),
            ("ffn_up", FfnUp),
            ("ffn_gate", FfnGate),
            ("ffn_down", FfnDown),
        ];
        BY_SUBSTRING
            .iter()
            .find(|(s, _)| name.contains(s))
            .map_or(Other, |&(_, c)| c)
    }

    /// The value-projection-like tensors that share the `attn_v` rules and counter.
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            TensorCategory::AttentionV
                | TensorCategory::AttentionQkv
                | TensorCategory::AttentionKvB
        )
    }
}

/// Whether `name` is a token embedding (`token_embd.weight`, `per_layer_token_embd.weight`).
pub fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

/// The options of llama-quantize that change tensor types.
#[derive(Clone, Debug)]
pub struct TypeOptions {
    /// The mix (TYPE argument).
    pub ftype: FileType,
    /// `COPY`: nothing is quantized, every tensor keeps its type.
    pub copy_only: bool,
    /// `--pure`: no mix rules, every quantizable tensor gets the default type (still subject to
    /// the explicit overrides and to the fallback).
    pub pure: bool,
    /// `--leave-output-tensor`: `output.weight` keeps its type.
    pub leave_output_tensor: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--tensor-type` / `--tensor-type-file` overrides in command-line order, patterns as
    /// llama-quant.cpp receives them (already lowercased by [`parse_tensor_type`]).
    pub tensor_types: Vec<(String, GgmlType)>,
    /// An importance matrix will be used. llama-quantize sets this only when the matrix still
    /// has entries after `--include-weights` / `--exclude-weights` filtering.
    pub has_imatrix: bool,
    /// `--dry-run`: a type that needs an imatrix is reported, not refused.
    pub dry_run: bool,
    /// `--prune-layers`, sorted and without duplicates (see [`parse_prune_layers`]).
    pub prune_layers: Vec<u32>,
}

impl TypeOptions {
    /// The defaults of `llama_model_quantize_default_params` for `ftype`.
    pub fn new(ftype: FileType) -> TypeOptions {
        TypeOptions {
            ftype,
            copy_only: false,
            pure: false,
            leave_output_tensor: false,
            output_tensor_type: None,
            token_embedding_type: None,
            tensor_types: Vec::new(),
            has_imatrix: false,
            dry_run: false,
            prune_layers: Vec::new(),
        }
    }
}

/// A ggml type named the way quantize.cpp's `parse_ggml_type` accepts it (case-insensitive).
pub fn parse_ggml_type(s: &str) -> Result<GgmlType, RuleError> {
    GgmlType::from_name(s).ok_or_else(|| RuleError::UnknownType(s.to_string()))
}

/// Parse one `--tensor-type NAME_REGEX=TYPE` (quantize.cpp `parse_tensor_type`): split at the
/// first `=`, lowercase the pattern (ASCII, so `\D` becomes `\d` exactly as there), parse the type.
pub fn parse_tensor_type(arg: &str) -> Result<(String, GgmlType), RuleError> {
    let bad = |why: &str| RuleError::BadTensorTypeArg {
        arg: arg.to_string(),
        why: why.to_string(),
    };
    let (name, ty) = arg.split_once('=').ok_or_else(|| bad("no '='"))?;
    if name.is_empty() {
        return Err(bad("missing tensor name"));
    }
    if ty.is_empty() {
        return Err(bad("missing quantization type"));
    }
    Ok((name.to_ascii_lowercase(), parse_ggml_type(ty)?))
}

/// Parse a `--tensor-type-file`: `NAME_REGEX=TYPE` items separated by any whitespace
/// (quantize.cpp reads it with `file >> arg`).
pub fn parse_tensor_type_file(path: &Path) -> Result<Vec<(String, GgmlType)>, RuleError> {
    let bytes = std::fs::read(path).map_err(|source| RuleError::TensorTypeFile {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| RuleError::TensorTypeFile {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"),
    })?;
    text.split(is_c_space)
        .filter(|s| !s.is_empty())
        .map(parse_tensor_type)
        .collect()
}

/// C's `isspace` in the "C" locale: space, \t, \n, \v, \f, \r.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Parse `--prune-layers L0,L1,…` (quantize.cpp `parse_layer_prune`): each comma-separated item
/// is read like `std::stoi` (leading whitespace, sign, digits, trailing text ignored); negative,
/// empty or out-of-range items are errors. The result is sorted and deduplicated.
pub fn parse_prune_layers(arg: &str) -> Result<Vec<u32>, RuleError> {
    let mut ids = Vec::new();
    for item in arg.split(',') {
        match stoi(item) {
            Some(v) if v >= 0 => ids.push(v as u32),
            _ => return Err(RuleError::BadPruneId(item.to_string())),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// `std::stoi`: `None` where it would throw (no digits, or outside `int`).
fn stoi(s: &str) -> Option<i32> {
    i32::try_from(scan_c_int(s.as_bytes())?).ok()
}

/// Read an integer the way `strtol` does at the start of `b`: C whitespace, optional sign,
/// decimal digits. Returns the value saturated to i64, or `None` when there is no digit.
fn scan_c_int(b: &[u8]) -> Option<i64> {
    let mut p = 0;
    while p < b.len() && is_c_space(b[p] as char) {
        p += 1;
    }
    let negative = match b.get(p) {
        Some(b'-') => {
            p += 1;
            true
        }
        Some(b'+') => {
            p += 1;
            false
        }
        _ => false,
    };
    let start = p;
    let mut value: i64 = 0;
    while p < b.len() && b[p].is_ascii_digit() {
        let d = (b[p] - b'0') as i64;
        value = if negative {
            value.saturating_mul(10).saturating_sub(d)
        } else {
            value.saturating_mul(10).saturating_add(d)
        };
        p += 1;
    }
    (p > start).then_some(value)
}

/// The layer number `sscanf(name, "blk.%d.", &layer)` reads, or `None` when it assigns nothing.
/// Like glibc, an out-of-range number saturates to `long` and is then truncated to `int`.
fn scanf_layer(name: &str) -> Option<i32> {
    let rest = name.as_bytes().strip_prefix(b"blk.")?;
    Some(scan_c_int(rest)? as i32)
}

/// The sort key of llama.cpp's model loader (`weight_name_comparer`): layer number from a
/// leading `blk.N.` (−1 for other tensors), then the name bytewise.
pub fn output_order_key(name: &str) -> (i32, &str) {
    (scanf_layer(name).unwrap_or(-1), name)
}

/// llama-quantize's output tensor order: the indices of `names` sorted by
/// [`output_order_key`] (non-layer tensors first, then layer 0, 1, … 10 numerically).
pub fn sort_for_output<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        output_order_key(names[a].as_ref()).cmp(&output_order_key(names[b].as_ref()))
    });
    order
}

/// `use_more_bits` of llama-quant.cpp: the first and last eighth of the layers, and every third
/// layer in between, get more bits in some mixes.
pub fn use_more_bits(i_layer: i32, n_layers: i32) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// The `--prune-layers` renumbering (`remap_layer` / `remap_imatrix` of llama-quant.cpp): kept
/// layers below the first pruned one keep their numbers, later kept layers are numbered on
/// consecutively, pruned layers' tensors disappear. Decisions are made in the order names are
/// presented (llama-quantize presents them in output order).
#[derive(Clone, Debug, Default)]
pub struct LayerRemap {
    prune: Vec<u32>,
    /// original layer → new layer number, `None` if pruned
    mapped: BTreeMap<i64, Option<String>>,
    next_id: i64,
}

/// Where the `blk\.(\d+)\.` pattern of llama-quant.cpp first matches: the digits' byte range.
fn find_block_number(name: &str) -> Option<(usize, usize)> {
    let b = name.as_bytes();
    let mut from = 0;
    while let Some(pos) = name[from..].find("blk.") {
        let start = from + pos + 4;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end > start && b.get(end) == Some(&b'.') {
            return Some((start, end));
        }
        from = from + pos + 1;
    }
    None
}

impl LayerRemap {
    /// `prune` sorted and deduplicated, as [`parse_prune_layers`] returns it.
    pub fn new(prune: &[u32]) -> LayerRemap {
        LayerRemap {
            prune: prune.to_vec(),
            mapped: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// The name of `name` in the output, or `None` when its layer is pruned.
    pub fn remap(&mut self, name: &str) -> Result<Option<String>, RuleError> {
        let Some(&first_pruned) = self.prune.first() else {
            return Ok(Some(name.to_string()));
        };
        let Some((start, end)) = find_block_number(name) else {
            return Ok(Some(name.to_string()));
        };
        let blk: i64 = stoi(&name[start..end])
            .ok_or_else(|| RuleError::LayerOutOfRange(name.to_string()))?
            .into();
        if !self.mapped.contains_key(&blk) {
            let new = if self.prune.iter().any(|&p| p as i64 == blk) {
                None
            } else if blk < first_pruned as i64 {
                self.next_id = blk + 1;
                Some(blk.to_string())
            } else {
                let id = self.next_id;
                self.next_id += 1;
                Some(id.to_string())
            };
            self.mapped.insert(blk, new);
        }
        Ok(self.mapped[&blk]
            .as_ref()
            .map(|new| format!("{}{}{}", &name[..start], new, &name[end..])))
    }

    /// The `block_count` llama-quantize writes after pruning (the next free layer number), or
    /// `None` without pruning.
    pub fn block_count(&self) -> Option<u32> {
        if self.prune.is_empty() {
            None
        } else {
            Some(self.next_id as u32)
        }
    }

    /// The imatrix entry name for an output tensor name: its layer number mapped back to the
    /// original one (`remap_imatrix`).
    pub fn imatrix_name(&self, name: &str) -> Result<String, RuleError> {
        if self.mapped.is_empty() {
            return Ok(name.to_string());
        }
        let Some((start, end)) = find_block_number(name) else {
            return Ok(name.to_string());
        };
        let blk = &name[start..end];
        self.mapped
            .iter()
            .find(|(_, new)| new.as_deref() == Some(blk))
            .map(|(orig, _)| format!("{}{}{}", &name[..start], orig, &name[end..]))
            .ok_or_else(|| RuleError::ImatrixRemap(name.to_string()))
    }
}

/// Elements per row (`ne[0]`).
fn row_len(ne: &[u64]) -> u64 {
    ne.first().copied().unwrap_or(1)
}

/// Number of dimensions as ggml counts them (trailing 1s do not count; at least 1).
fn n_dims(ne: &[u64]) -> usize {
    ne.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Substrings that keep a tensor out of quantization in every architecture.
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Extra exclusions of the `glm5-next` architecture.
const NEVER_QUANTIZED_GLM5_NEXT: &[&str] = &[
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
];

/// Whether llama-quantize may change this tensor's type (`tensor_allows_quantization`).
pub fn allows_quantization(name: &str, ne: &[u64], arch: &str, opts: &TypeOptions) -> bool {
    if opts.copy_only || n_dims(ne) < 2 {
        return false;
    }
    // llama.cpp tests `rfind("weight") == size() - 6` in size_t arithmetic: besides names ending
    // in "weight", a 5-byte name passes too (npos equals 5 - 6 wrapped around).
    let ends_in_weight = name.ends_with("weight") || name.len() == 5;
    ends_in_weight
        && !(opts.leave_output_tensor && name == "output.weight")
        && !NEVER_QUANTIZED.iter().any(|s| name.contains(s))
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !(arch == "glm5-next" && NEVER_QUANTIZED_GLM5_NEXT.iter().any(|s| name.contains(s)))
}

/// `tensor_requires_imatrix`: the very-low-bit types (and Q2_K inside a Q2_K_S mix) are refused
/// without an importance matrix, except for the embeddings and output tensors.
pub fn tensor_requires_imatrix(name: &str, ty: GgmlType, ftype: FileType) -> bool {
    if is_token_embd(name) || name == "output.weight" {
        return false;
    }
    match ty {
        GgmlType::IQ3_XXS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ1_M
        | GgmlType::IQ1_S => true,
        GgmlType::Q2_K => ftype == FileType::Q2_K_S,
        _ => false,
    }
}

/// `tensor_type_fallback`: the type to use when rows of `ncols` cannot be blocked by `ty`, or
/// `ty` itself. Returns (type, whether a fallback happened).
pub fn fallback_type(name: &str, ncols: u64, ty: GgmlType) -> Result<(GgmlType, bool), RuleError> {
    let block = ty.block_size() as u64;
    if ncols.is_multiple_of(block) {
        return Ok((ty, false));
    }
    use GgmlType as G;
    let smaller = match ty {
        G::IQ1_S
        | G::IQ1_M
        | G::IQ2_XXS
        | G::IQ2_XS
        | G::IQ2_S
        | G::IQ3_XXS
        | G::IQ3_S
        | G::IQ4_XS => G::IQ4_NL,
        G::Q2_0 | G::Q2_K | G::Q3_K | G::TQ1_0 | G::TQ2_0 => G::Q4_0,
        G::Q4_K => G::Q5_0,
        G::Q5_K => G::Q5_1,
        G::Q6_K => G::Q8_0,
        // A 32-element block has nothing smaller to fall to: F16 below.
        _ if block <= 32 => ty,
        _ => {
            return Err(RuleError::NoFallback {
                tensor: name.to_string(),
                ty,
                ncols,
            })
        }
    };
    if !ncols.is_multiple_of(smaller.block_size() as u64) {
        return Ok((G::F16, true));
    }
    Ok((smaller, true))
}

/// The decision for one output tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    /// Name in the output (differs from `source_name` only when layers are pruned).
    pub name: String,
    /// Name in the input file.
    pub source_name: String,
    /// Index of the tensor in the input list given to [`plan_types`].
    pub source_index: usize,
    /// Shape (ggml `ne`).
    pub ne: Vec<u64>,
    /// Type in the input.
    pub current_type: GgmlType,
    /// Type in the output.
    pub new_type: GgmlType,
    /// `tensor_allows_quantization`.
    pub allows_quantization: bool,
    /// The data must be converted (`new_type != current_type`); otherwise it is copied.
    pub quantize: bool,
    /// `tensor_type_fallback` changed the type (rows not divisible by the block).
    pub fallback: bool,
    /// `tensor_requires_imatrix` for the new type: quantizing without imatrix data for this
    /// tensor must fail ("Missing importance matrix").
    pub requires_imatrix: bool,
    /// The imatrix entry to look up (differs from `name` when layers are pruned).
    pub imatrix_name: String,
}

/// The whole plan: tensors in output order, and what the header needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantPlan {
    /// Per-tensor decisions, in output order.
    pub tensors: Vec<TensorPlan>,
    /// With `--prune-layers`: the `<arch>.block_count` llama-quantize sets (as u32, after the
    /// `--override-kv` keys).
    pub block_count: Option<u32>,
    /// Tensors that needed a fallback type (llama-quantize's closing warning).
    pub n_fallback: usize,
}

/// The per-run state of the mix rules (`quantize_state_impl`).
struct MixState<'a> {
    model: &'a ModelInfo,
    opts: &'a TypeOptions,
    patterns: Vec<(Regex, GgmlType)>,
    n_attention_wv: i32,
    n_ffn_down: i32,
    n_ffn_gate: i32,
    n_ffn_up: i32,
    i_attention_wv: i32,
    i_ffn_down: i32,
    i_ffn_gate: i32,
    i_ffn_up: i32,
    has_tied_embeddings: bool,
}

/// Compile the `--tensor-type` patterns as libstdc++'s std::regex treats them on our names:
/// bytes, with `\d`, `\w`, `\s` and `.` as byte classes (no Unicode classes).
pub fn compile_patterns(list: &[(String, GgmlType)]) -> Result<Vec<(Regex, GgmlType)>, RuleError> {
    list.iter()
        .map(|(p, t)| {
            RegexBuilder::new(p)
                .unicode(false)
                .build()
                .map(|r| (r, *t))
                .map_err(|e| RuleError::BadPattern {
                    pattern: p.clone(),
                    why: e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                })
        })
        .collect()
}

/// The type of the first pattern that matches anywhere in `name` (`std::regex_search`).
pub fn first_matching_type(patterns: &[(Regex, GgmlType)], name: &str) -> Option<GgmlType> {
    patterns
        .iter()
        .find(|(r, _)| r.is_match(name.as_bytes()))
        .map(|&(_, t)| t)
}

impl MixState<'_> {
    /// `llama_tensor_get_type`: the type of a tensor allowed to be quantized, and whether the
    /// fallback changed it.
    fn tensor_type(
        &mut self,
        name: &str,
        ne: &[u64],
        cat: TensorCategory,
    ) -> Result<(GgmlType, bool), RuleError> {
        let opts = self.opts;
        if let (Some(t), TensorCategory::TokenEmbd) = (opts.token_embedding_type, cat) {
            // per_layer_token_embd follows the option unless a --tensor-type names it.
            let named = name == "per_layer_token_embd.weight"
                && first_matching_type(&self.patterns, name).is_some();
            if !named {
                return Ok((t, false));
            }
        }
        if let (Some(t), TensorCategory::Output) = (opts.output_tensor_type, cat) {
            return Ok((t, false));
        }
        let default_type = opts.ftype.default_type();
        if !default_type.is_quantized() {
            return Ok((default_type, false));
        }
        let new_type = match first_matching_type(&self.patterns, name) {
            Some(t) => t,
            None if opts.pure => default_type,
            None => self.mix_type(default_type, name, ne, cat)?,
        };
        fallback_type(name, row_len(ne), new_type)
    }

    /// The layer an ffn tensor belongs to: its running counter, or in models with experts the
    /// number in its name (`layer_info`).
    fn layer_info(&self, counter: i32, n_layer: i32, name: &str) -> Result<i32, RuleError> {
        if self.model.n_expert <= 1 {
            return Ok(counter);
        }
        let bad = |layer| RuleError::BadLayer {
            tensor: name.to_string(),
            layer,
            n_layer: n_layer as u32,
        };
        let layer = scanf_layer(name).ok_or_else(|| bad(None))?;
        if layer < 0 || layer >= n_layer {
            return Err(bad(Some(layer)));
        }
        Ok(layer)
    }

    /// `llama_tensor_get_type_impl`: the mix rules proper.
    fn mix_type(
        &mut self,
        mut new_type: GgmlType,
        name: &str,
        ne: &[u64],
        cat: TensorCategory,
    ) -> Result<GgmlType, RuleError> {
        use FileType as F;
        use GgmlType as G;
        use TensorCategory as C;
        let ftype = self.opts.ftype;
        let model = self.model;
        let arch = model.arch.as_str();
        let falcon = model.is_falcon();
        let n_gqa = model.n_gqa();
        let n_expert = model.n_expert;
        let has_imatrix = self.opts.has_imatrix;

        // glm5-next keeps these projections at Q8_0 or better.
        if arch == "glm5-next"
            && ["attn_q_a", "attn_q_b", "nextn.eh_proj"]
                .iter()
                .any(|s| name.contains(s))
            && !matches!(new_type, G::F32 | G::BF16 | G::F16)
        {
            return Ok(G::Q8_0);
        }

        let lowest_iq = matches!(
            ftype,
            F::IQ2_XXS | F::IQ2_XS | F::IQ1_S | F::IQ2_S | F::IQ2_M | F::IQ1_M
        );
        let iq2_s_or_m = matches!(ftype, F::IQ2_S | F::IQ2_M);

        if cat == C::Output || (self.has_tied_embeddings && cat == C::TokenEmbd) {
            if let Some(t) = self.opts.output_tensor_type {
                new_type = t;
            } else {
                let block = new_type.block_size() as u64;
                if ftype == F::MXFP4_MOE || falcon || !row_len(ne).is_multiple_of(block) {
                    new_type = G::Q8_0;
                } else if lowest_iq || ftype == F::IQ3_XXS {
                    new_type = G::Q5_K;
                } else if new_type != G::Q8_0 {
                    new_type = G::Q6_K;
                }
            }
        } else if ftype == F::MXFP4_MOE {
            // Expert tensors (3-D) go to MXFP4, the rest to Q8_0.
            let is_expert_role = matches!(cat, C::FfnUp | C::FfnGate | C::FfnDown);
            let ne2 = ne.get(2).copied().unwrap_or(1);
            new_type = if ne2 > 1 && (arch != "bailingmoe3" || is_expert_role) {
                G::MXFP4
            } else {
                G::Q8_0
            };
        } else if cat == C::TokenEmbd {
            if let Some(t) = self.opts.token_embedding_type {
                new_type = t;
            } else if matches!(ftype, F::IQ2_XXS | F::IQ2_XS | F::IQ1_S | F::IQ1_M) {
                new_type = G::Q2_K;
            } else if iq2_s_or_m || ftype == F::IQ3_XXS {
                new_type = G::IQ3_S;
            } else if matches!(ftype, F::TQ1_0 | F::TQ2_0 | F::Q2_0) {
                new_type = G::Q4_K;
            }
        } else if lowest_iq {
            if cat.is_attn_v() {
                new_type = if n_gqa >= 4 || n_expert >= 4 {
                    G::Q4_K
                } else if iq2_s_or_m {
                    G::IQ3_S
                } else {
                    G::Q2_K
                };
                self.i_attention_wv += 1;
            } else if n_expert == 8 && cat == C::AttentionK {
                new_type = G::Q4_K;
            } else if cat == C::FfnDown {
                if self.i_ffn_down < self.n_ffn_down / 8 {
                    new_type = if iq2_s_or_m { G::IQ3_S } else { G::Q2_K };
                }
                self.i_ffn_down += 1;
            } else if cat == C::AttentionOutput {
                if n_expert == 8 {
                    new_type = G::Q5_K;
                } else if matches!(ftype, F::IQ1_S | F::IQ1_M) {
                    new_type = G::IQ2_XXS;
                } else if iq2_s_or_m {
                    new_type = G::IQ3_S;
                }
            }
        } else if cat.is_attn_v() {
            let (i, n) = (self.i_attention_wv, self.n_attention_wv);
            match ftype {
                F::Q2_K => new_type = if n_gqa >= 4 { G::Q4_K } else { G::Q3_K },
                F::Q2_K_S if n_gqa >= 4 => new_type = G::Q4_K,
                F::IQ3_XXS => {
                    new_type = if n_gqa >= 4 {
                        G::Q4_K
                    } else if !has_imatrix {
                        G::IQ3_S
                    } else {
                        G::IQ3_XXS
                    }
                }
                F::IQ3_XS | F::IQ3_S if n_gqa >= 4 => new_type = G::Q4_K,
                F::IQ3_M => new_type = G::Q4_K,
                F::Q3_K_M => new_type = if i < 2 { G::Q5_K } else { G::Q4_K },
                F::Q3_K_L => new_type = G::Q5_K,
                F::IQ4_NL | F::IQ4_XS if n_gqa >= 4 => new_type = G::Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => new_type = G::Q6_K,
                F::Q4_K_S if i < 4 => new_type = G::Q5_K,
                _ => {}
            }
            // In 70B models 8 heads share attn_v, which is therefore small: more bits are cheap.
            if model.is_70b() && matches!(new_type, G::Q3_K | G::Q4_K) {
                new_type = G::Q5_K;
            }
            if n_expert == 8 {
                new_type = G::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == C::AttentionK {
            if n_expert == 8 {
                new_type = G::Q8_0;
            } else if ftype == F::IQ3_XS {
                new_type = G::IQ3_XXS;
            } else if ftype == F::IQ3_XXS {
                new_type = G::IQ2_S;
            }
        } else if cat == C::AttentionQ {
            if ftype == F::IQ3_XS {
                new_type = G::IQ3_XXS;
            } else if ftype == F::IQ3_XXS {
                new_type = G::IQ2_S;
            }
        } else if cat == C::FfnDown {
            let n = self.n_ffn_down;
            let i = self.layer_info(self.i_ffn_down, n, name)?;
            match ftype {
                F::Q2_K => new_type = G::Q3_K,
                F::Q2_K_S if i < n / 8 => new_type = G::Q4_K,
                F::IQ3_XXS if !has_imatrix => {
                    new_type = if i < n / 8 { G::Q4_K } else { G::Q3_K };
                }
                F::Q3_K_M => {
                    new_type = if i < n / 16 {
                        G::Q5_K
                    } else if !falcon || use_more_bits(i, n) {
                        G::Q4_K
                    } else {
                        G::Q3_K
                    };
                }
                F::IQ3_M if i < n / 8 || (n_expert == 8 && use_more_bits(i, n)) => {
                    new_type = G::Q4_K;
                }
                F::Q3_K_L => new_type = if falcon { G::Q4_K } else { G::Q5_K },
                F::Q4_K_M => {
                    if falcon {
                        new_type = if i < n / 16 {
                            G::Q6_K
                        } else if use_more_bits(i, n) {
                            G::Q5_K
                        } else {
                            G::Q4_K
                        };
                    } else if use_more_bits(i, n) {
                        new_type = G::Q6_K;
                    }
                }
                F::IQ4_NL | F::IQ4_XS if i < n / 8 && !has_imatrix => new_type = G::Q5_K,
                F::Q5_K_M if use_more_bits(i, n) => new_type = G::Q6_K,
                F::Q4_K_S if !falcon && i < n / 8 => new_type = G::Q5_K,
                // Q4_0/Q5_0 can go astray in the first ffn_down layers even with an imatrix;
                // only done with one, so that imatrix-free results never change.
                F::Q4_0 | F::Q5_0 if has_imatrix && i < n / 8 => {
                    new_type = if ftype == F::Q4_0 { G::Q4_1 } else { G::Q5_1 };
                }
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == C::AttentionOutput {
            if !falcon {
                if n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K
                            | F::IQ3_XS
                            | F::IQ3_XXS
                            | F::Q3_K_S
                            | F::Q3_K_M
                            | F::IQ4_NL
                            | F::Q4_K_S
                            | F::Q4_K_M
                            | F::IQ3_S
                            | F::IQ3_M
                            | F::IQ4_XS
                    ) {
                        new_type = G::Q5_K;
                    }
                } else {
                    match ftype {
                        F::Q2_K => new_type = G::Q3_K,
                        F::IQ3_XXS => new_type = G::IQ3_S,
                        F::Q3_K_M => new_type = G::Q4_K,
                        F::Q3_K_L => new_type = G::Q5_K,
                        F::IQ3_M => new_type = G::Q4_K,
                        _ => {}
                    }
                }
            } else if ftype == F::Q3_K_L {
                new_type = G::Q4_K;
            }
        } else if cat == C::AttentionQkv {
            // Unreachable in llama.cpp too (attn_qkv takes the attn_v branch above); kept so
            // the chain reads like the reference.
            match ftype {
                F::Q3_K_M | F::Q3_K_L | F::IQ3_M => new_type = G::Q4_K,
                F::Q4_K_M => new_type = G::Q5_K,
                F::Q5_K_M => new_type = G::Q6_K,
                _ => {}
            }
        } else if cat == C::FfnGate || cat == C::FfnUp {
            let gate = cat == C::FfnGate;
            let (counter, n) = if gate {
                (self.i_ffn_gate, self.n_ffn_gate)
            } else {
                (self.i_ffn_up, self.n_ffn_up)
            };
            let i = self.layer_info(counter, n, name)?;
            if ftype == F::IQ3_XS && i >= n / 8 && i < 7 * n / 8 {
                new_type = G::IQ3_XXS;
            }
            if gate {
                self.i_ffn_gate += 1;
            } else {
                self.i_ffn_up += 1;
            }
        }
        Ok(new_type)
    }
}

/// Plan the output of llama-quantize for `tensors` (name, current type, ne; in input order).
pub fn plan(
    model: &ModelInfo,
    tensors: &[(String, GgmlType, Vec<u64>)],
    opts: &TypeOptions,
) -> Result<QuantPlan, RuleError> {
    let patterns = compile_patterns(&opts.tensor_types)?;
    let names: Vec<&str> = tensors.iter().map(|t| t.0.as_str()).collect();

    let mut remap = LayerRemap::new(&opts.prune_layers);
    let mut kept = Vec::with_capacity(tensors.len());
    for i in sort_for_output(&names) {
        if let Some(new_name) = remap.remap(names[i])? {
            kept.push((i, new_name));
        }
    }

    let cats: Vec<TensorCategory> = kept.iter().map(|(_, n)| TensorCategory::of(n)).collect();
    // The ffn counters are compared with the block count the model was loaded with, which is
    // the unpruned one.
    let n_layer = model.n_layer as i32;
    let mut state = MixState {
        model,
        opts,
        patterns,
        n_attention_wv: cats.iter().filter(|c| c.is_attn_v()).count() as i32,
        n_ffn_down: n_layer,
        n_ffn_gate: n_layer,
        n_ffn_up: n_layer,
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        has_tied_embeddings: !cats.contains(&TensorCategory::Output),
    };

    let mut out = Vec::with_capacity(kept.len());
    let mut n_fallback = 0;
    let mut needs_imatrix = None;
    let mut unsupported = false;
    for ((index, name), cat) in kept.into_iter().zip(cats) {
        let (_, current_type, ne) = &tensors[index];
        let allows = allows_quantization(&name, ne, &model.arch, opts);
        let (new_type, fallback) = if allows {
            state.tensor_type(&name, ne, cat)?
        } else {
            (*current_type, false)
        };
        if new_type.row_size(row_len(ne)).is_none() {
            return Err(RuleError::IncompatibleType {
                tensor: name,
                ty: new_type,
                ncols: row_len(ne),
                block: new_type.block_size(),
            });
        }
        n_fallback += fallback as usize;
        let requires_imatrix = tensor_requires_imatrix(&name, new_type, opts.ftype);
        // A type with no quantizer yet is reported as that by the pipeline: asking first for
        // an imatrix would send the user to make one only to hear "not supported yet" — for
        // this tensor or any other of the plan.
        let has_quantizer = super::quantizer(new_type).is_some();
        unsupported |= allows && new_type != *current_type && !has_quantizer;
        if allows
            && requires_imatrix
            && !opts.has_imatrix
            && !opts.dry_run
            && has_quantizer
            && needs_imatrix.is_none()
        {
            needs_imatrix = Some(RuleError::ImatrixRequired {
                tensor: name.clone(),
                ty: new_type,
            });
        }
        out.push(TensorPlan {
            imatrix_name: remap.imatrix_name(&name)?,
            source_name: tensors[index].0.clone(),
            source_index: index,
            ne: ne.clone(),
            current_type: *current_type,
            new_type,
            allows_quantization: allows,
            quantize: new_type != *current_type,
            fallback,
            requires_imatrix,
            name,
        });
    }
    if let Some(e) = needs_imatrix.filter(|_| !unsupported) {
        return Err(e);
    }
    Ok(QuantPlan {
        tensors: out,
        block_count: remap.block_count(),
        n_fallback,
    })
}

/// The tensors of [`plan`], in output order.
pub fn plan_types(
    model: &ModelInfo,
    tensors: &[(String, GgmlType, Vec<u64>)],
    opts: &TypeOptions,
) -> Result<Vec<TensorPlan>, RuleError> {
    plan(model, tensors, opts).map(|p| p.tensors)
}
