// float.wgsl — F16 and BF16 conversion, the GPU twin of src/quant/float.rs
// (ggml_fp32_to_fp16_row / ggml_fp32_to_bf16_row_ref). One unit = 2 elements = 1 word.

@compute @workgroup_size(64)
fn quantize_row_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    let lo = f32_to_f16_bits(src[2u * unit]);
    let hi = f32_to_f16_bits(src[2u * unit + 1u]);
    ob[0] = lo | (hi << 16u);
    store_unit(unit, 1u);
}

@compute @workgroup_size(64)
fn quantize_row_bf16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    let lo = f32_to_bf16_bits(src[2u * unit]);
    let hi = f32_to_bf16_bits(src[2u * unit + 1u]);
    ob[0] = lo | (hi << 16u);
    store_unit(unit, 1u);
}
