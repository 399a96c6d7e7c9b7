// q1_q2.wgsl — Q1_0 and Q2_0, the GPU twin of src/quant/q1_q2.rs (quantize_row_q1_0_ref,
// quantize_row_q2_0_ref; the imatrix is ignored, as ggml does). Units: 2 × 18 = 36 bytes.

const Q1_0_BLOCK: u32 = 128u;
const Q2_0_BLOCK: u32 = 64u;

// block_q1_0 at byte `pos`: fp16 d = Σ|x|/128 (summed in index order), then one bit per
// element, set when x ≥ 0 (−0 included), least significant bit first.
fn q1_0_block(xoff: u32, pos: u32) {
    var sum_abs = 0.0;
    for (var j = 0u; j < rt(Q1_0_BLOCK); j = j + 1u) {
        sum_abs = sum_abs + abs(sx(xoff + j));
    }
    put_u16(pos, f32_to_f16_bits(div_rn(sum_abs, 128.0)));
    for (var b = 0u; b < rt(Q1_0_BLOCK / 8u); b = b + 1u) {
        var bits = 0u;
        for (var k = 0u; k < 8u; k = k + 1u) {
            bits = bits | (select(0u, 1u, sx(xoff + 8u * b + k) >= 0.0) << k);
        }
        put_byte(pos + 2u + b, bits);
    }
}

// block_q2_0 at byte `pos`: fp16 d = max|x|, then four 2-bit codes per byte, lowest bits first:
// (int)roundf(x·(1/d)) + 1 clamped to 0..=3. When 1/d overflows (a subnormal d) the reference
// multiplies by inf, and C's conversion of ±inf or NaN (INT_MIN) clamps to 0: every code is 0.
fn q2_0_block(xoff: u32, pos: u32) {
    var amax = 0.0;
    for (var j = 0u; j < rt(Q2_0_BLOCK); j = j + 1u) {
        let a = abs(sx(xoff + j));
        if (a > amax) {
            amax = a;
        }
    }
    var id = 0.0;
    if (amax > 0.0) {
        id = div_rn(1.0, amax);
    }
    let overflow = (bitcast<u32>(id) & 0x7fffffffu) == 0x7f800000u;
    put_u16(pos, f32_to_f16_bits(amax));
    for (var b = 0u; b < rt(Q2_0_BLOCK / 4u); b = b + 1u) {
        var bits = 0u;
        for (var k = 0u; k < 4u; k = k + 1u) {
            var q = 0;
            if (!overflow) {
                let r = c_float_to_int(round_half_away(xmul(sx(xoff + 4u * b + k), id)));
                q = clamp(r + 1, 0, 3);
            }
            bits = bits | (u32(q) << (2u * k));
        }
        put_byte(pos + 2u + b, bits);
    }
}

@compute @workgroup_size(64)
fn quantize_q1_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 2u; k = k + 1u) {
            q1_0_block((unit * 2u + k) * Q1_0_BLOCK, k * 18u);
        }
        store_unit(unit, 9u);
    }
}

@compute @workgroup_size(64)
fn quantize_q2_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 2u; k = k + 1u) {
            q2_0_block((unit * 2u + k) * Q2_0_BLOCK, k * 18u);
        }
        store_unit(unit, 9u);
    }
}
