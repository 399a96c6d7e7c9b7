//! A Hugging Face checkpoint directory as a [`TensorSource`]: config.json, safetensors weights
//! and tokenizer, turned into the GGUF metadata and tensors llama.cpp's `convert_hf_to_gguf.py`
//! writes, with each tensor's bytes produced on demand.
//!
//! What the script does, step by step, and where it lives here:
//! - hyper-parameters: `AutoConfig.from_pretrained(dir).to_dict()` — config.json plus
//!   transformers' defaults for the model type ([`Hparams::load`]);
//! - tensors: every safetensors tensor in shard-then-name order, renamed through
//!   `TensorNameMap`, Q/K rows permuted for Llama, each given an output type
//!   ([`HfModel::open`]);
//! - metadata: `general.*` from the model card and directory name, the model's
//!   hyper-parameters, then the vocabulary ([`HfModel::build_metadata`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{Map, Value as Json};

use crate::arch::transforms::{filter_name, permuted_source_row, qk_permute_heads};
use crate::arch::{ArchError, Architecture, GeneratedTensor, Hparams, TensorNameMap, VocabStyle};
use crate::convert::card::{self, CardError, ModelCard};
use crate::convert::encode::{encode, encoded_size, OutType};
use crate::convert::vocab::{self, VocabError};
use crate::formats::gguf::Metadata;
use crate::formats::gguf_kv::KvList;
use crate::formats::safetensors::{
    float_dtype_size, Checkpoint, Dtype, SafetensorsError, SafetensorsFile, TensorLocation,
};
use crate::formats::tensor_source::{SourceError, SourceTensor, TensorSource};
use crate::quant::GgmlType;

/// Errors opening or converting a checkpoint; each names the file (and tensor).
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// config.json is missing, unreadable, or holds an impossible value.
    #[error("{path}: {what}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// `architectures[0]` is not one qforge converts.
    #[error("{path}: architecture '{arch}' is not supported (supported: {})", Architecture::supported_hf_classes().join(", "))]
    UnsupportedArch {
        /// The config file.
        path: PathBuf,
        /// The class named.
        arch: String,
    },
    /// A feature of this checkpoint that the converter handles but qforge does not yet.
    #[error("{path}: {what} is not supported yet")]
    NotSupported {
        /// The file that shows the feature.
        path: PathBuf,
        /// The feature.
        what: String,
    },
    /// A tensor the converter would refuse, or whose shape disagrees with config.json.
    #[error("{path}: tensor '{tensor}': {what}")]
    Tensor {
        /// The weights file holding it.
        path: PathBuf,
        /// The checkpoint's name for it.
        tensor: String,
        /// What is wrong with it.
        what: String,
    },
    /// A weights file could not be read.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// The tokenizer files could not be read into a GGUF vocabulary.
    #[error(transparent)]
    Vocab(#[from] VocabError),
    /// The model card could not be read.
    #[error(transparent)]
    Card(#[from] CardError),
}

impl From<HfError> for SourceError {
    fn from(e: HfError) -> SourceError {
        SourceError::produce(e)
    }
}

impl From<ArchError> for HfError {
    fn from(e: ArchError) -> HfError {
        match e {
            ArchError::Config { path, what } => HfError::Config { path, what },
            ArchError::NotSupported { path, what } => HfError::NotSupported { path, what },
        }
    }
}

/// Options of [`HfModel::open`].
#[derive(Clone, Debug)]
pub struct HfOptions {
    /// `--outtype`.
    pub outtype: OutType,
    /// `--model-name`: overrides `general.name`.
    pub model_name: Option<String>,
}

impl Default for HfOptions {
    fn default() -> Self {
        HfOptions {
            outtype: OutType::Auto,
            model_name: None,
        }
    }
}

/// How one output tensor is made.
#[derive(Clone, Debug)]
struct TensorPlan {
    origin: TensorOrigin,
    /// The checkpoint's name for it (or the converter's, for a computed tensor).
    hf_name: String,
    /// PyTorch shape (outermost first).
    shape: Vec<usize>,
}

/// Where a tensor's values come from.
#[derive(Clone, Debug)]
enum TensorOrigin {
    /// A checkpoint tensor, its rows permuted over `permute_heads` heads (Q/K of Llama) if set;
    /// only its first rows when the plan's shape has fewer (Gemma 3's embedding), and 1 added
    /// to every value with `plus_one` (Gemma's norms).
    Checkpoint {
        loc: TensorLocation,
        permute_heads: Option<usize>,
        plus_one: bool,
    },
    /// Values the converter computes itself (llama3 `rope_freqs`), always written as F32.
    Computed(Vec<f32>),
    /// One layer's experts of one projection stacked into a 3-D tensor (`torch.stack(datas,
    /// dim=0)`): each part a 2-D checkpoint tensor, expert 0 first.
    Stacked(Vec<TensorLocation>),
}

/// One layer's per-expert checkpoint tensors, gathered before they are stacked.
#[derive(Default)]
struct ExpertGroup {
    /// Index (in the converter's order) of the layer's last per-expert tensor: the stacked
    /// tensors are emitted there, when the converter has collected them all.
    last_item: usize,
    /// `(expert, projection)` → where it is.
    parts: HashMap<(usize, &'static str), TensorLocation>,
}

/// LongRoPE's generated tensors and the key written with them.
struct LongRopeFactors {
    /// `rope.scaling.attn_factor`.
    attn_factor: f64,
    /// `rope_factors_long.weight`.
    long: Vec<f32>,
    /// `rope_factors_short.weight`.
    short: Vec<f32>,
}

/// A Hugging Face checkpoint opened for conversion.
pub struct HfModel {
    dir: PathBuf,
    checkpoint: Checkpoint,
    arch: &'static Architecture,
    hparams: Hparams,
    outtype: OutType,
    card: ModelCard,
    metadata: Metadata,
    tensors: Vec<SourceTensor>,
    plans: Vec<TensorPlan>,
    /// F32 keys written while tensors are prepared (LongRoPE's attention factor).
    early_keys: Vec<(String, f64)>,
}

/// Names the converter drops outright (`prepare_tensors`).
fn is_skipped(name: &str) -> bool {
    name.ends_with(".attention.masked_bias")
        || name.ends_with(".attention.bias")
        || name.ends_with(".rotary_emb.inv_freq")
}

/// What [`HfModel::tensor_bytes_from_rows`] asks for rows with: fill the block with the
/// given checkpoint rows, or refuse with the lowest refused row and why.
pub type RowFill<'a, E> = dyn Fn(&[usize], &mut [f32]) -> Result<(), (usize, E)> + Sync + 'a;

impl HfModel {
    /// Read config.json, index the weights, plan every tensor and build the metadata.
    pub fn open(dir: &Path, opts: &HfOptions) -> Result<HfModel, HfError> {
        let dir = dir.to_path_buf();
        if !dir.is_dir() {
            return Err(HfError::Config {
                path: dir.clone(),
                what: "not a directory".into(),
            });
        }
        let mut hparams = Hparams::load(&dir)?;
        let arch = match hparams.get("architectures") {
            Some(Json::Array(a)) if !a.is_empty() => a[0].as_str().unwrap_or("").to_string(),
            _ => {
                return Err(hparams
                    .bad("no 'architectures' entry: cannot tell the model architecture".into()))
            }
        };
        let family = Architecture::for_hf_class(&arch).ok_or_else(|| HfError::UnsupportedArch {
            path: hparams.path().to_path_buf(),
            arch: arch.clone(),
        })?;
        if family.quirks.ignores_head_dim {
            hparams = hparams.without("head_dim");
        }
        check_supported_features(&dir, family, &hparams)?;

        let checkpoint = Checkpoint::open_dir(&dir)?;
        let mut model = HfModel {
            dir,
            checkpoint,
            arch: family,
            hparams,
            outtype: opts.outtype,
            card: ModelCard::default(),
            metadata: Metadata::new(),
            tensors: Vec::new(),
            plans: Vec::new(),
            early_keys: Vec::new(),
        };
        model.plan_tensors()?;
        model.build_metadata(opts)?;
        Ok(model)
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The family's registry entry.
    pub fn arch(&self) -> &'static Architecture {
        self.arch
    }

    /// The outtype after `auto` was resolved.
    pub fn outtype(&self) -> OutType {
        self.outtype
    }

    /// The authorship fields (gguf-py's `Metadata`) the `general.*` keys are written from.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The file name the converter would choose in a directory (`naming_convention`).
    pub fn default_file_name(&self) -> String {
        let clean = |s: &str| s.trim().replace(' ', "-");
        let name = match (&self.card.basename, &self.card.name) {
            (Some(b), _) => clean(b).replace('/', "-"),
            (None, Some(n)) => clean(n).replace('/', "-"),
            (None, None) => "ggml-model".into(),
        };
        let mut s = name;
        for part in [
            &self.card.size_label,
            &self.card.finetune,
            &self.card.version,
        ]
        .into_iter()
        .flatten()
        {
            s.push('-');
            s.push_str(&clean(part));
        }
        s.push('-');
        s.push_str(self.outtype.label());
        s.push_str(".gguf");
        s
    }

    fn tensor_error(&self, loc: TensorLocation, name: &str, what: String) -> HfError {
        HfError::Tensor {
            path: self.checkpoint.file(loc).path().to_path_buf(),
            tensor: name.to_string(),
            what,
        }
    }

    /// Name, permutation, output type and shape of every tensor, in the script's order.
    fn plan_tensors(&mut self) -> Result<(), HfError> {
        let hp = &self.hparams;
        let layer_keys = ["n_layers", "num_hidden_layers", "n_layer", "num_layers"];
        let n_blocks = hp.require_u32(&layer_keys)? as usize;
        check_layer_count(
            hp,
            hp.found_key(&layer_keys),
            n_blocks,
            self.checkpoint
                .order()
                .iter()
                .map(|&loc| self.checkpoint.tensor(loc).name.as_str()),
        )?;
        let names = TensorNameMap::new(self.arch, n_blocks);

        // The checkpoint's tensors after the converter's renames, in its order.
        let mut items: Vec<(TensorLocation, String)> = Vec::new();
        for &loc in self.checkpoint.order() {
            let t = self.checkpoint.tensor(loc);
            if let Some(name) = filter_name(self.arch, &t.name) {
                items.push((loc, name));
            }
        }
        for (loc, _) in &items {
            self.checkpoint
                .file(*loc)
                .check_float(self.checkpoint.tensor(*loc))?;
        }

        // --outtype auto: the first matrix's dtype.
        if self.outtype == OutType::Auto {
            let first = items
                .iter()
                .map(|(loc, _)| self.checkpoint.tensor(*loc))
                .find(|t| t.shape.len() >= 2);
            self.outtype = match first.map(|t| t.dtype) {
                Some(Dtype::BF16) => OutType::BF16,
                _ => OutType::F16,
            };
        }
        let matrix_type = self.outtype.matrix_type().expect("resolved above");

        let (n_head, n_kv) = if self.arch.permutes_qk {
            (
                hp.require_u32(&["n_heads", "num_attention_heads"])? as usize,
                hp.require_u32(&["n_kv_heads", "num_key_value_heads"])? as usize,
            )
        } else {
            (0, 0)
        };
        let mut shapes = ExpectedShapes::from_hparams(hp, self.arch)?;
        shapes.qk_norm_spans_heads = self.arch.quirks.qk_norm_spans_heads;
        let expert_groups = self.group_experts(&items)?;

        // Tensors the converter generates come before the checkpoint's.
        if let Some(factors) = self.llama3_rope_freqs()? {
            self.tensors.push(SourceTensor {
                name: "rope_freqs.weight".into(),
                ty: GgmlType::F32,
                ne: vec![factors.len() as u64],
            });
            self.plans.push(TensorPlan {
                hf_name: "rope_freqs.weight".into(),
                shape: vec![factors.len()],
                origin: TensorOrigin::Computed(factors),
            });
        }

        // Gemma 3 keeps as many embedding rows as its vocabulary has tokens.
        let embedding_rows = if self.arch.quirks.truncates_embedding {
            let spm_size = hp
                .find_u32(&["vocab_size_per_layer_input", "vocab_size"])?
                .map(|v| v as usize);
            Some(vocab::gemma3_token_count(&self.dir, spm_size)?)
        } else {
            None
        };

        if let Some(LongRopeFactors {
            attn_factor,
            long,
            short,
        }) = self.longrope_factors()?
        {
            self.early_keys.push((
                format!("{}.rope.scaling.attn_factor", self.arch.gguf_arch),
                attn_factor,
            ));
            for (name, factors) in [
                ("rope_factors_long.weight", long),
                ("rope_factors_short.weight", short),
            ] {
                self.tensors.push(SourceTensor {
                    name: name.into(),
                    ty: GgmlType::F32,
                    ne: vec![factors.len() as u64],
                });
                self.plans.push(TensorPlan {
                    hf_name: name.into(),
                    shape: vec![factors.len()],
                    origin: TensorOrigin::Computed(factors),
                });
            }
        }

        let mut seen_kinds: Vec<(&'static str, Option<usize>)> = Vec::new();
        for (item, (loc, name)) in items.into_iter().enumerate() {
            if is_skipped(&name) {
                continue;
            }
            let mut t = self.checkpoint.tensor(loc).clone();
            if let Some((_, what)) = self
                .arch
                .quirks
                .unsupported_tensors
                .iter()
                .find(|(part, _)| name.contains(part))
            {
                return Err(HfError::NotSupported {
                    path: self.checkpoint.file(loc).path().to_path_buf(),
                    what: format!("{what}: tensor '{}'", t.name),
                });
            }
            if self.arch.quirks.drops_lm_head && t.name == "lm_head.weight" {
                continue;
            }
            if let Some(layout) = self.arch.experts().filter(|l| name.contains(l.marker)) {
                // Held back until the layer's last expert arrives, then stacked.
                let bid = block_id(&name).expect("grouped");
                let group = &expert_groups[&bid];
                if group.last_item == item {
                    for &proj in layout.projections {
                        let mapped = self.plan_stacked(&names, &shapes, bid, proj, group)?;
                        seen_kinds.push((mapped.kind, mapped.bid));
                    }
                }
                continue;
            }
            if self.arch.quirks.drops_zero_biases && name.ends_with(".bias") {
                // `Cohere2Model.modify_tensors`: only all-zero biases may go.
                let file = self.checkpoint.file(loc);
                file.check_float(&t)?;
                let mut values = vec![0f32; t.n_elements()];
                crate::formats::safetensors::floats_to_f32(t.dtype, file.data(&t), &mut values);
                if values.iter().any(|v| *v != 0.0) {
                    return Err(self.tensor_error(
                        loc,
                        &t.name,
                        "a bias that is not zero (the architecture has no biases)".into(),
                    ));
                }
                continue;
            }
            let plus_one = self.arch.quirks.norm_plus_one && name.ends_with("norm.weight");
            if let (Some(n), true) = (embedding_rows, name.contains("embed_tokens.weight")) {
                // `data_torch[:n]`: a no-op when the tensor has no more rows.
                if let Some(rows) = t.shape.first_mut() {
                    *rows = (*rows).min(n);
                }
            }
            if name.contains("block_sparse_moe.experts") || name.contains("mlp.experts") {
                return Err(HfError::NotSupported {
                    path: self.checkpoint.file(loc).path().to_path_buf(),
                    what: format!("expert (MoE) tensor '{}'", t.name),
                });
            }
            let permute_heads = qk_permute_heads(self.arch, &name, n_head, n_kv);
            if let Some(h) = permute_heads {
                let rows = t.shape.first().copied().unwrap_or(0);
                if h == 0 || rows % (2 * h) != 0 {
                    return Err(self.tensor_error(
                        loc,
                        &t.name,
                        format!("{rows} rows cannot be split into {h} heads of two halves"),
                    ));
                }
            }
            let mapped = names.map(&name).ok_or_else(|| {
                self.tensor_error(
                    loc,
                    &t.name,
                    format!(
                        "cannot map it to a GGUF tensor of '{}' with {n_blocks} blocks",
                        self.arch.gguf_arch
                    ),
                )
            })?;
            let fused_gate_up = name.contains("gate_up_proj");
            if let Some(expected) =
                shapes.expected(mapped.kind, mapped.name.ends_with(".bias"), fused_gate_up)
            {
                if t.shape != expected {
                    return Err(self.tensor_error(
                        loc,
                        &t.name,
                        format!(
                            "shape {:?} disagrees with config.json, which implies {:?}",
                            t.shape, expected
                        ),
                    ));
                }
            }
            if self.tensors.iter().any(|s| s.name == mapped.name) {
                return Err(self.tensor_error(
                    loc,
                    &t.name,
                    format!("a second tensor maps to '{}'", mapped.name),
                ));
            }
            seen_kinds.push((mapped.kind, mapped.bid));

            // Output type, as prepare_tensors decides it.
            let n_dims = t.shape.len();
            // 1-D tensors, norms, router weights (the shared expert's gate too) and anything
            // not a `.weight` stay F32.
            let mut ty = if n_dims <= 1
                || mapped.name.ends_with("_norm.weight")
                || matches!(mapped.kind, "FFN_GATE_INP" | "FFN_GATE_INP_SHEXP")
                || !mapped.name.ends_with(".weight")
            {
                GgmlType::F32
            } else {
                matrix_type
            };
            let row = t.shape.last().copied().unwrap_or(1);
            if row % ty.block_size() != 0 {
                // gguf-py's QuantError fallback.
                ty = GgmlType::F16;
            }
            let ne: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
            self.tensors.push(SourceTensor {
                name: mapped.name,
                ty,
                ne,
            });
            self.plans.push(TensorPlan {
                origin: TensorOrigin::Checkpoint {
                    loc,
                    permute_heads,
                    plus_one,
                },
                hf_name: t.name.clone(),
                shape: t.shape.clone(),
            });
        }

        // Every block must have its weights: a config that claims more layers than the
        // checkpoint holds would otherwise make a file llama.cpp cannot load.
        let required_global = ["TOKEN_EMBD", "OUTPUT_NORM"];
        let required_block = self.arch.required_block_kinds;
        for k in required_global {
            if !seen_kinds.contains(&(k, None)) {
                return Err(self.hparams.bad(format!(
                    "the checkpoint has no {} tensor",
                    k.to_ascii_lowercase()
                )));
            }
        }
        for bid in 0..n_blocks {
            for &k in required_block {
                if !seen_kinds.contains(&(k, Some(bid))) {
                    return Err(self.hparams.bad(format!(
                        "the checkpoint has no {} tensor for layer {bid} (of the {n_blocks} layers declared here; '{}' needs one per layer)",
                        k.to_ascii_lowercase(),
                        self.arch.gguf_arch
                    )));
                }
            }
        }
        Ok(())
    }

    /// The per-expert tensors of `items` grouped by layer, each group checked complete against
    /// the expert count of config.json (the converter stacks a layer's experts once it holds
    /// `count × projections` of them, and stops with "Unprocessed experts" or a KeyError when
    /// the set is not exactly that).
    fn group_experts(
        &self,
        items: &[(TensorLocation, String)],
    ) -> Result<BTreeMap<usize, ExpertGroup>, HfError> {
        let mut groups: BTreeMap<usize, ExpertGroup> = BTreeMap::new();
        let Some(layout) = self.arch.experts() else {
            return Ok(groups);
        };
        let hp = &self.hparams;
        let mut count: Option<usize> = None;
        for (item, (loc, name)) in items.iter().enumerate() {
            if is_skipped(name) || !name.contains(layout.marker) {
                continue;
            }
            let t = self.checkpoint.tensor(*loc);
            let n_expert = match count {
                Some(n) => n,
                None => {
                    let n = hp.find_u32(layout.count_keys)?.ok_or_else(|| {
                        hp.bad::<HfError>(format!(
                            "no expert count ('{}'): the checkpoint has expert tensors ('{}') \
                             and the converter stacks them by it",
                            layout.count_keys.join("' / '"),
                            t.name
                        ))
                    })? as usize;
                    if hp.find_u32(layout.used_count_keys)?.is_none() {
                        return Err(hp.bad(format!(
                            "no count of experts used per token ('{}'): llama.cpp cannot load \
                             a mixture-of-experts model without it",
                            layout.used_count_keys.join("' / '")
                        )));
                    }
                    count = Some(n);
                    n
                }
            };
            let bid = block_id(name).ok_or_else(|| {
                self.tensor_error(
                    *loc,
                    &t.name,
                    "an expert tensor without a layer number".into(),
                )
            })?;
            let Some((xid, proj)) = layout.parse(bid, name) else {
                let fused = name.ends_with("experts.gate_up_proj")
                    || name.ends_with("experts.down_proj")
                    || name.ends_with("experts.gate_up_proj.weight")
                    || name.ends_with("experts.down_proj.weight");
                if fused {
                    return Err(HfError::NotSupported {
                        path: self.checkpoint.file(*loc).path().to_path_buf(),
                        what: format!(
                            "fused expert tensor '{}' (all experts of a layer in one tensor, as \
                             transformers 5 saves them)",
                            t.name
                        ),
                    });
                }
                return Err(self.tensor_error(
                    *loc,
                    &t.name,
                    format!(
                        "not an expert tensor the converter stacks (they are named like '{}')",
                        layout.expert_tensor(bid, 0, layout.projections[0])
                    ),
                ));
            };
            if xid >= n_expert {
                return Err(self.tensor_error(
                    *loc,
                    &t.name,
                    format!(
                        "expert {xid}, but config.json declares {n_expert} experts ('{}')",
                        hp.found_key(layout.count_keys)
                    ),
                ));
            }
            let group = groups.entry(bid).or_default();
            group.parts.insert((xid, proj), *loc);
            group.last_item = item;
        }
        if let Some(n_expert) = count {
            for (&bid, group) in &groups {
                for xid in 0..n_expert {
                    for &proj in layout.projections {
                        if !group.parts.contains_key(&(xid, proj)) {
                            return Err(hp.bad(format!(
                                "'{}' is {n_expert}{} but the checkpoint has no tensor '{}'",
                                hp.found_key(layout.count_keys),
                                if config_sets(hp, layout.count_keys) {
                                    ""
                                } else {
                                    " (transformers' default: config.json does not set it)"
                                },
                                layout.expert_tensor(bid, xid, proj)
                            )));
                        }
                    }
                }
            }
        }
        Ok(groups)
    }

    /// Plan the stacked `proj` tensor of layer `bid` from its experts, checking each expert's
    /// shape against config.json and the first expert.
    fn plan_stacked(
        &mut self,
        names: &TensorNameMap,
        shapes: &ExpectedShapes,
        bid: usize,
        proj: &'static str,
        group: &ExpertGroup,
    ) -> Result<crate::arch::MappedName, HfError> {
        let layout = self.arch.experts().expect("a family with experts");
        let n_expert = group.parts.len() / layout.projections.len();
        let parts: Vec<TensorLocation> = (0..n_expert).map(|x| group.parts[&(x, proj)]).collect();
        let first = self.checkpoint.tensor(parts[0]).shape.clone();
        let expected = if proj == layout.down_projection {
            shapes.hidden.zip(shapes.expert_ff).map(|(h, f)| vec![h, f])
        } else {
            shapes.expert_ff.zip(shapes.hidden).map(|(f, h)| vec![f, h])
        };
        for &loc in &parts {
            let t = self.checkpoint.tensor(loc);
            let what = if t.shape.len() != 2 {
                Some(format!(
                    "an expert matrix must be 2-D, this one is {:?}",
                    t.shape
                ))
            } else if let Some(e) = expected.as_ref().filter(|e| **e != t.shape) {
                Some(format!(
                    "shape {:?} disagrees with config.json, which implies {:?}",
                    t.shape, e
                ))
            } else if t.shape != first {
                Some(format!(
                    "shape {:?} differs from expert 0's {:?}: experts are stacked into one tensor",
                    t.shape, first
                ))
            } else {
                None
            };
            if let Some(what) = what {
                return Err(self.tensor_error(loc, &t.name, what));
            }
        }
        let stacked = layout.stacked_tensor(bid, proj);
        let mapped = names.map(&stacked).ok_or_else(|| {
            self.tensor_error(
                parts[0],
                &self.checkpoint.tensor(parts[0]).name,
                format!(
                    "cannot map the stacked '{stacked}' to a GGUF tensor of '{}'",
                    self.arch.gguf_arch
                ),
            )
        })?;
        let (rows, cols) = (first[0], first[1]);
        let mut ty = self.outtype.matrix_type().expect("resolved");
        if cols % ty.block_size() != 0 {
            // gguf-py's QuantError fallback.
            ty = GgmlType::F16;
        }
        self.tensors.push(SourceTensor {
            name: mapped.name.clone(),
            ty,
            ne: vec![cols as u64, rows as u64, n_expert as u64],
        });
        self.plans.push(TensorPlan {
            origin: TensorOrigin::Stacked(parts),
            hf_name: stacked,
            shape: vec![n_expert, rows, cols],
        });
        Ok(mapped)
    }

    /// The `rope_freqs` factors of a Llama-class model whose RoPE type is `llama3`.
    fn llama3_rope_freqs(&self) -> Result<Option<Vec<f32>>, HfError> {
        if !self
            .arch
            .generated
            .contains(&GeneratedTensor::Llama3RopeFreqs)
        {
            return Ok(None);
        }
        let hp = &self.hparams;
        let rope = rope_parameters(hp)?;
        let is_llama3 = rope
            .get("rope_type")
            .and_then(Json::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("llama3"));
        if !is_llama3 {
            return Ok(None);
        }
        let param = |key: &str, default: f64| -> Result<f64, HfError> {
            match rope.get(key).filter(|v| !v.is_null()) {
                None => Ok(default),
                Some(v) => v.as_f64().ok_or_else(|| {
                    hp.bad(format!("RoPE parameter '{key}' must be a number, got {v}"))
                }),
            }
        };
        let base = param("rope_theta", 10000.0)?;
        let factor = param("factor", 8.0)?;
        let low = param("low_freq_factor", 1.0)?;
        let high = param("high_freq_factor", 4.0)?;
        let original = param("original_max_position_embeddings", 8192.0)?;
        if low == 0.0 || high == 0.0 {
            // The script divides by them and stops with ZeroDivisionError.
            return Err(hp.bad("llama3 RoPE scaling with a zero low/high_freq_factor".into()));
        }
        let dim = match hp.find_u32(&["head_dim"])? {
            Some(d) => d,
            None => {
                let h = hp.require_u32(&["hidden_size"])?;
                let n = hp.require_u32(&["num_attention_heads"])?;
                if n == 0 {
                    return Err(hp.bad("num_attention_heads is 0".into()));
                }
                h / n
            }
        };
        if dim == 0 {
            return Err(hp.bad("llama3 RoPE scaling with a head dimension of 0".into()));
        }
        Ok(Some(llama3_rope_factors(
            base, dim, factor, low, high, original,
        )))
    }

    /// LongRoPE's per-frequency factors (`Phi3MiniModel.generate_extra_tensors`): the
    /// attention factor the class writes with them, then the long and short factors as F32.
    /// `None` without `long_factor`.
    fn longrope_factors(&self) -> Result<Option<LongRopeFactors>, HfError> {
        if !self
            .arch
            .generated
            .contains(&GeneratedTensor::LongRopeFactors)
        {
            return Ok(None);
        }
        let hp = &self.hparams;
        let rope = rope_parameters(hp)?;
        let factors = |key: &str| -> Result<Option<Vec<f32>>, HfError> {
            match rope.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Array(a)) => a
                    .iter()
                    .map(|v| v.as_f64().map(|x| x as f32))
                    .collect::<Option<Vec<f32>>>()
                    .map(Some)
                    .ok_or_else(|| hp.bad(format!("RoPE '{key}' must be a list of numbers"))),
                Some(v) => Err(hp.bad(format!("RoPE '{key}' must be a list, got {v}"))),
            }
        };
        let long = match factors("long_factor")? {
            Some(l) if !l.is_empty() => l,
            _ => return Ok(None),
        };
        let max_pos = hp.require_u32(&["n_positions", "max_position_embeddings"])? as f64;
        let orig = crate::arch::phi3::original_context(hp)? as f64;
        let scale = max_pos / orig;
        let rope_type = rope
            .get("rope_type")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_lowercase();
        let attn_factor = match rope_type.as_str() {
            "" => return Err(hp.bad("LongRoPE factors without a RoPE type".into())),
            "su" | "longrope" if scale > 1.0 => (1.0 + scale.ln() / orig.ln()).sqrt(),
            "yarn" if scale > 1.0 => 0.1 * scale.ln() + 1.0,
            "su" | "longrope" | "yarn" => 1.0,
            other => {
                return Err(HfError::NotSupported {
                    path: hp.path().to_path_buf(),
                    what: format!("RoPE type '{other}' with LongRoPE factors"),
                })
            }
        };
        let Some(short) = factors("short_factor")? else {
            return Err(hp.bad("LongRoPE 'long_factor' without 'short_factor'".into()));
        };
        let half = crate::arch::phi3::rope_dims(hp)? as f64 / 2.0;
        if long.len() != short.len() || long.len() as f64 != half {
            return Err(hp.bad(format!(
                "LongRoPE factors must number {half} (half the rotated dimensions); \
                 long_factor has {}, short_factor {}",
                long.len(),
                short.len()
            )));
        }
        Ok(Some(LongRopeFactors {
            attn_factor,
            long,
            short,
        }))
    }

    /// `get_total_parameter_count`: (total, shared, expert, expert count).
    fn parameter_counts(&self) -> (u64, u64, u64, u64) {
        let (mut total, mut shared, mut expert) = (0u64, 0u64, 0u64);
        let (mut expert_sum, mut n_expert_tensors) = (0u64, 0u64);
        for t in &self.tensors {
            let size: u64 = t.ne.iter().product();
            if t.name.contains("_exps.") && t.ne.len() >= 3 {
                // PyTorch shape[-3] (or [-2] for biases) is ggml ne[2] (ne[1]).
                let count = if t.name.contains(".bias") {
                    t.ne[1]
                } else {
                    t.ne[2]
                };
                expert += size / count.max(1);
                expert_sum += count;
                n_expert_tensors += 1;
            } else {
                shared += size;
            }
            total += size;
        }
        let count = expert_sum.checked_div(n_expert_tensors).unwrap_or(0);
        (total, shared, expert, count)
    }

    /// `prepare_metadata`: general.*, the model's parameters, quantization version, vocab.
    fn build_metadata(&mut self, opts: &HfOptions) -> Result<(), HfError> {
        let (total, shared, expert, expert_count) = self.parameter_counts();
        let mut card = ModelCard::load(&self.dir, opts.model_name.as_deref(), total as i64)?;
        if card.size_label.is_none() && total > 0 {
            card.size_label = Some(if expert_count > 0 {
                card::size_label_experts(shared, expert, expert_count)
            } else {
                card::size_label(total)
            });
        }
        let arch = self.arch.gguf_arch;
        let mut kv = KvList::new();
        kv.add_str("general.architecture", arch);
        // Keys the converter adds while preparing tensors come before the metadata.
        for (k, v) in &self.early_keys {
            kv.add_f32(k, *v);
        }
        kv.add_str("general.type", "model");
        card.write(&mut kv);
        self.write_parameters(&mut kv)?;
        kv.add_u32("general.quantization_version", 2);

        let vocab_size = self.hparams.find_u32(&["vocab_size"])?.map(|v| v as usize);
        match self.arch.vocab {
            VocabStyle::Llama => vocab::write_llama_vocab(&self.dir, vocab_size, &mut kv)?,
            VocabStyle::Gpt2 => vocab::write_gpt2(&self.dir, vocab_size, &mut kv)?,
            VocabStyle::Qwen2 => {
                let spm_size = self
                    .hparams
                    .find_u32(&["vocab_size_per_layer_input", "vocab_size"])?
                    .map(|v| v as usize);
                let size = if self.dir.join("tokenizer.model").is_file() {
                    spm_size
                } else {
                    vocab_size
                };
                vocab::write_qwen2_vocab(&self.dir, size, &mut kv)?
            }
            VocabStyle::Ernie4_5 => {
                let spm_size = self
                    .hparams
                    .find_u32(&["vocab_size_per_layer_input", "vocab_size"])?
                    .map(|v| v as usize);
                vocab::write_ernie4_5_vocab(&self.dir, spm_size, &mut kv)?
            }
            VocabStyle::Phi3 => {
                let size = self.hparams.find_u32(&["vocab_size"])?.map(|v| v as usize);
                vocab::phi3::write_phi3_vocab(&self.dir, size, &mut kv)?
            }
            VocabStyle::Gemma2 | VocabStyle::Gemma3 => {
                let spm_size = self
                    .hparams
                    .find_u32(&["vocab_size_per_layer_input", "vocab_size"])?
                    .map(|v| v as usize);
                let bpe_fallback = self.arch.vocab == VocabStyle::Gemma3;
                vocab::write_gemma_vocab(&self.dir, spm_size, vocab_size, bpe_fallback, &mut kv)?
            }
        }
        self.card = card;
        self.metadata = kv.into_metadata();
        Ok(())
    }

    /// `TextModel.set_gguf_parameters` and the class's additions.
    fn write_parameters(&self, kv: &mut KvList) -> Result<(), HfError> {
        let hp = &self.hparams;
        if let Some(own) = self.arch.quirks.own_parameters {
            own(hp, self.outtype.file_type(), kv)?;
            return Ok(());
        }
        let arch = self.arch.gguf_arch;
        let key = |k: &str| format!("{arch}.{k}");
        kv.add_u32(
            &key("block_count"),
            hp.require_u32(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?,
        );
        let optional: [(&str, &[&str]); 5] = [
            (
                "context_length",
                &[
                    "max_position_embeddings",
                    "n_ctx",
                    "n_positions",
                    "max_length",
                    "max_sequence_length",
                    "model_max_length",
                ],
            ),
            ("embedding_length", &["hidden_size", "n_embd", "dim"]),
            (
                "feed_forward_length",
                &[
                    "prefix_dense_intermediate_size",
                    "dense_intermediate_size",
                    "intermediate_size",
                    "n_inner",
                    "hidden_dim",
                ],
            ),
            (
                "attention.head_count",
                &["num_attention_heads", "n_head", "n_heads"],
            ),
            (
                "attention.head_count_kv",
                &["num_key_value_heads", "n_kv_heads"],
            ),
        ];
        for (k, keys) in optional {
            if let Some(v) = hp.find_u32(keys)? {
                kv.add_u32(&key(k), v);
            }
        }
        if hp.get("is_causal") == Some(&Json::Bool(false)) {
            kv.add_bool(&key("attention.causal"), false);
        }

        let rope = rope_parameters(hp)?;
        if let Some(rope_type) = rope.get("rope_type").and_then(Json::as_str) {
            let factor = rope.get("factor").and_then(Json::as_f64);
            let num = |k: &str| rope.get(k).and_then(Json::as_f64);
            match rope_type {
                "linear" if factor.is_some() => {
                    kv.add_str(&key("rope.scaling.type"), "linear");
                    kv.add_f32(&key("rope.scaling.factor"), factor.unwrap());
                }
                "yarn" if factor.is_some() => {
                    kv.add_str(&key("rope.scaling.type"), "yarn");
                    kv.add_f32(&key("rope.scaling.factor"), factor.unwrap());
                    let orig = rope
                        .get("original_max_position_embeddings")
                        .and_then(Json::as_u64)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| {
                            hp.bad::<HfError>(
                                "yarn RoPE scaling needs original_max_position_embeddings".into(),
                            )
                        })?;
                    kv.add_u32(&key("rope.scaling.original_context_length"), orig);
                    if let Some(v) = num("extrapolation_factor") {
                        kv.add_f32(&key("rope.scaling.yarn_ext_factor"), v);
                    }
                    if let Some(v) = num("attention_factor").or_else(|| num("attn_factor")) {
                        kv.add_f32(&key("rope.scaling.yarn_attn_factor"), v);
                    }
                    if let Some(v) = num("beta_fast") {
                        kv.add_f32(&key("rope.scaling.yarn_beta_fast"), v);
                    }
                    if let Some(v) = num("beta_slow") {
                        kv.add_f32(&key("rope.scaling.yarn_beta_slow"), v);
                    }
                }
                "su" | "longrope" => kv.add_str(&key("rope.scaling.type"), "longrope"),
                // "llama3" is a tensor, not keys (see `llama3_rope_factors`); "default",
                // "dynamic" and unknown types write nothing.
                _ => {}
            }
        }
        if rope.contains_key("mrope_section") {
            return Err(HfError::NotSupported {
                path: hp.path().to_path_buf(),
                what: "multimodal RoPE sections".into(),
            });
        }
        if let Some(theta) = rope.get("rope_theta").filter(|v| !v.is_null()) {
            let v = theta.as_f64().ok_or_else(|| {
                hp.bad::<HfError>(format!("'rope_theta' must be a number, got {theta}"))
            })?;
            kv.add_f32(&key("rope.freq_base"), v);
        }
        let swa_theta = rope
            .get("sliding_attention")
            .and_then(|s| s.get("rope_theta"))
            .filter(|v| !v.is_null());
        if let Some(theta) = swa_theta {
            let v = theta.as_f64().ok_or_else(|| {
                hp.bad::<HfError>(format!(
                    "the sliding-window RoPE base must be a number, got {theta}"
                ))
            })?;
            kv.add_f32(&key("rope.freq_base_swa"), v);
        }
        if let Some(v) = hp.find_f64(&["rms_norm_eps", "norm_eps"])? {
            kv.add_f32(&key("attention.layer_norm_rms_epsilon"), v);
        }
        if let Some(v) = hp.find_f64(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])? {
            kv.add_f32(&key("attention.layer_norm_epsilon"), v);
        }
        if let Some(v) = hp.find_u32(&["num_local_experts", "num_experts", "n_routed_experts"])? {
            kv.add_u32(&key("expert_count"), v);
        }
        if let Some(v) = hp.find_u32(&[
            "num_experts_per_tok",
            "num_experts_per_token",
            "top_k_experts",
        ])? {
            kv.add_u32(&key("expert_used_count"), v);
        }
        if let Some(v) = hp.find_u32(&["n_group"])? {
            kv.add_u32(&key("expert_group_count"), v);
        }
        if let Some(v) = hp.find_u32(&["topk_group"])? {
            kv.add_u32(&key("expert_group_used_count"), v);
        }
        if hp
            .find(&[
                "score_function",
                "scoring_func",
                "score_func",
                "moe_router_activation",
                "moe_router_activation_func",
                "expert_selection_fn",
            ])
            .is_some()
        {
            return Err(HfError::NotSupported {
                path: hp.path().to_path_buf(),
                what: "an expert gating function".into(),
            });
        }
        if let Some(hd) = hp.find_u32(&["head_dim"])? {
            kv.add_u32(&key("attention.key_length"), hd);
            kv.add_u32(&key("attention.value_length"), hd);
        }
        kv.add_u32("general.file_type", self.outtype.file_type());

        (self.arch.write_hparams)(hp, kv)?;
        Ok(())
    }

    /// Produce tensor `index` in its output type. Rows are converted in parallel; each output
    /// byte depends only on its own block of input, so the result is the same for any number
    /// of threads.
    fn produce(&self, index: usize) -> Result<Vec<u8>, HfError> {
        let plan = &self.plans[index];
        let loc = match &plan.origin {
            TensorOrigin::Checkpoint { loc, .. } => *loc,
            TensorOrigin::Stacked(parts) => return self.produce_stacked(index, parts),
            TensorOrigin::Computed(values) => {
                debug_assert_eq!(self.tensors[index].ty, GgmlType::F32);
                return Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect());
            }
        };
        let file = self.checkpoint.file(loc);
        let t = self.checkpoint.tensor(loc);
        file.check_float(t)?;
        let out = self.encode_from(index, file.data(t), Some(file));
        file.release(t);
        Ok(out)
    }

    /// A stacked expert tensor: each expert converted in turn into its slice of the output, its
    /// source pages released once done, so memory holds the one stacked tensor being built.
    /// Converting expert by expert equals converting the stack: every conversion is per row and
    /// a row never spans two experts.
    fn produce_stacked(&self, index: usize, parts: &[TensorLocation]) -> Result<Vec<u8>, HfError> {
        let out_ty = self.tensors[index].ty;
        let n: usize = self.plans[index].shape.iter().product();
        let mut out = vec![0u8; encoded_size(out_ty, n)];
        let per_expert = out.len() / parts.len().max(1);
        for (&loc, dst) in parts.iter().zip(out.chunks_exact_mut(per_expert.max(1))) {
            let file = self.checkpoint.file(loc);
            let t = self.checkpoint.tensor(loc);
            file.check_float(t)?;
            self.encode_into(
                loc,
                None,
                false,
                t.shape[0],
                t.n_elements(),
                out_ty,
                file.data(t),
                Some(file),
                dst,
            );
            file.release(t);
        }
        Ok(out)
    }

    /// Tensor `index` converted exactly as [`TensorSource::tensor_bytes`] does, but from
    /// `data` instead of the checkpoint's bytes: `data` has the checkpoint tensor's dtype and
    /// shape (`convert --lora` hands in the merged tensor here).
    pub fn tensor_bytes_from(&self, index: usize, data: &[u8]) -> Result<Vec<u8>, HfError> {
        let plan = &self.plans[index];
        let loc = match &plan.origin {
            TensorOrigin::Checkpoint { loc, .. } => loc,
            // Computed tensors (llama3's rope_freqs) have no checkpoint bytes to replace.
            TensorOrigin::Computed(_) => return self.produce(index),
            TensorOrigin::Stacked(_) => {
                return Err(HfError::NotSupported {
                    path: self.dir.clone(),
                    what: format!(
                        "replacing the stacked expert tensor '{}' (a LoRA merge into experts)",
                        plan.hf_name
                    ),
                })
            }
        };
        let file = self.checkpoint.file(*loc);
        let t = self.checkpoint.tensor(*loc);
        file.check_float(t)?;
        assert_eq!(data.len(), t.n_bytes(), "{}: replacement data size", t.name);
        Ok(self.encode_from(index, data, None))
    }

    /// Tensor `index` converted exactly as [`TensorSource::tensor_bytes`] does, from rows that
    /// `fill` produces instead of the checkpoint's bytes: `fill(rows, block)` writes the exact
    /// f32 values of rows `rows` of the checkpoint tensor (its first dimension), one after the
    /// other, into `block`, or refuses them with the lowest refused row and why. Blocks are
    /// produced in parallel, each straight into the encoder while in cache; the lowest refused
    /// row's error is returned, so the outcome does not depend on threads. None when the tensor
    /// is not a 2-D checkpoint tensor converted row for row (the caller then hands whole bytes
    /// to [`tensor_bytes_from`](Self::tensor_bytes_from)).
    pub fn tensor_bytes_from_rows<E: Send>(
        &self,
        index: usize,
        fill: &RowFill<'_, E>,
    ) -> Option<Result<Vec<u8>, E>> {
        let plan = &self.plans[index];
        let TensorOrigin::Checkpoint {
            loc,
            permute_heads,
            plus_one: false,
        } = &plan.origin
        else {
            return None;
        };
        let t = self.checkpoint.tensor(*loc);
        if plan.shape.len() != 2 || plan.shape != t.shape {
            return None;
        }
        let (rows, row_len) = (plan.shape[0], plan.shape[1]);
        let out_ty = self.tensors[index].ty;
        let mut out = vec![0u8; encoded_size(out_ty, rows * row_len)];
        if out.is_empty() {
            return Some(Ok(out));
        }
        let permute_heads = *permute_heads;
        let out_row_bytes = encoded_size(out_ty, row_len);
        let rows_per_chunk = (65536 / row_len.max(1)).max(1);
        let refused = out
            .par_chunks_mut(rows_per_chunk * out_row_bytes)
            .enumerate()
            .filter_map(|(ci, chunk)| {
                let r0 = ci * rows_per_chunk;
                let nr = chunk.len() / out_row_bytes;
                let mut buf = vec![0f32; nr * row_len];
                let source_rows: Vec<usize> = (r0..r0 + nr)
                    .map(|r| match permute_heads {
                        Some(h) => permuted_source_row(r, rows, h),
                        None => r,
                    })
                    .collect();
                match fill(&source_rows, &mut buf) {
                    Ok(()) => {
                        encode(out_ty, &buf, chunk);
                        None
                    }
                    Err(refused) => Some(refused),
                }
            })
            .min_by_key(|(sr, _)| *sr);
        Some(match refused {
            Some((_, e)) => Err(e),
            None => Ok(out),
        })
    }

    /// The checkpoint the tensors are read from.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Encode `src` (the bytes of tensor `index`'s checkpoint tensor) to its output type;
    /// with `file`, pages of the mapped source are released as rows are consumed.
    fn encode_from(&self, index: usize, src: &[u8], file: Option<&SafetensorsFile>) -> Vec<u8> {
        let plan = &self.plans[index];
        let out_ty = self.tensors[index].ty;
        let TensorOrigin::Checkpoint {
            loc,
            permute_heads,
            plus_one,
        } = &plan.origin
        else {
            unreachable!("only checkpoint tensors are encoded from one tensor's bytes")
        };
        // The plan's shape: the checkpoint's, or its first rows.
        let n: usize = plan.shape.iter().product();
        let rows = plan.shape.first().copied().unwrap_or(1).max(1);
        let mut out = vec![0u8; encoded_size(out_ty, n)];
        self.encode_into(
            *loc,
            *permute_heads,
            *plus_one,
            rows,
            n,
            out_ty,
            src,
            file,
            &mut out,
        );
        out
    }

    /// Encode `src` (the bytes of checkpoint tensor `loc`) to `out_ty` into `out`: its first
    /// `rows` rows (`n` elements), rows permuted over `permute_heads` heads if set, 1 added
    /// as torch does if `plus_one`; with `file`, pages of the mapped source are released as
    /// rows are consumed.
    #[allow(clippy::too_many_arguments)]
    fn encode_into(
        &self,
        loc: TensorLocation,
        permute_heads: Option<usize>,
        plus_one: bool,
        rows: usize,
        n: usize,
        out_ty: GgmlType,
        src: &[u8],
        file: Option<&SafetensorsFile>,
        out: &mut [u8],
    ) {
        let t = self.checkpoint.tensor(loc);
        let rows = rows.max(1);
        let row_len = if t.shape.is_empty() { 1 } else { n / rows };
        let in_size = float_dtype_size(t.dtype).expect("checked");
        debug_assert_eq!(out.len(), encoded_size(out_ty, n));
        if n == 0 {
            return;
        }
        let source_row = |r: usize| match permute_heads {
            Some(h) => permuted_source_row(r, rows, h),
            None => r,
        };
        // Raw copies where the script's conversion is the identity.
        let raw = !plus_one
            && matches!(
                (t.dtype, out_ty),
                (Dtype::F16, GgmlType::F16) | (Dtype::F32, GgmlType::F32)
            );
        // A row is a whole number of blocks: the type was chosen so (Q8_0 needs the last
        // dimension to be a multiple of 32, and a row spans whole last-dimension rows).
        let out_row_bytes = encoded_size(out_ty, row_len);
        // Rows per parallel chunk: about 64 Ki elements.
        let rows_per_chunk = (65536 / row_len).max(1);
        out.par_chunks_mut(rows_per_chunk * out_row_bytes)
            .enumerate()
            .for_each(|(ci, chunk)| {
                let r0 = ci * rows_per_chunk;
                let nr = chunk.len() / out_row_bytes;
                let mut buf = vec![0f32; if raw { 0 } else { nr * row_len }];
                for k in 0..nr {
                    let sr = source_row(r0 + k);
                    let s = &src[sr * row_len * in_size..(sr + 1) * row_len * in_size];
                    if raw {
                        chunk[k * out_row_bytes..(k + 1) * out_row_bytes].copy_from_slice(s);
                    } else {
                        let row = &mut buf[k * row_len..(k + 1) * row_len];
                        crate::formats::safetensors::floats_to_f32(t.dtype, s, row);
                        if plus_one {
                            add_one_as_torch(t.dtype, row);
                        }
                    }
                }
                if !raw {
                    encode(out_ty, &buf, chunk);
                }
                // Rows read in order are done with: drop their pages now, so the resident
                // set holds about the output tensor, not the input too.
                if let (Some(file), None) = (file, permute_heads) {
                    let row_bytes = row_len * in_size;
                    file.release_range(t, r0 * row_bytes, nr * row_bytes);
                }
            });
    }
}

/// The block id the converter gives a tensor: the first all-digit dot-separated part of its
/// name (`prepare_tensors`).
fn block_id(name: &str) -> Option<usize> {
    name.split('.')
        .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
}

/// Whether config.json itself (not transformers' defaults) sets one of `keys`.
fn config_sets(hp: &Hparams, keys: &[&str]) -> bool {
    std::fs::read(hp.path())
        .ok()
        .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
        .is_some_and(|j| keys.iter().any(|k| j.get(*k).is_some_and(|v| !v.is_null())))
}

/// `data_torch + 1` as the converter computes it on a tensor of `dtype`, given its values as
/// f32: F16 tensors stay F16 in torch (the sum is rounded to half precision), every other
/// dtype was widened to F32 first.
fn add_one_as_torch(dtype: Dtype, row: &mut [f32]) {
    for v in row {
        let sum = *v + 1.0;
        *v = if dtype == Dtype::F16 {
            crate::quant::f16_to_f32(crate::quant::f32_to_f16(sum))
        } else {
            sum
        };
    }
}

/// The RoPE parameters as `TextModel.__init__` gathers them ([`Hparams::rope_parameters`]).
fn rope_parameters(hp: &Hparams) -> Result<Map<String, Json>, HfError> {
    Ok(hp.rope_parameters()?)
}

/// The per-frequency RoPE scale factors of Llama 3.1's `rope_type: llama3`, which the
/// converter stores as the F32 tensor `rope_freqs.weight` (reproduces
/// `LlamaModel.generate_extra_tensors`).
///
/// The script computes in float32 torch tensors, so every step here is one f32 operation in
/// its order: `x / t` on a tensor is `t.reciprocal() * x`, Python scalars are rounded to f32
/// before they meet a tensor. The base raised to `i / dim` uses the C library's `powf`, which
/// is what torch runs for fewer elements than one AVX-512 loop step (head_dim < 64); for wider
/// heads torch's vectorized pow (SLEEF, within 1 ulp) can differ from it in the last bit of
/// an interpolated factor, rarely (none of Llama 3.1/3.2's configurations).
pub fn llama3_rope_factors(
    base: f64,
    dim: u32,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_context: f64,
) -> Vec<f32> {
    let low_freq_wavelen = (original_context / low_freq_factor) as f32;
    let high_freq_wavelen = (original_context / high_freq_factor) as f32;
    let band = (high_freq_factor - low_freq_factor) as f32;
    let two_pi = std::f64::consts::TAU as f32;
    (0..dim)
        .step_by(2)
        .map(|i| {
            let exponent = i as f32 / dim as f32;
            let freq = 1.0f32 / (base as f32).powf(exponent);
            let wavelen = (1.0f32 / freq) * two_pi;
            if wavelen < high_freq_wavelen {
                1.0
            } else if wavelen > low_freq_wavelen {
                factor as f32
            } else {
                let smooth =
                    ((1.0f32 / wavelen) * original_context as f32 - low_freq_factor as f32) / band;
                1.0f32 / ((1.0f32 - smooth) / factor as f32 + smooth)
            }
        })
        .collect()
}

/// Shapes config.json implies for each tensor kind.
struct ExpectedShapes {
    vocab: Option<usize>,
    hidden: Option<usize>,
    ff: Option<usize>,
    q_rows: Option<usize>,
    kv_rows: Option<usize>,
    head_dim: Option<usize>,
    /// The expert count (families with experts only).
    n_expert: Option<usize>,
    /// Rows of each expert's gate/up matrix.
    expert_ff: Option<usize>,
    /// Rows of the shared expert's gate/up matrix.
    shared_ff: Option<usize>,
    /// Q/K norms are as wide as the projections (OLMo 2), not one head.
    qk_norm_spans_heads: bool,
}

impl ExpectedShapes {
    fn from_hparams(hp: &Hparams, arch: &Architecture) -> Result<ExpectedShapes, HfError> {
        let u = |keys: &[&str]| -> Result<Option<usize>, HfError> {
            Ok(hp.find_u32(keys)?.map(|v| v as usize))
        };
        let hidden = u(&["hidden_size", "n_embd", "dim"])?;
        let heads = u(&["num_attention_heads", "n_head", "n_heads"])?;
        let kv = u(&["num_key_value_heads", "n_kv_heads"])?.or(heads);
        let head_dim = match u(&["head_dim"])? {
            Some(d) => Some(d),
            None => match (hidden, heads) {
                (Some(h), Some(n)) if n > 0 => Some(h / n),
                _ => None,
            },
        };
        Ok(ExpectedShapes {
            vocab: u(&["vocab_size"])?,
            hidden,
            ff: u(&["intermediate_size"])?,
            q_rows: heads.zip(head_dim).map(|(a, b)| a * b),
            kv_rows: kv.zip(head_dim).map(|(a, b)| a * b),
            head_dim,
            n_expert: match arch.experts() {
                Some(l) => u(l.count_keys)?,
                None => None,
            },
            expert_ff: match arch.experts() {
                Some(l) => u(l.ff_keys)?,
                None => None,
            },
            shared_ff: u(&["shared_expert_intermediate_size"])?,
            qk_norm_spans_heads: false,
        })
    }

    /// The PyTorch shape a tensor of `kind` must have, when config.json determines it.
    fn expected(&self, kind: &str, bias: bool, fused_gate_up: bool) -> Option<Vec<usize>> {
        let two = |a: Option<usize>, b: Option<usize>| Some(vec![a?, b?]);
        let qkv_rows = self.q_rows.zip(self.kv_rows).map(|(q, kv)| q + 2 * kv);
        let weight = match kind {
            "TOKEN_EMBD" | "OUTPUT" => two(self.vocab, self.hidden),
            "OUTPUT_NORM" | "ATTN_NORM" | "FFN_NORM" | "ATTN_POST_NORM" | "FFN_PRE_NORM"
            | "FFN_POST_NORM" => Some(vec![self.hidden?]),
            "ATTN_Q" => two(self.q_rows, self.hidden),
            "ATTN_K" | "ATTN_V" => two(self.kv_rows, self.hidden),
            "ATTN_OUT" => two(self.hidden, self.q_rows),
            "ATTN_QKV" => two(qkv_rows, self.hidden),
            "FFN_UP" if fused_gate_up => two(self.ff.map(|f| 2 * f), self.hidden),
            "FFN_GATE" | "FFN_UP" => two(self.ff, self.hidden),
            "FFN_DOWN" => two(self.hidden, self.ff),
            "ATTN_Q_NORM" if self.qk_norm_spans_heads => Some(vec![self.q_rows?]),
            "ATTN_K_NORM" if self.qk_norm_spans_heads => Some(vec![self.kv_rows?]),
            "ATTN_Q_NORM" | "ATTN_K_NORM" => Some(vec![self.head_dim?]),
            "FFN_GATE_INP" => two(self.n_expert, self.hidden),
            "FFN_GATE_INP_SHEXP" => two(Some(1), self.hidden),
            "FFN_GATE_SHEXP" | "FFN_UP_SHEXP" => two(self.shared_ff, self.hidden),
            "FFN_DOWN_SHEXP" => two(self.hidden, self.shared_ff),
            _ => None,
        }?;
        if bias {
            Some(vec![weight[0]])
        } else {
            Some(weight)
        }
    }
}

/// Features the converter handles for these architectures that qforge does not (yet): refuse
/// them rather than write a different file.
fn check_supported_features(dir: &Path, arch: &Architecture, hp: &Hparams) -> Result<(), HfError> {
    if hp.get("quantization_config").is_some() || dir.join("hf_quant_config.json").is_file() {
        return Err(HfError::NotSupported {
            path: hp.path().to_path_buf(),
            what: "a pre-quantized checkpoint (quantization_config)".into(),
        });
    }
    (arch.refuse_features)(dir, hp)?;
    Ok(())
}

impl TensorSource for HfModel {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, SourceError> {
        Ok(Cow::Owned(self.produce(index)?))
    }
}

impl HfModel {
    /// The checkpoint name a GGUF tensor came from.
    pub fn source_name(&self, index: usize) -> &str {
        &self.plans[index].hf_name
    }
}

/// The block count of config.json checked against the checkpoint before anything is sized by
/// it (the name map costs tens of KB per declared layer): no more than llama.cpp's
/// `LLAMA_MAX_LAYERS`, and no more than one past the highest layer number in the tensor names
/// (a checkpoint stores every layer it declares).
fn check_layer_count<'a>(
    hp: &Hparams,
    key: &str,
    n_blocks: usize,
    tensor_names: impl Iterator<Item = &'a str>,
) -> Result<(), HfError> {
    const MAX_LAYERS: usize = 512;
    if n_blocks > MAX_LAYERS {
        return Err(hp.bad(format!(
            "'{key}' is {n_blocks}; no model llama.cpp loads has more than {MAX_LAYERS} layers"
        )));
    }
    // The layer number is the first all-digit dot-separated part of names such as
    // model.layers.12.mlp.up_proj.weight.
    let mut highest: Option<usize> = None;
    let mut any_layered = false;
    for name in tensor_names {
        if let Some(n) = name
            .split('.')
            .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<usize>().ok())
        {
            any_layered = true;
            highest = Some(highest.map_or(n, |h| h.max(n)));
        }
    }
    if let (true, Some(h)) = (any_layered, highest) {
        if n_blocks > h + 1 {
            return Err(hp.bad(format!(
                "'{key}' is {n_blocks} but the checkpoint's tensors stop at layer {h} (none for \
                 layer {})",
                h + 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3.1 8B's and Llama 3.2 1B's rope_scaling (theta 500000, head_dim 128): the factors
    /// outside the interpolated band are exactly 1 and `factor`; inside, the f32 bits torch
    /// computed for them (`LlamaModel.generate_extra_tensors`, torch 2.11 on AVX-512, where
    /// these 64 frequencies take torch's vectorized pow).
    #[test]
    fn llama3_factors_match_torch_for_published_configs() {
        let cases: [(f64, [u32; 6]); 2] = [
            (
                8.0,
                [
                    0x3f9a8ed5, 0x3fc6d64a, 0x4001af1d, 0x402c732e, 0x406bcace, 0x40a83c06,
                ],
            ),
            (
                32.0,
                [
                    0x3f9e126b, 0x3fd35ec2, 0x4011b4ca, 0x4052b46f, 0x40a57db9, 0x411aaaee,
                ],
            ),
        ];
        for (factor, band) in cases {
            let f = llama3_rope_factors(500000.0, 128, factor, 1.0, 4.0, 8192.0);
            assert_eq!(f.len(), 64);
            let bits: Vec<u32> = f.iter().map(|x| x.to_bits()).collect();
            assert!(bits[..29].iter().all(|&b| b == 1f32.to_bits()));
            assert_eq!(bits[29..35], band, "factor {factor}");
            assert!(bits[35..].iter().all(|&b| b == (factor as f32).to_bits()));
        }
    }

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // 2 heads of 4 rows: per head, out rows (0,1,2,3) come from (0,2,1,3).
        let src: Vec<usize> = (0..8).map(|r| permuted_source_row(r, 8, 2)).collect();
        assert_eq!(src, [0, 2, 1, 3, 4, 6, 5, 7]);
    }
}
