//! safetensors checkpoints, single-file and sharded (being written).
