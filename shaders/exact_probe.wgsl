// exact_probe.wgsl — runs every exact.wgsl helper on pairs (a, b) so tests can compare them
// bit for bit with Rust. Input: src = a0, b0, a1, b1, ...; output: PROBE_WORDS words per pair.

const PROBE_WORDS: u32 = 10u;

@compute @workgroup_size(64)
fn probe_exact(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    let a = src[2u * unit];
    let b = src[2u * unit + 1u];
    let base = unit * PROBE_WORDS;
    dst[base + 0u] = bitcast<u32>(xmul(a, b));
    dst[base + 1u] = bitcast<u32>(div_rn(a, b));
    dst[base + 2u] = bitcast<u32>(sqrt_rn(a));
    dst[base + 3u] = bitcast<u32>(nearest_int(a));
    dst[base + 4u] = bitcast<u32>(round_half_away(a));
    dst[base + 5u] = f32_to_f16_bits(a);
    dst[base + 6u] = bitcast<u32>(f16_bits_to_f32(bitcast<u32>(b) & 0xffffu));
    dst[base + 7u] = f32_to_bf16_bits(a);
    dst[base + 8u] = bitcast<u32>(xmul(a, b) + b);
    dst[base + 9u] = bitcast<u32>(c_float_to_int(a));
}
