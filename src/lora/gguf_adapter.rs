//! PEFT adapter → llama.cpp GGUF adapter (reproduces `convert_lora_to_gguf.py` for llama-family
//! bases, llama.cpp 0c1e57098).
//!
//! The file: `general.architecture`, `general.type = "adapter"`, `adapter.type = "lora"`, the
//! authorship keys gguf-py derives from the adapter directory (see `naming`),
//! `adapter.lora.alpha` (f32), `adapter.alora.invocation_tokens` for aLoRA, then
//! `general.quantization_version`. Tensors: first any norms the adapter carries (mergekit), then
//! per adapted module, in the order the adapter file holds them, `<gguf name>.lora_a` (A as
//! stored, ne [in, r]; Aᵀ for the token embedding) and `<gguf name>.lora_b` (B, ne [r, out],
//! with the converter's Q/K head permutation applied to its rows).
//!
//! Element types follow `--outtype`: F32, F16, BF16, or Q8_0 where a row is a whole number of
//! 32-blocks (F16 otherwise, as the script falls back); norms stay F32.
//!
//! Refused because the GGUF adapter cannot say it (the script would write an adapter llama.cpp
//! applies wrongly): rsLoRA (llama.cpp scales by alpha/r), `alpha_pattern`, fan_in_fan_out on a
//! llama base, full replacement tensors (modules_to_save, trained biases).

use std::path::Path;
use std::str::FromStr;

use crate::formats::gguf::{GgufWriter, Metadata, Value, ValueType};
use crate::formats::peft::{LoraKind, PeftAdapter};
use crate::formats::safetensors::{Checkpoint, SafetensorsError};
use crate::quant::{self, GgmlType};

use super::merge::transpose;
use super::LoraError;
use crate::arch::transforms::{filter_name, permute_rows, qk_permute_heads};
use crate::arch::{Architecture, Hparams, TensorNameMap};
use crate::convert::card::ModelCard;
use crate::formats::gguf_kv::KvList;

/// `--outtype` of convert_lora_to_gguf.py.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraOutType {
    /// Factors stored as f32.
    F32,
    /// Factors stored as f16 (the script's default).
    F16,
    /// Factors stored as bf16.
    BF16,
    /// Factors quantized to Q8_0 where a row is a whole number of 32-blocks (F16 otherwise).
    Q8_0,
}

impl LoraOutType {
    fn ggml(self) -> GgmlType {
        match self {
            LoraOutType::F32 => GgmlType::F32,
            LoraOutType::F16 => GgmlType::F16,
            LoraOutType::BF16 => GgmlType::BF16,
            LoraOutType::Q8_0 => GgmlType::Q8_0,
        }
    }
}

impl FromStr for LoraOutType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(LoraOutType::F32),
            "f16" => Ok(LoraOutType::F16),
            "bf16" => Ok(LoraOutType::BF16),
            "q8_0" => Ok(LoraOutType::Q8_0),
            _ => Err(format!(
                "unknown outtype '{s}' (expected f32, f16, bf16 or q8_0)"
            )),
        }
    }
}

/// One tensor of the output, in order.
struct OutTensor {
    name: String,
    /// Shape as numpy sees it (outermost first).
    shape: Vec<usize>,
    values: Vec<f32>,
    ty: GgmlType,
}

/// Convert the PEFT adapter in `adapter_dir` for the base model in `base_dir` (only its
/// `config.json` is needed; when its weights are there too, every module is checked against
/// them) into a GGUF adapter at `out`.
pub fn lora_to_gguf(
    adapter_dir: &Path,
    base_dir: &Path,
    out: &Path,
    outtype: LoraOutType,
) -> Result<(), LoraError> {
    let adapter = PeftAdapter::open(adapter_dir)?;
    let cfg = BaseConfig::load(base_dir)?;
    let config_path = adapter_dir.join(crate::formats::peft::CONFIG_FILE);
    let refuse = |what: &str| LoraError::NotSupported {
        path: config_path.clone(),
        what: what.to_string(),
    };
    if adapter.config.use_rslora {
        return Err(refuse(
            "rsLoRA in a GGUF adapter (llama.cpp scales every adapter by alpha/r, not alpha/√r)",
        ));
    }
    if !adapter.config.alpha_pattern.is_empty() {
        return Err(refuse(
            "alpha_pattern in a GGUF adapter (it holds one alpha for every module)",
        ));
    }
    if adapter.config.fan_in_fan_out {
        return Err(refuse("fan_in_fan_out for a llama base"));
    }
    if adapter.config.invocation_string.is_some()
        && adapter
            .config
            .alora_invocation_tokens
            .as_ref()
            .is_none_or(|t| t.is_empty())
    {
        return Err(refuse(
            "aLoRA invocation_string without alora_invocation_tokens (tokenizing it)",
        ));
    }
    match Checkpoint::open_dir(base_dir) {
        Ok(base) => {
            let shape_of = |name: &str| base.find(name).map(|l| base.tensor(l).shape.clone());
            adapter.check_base(&shape_of)?;
        }
        // Only the config is required, as for the script.
        Err(SafetensorsError::NoWeights { .. }) => {}
        Err(e) => return Err(e.into()),
    }

    let weights_path = adapter.weights_path().to_path_buf();
    let target = outtype.ggml();
    let mut tensors: Vec<OutTensor> = Vec::new();
    // Norms (mergekit-extract-lora) come first: the script yields them while it still pairs
    // the factors.
    for f in &adapter.full_tensors {
        let is_norm = f.base_name.contains("_layernorm") || f.base_name.contains(".norm");
        if !is_norm {
            return Err(LoraError::NotSupported {
                path: weights_path.clone(),
                what: format!(
                    "full tensor '{}' (modules_to_save / trained bias) in a GGUF adapter",
                    f.tensor.name
                ),
            });
        }
        let Some(name) = filter_name(cfg.arch, &f.base_name) else {
            continue;
        };
        let gname = map_name(&name, &cfg, &weights_path)?;
        if !gname.contains("_norm") || f.tensor.shape.len() != 1 {
            return Err(LoraError::NotSupported {
                path: weights_path.clone(),
                what: format!("full tensor '{}' in a GGUF adapter", f.tensor.name),
            });
        }
        tensors.push(OutTensor {
            name: gname,
            shape: f.tensor.shape.clone(),
            values: adapter.read_f32(&f.tensor)?,
            ty: GgmlType::F32,
        });
    }
    for m in &adapter.modules {
        let Some(base_name) = filter_name(cfg.arch, &m.base_tensor()) else {
            continue;
        };
        let gname = map_name(&base_name, &cfg, &weights_path)?;
        let mut a = adapter.read_f32(&m.a)?;
        let mut b = adapter.read_f32(&m.b)?;
        let (r, a_cols) = (m.a.shape[0], m.a.shape[1]);
        let b_rows = m.b.shape[0];
        if let Some(heads) = qk_permute_heads(cfg.arch, &base_name, cfg.n_head, cfg.n_head_kv) {
            b = permute_rows(&b, r, heads).ok_or_else(|| LoraError::AdapterMismatch {
                path: weights_path.clone(),
                tensor: m.b.name.clone(),
                what: format!("{b_rows} rows do not split into {heads} heads of even size"),
            })?;
        }
        let mut a_shape = vec![r, a_cols];
        // llama.cpp multiplies the token embedding's factors the other way round.
        if gname.starts_with("token_embd.") {
            a = transpose(&a, r);
            a_shape = vec![a_cols, r];
        }
        debug_assert!(m.kind == LoraKind::Linear || gname.starts_with("token_embd."));
        for (suffix, shape, values) in [
            ("lora_a", a_shape, std::mem::take(&mut a)),
            ("lora_b", vec![b_rows, r], std::mem::take(&mut b)),
        ] {
            let row = *shape.last().unwrap();
            let ty = if target.block_size() > 1 && row % target.block_size() != 0 {
                // gguf-py cannot block the row: it falls back to F16.
                GgmlType::F16
            } else {
                target
            };
            tensors.push(OutTensor {
                name: format!("{gname}.{suffix}"),
                shape,
                values,
                ty,
            });
        }
    }

    let mut md = Metadata::new();
    md.set(
        "general.architecture",
        Value::Str(cfg.arch.gguf_arch.into()),
    );
    md.set("general.type", Value::Str("adapter".into()));
    md.set("adapter.type", Value::Str("lora".into()));
    // The converter's own model-card path (gguf-py `Metadata.load` + `set_gguf_meta_model`),
    // run on the adapter directory as convert_lora_to_gguf.py does.
    let card = ModelCard::load(adapter_dir, None, total_params(&tensors))?;
    if !card.sampling_is_empty() {
        return Err(LoraError::NotSupported {
            path: adapter_dir.join("generation_config.json"),
            what: "sampling defaults from an adapter's generation_config.json".into(),
        });
    }
    let mut authorship = KvList::new();
    card.write(&mut authorship);
    for (k, v) in authorship.into_metadata().iter() {
        md.set(k, v.clone());
    }
    md.set(
        "adapter.lora.alpha",
        Value::F32(adapter.config.lora_alpha as f32),
    );
    if let Some(tokens) = adapter
        .config
        .alora_invocation_tokens
        .as_ref()
        .filter(|t| !t.is_empty())
    {
        md.set(
            "adapter.alora.invocation_tokens",
            Value::Array(
                ValueType::U32,
                tokens.iter().map(|&t| Value::U32(t)).collect(),
            ),
        );
    }
    md.set("general.quantization_version", Value::U32(2));

    let infos: Vec<(String, GgmlType, Vec<u64>)> = tensors
        .iter()
        .map(|t| {
            let ne = t.shape.iter().rev().map(|&d| d as u64).collect();
            (t.name.clone(), t.ty, ne)
        })
        .collect();
    let mut writer = GgufWriter::create(out, &md, &infos)?;
    for t in &tensors {
        let row = *t.shape.last().unwrap();
        let mut bytes = vec![0u8; quant::row_bytes(t.ty, row).unwrap() * (t.values.len() / row)];
        let quant_err = |source| LoraError::Quant {
            path: out.to_path_buf(),
            tensor: t.name.clone(),
            source,
        };
        quant::quantize_rows(t.ty, &t.values, row, None, &mut bytes).map_err(quant_err)?;
        if let Some(i) = first_non_finite(t.ty, &bytes) {
            return Err(LoraError::NonFiniteResult {
                path: out.to_path_buf(),
                tensor: t.name.clone(),
                dtype: t.ty.name().to_string(),
                index: i,
            });
        }
        writer.write_tensor(&bytes)?;
    }
    writer.finish()?;
    Ok(())
}

/// The first element that overflowed on conversion (factors are finite on input); for Q8_0,
/// the first element of the block whose scale overflowed.
fn first_non_finite(ty: GgmlType, bytes: &[u8]) -> Option<usize> {
    crate::quant::finite_output::first_non_finite(ty, bytes).map(|v| v.element)
}

fn map_name(hf_name: &str, cfg: &BaseConfig, path: &Path) -> Result<String, LoraError> {
    cfg.names
        .map(hf_name)
        .map(|m| m.name)
        .ok_or_else(|| LoraError::AdapterMismatch {
            path: path.to_path_buf(),
            tensor: hf_name.to_string(),
            what: format!("no {} GGUF name for this module", cfg.arch.gguf_arch),
        })
}

/// What the conversion needs from the base model's `config.json`: its family's registry entry
/// (the same name map and transforms `convert` uses) and the head counts of the Q/K
/// permutation.
struct BaseConfig {
    arch: &'static Architecture,
    names: TensorNameMap,
    n_head: usize,
    n_head_kv: usize,
}

impl BaseConfig {
    /// `ModelBase.load_hparams(dir_base_model)`; refuse families the registry lacks.
    fn load(base_dir: &Path) -> Result<BaseConfig, LoraError> {
        let hp = Hparams::load(base_dir)?;
        let path = hp.path().to_path_buf();
        let bad = |what: String| LoraError::BaseConfig {
            path: path.clone(),
            what,
        };
        let class = hp
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .ok_or_else(|| bad("no 'architectures' list".into()))?;
        let arch = Architecture::for_hf_class(class).ok_or_else(|| LoraError::NotSupported {
            path: path.clone(),
            what: format!(
                "converting adapters for architecture '{class}' (supported: {})",
                Architecture::supported_hf_classes().join(", ")
            ),
        })?;
        let num = |keys: &[&str]| -> Result<Option<usize>, LoraError> {
            Ok(hp.find_u32(keys)?.map(|v| v as usize))
        };
        let n_layer = num(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?
            .ok_or_else(|| bad("no num_hidden_layers".into()))?;
        let n_head = num(&["n_heads", "num_attention_heads"])?
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("no num_attention_heads".into()))?;
        let n_head_kv = num(&["n_kv_heads", "num_key_value_heads"])?
            .filter(|&n| n > 0)
            .unwrap_or(n_head);
        Ok(BaseConfig {
            arch,
            names: TensorNameMap::new(arch, n_layer),
            n_head,
            n_head_kv,
        })
    }
}

/// gguf-py's `get_total_parameter_count` over the output tensors: a lora_b counts as its base
/// matrix (B's rows × the preceding lora_a's last dimension); negated when the file holds LoRA
/// factors. Only the size-label heuristic of the authorship keys reads it.
fn total_params(tensors: &[OutTensor]) -> i64 {
    let mut total: i64 = 0;
    let mut last_a: Option<&OutTensor> = None;
    for t in tensors {
        let size: usize = if t.name.ends_with(".lora_a") {
            last_a = Some(t);
            continue;
        } else if t.name.ends_with(".lora_b") {
            match last_a {
                Some(a) if a.name[..a.name.len() - 1] == t.name[..t.name.len() - 1] => {
                    t.shape[..t.shape.len() - 1].iter().product::<usize>() * a.shape.last().unwrap()
                }
                _ => return 0,
            }
        } else {
            t.shape.iter().product()
        };
        total += size as i64;
    }
    if last_a.is_some() {
        -total
    } else {
        total
    }
}
