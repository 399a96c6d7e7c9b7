// exact_probe.wgsl — runs every exact.wgsl helper on pairs (a, b) so tests can compare them
// bit for bit with Rust. Input: src = a0, b0, a1, b1, ...; output: PROBE_WORDS words per pair.

const PROBE_WORDS: u32 = 13u;

@compute @workgroup_size(64)
fn probe_exact(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    let a = sx(2u * unit);
    let b = sx(2u * unit + 1u);
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
    // The bitwise fallbacks on their own (the fast paths take most inputs on lavapipe).
    dst[base + 10u] = bitcast<u32>(div_rn_bitwise(a, b));
    dst[base + 11u] = bitcast<u32>(sqrt_rn_bitwise(a));
    // The fast paths' proofs: bit 0/3 whether the correctly rounded quotient/root is accepted,
    // bits 1, 2 / 4, 5 whether its two neighbours are (they never may be).
    let q = bitcast<u32>(div_rn_bitwise(a, b));
    let r = bitcast<u32>(sqrt_rn_bitwise(a));
    var proofs = 0u;
    proofs |= select(0u, 1u, div_is_rn(a, b, bitcast<f32>(q)));
    proofs |= select(0u, 2u, div_is_rn(a, b, bitcast<f32>(q + 1u)));
    proofs |= select(0u, 4u, div_is_rn(a, b, bitcast<f32>(q - 1u)));
    proofs |= select(0u, 8u, sqrt_is_rn(a, bitcast<f32>(r)));
    proofs |= select(0u, 16u, sqrt_is_rn(a, bitcast<f32>(r + 1u)));
    proofs |= select(0u, 32u, sqrt_is_rn(a, bitcast<f32>(r - 1u)));
    dst[base + 12u] = proofs;
}
