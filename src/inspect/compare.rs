//! `compare A B`: how far model B is from model A. The metadata diff (keys added, removed,
//! changed), every tensor side by side (type and shape in each; where shapes agree, the
//! relative RMSE sqrt(Σ(b−a)²/Σa²) of B's dequantized values against A's and the largest
//! absolute difference), a summary per tensor kind (`attn_q.weight`, … over all layers), and
//! optionally perplexity of both and KL divergence of B against A on a text.
//!
//! A and B are GGUF files or Hugging Face directories (converted on the fly at F32, so their
//! exact weights under GGUF names). Tensors stream one at a time.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use super::InspectError;
use crate::convert::checkpoint::{HfModel, HfOptions};
use crate::convert::encode::OutType;
use crate::eval::kld::KldReport;
use crate::eval::{kl_divergence, score_logits_with_progress, tokenize_eval_text, PplOptions};
use crate::formats::gguf::{Metadata, Value};
use crate::formats::{GgufSource, TensorSource};
use crate::quant::{self, GgmlType};
use crate::runtime::forward::CausalLm;

/// A key present in one file only.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvEntry {
    /// The metadata key.
    pub key: String,
    /// The value as JSON; arrays longer than 16 as `{"type", "len", "sha256"}`.
    pub value: Json,
}

/// A key whose value differs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvChange {
    /// The metadata key.
    pub key: String,
    /// Its value in A (as [`KvEntry::value`]).
    pub a: Json,
    /// Its value in B.
    pub b: Json,
}

/// The metadata diff of B against A.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KvDiff {
    /// Keys only in B, in B's order.
    pub added: Vec<KvEntry>,
    /// Keys only in A, in A's order.
    pub removed: Vec<KvEntry>,
    /// Keys in both with different values (or types), in A's order.
    pub changed: Vec<KvChange>,
}

/// One tensor side by side; the `_a` or `_b` fields are `None` when the tensor is missing
/// there, and the errors are `None` unless both have the same shape and a decodable type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorComparison {
    /// GGUF tensor name.
    pub name: String,
    /// ggml type name in A.
    pub type_a: Option<String>,
    /// ggml type name in B.
    pub type_b: Option<String>,
    /// Shape in A, ggml order (ne[0] first).
    pub shape_a: Option<Vec<u64>>,
    /// Shape in B, ggml order.
    pub shape_b: Option<Vec<u64>>,
    /// sqrt(Σ(b−a)² / Σa²); 0 when identical.
    pub rel_rmse: Option<f64>,
    /// max |b − a|.
    pub max_abs: Option<f64>,
    /// Why the errors are missing, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Errors pooled over every tensor of one kind (the name without `blk.N.`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindSummary {
    /// The tensor name without `blk.N.`, e.g. `attn_q.weight`.
    pub kind: String,
    /// Tensors of this kind compared.
    pub count: usize,
    /// Elements over those tensors.
    pub elements: u64,
    /// sqrt(ΣΣ(b−a)² / ΣΣa²) over the kind's tensors.
    pub rel_rmse: f64,
    /// The largest per-tensor relative RMSE of the kind.
    pub worst_rel_rmse: f64,
    /// The largest |b − a| of the kind.
    pub max_abs: f64,
}

/// Perplexity of both models and KL divergence of B against A on the same tokens.
#[derive(Clone, Debug, Serialize)]
pub struct EvalComparison {
    /// The evaluation text.
    pub text: PathBuf,
    /// Tokens per chunk (`-c`).
    pub n_ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens of the text (A's vocabulary).
    pub tokens: usize,
    /// Perplexity of A.
    pub ppl_a: f64,
    /// ± of PPL(A), as llama-perplexity estimates it.
    pub ppl_a_uncertainty: f64,
    /// Perplexity of B.
    pub ppl_b: f64,
    /// ± of PPL(B).
    pub ppl_b_uncertainty: f64,
    /// llama-perplexity's `--kl-divergence` statistics with A as the base.
    pub kld: KldReport,
}

/// Everything `compare` found.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// The reference model.
    pub a: PathBuf,
    /// The model measured against A.
    pub b: PathBuf,
    /// Metadata diff of B against A.
    pub kv: KvDiff,
    /// A's tensors in A's order, then those only in B.
    pub tensors: Vec<TensorComparison>,
    /// Per tensor kind, in order of first appearance.
    pub kinds: Vec<KindSummary>,
    /// Relative RMSE pooled over every compared tensor (large tensors weigh more).
    pub overall_rel_rmse: f64,
    /// With `--eval`: perplexity and KL divergence.
    pub eval: Option<EvalComparison>,
}

/// Progress of a comparison, for a front end to render.
#[derive(Clone, Copy, Debug)]
pub enum CompareEvent<'a> {
    /// Tensor `index` of `total` is about to be compared.
    Tensor {
        /// GGUF tensor name.
        name: &'a str,
        /// 0-based position in A.
        index: usize,
        /// A's tensor count.
        total: usize,
    },
    /// Evaluation chunk `done` of `total` finished for model `model` ('A' or 'B').
    Chunk {
        /// 'A' or 'B'.
        model: char,
        /// Chunks done.
        done: usize,
        /// Chunks in all.
        total: usize,
    },
}

/// Open a model as a tensor source: a Hugging Face directory converted at F32, else a GGUF file.
fn open_source(path: &Path) -> Result<Box<dyn TensorSource>, InspectError> {
    let open_err = |what: String| InspectError::Open {
        path: path.to_path_buf(),
        what,
    };
    if path.is_dir() {
        let hf = HfModel::open(
            path,
            &HfOptions {
                outtype: OutType::F32,
                model_name: None,
            },
        )
        .map_err(|e| open_err(e.to_string()))?;
        Ok(Box::new(hf))
    } else {
        if !path.exists() {
            return Err(InspectError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let g = GgufSource::open(path).map_err(|e| open_err(e.to_string()))?;
        Ok(Box::new(g))
    }
}

/// A metadata value as JSON; long arrays summarized (their hash still tells two apart).
pub fn value_json(v: &Value) -> Json {
    fn plain(v: &Value) -> Json {
        match v {
            Value::U8(x) => json!(x),
            Value::I8(x) => json!(x),
            Value::U16(x) => json!(x),
            Value::I16(x) => json!(x),
            Value::U32(x) => json!(x),
            Value::I32(x) => json!(x),
            Value::F32(x) => json!(x),
            Value::Bool(x) => json!(x),
            Value::Str(s) => json!(s),
            Value::U64(x) => json!(x),
            Value::I64(x) => json!(x),
            Value::F64(x) => json!(x),
            Value::Array(_, items) => Json::Array(items.iter().map(plain).collect()),
        }
    }
    match v {
        Value::Array(t, items) if items.len() > 16 => {
            let full = plain(v).to_string();
            let hash = Sha256::digest(full.as_bytes());
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            json!({"type": format!("{t:?}"), "len": items.len(), "sha256": hex})
        }
        _ => plain(v),
    }
}

/// Keys added in B, removed from A, and changed, each in file order.
pub fn diff_metadata(a: &Metadata, b: &Metadata) -> KvDiff {
    let mut d = KvDiff::default();
    for (k, va) in a.iter() {
        match b.get(k) {
            None => d.removed.push(KvEntry {
                key: k.to_string(),
                value: value_json(va),
            }),
            Some(vb) if vb != va => d.changed.push(KvChange {
                key: k.to_string(),
                a: value_json(va),
                b: value_json(vb),
            }),
            Some(_) => {}
        }
    }
    for (k, vb) in b.iter() {
        if a.get(k).is_none() {
            d.added.push(KvEntry {
                key: k.to_string(),
                value: value_json(vb),
            });
        }
    }
    d
}

/// The kind of a tensor: its name without the `blk.N.` layer prefix.
pub fn tensor_kind(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("blk.") {
        if let Some((n, kind)) = rest.split_once('.') {
            if n.bytes().all(|c| c.is_ascii_digit()) {
                return kind.to_string();
            }
        }
    }
    name.to_string()
}

/// Σ(b−a)², Σa² and max|b−a| over rows of `n_per_row`, per slab in parallel and summed in slab
/// order (so the result does not depend on the thread count).
fn error_sums(
    ta: GgmlType,
    a: &[u8],
    tb: GgmlType,
    b: &[u8],
    n_per_row: usize,
) -> Result<(f64, f64, f64), quant::QuantError> {
    const SLAB_ROWS: usize = 32;
    let ra = quant::row_bytes(ta, n_per_row)?;
    let rb = quant::row_bytes(tb, n_per_row)?;
    let parts: Vec<Result<(f64, f64, f64), quant::QuantError>> = a
        .par_chunks(ra * SLAB_ROWS)
        .zip(b.par_chunks(rb * SLAB_ROWS))
        .map_init(
            || (vec![0f32; n_per_row], vec![0f32; n_per_row]),
            |(xa, xb), (sa, sb)| {
                let (mut num, mut den, mut max) = (0f64, 0f64, 0f64);
                for (rowa, rowb) in sa.chunks(ra).zip(sb.chunks(rb)) {
                    quant::dequantize_rows(ta, rowa, xa)?;
                    quant::dequantize_rows(tb, rowb, xb)?;
                    for (x, y) in xa.iter().zip(xb.iter()) {
                        let (x, y) = (*x as f64, *y as f64);
                        let e = y - x;
                        num += e * e;
                        den += x * x;
                        max = max.max(e.abs());
                    }
                }
                Ok((num, den, max))
            },
        )
        .collect();
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f64);
    for p in parts {
        let (n, d, m) = p?;
        num += n;
        den += d;
        max = max.max(m);
    }
    Ok((num, den, max))
}

fn ratio(num: f64, den: f64) -> f64 {
    if num == 0.0 {
        0.0
    } else {
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// Compare model `b` with model `a` tensor by tensor and key by key (no evaluation; see
/// [`compare_eval`]).
pub fn compare(
    a: &Path,
    b: &Path,
    on_event: &mut dyn FnMut(CompareEvent<'_>),
) -> Result<CompareReport, InspectError> {
    let sa = open_source(a)?;
    let sb = open_source(b)?;
    let kv = diff_metadata(sa.metadata(), sb.metadata());
    let tb_index: HashMap<&str, usize> = sb
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let total = sa.tensors().len();
    let mut tensors = Vec::new();
    // kind → (count, elements, num, den, worst, max_abs), kept in first-appearance order.
    let mut kinds: Vec<(String, usize, u64, f64, f64, f64, f64)> = Vec::new();
    let mut kind_pos: BTreeMap<String, usize> = BTreeMap::new();
    let (mut num_all, mut den_all) = (0f64, 0f64);
    for (ia, ta) in sa.tensors().iter().enumerate() {
        on_event(CompareEvent::Tensor {
            name: &ta.name,
            index: ia,
            total,
        });
        let mut row = TensorComparison {
            name: ta.name.clone(),
            type_a: Some(ta.ty.name().to_string()),
            type_b: None,
            shape_a: Some(ta.ne.clone()),
            shape_b: None,
            rel_rmse: None,
            max_abs: None,
            note: None,
        };
        let Some(&ib) = tb_index.get(ta.name.as_str()) else {
            row.note = Some("only in A".into());
            tensors.push(row);
            continue;
        };
        let tb = &sb.tensors()[ib];
        row.type_b = Some(tb.ty.name().to_string());
        row.shape_b = Some(tb.ne.clone());
        if ta.ne != tb.ne {
            row.note = Some("shapes differ".into());
        } else if let Some(missing) = [ta.ty, tb.ty]
            .into_iter()
            .find(|t| quant::dequantizer(*t).is_none())
        {
            row.note = Some(format!("{missing} values cannot be decoded"));
        } else {
            let tensor_err = |side: &Path, what: String| InspectError::Tensor {
                path: side.to_path_buf(),
                tensor: ta.name.clone(),
                what,
            };
            let bytes_a: Cow<[u8]> = sa
                .tensor_bytes(ia)
                .map_err(|e| tensor_err(a, e.to_string()))?;
            let bytes_b: Cow<[u8]> = sb
                .tensor_bytes(ib)
                .map_err(|e| tensor_err(b, e.to_string()))?;
            let (num, den, max) = error_sums(ta.ty, &bytes_a, tb.ty, &bytes_b, ta.ne[0] as usize)
                .map_err(|e| tensor_err(b, e.to_string()))?;
            drop(bytes_a);
            drop(bytes_b);
            sa.release(ia);
            sb.release(ib);
            let r = ratio(num, den);
            row.rel_rmse = Some(r);
            row.max_abs = Some(max);
            num_all += num;
            den_all += den;
            let kind = tensor_kind(&ta.name);
            let pos = *kind_pos.entry(kind.clone()).or_insert_with(|| {
                kinds.push((kind, 0, 0, 0.0, 0.0, 0.0, 0.0));
                kinds.len() - 1
            });
            let k = &mut kinds[pos];
            k.1 += 1;
            k.2 += ta.ne.iter().product::<u64>();
            k.3 += num;
            k.4 += den;
            k.5 = k.5.max(r);
            k.6 = k.6.max(max);
        }
        tensors.push(row);
    }
    let names_a: std::collections::HashSet<&str> =
        sa.tensors().iter().map(|t| t.name.as_str()).collect();
    for tb in sb.tensors() {
        if !names_a.contains(tb.name.as_str()) {
            tensors.push(TensorComparison {
                name: tb.name.clone(),
                type_a: None,
                type_b: Some(tb.ty.name().to_string()),
                shape_a: None,
                shape_b: Some(tb.ne.clone()),
                rel_rmse: None,
                max_abs: None,
                note: Some("only in B".into()),
            });
        }
    }
    let kinds = kinds
        .into_iter()
        .map(
            |(kind, count, elements, num, den, worst, max_abs)| KindSummary {
                kind,
                count,
                elements,
                rel_rmse: ratio(num, den),
                worst_rel_rmse: worst,
                max_abs,
            },
        )
        .collect();
    Ok(CompareReport {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        kv,
        tensors,
        kinds,
        overall_rel_rmse: ratio(num_all, den_all),
        eval: None,
    })
}

/// Perplexity of `a` and `b` on `text` (tokenized with A's vocabulary, llama-perplexity's
/// chunking with `opts`) and the KL divergence of B's token distributions against A's.
pub fn compare_eval(
    a: &dyn CausalLm,
    b: &dyn CausalLm,
    text_path: &Path,
    text: &[u8],
    opts: &PplOptions,
    on_event: &mut dyn FnMut(CompareEvent<'_>),
) -> Result<EvalComparison, InspectError> {
    let err = |e: &dyn std::error::Error| InspectError::Eval {
        text: text_path.to_path_buf(),
        what: crate::runtime::error::error_chain_text(e),
    };
    if a.config().n_vocab != b.config().n_vocab {
        return Err(InspectError::Eval {
            text: text_path.to_path_buf(),
            what: format!(
                "the models have different vocabularies ({} and {} tokens)",
                a.config().n_vocab,
                b.config().n_vocab
            ),
        });
    }
    let tokens = tokenize_eval_text(a.metadata(), text, false).map_err(|e| err(&e))?;
    let base = score_logits_with_progress(a, &tokens, opts, &mut |p| {
        on_event(CompareEvent::Chunk {
            model: 'A',
            done: p.done,
            total: p.total,
        })
    })
    .map_err(|e| err(&e))?;
    let test = score_logits_with_progress(b, &tokens, opts, &mut |p| {
        on_event(CompareEvent::Chunk {
            model: 'B',
            done: p.done,
            total: p.total,
        })
    })
    .map_err(|e| err(&e))?;
    let ra = base.perplexity();
    let rb = test.perplexity();
    let kld = kl_divergence(&base, &test).map_err(|e| err(&e))?;
    Ok(EvalComparison {
        text: text_path.to_path_buf(),
        n_ctx: opts.n_ctx,
        chunks: base.n_chunks,
        tokens: tokens.len(),
        ppl_a: ra.ppl,
        ppl_a_uncertainty: ra.ppl_uncertainty,
        ppl_b: rb.ppl,
        ppl_b_uncertainty: rb.ppl_uncertainty,
        kld,
    })
}
