//! Quantization on the CPU: legacy and K-quant kernels against llama-quantize's bytes, error
//! bounds, SIMD against scalar, the type rules and mixes, and importance-matrix files.

mod imatrix_files;
mod iq1_golden;
mod iq2_golden;
mod iq3_golden;
mod iq4_simd;
mod kquant_golden;
mod kquant_roundtrip;
mod kquant_simd;
mod legacy_golden;
mod legacy_roundtrip;
mod legacy_simd;
mod mix_rules_golden;
mod nvfp4_read;
mod q1_q2_mxfp4_golden;
mod target_size;
mod type_rules;
