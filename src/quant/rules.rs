//! llama-quantize's per-tensor type choice (src/llama-quant.cpp: tensor_allows_quantization,
//! llama_tensor_get_type, llama_tensor_get_type_impl, tensor_type_fallback). Being written;
//! pure functions of names, shapes, the mix, options and layer counters.
