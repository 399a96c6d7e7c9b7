//! The runtime: the CPU forward pass against a float64 reference, perplexity / KL divergence /
//! imatrix collection against llama.cpp's tools, and tokenizers against llama-tokenize's ids.

mod forward_reference;
mod llama_tokenize_ids;
mod metrics;
mod spm_tokenizer;
