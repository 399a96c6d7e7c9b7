//! Every test that needs a GPU adapter, in one binary with one shared GPU context. Tests are
//! written once and instantiated per device by [`device_test!`] (`NAME::cpu`, `NAME::gpu`); with no
//! adapter the GPU instances skip with a message, or fail when QFORGE_REQUIRE_GPU=1
//! (scripts/test.sh sets it). Tests that need no adapter are in tests/it.

#[path = "../support/mod.rs"]
mod support;

// First: the other modules use its `device_test!`.
#[macro_use]
mod devices;

mod adapter_selection;
mod eval_commands;
mod exact_math;
mod forward_eval;
mod forward_logits;
mod kernel_golden;
mod kernels_vs_cpu;
mod lora_merge;
mod quantize_golden;
mod self_check;
mod sweep;
mod throughput;
