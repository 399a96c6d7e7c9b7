//! Whole commands through the `qforge` binary: one-pass convert-and-quantize, and the eval
//! commands (imatrix, perplexity, KL divergence, sweep) on the CPU.

mod convert_one_pass;
mod eval_commands;
