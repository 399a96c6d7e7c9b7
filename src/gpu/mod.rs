//! wgpu device, self-check and compute pipelines (being written).
