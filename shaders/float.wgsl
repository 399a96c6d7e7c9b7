// float.wgsl — F32 copy, F16 and BF16 conversion, the GPU twin of src/quant/float.rs
// (ggml_fp32_to_fp16_row / ggml_fp32_to_bf16_row_ref). One unit = 1 word: one F32 element, or
// two F16/BF16 elements.

// The F32 "quantization" of a target type F32: the input bits unchanged (no arithmetic, so no
// driver can touch NaN payloads or subnormals).
@compute @workgroup_size(64)
fn quantize_row_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        ob[0] = bitcast<u32>(src[unit]);
        store_unit(unit, 1u);
    }
}

@compute @workgroup_size(64)
fn quantize_row_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        let lo = f32_to_f16_bits(src[2u * unit]);
        let hi = f32_to_f16_bits(src[2u * unit + 1u]);
        ob[0] = lo | (hi << 16u);
        store_unit(unit, 1u);
    }
}

@compute @workgroup_size(64)
fn quantize_row_bf16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        let lo = f32_to_bf16_bits(src[2u * unit]);
        let hi = f32_to_bf16_bits(src[2u * unit + 1u]);
        ob[0] = lo | (hi << 16u);
        store_unit(unit, 1u);
    }
}
