// float.wgsl — F32 copy, F16 and BF16 conversion, the GPU twin of src/quant/float.rs
// (ggml_fp32_to_fp16_row / ggml_fp32_to_bf16_row_ref). One unit = 4 words: four F32 elements
// (one vec4 read), or eight F16/BF16 elements (two vec4 reads).

// The F32 "quantization" of a target type F32: the input bits unchanged (no arithmetic, so no
// driver can touch NaN payloads or subnormals).
@compute @workgroup_size(64)
fn quantize_row_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        let v = bitcast<vec4<u32>>(src[unit]);
        ob[0] = v.x;
        ob[1] = v.y;
        ob[2] = v.z;
        ob[3] = v.w;
        store_unit(unit, 4u);
    }
}

@compute @workgroup_size(64)
fn quantize_row_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        let a = src[2u * unit];
        let b = src[2u * unit + 1u];
        ob[0] = f32_to_f16_bits(a.x) | (f32_to_f16_bits(a.y) << 16u);
        ob[1] = f32_to_f16_bits(a.z) | (f32_to_f16_bits(a.w) << 16u);
        ob[2] = f32_to_f16_bits(b.x) | (f32_to_f16_bits(b.y) << 16u);
        ob[3] = f32_to_f16_bits(b.z) | (f32_to_f16_bits(b.w) << 16u);
        store_unit(unit, 4u);
    }
}

@compute @workgroup_size(64)
fn quantize_row_bf16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        let a = src[2u * unit];
        let b = src[2u * unit + 1u];
        ob[0] = f32_to_bf16_bits(a.x) | (f32_to_bf16_bits(a.y) << 16u);
        ob[1] = f32_to_bf16_bits(a.z) | (f32_to_bf16_bits(a.w) << 16u);
        ob[2] = f32_to_bf16_bits(b.x) | (f32_to_bf16_bits(b.y) << 16u);
        ob[3] = f32_to_bf16_bits(b.z) | (f32_to_bf16_bits(b.w) << 16u);
        store_unit(unit, 4u);
    }
}
