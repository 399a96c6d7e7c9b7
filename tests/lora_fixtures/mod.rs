//! Small random base models and PEFT adapters written on the fly, plus the merge contract as a
//! plain loop (the oracle the kernel is checked against).
#![allow(dead_code)]

use std::path::Path;

use qforge::formats::safetensors::{Dtype, SafetensorsWriter};
use qforge::quant::{f32_to_bf16, f32_to_f16};

/// splitmix64: deterministic values without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

/// One tensor to write: name, dtype, shape, values (rounded to the dtype when written).
#[derive(Clone)]
pub struct T {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl T {
    pub fn new(name: &str, dtype: Dtype, shape: &[usize], values: Vec<f32>) -> T {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        T {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            values,
        }
    }

    /// The values as the file stores them (after rounding to the dtype), back in f32.
    pub fn stored(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.values.len()];
        qforge::formats::safetensors::floats_to_f32(
            self.dtype,
            &encode(self.dtype, &self.values),
            &mut out,
        );
        out
    }
}

pub fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| f32_to_f16(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| f32_to_bf16(*x).to_le_bytes())
            .collect(),
        other => panic!("fixture dtype {other:?}"),
    }
}

pub fn write_safetensors(path: &Path, tensors: &[T]) {
    let specs: Vec<(String, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
        .collect();
    let mut w = SafetensorsWriter::create(path, &specs, None).unwrap();
    for t in tensors {
        w.write_tensor(&encode(t.dtype, &t.values)).unwrap();
    }
    w.finish().unwrap();
}

/// A llama-shaped base model directory: config.json, tokenizer_config.json, model.safetensors.
pub fn write_base(dir: &Path, config: &serde_json::Value, tensors: &[T]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        "{\"add_bos_token\": true}",
    )
    .unwrap();
    write_safetensors(&dir.join("model.safetensors"), tensors);
}

/// A PEFT adapter directory: adapter_config.json + adapter_model.safetensors.
pub fn write_adapter(dir: &Path, config: &serde_json::Value, tensors: &[T]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    write_safetensors(&dir.join("adapter_model.safetensors"), tensors);
}

pub fn lora_config(r: usize, alpha: f64, targets: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null
    })
}

/// The merge contract written out for one matrix W [out, in] (row-major, values already f32),
/// A [r, in], B [out, r]: returns the merged f32 values before the final rounding.
pub fn contract_merge(
    w: &[f32],
    a: &[f32],
    b: &[f32],
    out: usize,
    inn: usize,
    r: usize,
    scale: f32,
) -> Vec<f32> {
    let mut merged = vec![0f32; out * inn];
    for o in 0..out {
        for i in 0..inn {
            let mut acc = 0.0f32;
            for k in 0..r {
                // A rounded product, then a rounded add.
                let prod = b[o * r + k] * a[k * inn + i];
                acc += prod;
            }
            let delta = scale * acc;
            merged[o * inn + i] = w[o * inn + i] + delta;
        }
    }
    merged
}

/// Every file (recursively) under `dir`, as sorted relative paths.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                for f in list_files(&p) {
                    out.push(format!("{}/{f}", e.file_name().to_string_lossy()));
                }
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// The shape of a generated llama checkpoint (tiny-llama's tokenizer, so vocab stays 512).
#[derive(Clone, Copy, Debug)]
pub struct LlamaDims {
    pub layers: usize,
    pub hidden: usize,
    pub ff: usize,
    pub heads: usize,
    pub kv_heads: usize,
}

impl LlamaDims {
    pub const VOCAB: usize = 512;

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Every projection of one block: (module path without `model.layers.N.`, out, in).
    pub fn projections(&self) -> Vec<(&'static str, usize, usize)> {
        let (h, f, kv) = (self.hidden, self.ff, self.kv_heads * self.head_dim());
        vec![
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", f, h),
            ("mlp.up_proj", f, h),
            ("mlp.down_proj", h, f),
        ]
    }
}

/// A llama checkpoint directory of any size: random weights in `dtype`, tiny-llama's
/// tokenizer files (from `tiny_llama_dir`), a config.json saying `dims`.
pub fn write_llama_checkpoint(
    dir: &Path,
    tiny_llama_dir: &Path,
    dims: LlamaDims,
    dtype: Dtype,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": dims.hidden,
        "intermediate_size": dims.ff,
        "num_hidden_layers": dims.layers,
        "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,
        "head_dim": dims.head_dim(),
        "vocab_size": LlamaDims::VOCAB,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": false,
        "torch_dtype": match dtype { Dtype::BF16 => "bfloat16", Dtype::F16 => "float16", _ => "float32" },
    });
    let mut tensors = vec![
        T::new(
            "model.embed_tokens.weight",
            dtype,
            &[LlamaDims::VOCAB, dims.hidden],
            rng.vec(LlamaDims::VOCAB * dims.hidden, 0.05),
        ),
        T::new(
            "lm_head.weight",
            dtype,
            &[LlamaDims::VOCAB, dims.hidden],
            rng.vec(LlamaDims::VOCAB * dims.hidden, 0.05),
        ),
        T::new(
            "model.norm.weight",
            dtype,
            &[dims.hidden],
            vec![1.0; dims.hidden],
        ),
    ];
    for l in 0..dims.layers {
        for (m, out, inn) in dims.projections() {
            tensors.push(T::new(
                &format!("model.layers.{l}.{m}.weight"),
                dtype,
                &[out, inn],
                rng.vec(out * inn, 0.05),
            ));
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            tensors.push(T::new(
                &format!("model.layers.{l}.{norm}.weight"),
                dtype,
                &[dims.hidden],
                vec![1.0; dims.hidden],
            ));
        }
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    for f in ["tokenizer.model", "tokenizer_config.json"] {
        std::fs::copy(tiny_llama_dir.join(f), dir.join(f)).unwrap();
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors);
}

/// A PEFT adapter of rank `r` (F32 factors, alpha 2r) on every projection of every block.
pub fn write_projection_adapter(dir: &Path, dims: LlamaDims, r: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut tensors = Vec::new();
    for l in 0..dims.layers {
        for (m, out, inn) in dims.projections() {
            let name = format!("base_model.model.model.layers.{l}.{m}");
            tensors.push(T::new(
                &format!("{name}.lora_A.weight"),
                Dtype::F32,
                &[r, inn],
                rng.vec(r * inn, 0.05),
            ));
            tensors.push(T::new(
                &format!("{name}.lora_B.weight"),
                Dtype::F32,
                &[out, r],
                rng.vec(out * r, 0.05),
            ));
        }
    }
    let targets = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    write_adapter(dir, &lora_config(r, (2 * r) as f64, &targets), &tensors);
}
