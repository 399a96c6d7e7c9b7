//! Small random llama models, made here so demos, tests and benchmarks need no download.

use std::borrow::Cow;
use std::path::Path;

use crate::formats::gguf::{GgufError, GgufWriter, Metadata, Value};
use crate::formats::tensor_source::{SourceError, SourceTensor, TensorSource};
use crate::quant::{f32_to_f16, GgmlType};

/// Shape of a generated llama model.
#[derive(Clone, Copy, Debug)]
pub struct SyntheticLlama {
    /// Transformer blocks.
    pub n_layer: u32,
    /// Hidden width.
    pub n_embd: u64,
    /// Feed-forward width.
    pub n_ff: u64,
    /// Query heads.
    pub n_head: u32,
    /// Key/value heads.
    pub n_head_kv: u32,
    /// Vocabulary size.
    pub n_vocab: u64,
    /// F32 or F16 for the 2-D weights (norms are always F32, as converters write them).
    pub weight_type: GgmlType,
    /// Seed of every generated value.
    pub seed: u64,
}

impl Default for SyntheticLlama {
    fn default() -> Self {
        SyntheticLlama {
            n_layer: 4,
            n_embd: 256,
            n_ff: 768,
            n_head: 8,
            n_head_kv: 4,
            n_vocab: 1024,
            weight_type: GgmlType::F16,
            seed: 42,
        }
    }
}

impl SyntheticLlama {
    /// The smallest shape that still exercises everything the forward pass does: two layers,
    /// grouped-query attention (4 heads over 2), a vocabulary that is not a multiple of a tile.
    pub fn tiny(weight_type: GgmlType, seed: u64) -> SyntheticLlama {
        SyntheticLlama {
            n_layer: 2,
            n_embd: 64,
            n_ff: 96,
            n_head: 4,
            n_head_kv: 2,
            n_vocab: 100,
            weight_type,
            seed,
        }
    }
}

pub use crate::rng::Rng;

impl SyntheticLlama {
    /// Tensor names and ggml shapes in the order convert_hf_to_gguf.py writes a llama.
    pub fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let hd = self.n_embd / self.n_head as u64;
        let kv = hd * self.n_head_kv as u64;
        let mut v = vec![(
            "token_embd.weight".to_string(),
            vec![self.n_embd, self.n_vocab],
        )];
        for i in 0..self.n_layer {
            let b = |s: &str| format!("blk.{i}.{s}.weight");
            v.push((b("attn_norm"), vec![self.n_embd]));
            v.push((b("ffn_down"), vec![self.n_ff, self.n_embd]));
            v.push((b("ffn_gate"), vec![self.n_embd, self.n_ff]));
            v.push((b("ffn_up"), vec![self.n_embd, self.n_ff]));
            v.push((b("ffn_norm"), vec![self.n_embd]));
            v.push((b("attn_k"), vec![self.n_embd, kv]));
            v.push((b("attn_output"), vec![self.n_embd, self.n_embd]));
            v.push((b("attn_q"), vec![self.n_embd, self.n_embd]));
            v.push((b("attn_v"), vec![self.n_embd, kv]));
        }
        v.push(("output.weight".to_string(), vec![self.n_embd, self.n_vocab]));
        v.push(("output_norm.weight".to_string(), vec![self.n_embd]));
        v
    }

    /// The GGUF metadata a file of this model holds (llama keys and a tokenizer).
    pub fn metadata(&self) -> Metadata {
        let mut md = Metadata::new();
        md.set("general.architecture", Value::Str("llama".into()));
        md.set("general.type", Value::Str("model".into()));
        md.set("general.name", Value::Str("qforge synthetic llama".into()));
        md.set("llama.block_count", Value::U32(self.n_layer));
        md.set("llama.context_length", Value::U32(2048));
        md.set("llama.embedding_length", Value::U32(self.n_embd as u32));
        md.set("llama.feed_forward_length", Value::U32(self.n_ff as u32));
        md.set("llama.attention.head_count", Value::U32(self.n_head));
        md.set("llama.attention.head_count_kv", Value::U32(self.n_head_kv));
        md.set("llama.rope.freq_base", Value::F32(10000.0));
        md.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
        md.set("llama.vocab_size", Value::U32(self.n_vocab as u32));
        md.set(
            "llama.rope.dimension_count",
            Value::U32((self.n_embd / self.n_head as u64) as u32),
        );
        let ftype = if self.weight_type == GgmlType::F32 {
            0
        } else {
            1
        };
        md.set("general.file_type", Value::U32(ftype));
        md.set("tokenizer.ggml.model", Value::Str("llama".into()));
        let tokens = (0..self.n_vocab)
            .map(|i| Value::Str(format!("<t{i}>")))
            .collect();
        md.set(
            "tokenizer.ggml.tokens",
            Value::Array(crate::formats::gguf::ValueType::Str, tokens),
        );
        md
    }

    /// Values of one tensor: norms near 1, weights normal with a few outliers, like trained
    /// checkpoints.
    pub fn values(&self, index: usize, n: usize) -> Vec<f32> {
        use rayon::prelude::*;
        // Chunks with their own seeds, so big models generate on every core.
        const CHUNK: usize = 1 << 16;
        let is_norm = self.tensors()[index].1.len() == 1;
        let seed = self.seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut out = vec![0f32; n];
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut rng = Rng::new(seed.wrapping_add((c as u64).wrapping_mul(0x9e37_79b9)));
                for v in chunk {
                    *v = if is_norm {
                        1.0 + 0.1 * rng.normal()
                    } else {
                        let x = 0.02 * rng.normal();
                        if rng.next_u64().is_multiple_of(1000) {
                            x * 12.0
                        } else {
                            x
                        }
                    };
                }
            });
        out
    }

    /// Every tensor with its stored type: norms F32, 2-D weights `weight_type`.
    fn typed_tensors(&self) -> Vec<SourceTensor> {
        self.tensors()
            .into_iter()
            .map(|(name, ne)| SourceTensor {
                ty: if ne.len() == 1 {
                    GgmlType::F32
                } else {
                    self.weight_type
                },
                name,
                ne,
            })
            .collect()
    }

    /// The stored bytes of tensor `index` (type `ty`).
    fn tensor_data(&self, index: usize, ty: GgmlType, n: usize) -> Vec<u8> {
        let vals = self.values(index, n);
        match ty {
            GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::BF16 => vals
                .iter()
                .flat_map(|v| crate::quant::f32_to_bf16(*v).to_le_bytes())
                .collect(),
            _ => vals
                .iter()
                .flat_map(|v| f32_to_f16(*v).to_le_bytes())
                .collect(),
        }
    }

    /// Write the model as a GGUF file.
    pub fn write_gguf(&self, path: &Path) -> Result<(), GgufError> {
        let tensors = self.typed_tensors();
        let infos: Vec<(String, GgmlType, Vec<u64>)> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
            .collect();
        let mut w = GgufWriter::create(path, &self.metadata(), &infos)?;
        for (i, t) in tensors.iter().enumerate() {
            let n = t.ne.iter().product::<u64>() as usize;
            w.write_tensor(&self.tensor_data(i, t.ty, n))?;
        }
        w.finish()
    }

    /// The model as an in-memory tensor source (tensors generated on demand): for loading it
    /// with no file, as the GPU forward pass's self-check does.
    pub fn source(&self) -> SyntheticSource {
        SyntheticSource {
            llama: *self,
            metadata: self.metadata(),
            tensors: self.typed_tensors(),
        }
    }
}

/// [`SyntheticLlama::source`].
pub struct SyntheticSource {
    llama: SyntheticLlama,
    metadata: Metadata,
    tensors: Vec<SourceTensor>,
}

impl TensorSource for SyntheticSource {
    fn describe(&self) -> String {
        "a generated llama".into()
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, SourceError> {
        let t = &self.tensors[index];
        let n = t.ne.iter().product::<u64>() as usize;
        Ok(Cow::Owned(self.llama.tensor_data(index, t.ty, n)))
    }
}
