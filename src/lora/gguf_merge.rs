//! Merge GGUF LoRA adapters into a GGUF base model, as `llama-export-lora` does (llama.cpp
//! 0c1e57098).
//!
//! Layout and keys reproduce export-lora: every KV pair of the base in order, then
//! `general.file_type` set to 1 (MOSTLY_F16, moved to the end); tensors sorted by name (its
//! `std::map` order); a merged tensor is F32 if the base tensor was F32, else F16; every other
//! tensor is copied with its type and bytes.
//!
//! The arithmetic is qforge's contract (see [`super::merge`]): the base tensor dequantized to
//! f32, each adapter's B·A summed over the rank in order without FMA, scaled by export-lora's
//! f32 `SCALE · alpha / r` (`SCALE` when alpha is 0), added in adapter order, rounded once.
//! llama.cpp's own matmul sums in its build's order (FMA, SIMD trees), so its output may differ
//! from ours in the last bit of some F16 elements.
//!
//! Where export-lora is silent or undefined, qforge refuses instead: an adapter tensor that
//! matches no base tensor, shapes that do not fit, one factor without the other, a non-finite
//! result. Adapters may cover different subsets of the base (export-lora requires equal sets);
//! tensors other than `.lora_a` / `.lora_b` (mergekit norms) are ignored, as llama.cpp does, and
//! listed in the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::formats::gguf::{trim_dims, GgufFile, GgufWriter, Metadata, TensorInfo, Value};
use crate::quant::{self, GgmlType};

use super::merge::{transpose, LowRankUpdate, MergeDevice};
use super::{thread_pool, LoraError, MergeOptions};

/// f32 values merged per slab: 16 Mi elements, 64 MiB.
const SLAB_ELEMENTS: usize = 1 << 24;

/// One GGUF adapter to merge, with the user's scale (export-lora's `--lora-scaled FILE:SCALE`).
#[derive(Clone, Debug, PartialEq)]
pub struct GgufAdapterSpec {
    /// The GGUF LoRA adapter file.
    pub path: PathBuf,
    /// Multiplies the adapter's own `adapter.lora.alpha`/rank scale.
    pub scale: f32,
}

impl GgufAdapterSpec {
    /// An adapter spec for `path` at `scale`.
    pub fn new(path: impl Into<PathBuf>, scale: f32) -> GgufAdapterSpec {
        GgufAdapterSpec {
            path: path.into(),
            scale,
        }
    }

    /// Parse `FILE[:SCALE]` (the scale only if the text after the last `:` is a number).
    pub fn parse(spec: &str) -> Result<GgufAdapterSpec, LoraError> {
        let a = super::AdapterSpec::parse(spec)?;
        Ok(GgufAdapterSpec::new(a.dir, a.scale))
    }
}

impl FromStr for GgufAdapterSpec {
    type Err = LoraError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GgufAdapterSpec::parse(s)
    }
}

/// What a GGUF merge did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufMergeReport {
    /// Tensors that received at least one LoRA update.
    pub merged: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
    /// Adapter tensors that are not LoRA factors and were ignored, as `adapter: tensor`.
    pub ignored: Vec<String>,
}

/// One opened adapter.
struct Adapter {
    file: GgufFile,
    alpha: f32,
    scale: f32,
}

/// How the factors of one (adapter, base tensor) pair combine.
struct Pair<'a> {
    adapter: usize,
    a: &'a TensorInfo,
    b: &'a TensorInfo,
    /// llama.cpp multiplies the token embedding's factors the other way round.
    embedding: bool,
}

/// Merge `adapters` (in order) into the GGUF model `base`, writing `out` (temp file + rename).
pub fn merge_lora_gguf(
    base: &Path,
    adapters: &[GgufAdapterSpec],
    out: &Path,
    options: &MergeOptions,
) -> Result<GgufMergeReport, LoraError> {
    let base_file = GgufFile::open(base)?;
    if base_file.metadata.get("split.count").is_some() {
        return Err(LoraError::NotSupported {
            path: base.to_path_buf(),
            what: "merging into a split GGUF model".into(),
        });
    }
    let base_arch = base_file
        .metadata
        .get_str("general.architecture")
        .unwrap_or("")
        .to_string();
    let mut opened = Vec::with_capacity(adapters.len());
    for spec in adapters {
        let file = GgufFile::open(&spec.path)?;
        let bad = |what: String| LoraError::BadGgufAdapter {
            path: spec.path.clone(),
            what,
        };
        let md = &file.metadata;
        let general_type = md.get_str("general.type").unwrap_or("");
        if general_type != "adapter" {
            return Err(bad(format!(
                "general.type is '{general_type}', expected 'adapter'"
            )));
        }
        let adapter_type = md.get_str("adapter.type").unwrap_or("");
        if adapter_type != "lora" {
            return Err(bad(format!(
                "adapter.type is '{adapter_type}', expected 'lora'"
            )));
        }
        let arch = md.get_str("general.architecture").unwrap_or("");
        if arch != base_arch {
            return Err(bad(format!(
                "adapter architecture '{arch}' differs from the base model's '{base_arch}'"
            )));
        }
        let alpha = match md.get("adapter.lora.alpha") {
            None => 0.0,
            Some(Value::F32(a)) if a.is_finite() => *a,
            Some(other) => return Err(bad(format!("adapter.lora.alpha is {other:?}"))),
        };
        opened.push(Adapter {
            file,
            alpha,
            scale: spec.scale,
        });
    }

    let mut report = GgufMergeReport::default();
    let mut pairs: BTreeMap<&str, Vec<Pair>> = BTreeMap::new();
    for (ai, ad) in opened.iter().enumerate() {
        let path = &adapters[ai].path;
        let mismatch = |tensor: &str, what: String| LoraError::AdapterMismatch {
            path: path.clone(),
            tensor: tensor.to_string(),
            what,
        };
        for t in &ad.file.tensors {
            let (base_name, is_a) = if let Some(n) = t.name.strip_suffix(".lora_a") {
                (n, true)
            } else if let Some(n) = t.name.strip_suffix(".lora_b") {
                (n, false)
            } else {
                report
                    .ignored
                    .push(format!("{}: {}", path.display(), t.name));
                continue;
            };
            let Some(w) = base_file.tensor(base_name) else {
                return Err(mismatch(
                    &t.name,
                    format!("the base model has no tensor '{base_name}'"),
                ));
            };
            let partner_name = format!("{base_name}.{}", if is_a { "lora_b" } else { "lora_a" });
            let Some(partner) = ad.file.tensor(&partner_name) else {
                return Err(LoraError::BadGgufAdapter {
                    path: path.clone(),
                    what: format!("tensor '{}' has no partner '{partner_name}'", t.name),
                });
            };
            if !is_a {
                continue; // each pair is recorded once, from its lora_a
            }
            let (a, b) = (t, partner);
            for f in [a, b] {
                if quant::dequantizer(f.ty).is_none() {
                    return Err(LoraError::UnsupportedDtype {
                        path: path.clone(),
                        tensor: f.name.clone(),
                        dtype: f.ty.name().to_string(),
                    });
                }
            }
            let embedding = base_name.starts_with("token_embd");
            let (w_ne, a_ne, b_ne) = (dims2(&w.ne), dims2(&a.ne), dims2(&b.ne));
            let fits = match (w_ne, a_ne, b_ne) {
                // a: [r, vocab], b: [r, hidden], W: [hidden, vocab]
                (Some(w), Some(a), Some(b)) if embedding => {
                    a[0] == b[0] && a[1] == w[1] && b[1] == w[0]
                }
                // a: [in, r], b: [r, out], W: [in, out]
                (Some(w), Some(a), Some(b)) => a[1] == b[0] && a[0] == w[0] && b[1] == w[1],
                _ => false,
            };
            if !fits {
                return Err(mismatch(
                    &t.name,
                    format!(
                        "lora_a {:?} and lora_b {:?} do not fit base tensor '{base_name}' {:?}",
                        a.ne, b.ne, w.ne
                    ),
                ));
            }
            if quant::dequantizer(w.ty).is_none() {
                return Err(LoraError::UnsupportedDtype {
                    path: base.to_path_buf(),
                    tensor: w.name.clone(),
                    dtype: w.ty.name().to_string(),
                });
            }
            pairs.entry(w.name.as_str()).or_default().push(Pair {
                adapter: ai,
                a,
                b,
                embedding,
            });
        }
    }

    let mut md: Metadata = base_file.metadata.clone();
    md.set("general.file_type", Value::U32(1));
    let mut order: Vec<&TensorInfo> = base_file.tensors.iter().collect();
    order.sort_by(|x, y| x.name.cmp(&y.name));
    let infos: Vec<(String, GgmlType, Vec<u64>)> = order
        .iter()
        .map(|t| {
            let ty = match (pairs.contains_key(t.name.as_str()), t.ty) {
                (false, ty) => ty,
                (true, GgmlType::F32) => GgmlType::F32,
                (true, _) => GgmlType::F16,
            };
            (t.name.clone(), ty, trim_dims(&t.ne))
        })
        .collect();

    let pool = thread_pool(options.threads)?;
    let mut writer = GgufWriter::create(out, &md, &infos)?;
    for (t, (_, out_ty, _)) in order.iter().zip(&infos) {
        match pairs.get(t.name.as_str()) {
            None => {
                writer.write_tensor(base_file.tensor_data(t))?;
                report.copied += 1;
            }
            Some(ps) => {
                pool.install(|| {
                    write_merged(
                        &base_file,
                        t,
                        *out_ty,
                        ps,
                        &opened,
                        adapters,
                        out,
                        &options.device,
                        &mut writer,
                    )
                })?;
                report.merged += 1;
            }
        }
    }
    writer.finish()?;
    Ok(report)
}

/// `ne` as a matrix [ne0, ne1], if every dimension past the second is 1.
fn dims2(ne: &[u64]) -> Option<[u64; 2]> {
    match ne {
        [n0] => Some([*n0, 1]),
        [n0, n1, rest @ ..] if rest.iter().all(|&d| d == 1) => Some([*n0, *n1]),
        _ => None,
    }
}

/// All of a 2-D factor tensor as f32.
fn factor_f32(file: &GgufFile, t: &TensorInfo, path: &Path) -> Result<Vec<f32>, LoraError> {
    let mut v = vec![0f32; t.n_elements() as usize];
    quant::dequantize_rows(t.ty, file.tensor_data(t), &mut v).map_err(|source| {
        LoraError::Quant {
            path: path.to_path_buf(),
            tensor: t.name.clone(),
            source,
        }
    })?;
    Ok(v)
}

/// The update of one pair in the kernel's orientation (W rows = ne[1], columns = ne[0]).
fn update_for(pair: &Pair, ad: &Adapter, path: &Path) -> Result<LowRankUpdate, LoraError> {
    let a = factor_f32(&ad.file, pair.a, path)?;
    let b = factor_f32(&ad.file, pair.b, path)?;
    let rank = pair.b.ne[0] as usize; // export-lora's rank: lora_b's ne[0]
                                      // export-lora: `alpha ? scale * alpha / rank : scale`, in f32.
    let scale = if ad.alpha != 0.0 {
        ad.scale * ad.alpha / rank as f32
    } else {
        ad.scale
    };
    Ok(if pair.embedding {
        // delta[v][h] = Σ_k a[v][k]·b[h][k]: P = a as stored [vocab, r], Q = bᵀ [r, hidden].
        let hidden = dims2(&pair.b.ne).expect("checked")[1] as usize;
        LowRankUpdate {
            p: a,
            q: transpose(&b, hidden),
            rank: pair.a.ne[0] as usize,
            scale,
        }
    } else {
        // delta[o][i] = Σ_k b[o][k]·a[k][i]: b is stored [out, r], a [r, in].
        LowRankUpdate::out_in(b, a, rank, scale)
    })
}

#[allow(clippy::too_many_arguments)]
fn write_merged(
    base: &GgufFile,
    t: &TensorInfo,
    out_ty: GgmlType,
    pairs: &[Pair],
    adapters: &[Adapter],
    specs: &[GgufAdapterSpec],
    out: &Path,
    device: &MergeDevice,
    writer: &mut GgufWriter,
) -> Result<(), LoraError> {
    let updates = pairs
        .iter()
        .map(|p| update_for(p, &adapters[p.adapter], &specs[p.adapter].path))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&LowRankUpdate> = updates.iter().collect();
    let cols = t.ne[0] as usize;
    let rows = t.n_rows() as usize;
    let row_in = quant::row_bytes(t.ty, cols).expect("checked on open");
    let row_out = out_ty.type_size() * cols;
    let data = base.tensor_data(t);
    let slab_rows = (SLAB_ELEMENTS / cols.max(1)).clamp(1, rows.max(1));
    let mut vals = vec![0f32; slab_rows * cols];
    let mut bytes = vec![0u8; slab_rows * row_out];
    let mut row = 0;
    while row < rows {
        let n = slab_rows.min(rows - row);
        let v = &mut vals[..n * cols];
        quant::dequantize_rows(t.ty, &data[row * row_in..(row + n) * row_in], v).map_err(
            |source| LoraError::Quant {
                path: base.path().to_path_buf(),
                tensor: t.name.clone(),
                source,
            },
        )?;
        let o = &mut bytes[..n * row_out];
        device
            .merge_rounded(out_ty, v, cols, row, &refs, o)
            .map_err(|e| e.into_lora(out, &t.name, out_ty, row * cols))?;
        writer.write_part(o)?;
        row += n;
    }
    writer.end_tensor()?;
    Ok(())
}
