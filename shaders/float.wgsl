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

// Two elements as one word of 16-bit halves (F16, or BF16 when `bf16`: a constant at each
// call site, so the compiler keeps one conversion).
fn half_pair(lo: f32, hi: f32, bf16: bool) -> u32 {
    if (bf16) {
        return f32_to_bf16_bits(lo) | (f32_to_bf16_bits(hi) << 16u);
    }
    return f32_to_f16_bits(lo) | (f32_to_f16_bits(hi) << 16u);
}

fn half_units(gid: vec3<u32>, bf16: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        let a = src[2u * unit];
        let b = src[2u * unit + 1u];
        ob[0] = half_pair(a.x, a.y, bf16);
        ob[1] = half_pair(a.z, a.w, bf16);
        ob[2] = half_pair(b.x, b.y, bf16);
        ob[3] = half_pair(b.z, b.w, bf16);
        store_unit(unit, 4u);
    }
}

@compute @workgroup_size(64)
fn quantize_row_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    half_units(gid, false);
}

@compute @workgroup_size(64)
fn quantize_row_bf16(@builtin(global_invocation_id) gid: vec3<u32>) {
    half_units(gid, true);
}
