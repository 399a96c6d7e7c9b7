//! The one synthetic-model builder: safetensors checkpoints (Hugging Face layout) and PEFT
//! adapters of any llama shape, and GGUF llamas from [`SyntheticLlama`] variants, written on the
//! fly from a seed; plus the LoRA merge contract as a plain loop (the oracle the CPU and GPU
//! kernels are checked against).

use std::path::{Path, PathBuf};

use qforge::formats::gguf::{GgufFile, GgufWriter, Metadata};
use qforge::quant::GgmlType;

use qforge::runtime::synthetic::SyntheticLlama;

use super::rng::Rng;

use qforge::formats::safetensors::{Dtype, SafetensorsWriter};
use qforge::quant::{f32_to_bf16, f32_to_f16};

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

/// `v` rounded to `dtype` as little-endian bytes.
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

/// A safetensors file of `tensors`, in order.
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

/// A PEFT adapter_config.json of rank `r` on `targets`.
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
    /// tiny-llama's vocabulary size.
    pub const VOCAB: usize = 512;

    /// Hidden size per attention head.
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

/// Write `s` as GGUF, optionally without output.weight (tied embeddings) and with a
/// rope_freqs.weight tensor (llama3 frequency factors).
pub fn write_llama_variant(
    s: &SyntheticLlama,
    path: &Path,
    tied: bool,
    rope_freqs: Option<&[f32]>,
) {
    let mut infos = Vec::new();
    let mut datas = Vec::new();
    for (i, (name, ne)) in s.tensors().into_iter().enumerate() {
        if tied && name == "output.weight" {
            continue;
        }
        let mut vals = s.values(i, ne.iter().product::<u64>() as usize);
        // Sharper attention than the generator's 0.02-scale weights give, so that positions
        // (RoPE) visibly move the logits.
        if name.contains("attn_q") || name.contains("attn_k") {
            vals.iter_mut().for_each(|v| *v *= 8.0);
        }
        let ty = if ne.len() == 1 {
            qforge::quant::GgmlType::F32
        } else {
            s.weight_type
        };
        let bytes: Vec<u8> = match ty {
            qforge::quant::GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => vals
                .iter()
                .flat_map(|v| qforge::quant::f32_to_f16(*v).to_le_bytes())
                .collect(),
        };
        infos.push((name, ty, ne));
        datas.push(bytes);
    }
    if let Some(ff) = rope_freqs {
        infos.push((
            "rope_freqs.weight".into(),
            qforge::quant::GgmlType::F32,
            vec![ff.len() as u64],
        ));
        datas.push(ff.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let mut md = s.metadata();
    md.set(
        "llama.rope.freq_base",
        qforge::formats::gguf::Value::F32(500000.0),
    );
    let mut w = qforge::formats::gguf::GgufWriter::create(path, &md, &infos).unwrap();
    for d in &datas {
        w.write_tensor(d).unwrap();
    }
    w.finish().unwrap();
}

/// A synthetic llama (random weights) with tiny-llama's SentencePiece vocabulary, so that
/// real text tokenizes.
pub fn llama_with_tiny_llama_vocab(dir: &Path) -> PathBuf {
    let m = SyntheticLlama {
        n_layer: 2,
        n_embd: 256,
        n_ff: 512,
        n_head: 4,
        n_head_kv: 2,
        n_vocab: 512,
        weight_type: GgmlType::F16,
        seed: 5,
    };
    let raw = dir.join("synth-raw.gguf");
    m.write_gguf(&raw).unwrap();
    let donor = GgufFile::open(super::golden("tiny-llama.f16.gguf")).unwrap();
    let path = dir.join("synth.f16.gguf");
    graft_vocab(&raw, &donor.metadata, &path);
    std::fs::remove_file(raw).ok();
    path
}

/// Copy `src` to `out` with its tokenizer.* keys replaced by `donor`'s.
pub fn graft_vocab(src: &Path, donor: &Metadata, out: &Path) {
    let f = GgufFile::open(src).unwrap();
    let mut md = f.metadata.clone();
    md.retain(|k| !k.starts_with("tokenizer."));
    for (k, v) in donor.iter() {
        if k.starts_with("tokenizer.") {
            md.set(k, v.clone());
        }
    }
    let infos: Vec<(String, GgmlType, Vec<u64>)> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let mut w = GgufWriter::create(out, &md, &infos).unwrap();
    for t in &f.tensors {
        w.write_tensor(f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
}

/// `n_words` words drawn from a small word list (seeded), as evaluation text.
pub fn pseudo_text(n_words: usize) -> String {
    let words = [
        "the", "ship", "lamp", "water", "ledger", "bread", "gas", "page", "story",
    ];
    let mut rng = Rng::new(3);
    (0..n_words)
        .map(|_| words[(rng.next_u64() % words.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}
