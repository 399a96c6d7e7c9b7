//! Evaluation on the GPU forward pass: perplexity within 0.1% of the CPU's on tiny-llama, the
//! importance matrix collected through the observer within 1e-4 (relative) of the CPU's, and
//! the observer contract itself (same weight names, token counts and widths, in the same
//! order, with the same inputs up to rounding).

use crate::devices::Device;
use crate::support;

use std::path::Path;

use qforge::eval::{collect_imatrix, perplexity, ImatrixOptions, PplOptions};
use qforge::formats::gguf::GgufFile;
use qforge::runtime::forward::{CausalLm, LlamaModel, MatmulObserver};
use qforge::runtime::gpu_forward::GpuLlama;
use qforge::runtime::tokenize_spm::SpmTokenizer;

fn tiny_llama_tokens() -> (LlamaModel, Vec<u32>) {
    let path = support::golden("tiny-llama.f16.gguf");
    let model = LlamaModel::load(&path).unwrap();
    let tok = SpmTokenizer::from_metadata(&GgufFile::open(&path).unwrap().metadata).unwrap();
    let text = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtime_data/ppl_text.txt"),
    )
    .unwrap();
    let tokens = tok.encode(&text, true, false).unwrap();
    (model, tokens)
}

fn ppl_opts() -> PplOptions {
    PplOptions {
        n_ctx: 128,
        n_chunks: Some(4),
        n_ubatch: 64,
    }
}

device_test!(perplexity_on_gpu_within_a_tenth_of_a_percent_of_cpu, gpu);
fn perplexity_on_gpu_within_a_tenth_of_a_percent_of_cpu(device: Device) {
    let ctx = device.gpu();
    let (model, tokens) = tiny_llama_tokens();
    let gpu = GpuLlama::new(&ctx, &model).unwrap();
    let cpu_r = perplexity(&model, &tokens, &ppl_opts()).unwrap();
    let gpu_r = perplexity(&gpu, &tokens, &ppl_opts()).unwrap();
    let rel = (gpu_r.ppl - cpu_r.ppl).abs() / cpu_r.ppl;
    eprintln!(
        "perplexity: CPU {:.6} ({:.2}s), GPU {:.6} ({:.2}s), relative difference {rel:.2e}",
        cpu_r.ppl, cpu_r.seconds, gpu_r.ppl, gpu_r.seconds
    );
    assert_eq!(gpu_r.n_chunks, 4);
    assert_eq!(gpu_r.count, cpu_r.count);
    assert!(rel < 1e-3, "{rel}");
    for (a, b) in gpu_r.chunk_ppl.iter().zip(&cpu_r.chunk_ppl) {
        assert!((a - b).abs() / b < 1e-3, "chunk ppl {a} vs {b}");
    }
}

device_test!(imatrix_on_gpu_within_1e_4_of_cpu, gpu);
fn imatrix_on_gpu_within_1e_4_of_cpu(device: Device) {
    let ctx = device.gpu();
    let (model, tokens) = tiny_llama_tokens();
    let gpu = GpuLlama::new(&ctx, &model).unwrap();
    let opts = ImatrixOptions {
        chunks: ppl_opts(),
        process_output: true,
        dataset: None,
    };
    let cpu_r = collect_imatrix(&model, &tokens, &opts).unwrap();
    let gpu_r = collect_imatrix(&gpu, &tokens, &opts).unwrap();
    let names: Vec<&String> = gpu_r.stats.entries.keys().collect();
    let want: Vec<&String> = cpu_r.stats.entries.keys().collect();
    assert_eq!(names, want);
    // 8 layers × 7 matmuls + output.weight.
    assert_eq!(names.len(), 8 * 7 + 1);
    assert_eq!(gpu_r.stats.chunk_count, cpu_r.stats.chunk_count);
    let mut worst = 0f64;
    for (name, g) in &gpu_r.stats.entries {
        let c = &cpu_r.stats.entries[name];
        assert_eq!(g.counts, c.counts, "{name}");
        assert_eq!(g.values.len(), c.values.len(), "{name}");
        let scale = c.values.iter().fold(0f64, |m, &v| m.max(v as f64));
        for (a, b) in g.values.iter().zip(&c.values) {
            // Relative to the value, with the tensor's largest Σx² as a floor for near-zero
            // columns.
            let d = (*a as f64 - *b as f64).abs() / (*b as f64).abs().max(1e-3 * scale);
            worst = worst.max(d);
        }
    }
    eprintln!("imatrix GPU vs CPU: largest relative difference {worst:.2e}");
    assert!(worst <= 1e-4, "{worst}");
    let rel = (gpu_r.perplexity.ppl - cpu_r.perplexity.ppl).abs() / cpu_r.perplexity.ppl;
    assert!(rel < 1e-3, "{rel}");
}

/// Every observe call: (weight name, n_tokens, n_in, the input).
#[derive(Default)]
struct Recorder(Vec<(String, usize, usize, Vec<f32>)>);

impl MatmulObserver for Recorder {
    fn observe(&mut self, name: &str, input: &[f32], n_tokens: usize, n_in: usize) {
        assert_eq!(input.len(), n_tokens * n_in, "{name}");
        self.0
            .push((name.to_string(), n_tokens, n_in, input.to_vec()));
    }
}

device_test!(observer_sees_what_the_cpu_path_shows, gpu);
fn observer_sees_what_the_cpu_path_shows(device: Device) {
    let ctx = device.gpu();
    let (model, tokens) = tiny_llama_tokens();
    let tokens = &tokens[..40];
    let gpu = GpuLlama::new(&ctx, &model).unwrap();
    let mut cpu_rec = Recorder::default();
    let mut gpu_rec = Recorder::default();
    let cpu_logits = model.eval_sequence(tokens, 16, Some(&mut cpu_rec)).unwrap();
    let gpu_logits = gpu.eval_sequence(tokens, 16, Some(&mut gpu_rec)).unwrap();
    // Three calls (16 + 16 + 8 tokens) × (8 layers × 7 matmuls + the output).
    assert_eq!(cpu_rec.0.len(), 3 * 57);
    assert_eq!(gpu_rec.0.len(), cpu_rec.0.len());
    for ((gn, gt, gi, gx), (cn, ct, ci, cx)) in gpu_rec.0.iter().zip(&cpu_rec.0) {
        assert_eq!((gn, gt, gi), (cn, ct, ci));
        let scale = cx.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = gx
            .iter()
            .zip(cx)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * scale.max(1e-6),
            "{gn}: max |Δ| {diff} of {scale}"
        );
    }
    // Observing does not change the logits.
    let plain = gpu.eval_sequence(tokens, 16, None).unwrap();
    assert!(plain
        .iter()
        .zip(&gpu_logits)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(cpu_logits.len(), gpu_logits.len());
}
