// ternary.wgsl — TQ1_0 and TQ2_0, the GPU twin of src/quant/ternary.rs (quantize_row_tq1_0_ref,
// quantize_row_tq2_0_ref; the imatrix is ignored, as ggml does). Units: 2 × 54 = 108 bytes
// (TQ1_0), 2 × 66 = 132 bytes (TQ2_0).

const QK_K: u32 = 256u;

// MAX(amax, fabsf(v)) over the block starting at element `xoff`.
fn tq_absmax(xoff: u32) -> f32 {
    var amax = 0.0;
    for (var j = 0u; j < rt(QK_K); j = j + 1u) {
        let a = abs(sx(xoff + j));
        amax = select(a, amax, amax > a);
    }
    return amax;
}

fn tq_inverse(d: f32) -> f32 {
    if (d != 0.0) {
        return div_rn(1.0, d);
    }
    return 0.0;
}

// lroundf(v·id) + 1 truncated to a byte. v·id is NaN or ±inf only when 1/d overflowed; glibc's
// lroundf then gives LONG_MIN, whose low bits + 1 are 1 (weight 0). A finite v·id is within
// [-1, 1] up to one ulp (|v| <= d and id = 1/d rounded), so the 2^31 bound never cuts a value.
fn trit(v: f32, id: f32) -> u32 {
    let p = v * id;
    if (!(abs(p) < 2147483648.0)) {
        return 1u;
    }
    return bitcast<u32>(i32(round_half_away(p)) + 1) & 0xffu;
}

// Five (or four and a zero) trits as a byte-sized fraction of 243, rounded up.
fn trits_to_byte(base3: u32) -> u32 {
    return ((base3 * 256u + 242u) / 243u) & 0xffu;
}

// block_tq1_0 at byte `pos`: qs[48], qh[4], fp16 d.
fn tq1_0_block(xoff: u32, pos: u32) {
    let d = tq_absmax(xoff);
    let id = tq_inverse(d);
    // Five trits per byte: 32 bytes over elements 0..160, then 16 bytes over 160..240.
    for (var part = 0u; part < 2u; part = part + 1u) {
        let base = select(0u, 160u, part == 1u);
        let width = select(32u, 16u, part == 1u);
        let first = select(0u, 32u, part == 1u);
        for (var m = 0u; m < rt(width); m = m + 1u) {
            var q = 0u;
            for (var n = 0u; n < 5u; n = n + 1u) {
                q = (q * 3u + trit(sx(xoff + base + m + n * width), id)) & 0xffu;
            }
            put_byte(pos + first + m, trits_to_byte(q));
        }
    }
    // Four trits per byte over elements 240..256, shifted up one trit position.
    for (var j = 0u; j < 4u; j = j + 1u) {
        var q = 0u;
        for (var m = 0u; m < 4u; m = m + 1u) {
            q = (q * 3u + trit(sx(xoff + 240u + j + m * 4u), id)) & 0xffu;
        }
        put_byte(pos + 48u + j, trits_to_byte((q * 3u) & 0xffu));
    }
    put_u16(pos + 52u, f32_to_f16_bits(d));
}

// block_tq2_0 at byte `pos`: qs[64] (four 2-bit trits per byte), fp16 d.
fn tq2_0_block(xoff: u32, pos: u32) {
    let d = tq_absmax(xoff);
    let id = tq_inverse(d);
    for (var h = 0u; h < 2u; h = h + 1u) {
        for (var m = 0u; m < rt(32u); m = m + 1u) {
            var q = 0u;
            for (var n = 0u; n < 4u; n = n + 1u) {
                let t = trit(sx(xoff + 128u * h + m + 32u * n), id);
                q = q + ((t & 3u) << (2u * n));
            }
            put_byte(pos + 32u * h + m, q & 0xffu);
        }
    }
    put_u16(pos + 64u, f32_to_f16_bits(d));
}

@compute @workgroup_size(64)
fn quantize_tq1_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 2u; k = k + 1u) {
            tq1_0_block((unit * 2u + k) * QK_K, k * 54u);
        }
        store_unit(unit, 27u);
    }
}

@compute @workgroup_size(64)
fn quantize_tq2_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 2u; k = k + 1u) {
            tq2_0_block((unit * 2u + k) * QK_K, k * 66u);
        }
        store_unit(unit, 33u);
    }
}
