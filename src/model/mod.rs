//! Model architectures, tokenizers and (later) the forward pass (being written).
