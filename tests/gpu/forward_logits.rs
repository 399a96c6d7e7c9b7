//! The GPU forward pass (`gpu::forward::GpuLlama`) against the CPU one (`LlamaModel`): logits on
//! synthetic models (GQA, tied embeddings, llama3 rope_freqs, F32 and F16 weights, contexts
//! longer than one attention block) and on tiny-llama; bit-identical results however the
//! tokens are cut into micro-batches, however the weights are chunked across bindings, and
//! from run to run.
//!
//! Tolerance (GPU vs CPU): max |Δlogit| ≤ 1e-3 · max |logit| over the whole sequence, and the
//! same argmax on at least 95% of positions. The two differ only in rounding: the GPU sums in
//! another order, keeps RMSNorm and softmax sums in f32 where the CPU uses f64, and uses the
//! device's exp.

use crate::devices::Device;
use crate::support;
use crate::support::rng::Rng;

use std::path::PathBuf;

use qforge::gpu::GpuContext;
use qforge::quant::GgmlType;
use qforge::runtime::forward::{CausalLm, LlamaModel, MatmulObserver};
use qforge::runtime::gpu_forward::GpuLlama;
use qforge::runtime::synthetic::SyntheticLlama;

fn tmp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qforge-gpufwd-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small(weight_type: GgmlType, seed: u64) -> SyntheticLlama {
    SyntheticLlama::tiny(weight_type, seed)
}

fn load_variant(tag: &str, s: &SyntheticLlama, tied: bool, ff: Option<&[f32]>) -> LlamaModel {
    let dir = tmp(tag);
    let path = dir.join("m.gguf");
    support::synthetic::write_llama_variant(s, &path, tied, ff);
    let m = LlamaModel::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    m
}

fn pseudo_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

/// Largest |Δ|, largest |logit| and argmax agreement of two tokens × n_vocab arrays.
struct Agreement {
    max_diff: f32,
    max_logit: f32,
    argmax_same: usize,
    rows: usize,
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn agreement(cpu: &[f32], gpu: &[f32], nv: usize) -> Agreement {
    assert_eq!(cpu.len(), gpu.len());
    assert!(gpu.iter().all(|v| v.is_finite()), "non-finite GPU logits");
    let mut a = Agreement {
        max_diff: 0.0,
        max_logit: 0.0,
        argmax_same: 0,
        rows: cpu.len() / nv,
    };
    for (c, g) in cpu.chunks(nv).zip(gpu.chunks(nv)) {
        for (x, y) in c.iter().zip(g) {
            a.max_diff = a.max_diff.max((x - y).abs());
            a.max_logit = a.max_logit.max(x.abs());
        }
        a.argmax_same += (argmax(c) == argmax(g)) as usize;
    }
    a
}

fn assert_close(label: &str, cpu: &[f32], gpu: &[f32], nv: usize) {
    let a = agreement(cpu, gpu, nv);
    eprintln!(
        "{label}: max |Δ| {:.3e} (max |logit| {:.3}, ratio {:.2e}), argmax same on {}/{}",
        a.max_diff,
        a.max_logit,
        a.max_diff / a.max_logit,
        a.argmax_same,
        a.rows
    );
    assert!(a.max_logit > 0.0, "{label}: all-zero logits");
    assert!(
        a.max_diff <= 1e-3 * a.max_logit,
        "{label}: max |Δ| {} > 1e-3 · {}",
        a.max_diff,
        a.max_logit
    );
    assert!(
        a.argmax_same * 100 >= a.rows * 95,
        "{label}: argmax differs on {} of {} positions",
        a.rows - a.argmax_same,
        a.rows
    );
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// CPU vs GPU on one model, fed in micro-batches of 16 (so most positions attend to keys
/// written by earlier calls); then the GPU fed 1, 7 or all tokens per call must give the very
/// same bits.
fn check_model(label: &str, ctx: &GpuContext, model: &LlamaModel, tokens: &[u32]) -> Vec<f32> {
    let nv = model.config.n_vocab;
    let cpu = model.eval_sequence(tokens, 16, None).unwrap();
    let g = GpuLlama::new(ctx, model).unwrap();
    let gpu = g.eval_sequence(tokens, 16, None).unwrap();
    assert_eq!(gpu.len(), tokens.len() * nv);
    assert_close(label, &cpu, &gpu, nv);
    for ub in [1, 7, tokens.len()] {
        let again = g.eval_sequence(tokens, ub, None).unwrap();
        assert!(
            bits(&again) == bits(&gpu),
            "{label}: micro-batches of {ub} changed the GPU logits"
        );
    }
    gpu
}

device_test!(synthetic_gqa_untied_f16, gpu);
fn synthetic_gqa_untied_f16(device: Device) {
    let ctx = device.gpu();
    let model = load_variant("gqa", &small(GgmlType::F16, 7), false, None);
    assert!(model.output.is_some() && model.rope_freqs.is_none());
    assert_eq!((model.config.n_head, model.config.n_head_kv), (4, 2));
    let tokens = pseudo_tokens(48, 100, 1);
    check_model("gqa f16", &ctx, &model, &tokens);
}

device_test!(synthetic_tied_llama3_rope_freqs_f32, gpu);
fn synthetic_tied_llama3_rope_freqs_f32(device: Device) {
    let ctx = device.gpu();
    let ff: Vec<f32> = (0..8).map(|i| 1.0 + i as f32 * 1.5).collect();
    let model = load_variant("tied", &small(GgmlType::F32, 11), true, Some(&ff));
    assert!(model.output.is_none() && model.rope_freqs.is_some());
    let tokens = pseudo_tokens(40, 100, 2);
    let gpu = check_model("tied+rope_freqs f32", &ctx, &model, &tokens);

    // The frequency factors matter: without them the GPU logits move.
    let plain = load_variant("tied-plain", &small(GgmlType::F32, 11), true, None);
    let g = GpuLlama::new(&ctx, &plain).unwrap();
    let other = g.eval_sequence(&tokens, 16, None).unwrap();
    let moved = agreement(&gpu, &other, 100).max_diff;
    assert!(moved > 1e-3, "rope_freqs changed nothing ({moved})");
}

device_test!(synthetic_multi_head_kv_and_long_context, gpu);
fn synthetic_multi_head_kv_and_long_context(device: Device) {
    let ctx = device.gpu();
    // MHA (n_head_kv = n_head), and a context spanning two attention blocks (512 keys each).
    let s = SyntheticLlama {
        n_head_kv: 4,
        ..small(GgmlType::F16, 5)
    };
    let model = load_variant("long", &s, false, None);
    let tokens = pseudo_tokens(600, 100, 3);
    let nv = 100;
    let cpu = model.eval_sequence(&tokens, 256, None).unwrap();
    let g = GpuLlama::new(&ctx, &model).unwrap();
    let gpu = g.eval_sequence(&tokens, 256, None).unwrap();
    assert_close("600 tokens", &cpu, &gpu, nv);
    // The positions past the first block on their own.
    assert_close("positions 512..600", &cpu[512 * nv..], &gpu[512 * nv..], nv);
}

device_test!(weights_chunked_across_bindings_give_the_same_bits, gpu);
fn weights_chunked_across_bindings_give_the_same_bits(device: Device) {
    let ctx = device.gpu();
    // Tied 100 × 64 embedding = 25600 bytes: a 4 KiB cap splits every matrix into chunks of
    // 16 rows (the embedding into 7, the last one partial) and cuts 32-token calls into calls
    // of ≤ 10 tokens (4 KiB of the 96-wide FFN activations).
    let model = load_variant("chunks", &small(GgmlType::F16, 3), true, None);
    let tokens = pseudo_tokens(32, 100, 4);
    let whole = GpuLlama::new(&ctx, &model).unwrap();
    let chunked = GpuLlama::with_binding_cap(&ctx, &model, 4096).unwrap();
    let a = whole.eval_sequence(&tokens, 32, None).unwrap();
    let b = chunked.eval_sequence(&tokens, 32, None).unwrap();
    assert!(bits(&a) == bits(&b), "chunked weights changed the logits");
    let cpu = model.eval_sequence(&tokens, 32, None).unwrap();
    assert_close("chunked", &cpu, &b, 100);

    // An observer must see whole micro-batches, so the same split is refused with one.
    struct Nothing;
    impl MatmulObserver for Nothing {
        fn observe(&mut self, _: &str, _: &[f32], _: usize, _: usize) {}
    }
    let err = chunked
        .eval_sequence(&tokens, 32, Some(&mut Nothing))
        .unwrap_err();
    assert!(err.to_string().contains("micro-batch"), "{err:#}");
    // A KV cache larger than a binding is refused, not truncated.
    let long = pseudo_tokens(200, 100, 5);
    let err = chunked.eval_sequence(&long, 8, None).unwrap_err();
    assert!(err.to_string().contains("KV cache"), "{err:#}");
}

device_test!(repeated_runs_and_fresh_uploads_are_bit_identical, gpu);
fn repeated_runs_and_fresh_uploads_are_bit_identical(device: Device) {
    let ctx = device.gpu();
    let model = load_variant("det", &small(GgmlType::F16, 9), false, None);
    let tokens = pseudo_tokens(64, 100, 6);
    let g1 = GpuLlama::new(&ctx, &model).unwrap();
    let a = g1.eval_sequence(&tokens, 32, None).unwrap();
    let b = g1.eval_sequence(&tokens, 32, None).unwrap();
    let g2 = GpuLlama::new(&ctx, &model).unwrap();
    let c = g2.eval_sequence(&tokens, 32, None).unwrap();
    assert!(bits(&a) == bits(&b), "second run differs");
    assert!(bits(&a) == bits(&c), "second upload differs");
    // A shorter sequence after a longer one reuses the cache buffers: its own logits only.
    let short = g1.eval_sequence(&tokens[..20], 32, None).unwrap();
    assert!(bits(&short) == bits(&a[..20 * 100]));
}

device_test!(bad_tokens_are_refused, gpu);
fn bad_tokens_are_refused(device: Device) {
    let ctx = device.gpu();
    let model = load_variant("bad", &small(GgmlType::F16, 1), false, None);
    let g = GpuLlama::new(&ctx, &model).unwrap();
    let err = g.eval_sequence(&[1, 2, 100], 8, None).unwrap_err();
    assert!(
        err.to_string().contains("outside the vocabulary"),
        "{err:#}"
    );
    assert!(g.eval_sequence(&[], 8, None).unwrap().is_empty());
}

device_test!(tiny_llama_logits_match_cpu, gpu);
fn tiny_llama_logits_match_cpu(device: Device) {
    let ctx = device.gpu();
    let model = LlamaModel::load(support::golden("tiny-llama.f16.gguf")).unwrap();
    let c = &model.config;
    assert!(c.n_head_kv < c.n_head, "tiny-llama is a GQA model");
    let tokens = pseudo_tokens(96, c.n_vocab, 7);
    check_model("tiny-llama", &ctx, &model, &tokens);
}

device_test!(self_check_passes_and_catches_a_wrong_result, gpu);
/// The forward pass's self-check passes on this adapter, and catches a GPU model that does not
/// compute what the CPU reference does (a canary uploaded with other weights).
fn self_check_passes_and_catches_a_wrong_result(device: Device) {
    let ctx = device.gpu();
    GpuLlama::self_check(&ctx).expect("the self-check passes on this adapter");
    let dir = tmp("selfcheck");
    let load = |seed: u64| {
        let path = dir.join(format!("m{seed}.gguf"));
        small(GgmlType::F16, seed).write_gguf(&path).unwrap();
        LlamaModel::load(&path).unwrap()
    };
    let (a, b) = (load(1), load(2));
    GpuLlama::self_check_models(&ctx, &a, &a).expect("a model agrees with itself");
    let err = GpuLlama::self_check_models(&ctx, &a, &b).unwrap_err();
    assert!(format!("{err:#}").contains("on the GPU"), "{err:#}");
    // Off by more than the tolerance in one logit is caught; within it is not.
    let cpu = vec![1.0f32, -2.0, 4.0, 0.5];
    let mut gpu = cpu.clone();
    gpu[1] += 4.0 * 1e-3 * 0.5;
    assert!(qforge::runtime::gpu_forward::compare_logits(&cpu, &gpu).is_ok());
    gpu[1] += 4.0 * 1e-3;
    assert!(qforge::runtime::gpu_forward::compare_logits(&cpu, &gpu).is_err());
    gpu[1] = f32::NAN;
    assert!(qforge::runtime::gpu_forward::compare_logits(&cpu, &gpu).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
