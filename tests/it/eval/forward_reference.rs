//! The f32 llama forward pass against a plain float64 reference written the Hugging Face way:
//! Q/K weights un-permuted back to HF layout and rotate-half RoPE, so the test also checks that
//! the runtime's adjacent-pair RoPE on convert's permuted rows is the same function.

use crate::support;

use std::path::Path;

use qforge::formats::gguf::{GgufFile, Value};
use qforge::quant::{dequantizer, GgmlType};
use qforge::runtime::forward::{KvCache, LlamaModel};
use qforge::runtime::synthetic::SyntheticLlama;

fn small(weight_type: GgmlType) -> SyntheticLlama {
    SyntheticLlama::tiny(weight_type, 7)
}

/// Every tensor of the file as f64, with its ggml shape.
struct RefWeights {
    file: GgufFile,
}

impl RefWeights {
    fn get(&self, name: &str) -> Option<Vec<f64>> {
        let t = self.file.tensor(name)?;
        let n = t.n_elements() as usize;
        let mut out = vec![0f32; n];
        dequantizer(t.ty).unwrap()(self.file.tensor_data(t), &mut out);
        Some(out.into_iter().map(f64::from).collect())
    }
}

/// y = W x for W with `rows` rows of `x.len()` columns.
fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    w.chunks(x.len())
        .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * s * g).collect()
}

/// Undo convert_hf_to_gguf.py's Q/K row permutation: GGUF row 2i+a of a head is HF row
/// a·(d/2)+i.
fn unpermute(w: &[f64], n_head: usize, head_dim: usize, cols: usize) -> Vec<f64> {
    let half = head_dim / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for a in 0..2 {
            for i in 0..half {
                let hf = h * head_dim + a * half + i;
                let gg = h * head_dim + 2 * i + a;
                out[hf * cols..(hf + 1) * cols].copy_from_slice(&w[gg * cols..(gg + 1) * cols]);
            }
        }
    }
    out
}

/// Hugging Face LlamaRotaryEmbedding + apply_rotary_pos_emb on one head.
fn rope_hf(x: &mut [f64], pos: usize, base: f64, freqs: Option<&[f64]>) {
    let d = x.len();
    let half = d / 2;
    for i in 0..half {
        let mut inv = base.powf(-(2.0 * i as f64) / d as f64);
        if let Some(f) = freqs {
            inv /= f[i];
        }
        let th = pos as f64 * inv;
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * th.cos() - b * th.sin();
        x[i + half] = b * th.cos() + a * th.sin();
    }
}

/// `hf_layout` false feeds the GGUF rows to the rotate-half RoPE unchanged: a deliberately
/// wrong pairing, to prove the comparison notices RoPE mistakes.
fn reference_logits(
    path: &Path,
    s: &SyntheticLlama,
    tokens: &[u32],
    hf_layout: bool,
) -> Vec<Vec<f64>> {
    let r = RefWeights {
        file: GgufFile::open(path).unwrap(),
    };
    let (d, nh, nkv) = (s.n_embd as usize, s.n_head as usize, s.n_head_kv as usize);
    let hd = d / nh;
    let eps = 1e-5f32 as f64;
    let base = 500000.0;
    let freqs = r.get("rope_freqs.weight");
    let emb = r.get("token_embd.weight").unwrap();
    let mut hs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| emb[t as usize * d..(t as usize + 1) * d].to_vec())
        .collect();
    for l in 0..s.n_layer {
        let g = |n: &str| r.get(&format!("blk.{l}.{n}.weight")).unwrap();
        let (mut wq, mut wk) = (g("attn_q"), g("attn_k"));
        if hf_layout {
            wq = unpermute(&wq, nh, hd, d);
            wk = unpermute(&wk, nkv, hd, d);
        }
        let (wv, wo) = (g("attn_v"), g("attn_output"));
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        let mut qs = Vec::new();
        for (pos, h) in hs.iter().enumerate() {
            let x = rms_norm(h, &g("attn_norm"), eps);
            let mut q = matvec(&wq, &x);
            let mut k = matvec(&wk, &x);
            for head in q.chunks_mut(hd) {
                rope_hf(head, pos, base, freqs.as_deref());
            }
            for head in k.chunks_mut(hd) {
                rope_hf(head, pos, base, freqs.as_deref());
            }
            qs.push(q);
            ks.push(k);
            vs.push(matvec(&wv, &x));
        }
        for pos in 0..hs.len() {
            let mut att = vec![0.0; d];
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let q = &qs[pos][h * hd..(h + 1) * hd];
                let sc: Vec<f64> = (0..=pos)
                    .map(|j| {
                        let k = &ks[j][kvh * hd..(kvh + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    for c in 0..hd {
                        att[h * hd + c] += p / z * vs[j][kvh * hd + c];
                    }
                }
            }
            let o = matvec(&wo, &att);
            for (a, b) in hs[pos].iter_mut().zip(o) {
                *a += b;
            }
            let x = rms_norm(&hs[pos], &g("ffn_norm"), eps);
            let gate = matvec(&g("ffn_gate"), &x);
            let up = matvec(&g("ffn_up"), &x);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(&g("ffn_down"), &act);
            for (a, b) in hs[pos].iter_mut().zip(down) {
                *a += b;
            }
        }
    }
    let out = r.get("output.weight").unwrap_or(emb);
    hs.iter()
        .map(|h| {
            matvec(
                &out,
                &rms_norm(h, &r.get("output_norm.weight").unwrap(), eps),
            )
        })
        .collect()
}

fn tokens(n: usize, vocab: u64) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 37 + 11) as u64 % vocab) as u32)
        .collect()
}

/// Largest |ours − ref| relative to the largest |ref| of the same token.
fn max_rel_err(ours: &[f32], reference: &[Vec<f64>]) -> f64 {
    let nv = reference[0].len();
    let mut worst: f64 = 0.0;
    for (t, r) in reference.iter().enumerate() {
        let scale = r.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (i, rv) in r.iter().enumerate() {
            worst = worst.max((ours[t * nv + i] as f64 - rv).abs() / scale);
        }
    }
    worst
}

fn check(weight_type: GgmlType, tied: bool, rope_freqs: Option<&[f32]>) {
    let s = small(weight_type);
    let dir = std::env::temp_dir().join(format!(
        "qforge-runtime-fwd-{}-{weight_type:?}-{tied}-{}",
        std::process::id(),
        rope_freqs.is_some()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    support::synthetic::write_llama_variant(&s, &path, tied, rope_freqs);
    let model = LlamaModel::load(&path).unwrap();
    assert_eq!(model.output.is_none(), tied);
    let toks = tokens(24, s.n_vocab);
    let ours = model.forward(&toks).unwrap();
    let reference = reference_logits(&path, &s, &toks, true);
    let err = max_rel_err(&ours, &reference);
    let wrong = max_rel_err(&ours, &reference_logits(&path, &s, &toks, false));
    eprintln!(
        "{weight_type:?} tied={tied} freqs={}: max rel err {err:.3e} (wrong RoPE pairing: {wrong:.3e})",
        rope_freqs.is_some()
    );
    assert!(err < 2e-6, "max relative logit error {err}");
    assert!(
        wrong > 1e-3,
        "the comparison cannot tell RoPE pairings apart ({wrong})"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn logits_match_f64_reference_f32_weights() {
    check(GgmlType::F32, false, None);
}

#[test]
fn logits_match_f64_reference_f16_tied() {
    check(GgmlType::F16, true, None);
}

#[test]
fn logits_match_f64_reference_rope_freq_factors() {
    let ff: Vec<f32> = (0..8).map(|i| 1.0 + i as f32 * 0.75).collect();
    check(GgmlType::F32, false, Some(&ff));
}

#[test]
fn incremental_decoding_and_thread_count_do_not_change_logits() {
    let s = small(GgmlType::F16);
    let dir = std::env::temp_dir().join(format!("qforge-runtime-inc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    s.write_gguf(&path).unwrap();
    let model = LlamaModel::load(&path).unwrap();
    let toks = tokens(20, s.n_vocab);
    let batch = model.forward(&toks).unwrap();

    // Token by token through the KV cache, then in two uneven pieces: the same numbers.
    let mut cache = KvCache::default();
    let mut stepwise = Vec::new();
    for t in &toks {
        stepwise.extend(model.forward_cached(&[*t], &mut cache, None).unwrap());
    }
    assert_eq!(cache.len(), toks.len());
    assert_eq!(stepwise, batch);
    let mut cache = KvCache::default();
    let mut pieces = model.forward_cached(&toks[..7], &mut cache, None).unwrap();
    pieces.extend(model.forward_cached(&toks[7..], &mut cache, None).unwrap());
    assert_eq!(pieces, batch);

    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| model.forward(&toks).unwrap());
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap()
        .install(|| model.forward(&toks).unwrap());
    assert_eq!(one, batch);
    assert_eq!(three, batch);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn refuses_out_of_vocab_tokens_and_other_architectures() {
    let s = small(GgmlType::F16);
    let dir = std::env::temp_dir().join(format!("qforge-runtime-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    s.write_gguf(&path).unwrap();
    let model = LlamaModel::load(&path).unwrap();
    let err = model.forward(&[1, 100]).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");

    let mut md = s.metadata();
    md.set("general.architecture", Value::Str("gpt2".into()));
    let e = qforge::runtime::forward::LlamaConfig::from_metadata(&md)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not supported yet"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
