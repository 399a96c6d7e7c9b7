//! The GPU twin of the CPU quantizers: WGSL compute shaders driven through wgpu, writing exactly
//! the bytes `quant::quantize_rows` writes.
//!
//! Layers, bottom up:
//! - [`device`]: adapter enumeration and `--device auto|cpu|gpu|gpu:N` selection, pinned to
//!   Vulkan/Metal/DX12 (a GL adapter is refused: its float behaviour differs).
//! - [`pipelines`]: WGSL sources (`shaders/`), one compute pipeline per kernel built once and
//!   cached.
//! - [`dispatch`]: the chunked run of a kernel over a tensor (bindings never above the
//!   adapter's `max_storage_buffer_binding_size`) through persistent, double-buffered
//!   transfer buffers.
//! - [`selfcheck`]: every kernel is run on a canary set and compared with the CPU answer before
//!   it is trusted.
//! - [`quantize`]: [`GpuQuantizer`], the seam the pipeline calls (mirrors `quant::quantize_rows`).
//! - `layout` (tests only): every Rust mirror of a WGSL parameter struct checked against the
//!   layout naga computes for the shader.
//!
//! Built on this layer, in the layers above it: `pipeline::doctor` (a human-readable report of
//! adapters and per-kernel self-check results), `runtime::gpu_forward` (`GpuLlama`, the llama
//! forward pass on the GPU), `pipeline::bench` (GPU against CPU throughput per type, `qforge
//! bench`) and `lora::gpu_merge` (the LoRA merge kernel, with its own self-check).
//!
//! Exactness is by construction, not by luck: every rounding-critical operation goes through
//! `shaders/exact.wgsl` (see the comment at its top).

pub mod device;
pub mod dispatch;
#[cfg(test)]
pub(crate) mod layout;
pub mod pipelines;
pub mod quantize;
pub mod selfcheck;
pub mod tables;

pub use device::{AdapterReport, DeviceSpec, GpuContext};
pub use quantize::{GpuOptions, GpuQuantizer};

use crate::quant::{GgmlType, QuantError};

/// Errors of the GPU layer. Every variant says what to do next in its message.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// `--device` value that is not `auto`, `cpu`, `gpu` or `gpu:N`.
    #[error("invalid device '{0}': expected auto, cpu, gpu or gpu:N")]
    BadDeviceSpec(String),
    /// No usable adapter when one was required.
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),
    /// `gpu:N` with N out of range.
    #[error(
        "GPU adapter index {index} out of range: {count} usable adapter(s) (see `qforge doctor`)"
    )]
    AdapterIndex {
        /// The N asked for.
        index: usize,
        /// Usable adapters found.
        count: usize,
    },
    /// An adapter on a backend we do not trust for exact results (GL).
    #[error(
        "adapter '{name}' runs on the {backend} backend; only Vulkan, Metal and DX12 are allowed"
    )]
    ForbiddenBackend {
        /// The adapter's name.
        name: String,
        /// Its backend.
        backend: String,
    },
    /// Creating the device failed.
    #[error("could not open GPU device '{name}': {reason}")]
    RequestDevice {
        /// The adapter's name.
        name: String,
        /// wgpu's error.
        reason: String,
    },
    /// No GPU kernel for this type (or this type with an imatrix).
    #[error("quantizing to {ty}{} on the GPU is not supported yet", if *.imatrix { " with an imatrix" } else { "" })]
    NotSupported {
        /// The target type.
        ty: GgmlType,
        /// Whether an importance matrix was given.
        imatrix: bool,
    },
    /// The kernel failed its self-check on this adapter and was disabled.
    #[error("GPU kernel {kernel} failed its self-check on '{adapter}': {detail}")]
    SelfCheckFailed {
        /// The kernel's name.
        kernel: String,
        /// The adapter's name.
        adapter: String,
        /// What differed (first mismatching row and byte, or the run error).
        detail: String,
    },
    /// `verify_fraction` found a row where the GPU and the CPU disagree.
    #[error("GPU/CPU mismatch for {ty} in row {row} (first differing byte {byte} of the row): the GPU result is wrong, refusing it")]
    VerifyMismatch {
        /// The target type.
        ty: GgmlType,
        /// The row that differed.
        row: usize,
        /// Its first differing byte.
        byte: usize,
    },
    /// Row or buffer geometry error (same checks as the CPU path).
    #[error(transparent)]
    Geometry(#[from] QuantError),
    /// A tensor too large for the adapter's bindings even one row at a time.
    #[error(
        "a row of {row_bytes} bytes exceeds the adapter's storage binding limit of {limit} bytes"
    )]
    RowTooLarge {
        /// Bytes of one input row.
        row_bytes: u64,
        /// `max_storage_buffer_binding_size`.
        limit: u64,
    },
    /// A failure while running work on the device (buffer mapping, validation, lost device).
    #[error("GPU execution failed: {0}")]
    Execution(String),
}
