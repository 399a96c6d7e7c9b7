//! The tensors of an export: GGUF names back to Hugging Face names, values back to the
//! checkpoint's layout (dequantized, Q/K rows un-permuted), and shards laid out so that the
//! converter, which reads shards in name order and each shard's tensors sorted by name, meets
//! them in the GGUF's order.

use std::collections::BTreeMap;
use std::path::Path;

use crate::convert::encode::encode;
use crate::formats::gguf::TensorInfo;
use crate::formats::safetensors::{Dtype, SafetensorsWriter};
use crate::quant::{dequantize_rows, GgmlType};

use super::{ExportDtype, ExportError, ExportEvent, ExportOptions, Meta};

/// The Hugging Face name of a GGUF tensor of the llama/qwen2/qwen3 converters (`None` for names
/// the converter generates, like `rope_freqs.weight`, and names it never writes).
pub fn hf_tensor_name(gguf: &str) -> Option<String> {
    let global = [
        ("token_embd", "model.embed_tokens"),
        ("output_norm", "model.norm"),
        ("output", "lm_head"),
    ];
    let (stem, suffix) = gguf.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    if let Some((_, hf)) = global.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{hf}.{suffix}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (bid, kind) = rest.split_once('.')?;
    let bid: usize = bid.parse().ok()?;
    let hf = match kind {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{bid}.{hf}.{suffix}"))
}

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// Index into the GGUF's tensor list.
    pub gguf_index: usize,
    pub hf_name: String,
    pub dtype: Dtype,
    /// PyTorch shape (outermost first).
    pub shape: Vec<usize>,
    /// Heads of Llama's Q/K permutation to undo, if any.
    pub unpermute_heads: Option<usize>,
}

impl PlannedTensor {
    fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    fn n_bytes(&self) -> usize {
        self.n_elements() * dtype_size(self.dtype)
    }
}

/// The tensors, their shards, and what config.json needs to know of them.
#[derive(Clone, Debug)]
pub struct WeightPlan {
    /// In the GGUF's order.
    pub tensors: Vec<PlannedTensor>,
    /// Each shard: indices into `tensors`.
    pub shards: Vec<Vec<usize>>,
    /// The GGUF holds `output.weight` (else the embeddings are tied).
    pub has_output: bool,
    /// The GGUF holds attention biases.
    pub attention_bias: bool,
    /// The llama3 `rope_freqs` factors, if the GGUF has them.
    pub rope_freqs: Option<Vec<f32>>,
    /// The dtype config.json declares (the first matrix's).
    pub torch_dtype: ExportDtype,
}

fn dtype_size(d: Dtype) -> usize {
    match d {
        Dtype::F32 => 4,
        _ => 2,
    }
}

fn to_dtype(d: ExportDtype) -> Dtype {
    match d {
        ExportDtype::F32 => Dtype::F32,
        ExportDtype::F16 => Dtype::F16,
        ExportDtype::BF16 => Dtype::BF16,
    }
}

fn ggml_of(d: Dtype) -> GgmlType {
    match d {
        Dtype::F32 => GgmlType::F32,
        Dtype::F16 => GgmlType::F16,
        _ => GgmlType::BF16,
    }
}

/// Name, dtype, shape and shard of every tensor.
pub fn plan(meta: &Meta<'_>, arch: &str, opts: &ExportOptions) -> Result<WeightPlan, ExportError> {
    let path = meta.path().to_path_buf();
    let gguf = meta.gguf;
    let n_head = meta.uint(&format!("{arch}.attention.head_count"))?;
    let n_kv = meta.uint(&format!("{arch}.attention.head_count_kv"))?;
    let mut tensors = Vec::new();
    let mut rope_freqs = None;
    let mut torch_dtype = None;
    for (i, t) in gguf.tensors.iter().enumerate() {
        let bad = |what: String| ExportError::Tensor {
            path: path.clone(),
            tensor: t.name.clone(),
            what,
        };
        if t.name == "rope_freqs.weight" {
            if t.ty != GgmlType::F32 {
                return Err(bad(format!("rope_freqs must be F32, is {}", t.ty.name())));
            }
            let bytes = gguf.tensor_data(t);
            rope_freqs = Some(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            );
            continue;
        }
        if t.name.contains("_exps.")
            || t.name.contains("_shexp.")
            || t.name.contains("ffn_gate_inp")
        {
            // Unstacking experts back into per-expert tensors is the converter's MoE step run
            // backwards: not written yet, so refused rather than exported half.
            return Err(bad(
                "exporting mixture-of-experts tensors is not supported yet".into(),
            ));
        }
        let hf_name = hf_tensor_name(&t.name)
            .ok_or_else(|| bad("no Hugging Face name is known for it".into()))?;
        let dtype = match (opts.dtype, t.ty) {
            (Some(d), _) => to_dtype(d),
            (None, GgmlType::F32) => Dtype::F32,
            (None, GgmlType::F16) => Dtype::F16,
            (None, GgmlType::BF16) => Dtype::BF16,
            (None, _) => Dtype::F32,
        };
        if crate::quant::dequantizer(t.ty).is_none() && !matches!(t.ty, GgmlType::F32) {
            return Err(bad(format!("type {} cannot be dequantized", t.ty.name())));
        }
        let shape: Vec<usize> = t.ne.iter().rev().map(|&d| d as usize).collect();
        let unpermute_heads = if arch == "llama" && !shape.is_empty() {
            if t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_q.bias") {
                n_head.map(|h| h as usize)
            } else if t.name.ends_with("attn_k.weight") || t.name.ends_with("attn_k.bias") {
                n_kv.or(n_head).map(|h| h as usize)
            } else {
                None
            }
        } else {
            None
        };
        if let Some(h) = unpermute_heads {
            let rows = shape[0];
            if h == 0 || !rows.is_multiple_of(2 * h) {
                return Err(bad(format!(
                    "{rows} rows cannot be split into {h} heads of two halves"
                )));
            }
        }
        if torch_dtype.is_none() && shape.len() >= 2 {
            torch_dtype = Some(match dtype {
                Dtype::F32 => ExportDtype::F32,
                Dtype::F16 => ExportDtype::F16,
                _ => ExportDtype::BF16,
            });
        }
        tensors.push(PlannedTensor {
            gguf_index: i,
            hf_name,
            dtype,
            shape,
            unpermute_heads,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tensors {
        if !seen.insert(t.hf_name.as_str()) {
            return Err(ExportError::Tensor {
                path: path.clone(),
                tensor: gguf.tensors[t.gguf_index].name.clone(),
                what: format!("a second tensor maps to '{}'", t.hf_name),
            });
        }
    }
    // Shards: a new one wherever the GGUF's order is not ascending by Hugging Face name (the
    // converter sorts each shard), and wherever the size limit is reached.
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut size = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let descends = i > 0 && t.hf_name <= tensors[i - 1].hf_name;
        let full = size > 0 && size + t.n_bytes() as u64 > opts.max_shard_size;
        if shards.is_empty() || descends || full {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().unwrap().push(i);
        size += t.n_bytes() as u64;
    }
    let has_output = gguf.tensors.iter().any(|t| t.name == "output.weight");
    let attention_bias = gguf.tensors.iter().any(|t| t.name.ends_with("attn_q.bias"));
    Ok(WeightPlan {
        tensors,
        shards,
        has_output,
        attention_bias,
        rope_freqs,
        torch_dtype: torch_dtype.unwrap_or(ExportDtype::F32),
    })
}

/// Output row `r` of the converter's permutation came from input row `permuted_source_row(r)`
/// (`LlamaModel.permute`: the two halves of each head interleaved).
fn permuted_source_row(r: usize, rows: usize, heads: usize) -> usize {
    let per_head = rows / heads;
    let half = per_head / 2;
    let (h, within) = (r / per_head, r % per_head);
    let (i, j) = (within / 2, within % 2);
    h * per_head + j * half + i
}

/// The checkpoint bytes of one tensor.
fn tensor_bytes(meta: &Meta<'_>, t: &PlannedTensor) -> Result<Vec<u8>, ExportError> {
    let info: &TensorInfo = &meta.gguf.tensors[t.gguf_index];
    let src = meta.gguf.tensor_data(info);
    let out_ty = ggml_of(t.dtype);
    let n = t.n_elements();
    let row_len = info.ne.first().copied().unwrap_or(1).max(1) as usize;
    let rows = n / row_len;
    // Rows in the GGUF's type, converted to the export dtype.
    let mut converted = if info.ty == out_ty {
        src.to_vec()
    } else {
        let mut f = vec![0f32; n];
        if info.ty == GgmlType::F32 {
            for (o, b) in f.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        } else {
            dequantize_rows(info.ty, src, &mut f).map_err(|e| ExportError::Tensor {
                path: meta.path().to_path_buf(),
                tensor: info.name.clone(),
                what: e.to_string(),
            })?;
        }
        let mut out = vec![0u8; n * dtype_size(t.dtype)];
        encode(out_ty, &f, &mut out);
        out
    };
    if let Some(h) = t.unpermute_heads {
        // GGUF row r holds checkpoint row permuted_source_row(r): put each back.
        let outer = t.shape[0];
        let row_bytes = converted.len() / outer;
        let mut un = vec![0u8; converted.len()];
        for r in 0..outer {
            let s = permuted_source_row(r, outer, h);
            un[s * row_bytes..(s + 1) * row_bytes]
                .copy_from_slice(&converted[r * row_bytes..(r + 1) * row_bytes]);
        }
        converted = un;
    }
    debug_assert_eq!(rows * row_len, n);
    Ok(converted)
}

/// Write the shards (and the index when there is more than one) into `dir`.
pub fn write(
    meta: &Meta<'_>,
    plan: &WeightPlan,
    dir: &Path,
    on_event: &mut dyn FnMut(&ExportEvent),
) -> Result<Vec<String>, ExportError> {
    let n_shards = plan.shards.len();
    let total = plan.tensors.len();
    let mut files = Vec::new();
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0u64;
    let mut done = 0usize;
    for (si, shard) in plan.shards.iter().enumerate() {
        let name = if n_shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", si + 1, n_shards)
        };
        let specs: Vec<(String, Dtype, Vec<usize>)> = shard
            .iter()
            .map(|&i| {
                let t = &plan.tensors[i];
                (t.hf_name.clone(), t.dtype, t.shape.clone())
            })
            .collect();
        let mut meta_strings = BTreeMap::new();
        meta_strings.insert("format".to_string(), "pt".to_string());
        let mut w = SafetensorsWriter::create(dir.join(&name), &specs, Some(&meta_strings))?;
        for &i in shard {
            let t = &plan.tensors[i];
            let bytes = tensor_bytes(meta, t)?;
            w.write_tensor(&bytes)?;
            meta.gguf
                .release_tensor_pages(&meta.gguf.tensors[t.gguf_index]);
            weight_map.insert(t.hf_name.clone(), name.clone());
            total_size += bytes.len() as u64;
            done += 1;
            on_event(&ExportEvent::Tensor {
                name: t.hf_name.clone(),
                index: done,
                total,
            });
        }
        w.finish()?;
        on_event(&ExportEvent::File { name: name.clone() });
        files.push(name);
    }
    if n_shards > 1 {
        let index = serde_json::json!({
            "metadata": {"total_size": total_size},
            "weight_map": weight_map,
        });
        let name = "model.safetensors.index.json";
        std::fs::write(dir.join(name), super::json_bytes(&index)).map_err(|source| {
            ExportError::Io {
                path: dir.join(name),
                source,
            }
        })?;
        on_event(&ExportEvent::File { name: name.into() });
        files.push(name.to_string());
    }
    Ok(files)
}
