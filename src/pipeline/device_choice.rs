//! The one device policy, for every kernel a job runs (quantizers, the LoRA merge, the forward
//! pass): `--device cpu` never touches a GPU; `gpu` / `gpu:N` use that adapter and any GPU
//! failure is an error; `auto` uses a hardware adapter when one passes selection, and whenever
//! the GPU cannot do something it says so (a [`Notice`]) and the CPU does it.

use std::sync::Arc;

use crate::gpu::{self, DeviceSpec, GpuContext, GpuError};
use crate::lora::merge::MergeDevice;
use crate::notice::{self, Notice};
use crate::pipeline::error::PipelineError;
use crate::runtime::error::error_chain_text;
use crate::runtime::forward::{CausalLm, LlamaModel};
use crate::runtime::gpu_forward::GpuLlama;

/// A `--device` resolved once per job: the adapter every GPU kernel of the job shares, if any.
#[derive(Clone)]
pub struct DeviceChoice {
    spec: DeviceSpec,
    gpu: Option<Arc<GpuContext>>,
}

impl DeviceChoice {
    /// Resolve `spec`. `auto` without a usable hardware adapter is the CPU, with a notice.
    pub fn select(spec: DeviceSpec) -> Result<DeviceChoice, GpuError> {
        let gpu = gpu::device::select(spec)?;
        if gpu.is_none() && spec == DeviceSpec::Auto {
            notice::emit(Notice::CpuFallback {
                reason: "no hardware GPU passed selection".into(),
            });
        }
        Ok(DeviceChoice {
            spec,
            gpu: gpu.map(Arc::new),
        })
    }

    /// The CPU, whatever the machine has.
    pub fn cpu() -> DeviceChoice {
        DeviceChoice {
            spec: DeviceSpec::Cpu,
            gpu: None,
        }
    }

    /// A choice around an adapter already opened (by another part of the same job).
    pub fn with_context(spec: DeviceSpec, gpu: Option<Arc<GpuContext>>) -> DeviceChoice {
        DeviceChoice { spec, gpu }
    }

    /// The spec it was resolved from.
    pub fn spec(&self) -> DeviceSpec {
        self.spec
    }

    /// The adapter, if a GPU was chosen.
    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        self.gpu.as_ref()
    }

    /// Whether GPU failures are errors (`--device gpu` / `gpu:N`).
    pub fn is_strict(&self) -> bool {
        self.spec.is_strict()
    }

    /// The fallback rule for a GPU twin that could not be set up: `Err` under a strict spec,
    /// else a notice naming `what` and `Ok` (the caller then uses the CPU).
    pub fn fall_back<E: std::error::Error>(&self, what: &str, e: E) -> Result<(), E> {
        if self.is_strict() {
            return Err(e);
        }
        notice::emit(Notice::CpuFallback {
            reason: format!("{what} unavailable ({})", error_chain_text(&e)),
        });
        Ok(())
    }

    /// Where this job's LoRA merges run (the GPU kernel is self-checked first).
    pub fn merge_device(&self) -> Result<MergeDevice, GpuError> {
        MergeDevice::open(self.gpu.clone(), self.is_strict())
    }

    /// The forward pass for `model`: its GPU twin on the chosen adapter, else the CPU model.
    pub fn causal_lm(&self, model: LlamaModel) -> Result<Box<dyn CausalLm>, PipelineError> {
        Ok(self.place_causal_lm(model)?.0)
    }

    /// [`DeviceChoice::causal_lm`], also naming the adapter it runs on (`None`: the CPU).
    pub fn place_causal_lm(
        &self,
        model: LlamaModel,
    ) -> Result<(Box<dyn CausalLm>, Option<String>), PipelineError> {
        let Some(ctx) = &self.gpu else {
            return Ok((Box::new(model), None));
        };
        match GpuLlama::new(ctx, &model) {
            Ok(g) => Ok((Box::new(g), Some(ctx.adapter().name.clone()))),
            Err(e) => {
                self.fall_back("GPU forward pass", e)
                    .map_err(|source| PipelineError::GpuModel { source })?;
                Ok((Box::new(model), None))
            }
        }
    }
}
