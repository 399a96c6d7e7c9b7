//! What llama.cpp's loader demands of a model file, per GGUF architecture: the hyper-parameter
//! keys it reads as required (with the GGUF type it insists on), and the tensors
//! `load_arch_tensors` creates with their shapes (src/models/llama.cpp, qwen2.cpp, qwen3.cpp and
//! `llama_model_base::load_hparams` / `create_tensor_qkv` in src/llama-model.cpp at 0c1e57098).
//!
//! Only the architectures qforge converts are described: `llama` (Mistral converts as llama),
//! `qwen2`, `qwen3`. The loader fails on a missing required tensor ("missing tensor"), on a
//! shape that differs ("has wrong shape"), and on any tensor it did not create ("wrong number of
//! tensors"), so all three are reported.

use std::collections::BTreeMap;

use crate::formats::gguf::{Metadata, Value, ValueType};

/// The architectures whose loader requirements are known here.
pub const KNOWN_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

/// One thing wrong with a model's keys or tensors, as found by [`check_model`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A metadata key is missing or unusable.
    Key {
        /// The metadata key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor is missing, misshapen, or unexpected.
    Tensor {
        /// The GGUF tensor name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
}

/// A tensor the loader creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTensor {
    /// GGUF name, e.g. `blk.7.ffn_down.weight`.
    pub name: String,
    /// Shape in ggml order (ne[0] first); `None` where a hyper-parameter it depends on is missing.
    pub ne: Option<Vec<u64>>,
    /// The shape in the loader's words, e.g. `[n_ff, n_embd]`.
    pub dims: &'static str,
    /// Whether the loader fails without it (`TENSOR_NOT_REQUIRED` absent).
    pub required: bool,
}

/// The hyper-parameters tensor shapes depend on; `None` when the key is missing or unusable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelDims {
    /// `embedding_length`.
    pub n_embd: Option<u64>,
    /// `block_count`.
    pub n_layer: Option<u64>,
    /// Per-layer head counts (`attention.head_count` may be an array).
    pub n_head: Vec<Option<u64>>,
    /// Per-layer KV head counts (default: the head counts).
    pub n_head_kv: Vec<Option<u64>>,
    /// Per-layer FFN widths.
    pub n_ff: Vec<Option<u64>>,
    /// `attention.key_length`, default n_embd / n_head.
    pub n_embd_head_k: Option<u64>,
    /// `attention.value_length`, default n_embd / n_head.
    pub n_embd_head_v: Option<u64>,
    /// `rope.dimension_count`, default the key head size.
    pub n_rot: Option<u64>,
    /// Vocabulary length (`tokenizer.ggml.tokens`).
    pub n_vocab: Option<u64>,
    /// `expert_count` (0: dense).
    pub n_expert: u64,
}

/// Keys every architecture here requires, with the scalar type llama.cpp's `get_key` insists on.
/// `feed_forward_length` and `attention.head_count` are read as optional by the loader, but
/// without them every FFN and attention tensor has the wrong shape, so they are required here.
fn required_keys(arch: &str) -> Vec<(String, ValueType)> {
    [
        ("context_length", ValueType::U32),
        ("embedding_length", ValueType::U32),
        ("block_count", ValueType::U32),
        ("feed_forward_length", ValueType::U32),
        ("attention.head_count", ValueType::U32),
        ("attention.layer_norm_rms_epsilon", ValueType::F32),
    ]
    .iter()
    .map(|(k, t)| (format!("{arch}.{k}"), *t))
    .collect()
}

/// Keys the loader reads per layer with `get_key_or_arr`: a U32 scalar or a U32/I32 array of
/// `block_count` entries.
fn is_per_layer(key: &str) -> bool {
    key.ends_with(".feed_forward_length")
        || key.ends_with(".attention.head_count")
        || key.ends_with(".attention.head_count_kv")
}

/// A scalar U32 key; a wrong type is a finding.
fn u32_key(md: &Metadata, key: &str, out: &mut Vec<Finding>) -> Option<u64> {
    match md.get(key)? {
        Value::U32(v) => Some(*v as u64),
        other => {
            out.push(Finding::Key {
                key: key.to_string(),
                message: format!(
                    "has type {:?}, llama.cpp reads it as U32 and refuses other types",
                    other.value_type()
                ),
            });
            None
        }
    }
}

/// A per-layer key: the scalar for every layer, or the array's entries.
fn per_layer_key(
    md: &Metadata,
    key: &str,
    n_layer: Option<u64>,
    out: &mut Vec<Finding>,
) -> Option<Vec<Option<u64>>> {
    let n = n_layer.unwrap_or(1) as usize;
    match md.get(key)? {
        Value::U32(v) => Some(vec![Some(*v as u64); n]),
        Value::Array(ValueType::U32 | ValueType::I32, items) => {
            if n_layer.is_some() && items.len() != n {
                out.push(Finding::Key {
                    key: key.to_string(),
                    message: format!(
                        "array has {} entries, expected block_count = {n}",
                        items.len()
                    ),
                });
                return None;
            }
            Some(items.iter().map(Value::as_u64).collect())
        }
        other => {
            out.push(Finding::Key {
                key: key.to_string(),
                message: format!(
                    "has type {:?}, expected U32 or an array of U32/I32 per layer",
                    other.value_type()
                ),
            });
            None
        }
    }
}

/// Read the hyper-parameters of `arch` from `md`, reporting missing required keys and
/// wrongly typed ones. `n_vocab` is the vocabulary length (`tokenizer.ggml.tokens`), which is
/// what llama.cpp sizes the embedding by.
pub fn model_dims(
    arch: &str,
    md: &Metadata,
    n_vocab: Option<u64>,
    out: &mut Vec<Finding>,
) -> ModelDims {
    for (key, ty) in required_keys(arch) {
        match md.get(&key) {
            None => out.push(Finding::Key {
                key: key.clone(),
                message: "missing: llama.cpp's loader requires it".to_string(),
            }),
            Some(v) if is_per_layer(&key) => {
                let _ = v; // type checked by per_layer_key below
            }
            Some(v) if v.value_type() != ty => out.push(Finding::Key {
                key: key.clone(),
                message: format!(
                    "has type {:?}, llama.cpp reads it as {ty:?} and refuses other types",
                    v.value_type()
                ),
            }),
            Some(_) => {}
        }
    }
    let k = |s: &str| format!("{arch}.{s}");
    let n_embd = if md
        .get(&k("embedding_length"))
        .is_some_and(|v| v.value_type() == ValueType::U32)
    {
        md.get_u64(&k("embedding_length"))
    } else {
        None
    };
    let n_layer = if md
        .get(&k("block_count"))
        .is_some_and(|v| v.value_type() == ValueType::U32)
    {
        md.get_u64(&k("block_count")).filter(|&n| n > 0)
    } else {
        None
    };
    if md.get_u64(&k("block_count")) == Some(0) {
        out.push(Finding::Key {
            key: k("block_count"),
            message: "is 0: a model needs at least one layer".to_string(),
        });
    }
    let layers = n_layer.unwrap_or(0) as usize;
    let n_head = per_layer_key(md, &k("attention.head_count"), n_layer, out)
        .unwrap_or_else(|| vec![None; layers]);
    // head_count_kv defaults to head_count.
    let n_head_kv =
        per_layer_key(md, &k("attention.head_count_kv"), n_layer, out).unwrap_or(n_head.clone());
    let n_ff = per_layer_key(md, &k("feed_forward_length"), n_layer, out)
        .unwrap_or_else(|| vec![None; layers]);
    let head0 = n_head.first().copied().flatten();
    let per_head = match (n_embd, head0) {
        (Some(e), Some(h)) if h > 0 => Some(e / h),
        _ => None,
    };
    let n_embd_head_k = u32_key(md, &k("attention.key_length"), out).or(per_head);
    let n_embd_head_v = u32_key(md, &k("attention.value_length"), out).or(per_head);
    let n_rot = u32_key(md, &k("rope.dimension_count"), out).or(n_embd_head_k);
    if arch == "llama" {
        if let (Some(r), Some(hk)) = (n_rot, n_embd_head_k) {
            if r != hk {
                out.push(Finding::Key {
                    key: k("rope.dimension_count"),
                    message: format!("is {r}, llama.cpp requires n_rot = head size {hk}"),
                });
            }
        }
    }
    let n_expert = u32_key(md, &k("expert_count"), out).unwrap_or(0);
    ModelDims {
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        n_ff,
        n_embd_head_k,
        n_embd_head_v,
        n_rot,
        n_vocab,
        n_expert,
    }
}

fn prod(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a? * b?)
}

fn shape(dims: &[Option<u64>]) -> Option<Vec<u64>> {
    dims.iter().copied().collect()
}

/// The tensors the loader of `arch` creates for a model of dimensions `d`, or `None` for an
/// architecture not in [`KNOWN_ARCHITECTURES`]. The fused `attn_qkv` alternative to separate
/// Q/K/V is not listed: [`check_model`] accepts it in their place.
pub fn expected_tensors(arch: &str, d: &ModelDims) -> Option<Vec<ExpectedTensor>> {
    if !KNOWN_ARCHITECTURES.contains(&arch) {
        return None;
    }
    let mut v = Vec::new();
    let mut push = |name: String, ne: Option<Vec<u64>>, dims: &'static str, required: bool| {
        v.push(ExpectedTensor {
            name,
            ne,
            dims,
            required,
        })
    };
    let (e, nv) = (d.n_embd, d.n_vocab);
    push(
        "token_embd.weight".into(),
        shape(&[e, nv]),
        "[n_embd, n_vocab]",
        true,
    );
    push("output_norm.weight".into(), shape(&[e]), "[n_embd]", true);
    push(
        "output.weight".into(),
        shape(&[e, nv]),
        "[n_embd, n_vocab]",
        false,
    );
    if arch == "qwen2" {
        push("output.bias".into(), shape(&[nv]), "[n_vocab]", false);
    }
    if arch == "llama" {
        // Created for layer 0 (later layers duplicate it); the name has no layer number.
        let half = d.n_rot.map(|r| r / 2);
        push(
            "rope_freqs.weight".into(),
            shape(&[half]),
            "[n_rot/2]",
            false,
        );
    }
    for i in 0..d.n_layer.unwrap_or(0) as usize {
        let b = |s: &str| format!("blk.{i}.{s}");
        let h = d.n_head.get(i).copied().flatten();
        let hkv = d.n_head_kv.get(i).copied().flatten();
        let ff = d.n_ff.get(i).copied().flatten();
        let q = prod(d.n_embd_head_k, h);
        let kgqa = prod(d.n_embd_head_k, hkv);
        let vgqa = prod(d.n_embd_head_v, hkv);
        push(b("attn_norm.weight"), shape(&[e]), "[n_embd]", true);
        // qwen2 sizes Q and the output projection by n_embd, and K by n_embd_v_gqa.
        let (q, kgqa, q_dims, k_dims, o_dims) = match arch {
            "qwen2" => (
                e,
                vgqa,
                "[n_embd, n_embd]",
                "[n_embd, n_embd_gqa]",
                "[n_embd, n_embd]",
            ),
            "qwen3" => (
                q,
                vgqa,
                "[n_embd, n_embd_head_k*n_head]",
                "[n_embd, n_embd_gqa]",
                "[n_embd_head_k*n_head, n_embd]",
            ),
            _ => (
                q,
                kgqa,
                "[n_embd, n_embd_head_k*n_head]",
                "[n_embd, n_embd_k_gqa]",
                "[n_embd_head_k*n_head, n_embd]",
            ),
        };
        push(b("attn_q.weight"), shape(&[e, q]), q_dims, true);
        push(b("attn_k.weight"), shape(&[e, kgqa]), k_dims, true);
        push(
            b("attn_v.weight"),
            shape(&[e, vgqa]),
            "[n_embd, n_embd_v_gqa]",
            true,
        );
        push(b("attn_q.bias"), shape(&[q]), "[n_q]", false);
        push(b("attn_k.bias"), shape(&[kgqa]), "[n_k]", false);
        push(b("attn_v.bias"), shape(&[vgqa]), "[n_v]", false);
        push(b("attn_output.weight"), shape(&[q, e]), o_dims, true);
        if arch == "llama" {
            push(b("attn_output.bias"), shape(&[e]), "[n_embd]", false);
        }
        if arch == "qwen3" {
            push(
                b("attn_k_norm.weight"),
                shape(&[d.n_embd_head_k]),
                "[n_embd_head_k]",
                true,
            );
            push(
                b("attn_q_norm.weight"),
                shape(&[d.n_embd_head_k]),
                "[n_embd_head_k]",
                true,
            );
        }
        push(b("ffn_norm.weight"), shape(&[e]), "[n_embd]", true);
        if arch == "llama" && d.n_expert > 0 {
            let x = Some(d.n_expert);
            push(
                b("ffn_gate_inp.weight"),
                shape(&[e, x]),
                "[n_embd, n_expert]",
                true,
            );
            push(
                b("ffn_gate_exps.weight"),
                shape(&[e, ff, x]),
                "[n_embd, n_ff, n_expert]",
                false,
            );
            push(
                b("ffn_down_exps.weight"),
                shape(&[ff, e, x]),
                "[n_ff, n_embd, n_expert]",
                true,
            );
            push(
                b("ffn_up_exps.weight"),
                shape(&[e, ff, x]),
                "[n_embd, n_ff, n_expert]",
                true,
            );
        } else {
            push(
                b("ffn_gate.weight"),
                shape(&[e, ff]),
                "[n_embd, n_ff]",
                true,
            );
            push(
                b("ffn_down.weight"),
                shape(&[ff, e]),
                "[n_ff, n_embd]",
                true,
            );
            push(b("ffn_up.weight"), shape(&[e, ff]), "[n_embd, n_ff]", true);
            if arch == "llama" {
                push(b("ffn_gate.bias"), shape(&[ff]), "[n_ff]", false);
                push(b("ffn_down.bias"), shape(&[e]), "[n_embd]", false);
                push(b("ffn_up.bias"), shape(&[ff]), "[n_ff]", false);
            }
        }
    }
    Some(v)
}

/// Check the tensors of a model of architecture `arch` (one of [`KNOWN_ARCHITECTURES`])
/// against what llama.cpp's loader creates: every required tensor present with its shape, no
/// optional tensor misshapen, no tensor the loader would not use. `tensors` are (name, ne).
/// Returns `None` for an unknown architecture.
pub fn check_model(
    arch: &str,
    md: &Metadata,
    n_vocab: Option<u64>,
    tensors: &[(String, Vec<u64>)],
) -> Option<Vec<Finding>> {
    if !KNOWN_ARCHITECTURES.contains(&arch) {
        return None;
    }
    let mut out = Vec::new();
    let dims = model_dims(arch, md, n_vocab, &mut out);
    let expected = expected_tensors(arch, &dims)?;
    let present: BTreeMap<&str, &Vec<u64>> =
        tensors.iter().map(|(n, ne)| (n.as_str(), ne)).collect();
    let mut known = std::collections::HashSet::new();
    for t in &expected {
        known.insert(t.name.clone());
        let Some(ne) = present.get(t.name.as_str()) else {
            // A fused attn_qkv stands in for separate Q, K and V (create_tensor_qkv).
            let fused = t
                .name
                .rsplit_once(".attn_")
                .map(|(blk, _)| format!("{blk}.attn_qkv.weight"))
                .filter(|f| present.contains_key(f.as_str()));
            let qkv = [".attn_q.weight", ".attn_k.weight", ".attn_v.weight"];
            if t.required && !(fused.is_some() && qkv.iter().any(|s| t.name.ends_with(s))) {
                out.push(Finding::Tensor {
                    tensor: t.name.clone(),
                    message: format!(
                        "missing: llama.cpp's {arch} loader requires it ({} {})",
                        t.dims,
                        show_shape(t.ne.as_deref())
                    ),
                });
            }
            continue;
        };
        let Some(want) = &t.ne else { continue };
        if *ne != want {
            let vocab_dim = t.dims.contains("n_vocab");
            let message = if vocab_dim && ne.len() == want.len() && ne[0] == want[0] {
                format!(
                    "has {} rows but the vocabulary (tokenizer.ggml.tokens) has {} tokens",
                    ne[1], want[1]
                )
            } else {
                format!(
                    "has shape {}, llama.cpp expects {} {}",
                    show_shape(Some(ne)),
                    t.dims,
                    show_shape(Some(want))
                )
            };
            out.push(Finding::Tensor {
                tensor: t.name.clone(),
                message,
            });
        }
    }
    // Without a layer count no layer tensor is expected; calling them all unexpected would
    // bury the one real problem (the missing key) under a line per tensor.
    let layers_known = dims.n_layer.is_some();
    for (name, _) in tensors {
        if !layers_known && name.starts_with("blk.") {
            continue;
        }
        let fused = name.ends_with(".attn_qkv.weight") || name.ends_with(".attn_qkv.bias");
        let allowed = known.contains(name) || (fused && name.starts_with("blk."));
        if !allowed {
            out.push(Finding::Tensor {
                tensor: name.clone(),
                message: format!(
                    "not a tensor of the {arch} architecture: llama.cpp's loader fails with \"wrong number of tensors\""
                ),
            });
        }
    }
    Some(out)
}

/// `[a, b]` or `[?]` where a dimension is unknown.
fn show_shape(ne: Option<&[u64]>) -> String {
    match ne {
        Some(ne) => format!(
            "[{}]",
            ne.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ),
        None => "[?]".to_string(),
    }
}
