//! Hugging Face checkpoints → GGUF: byte equality with llama.cpp's converter (tiny-llama,
//! tiny-bpe, and the synthetic Mistral/Qwen2/Qwen3/Llama-3/Mixtral/Qwen-MoE/Gemma checkpoints), the
//! architecture keys, metadata, progress events, the Q8_0 reference, and bad checkpoints refused
//! with a clear error.

mod arch_bad_checkpoints;
mod arch_dense_bad;
mod arch_golden;
mod arch_keys;
mod bad_checkpoints;
mod llama_golden;
mod memory_bound;
mod metadata;
mod moe_bad_checkpoints;
mod progress;
mod q8_0_reference;
