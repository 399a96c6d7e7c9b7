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
