// legacy.wgsl — Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: the GPU twin of src/quant/legacy.rs.
// Without an imatrix these reproduce ggml's quantize_row_<t>_ref; with one, Q4_0/Q5_0 reproduce
// quantize_row_q4_0_impl / q5_0_impl (make_qx_quants on weights qw·sqrt(σ²+x²)) and Q4_1/Q5_1
// quantize_row_q4_1_impl / q5_1_impl (make_qkx3_quants). Q8_0 ignores the imatrix, as ggml does.
//
// Unit sizes (whole u32 words): Q8_0 2×34 = 68 bytes, Q4_0 2×18 = 36, Q5_0 2×22 = 44,
// Q4_1 1×20, Q5_1 1×24. σ² of each row (row_sigma2) is computed by a pre-pass into row_stats.

const QK: u32 = 32u;

// Reproduces the σ² = Σx²/n of the *_impl functions: a sequential sum in index order.
@compute @workgroup_size(64)
fn row_sigma2(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = unit_index(gid);
    if (row >= params.n_units) {
        return;
    }
    let base = row * params.n_per_row;
    var sum_x2 = 0.0;
    for (var j = 0u; j < params.n_per_row; j = j + 1u) {
        let v = src[base + j];
        sum_x2 = sum_x2 + xmul(v, v);
    }
    dst[row] = bitcast<u32>(div_rn(sum_x2, f32(params.n_per_row)));
}

// Load block `blk` into wx and, with an imatrix, its weights qw·sqrt(σ² + x²) into ww.
fn load_block(blk: u32) {
    let xoff = blk * QK;
    for (var j = 0u; j < rt(QK); j = j + 1u) {
        wx[j] = src[xoff + j];
    }
    if (params.has_qw != 0u) {
        let col = block_col(blk, QK);
        let sigma2 = row_stats[block_row(blk)];
        for (var j = 0u; j < rt(QK); j = j + 1u) {
            ww[j] = xmul(qw[col + j], sqrt_rn(sigma2 + xmul(wx[j], wx[j])));
        }
    }
}

// d and 1/d (0 when d is 0) the way the _ref functions compute them.
fn inverse_or_zero(d: f32) -> f32 {
    if (d != 0.0) {
        return div_rn(1.0, d);
    }
    return 0.0;
}

// Signed absolute maximum: the first element of largest magnitude, with its sign.
fn signed_absmax() -> f32 {
    var amax = 0.0;
    var vmax = 0.0;
    for (var j = 0u; j < rt(QK); j = j + 1u) {
        let v = wx[j];
        if (amax < abs(v)) {
            amax = abs(v);
            vmax = v;
        }
    }
    return vmax;
}

// Pack 32 levels (0..15 or 0..31) as ggml does: byte j = level j | level j+16 << 4, and for
// 5-bit levels the fifth bits as the u32 qh (bit j for level j) stored at `qh_pos`.
fn pack_nibbles(qs_pos: u32, levels: ptr<function, array<u32, 32>>) {
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        put_byte(qs_pos + j, ((*levels)[j] & 0x0fu) | (((*levels)[j + 16u] & 0x0fu) << 4u));
    }
}

fn fifth_bits(levels: ptr<function, array<u32, 32>>) -> u32 {
    var qh = 0u;
    for (var j = 0u; j < rt(32u); j = j + 1u) {
        qh = qh | ((((*levels)[j] & 0x10u) >> 4u) << j);
    }
    return qh;
}

// block_q8_0 at byte `pos`: fp16 d, 32 × i8.
fn q8_0_block(pos: u32) {
    var amax = 0.0;
    for (var j = 0u; j < rt(QK); j = j + 1u) {
        let a = abs(wx[j]);
        amax = select(a, amax, amax > a);
    }
    let d = div_rn(amax, 127.0);
    let id = inverse_or_zero(d);
    put_u16(pos, f32_to_f16_bits(d));
    for (var j = 0u; j < rt(QK); j = j + 1u) {
        put_byte(pos + 2u + j, c_float_to_byte(round_half_away(wx[j] * id)));
    }
}

// block_q4_0 / block_q5_0 at `pos` (nbits 4 or 5): fp16 d, [u32 qh], 16 bytes of nibbles.
fn qx_0_block(pos: u32, nbits: u32) {
    var levels: array<u32, 32>;
    var d: f32;
    let half_range = f32(1u << (nbits - 1u));          // 8 or 16
    let top = i32((1u << nbits) - 1u);                   // 15 or 31
    if (params.has_qw != 0u) {
        d = make_qx_quants(0u, QK, i32(1u << (nbits - 1u)), 1, true);
        for (var j = 0u; j < rt(QK); j = j + 1u) {
            levels[j] = u32(wl[j]);
        }
    } else {
        let vmax = signed_absmax();
        d = div_rn(vmax, -half_range);
        let id = inverse_or_zero(d);
        let bias = half_range + 0.5;                      // 8.5 or 16.5, exact
        for (var j = 0u; j < rt(QK); j = j + 1u) {
            levels[j] = u32(min(top, c_float_to_i8(xmul(wx[j], id) + bias)));
        }
    }
    put_u16(pos, f32_to_f16_bits(d));
    if (nbits == 5u) {
        put_u32(pos + 2u, fifth_bits(&levels));
        pack_nibbles(pos + 6u, &levels);
    } else {
        pack_nibbles(pos + 2u, &levels);
    }
}

// block_q4_1 / block_q5_1 at `pos`: fp16 d, fp16 m, [u32 qh], 16 bytes of nibbles.
fn qx_1_block(pos: u32, nbits: u32) {
    var levels: array<u32, 32>;
    var d: f32;
    var m: f32;
    let top = (1u << nbits) - 1u;                         // 15 or 31
    if (params.has_qw != 0u) {
        let rmin = -0x1.ccccccp-1f;                        // -0.9f
        let rdelta = 0x1.99999ap-5f;                       // 0.05f
        let sm = make_qkx3_quants(0u, QK, i32(top), rmin, rdelta, 36, false, true);
        d = sm.scale;
        m = -sm.the_min;
        for (var j = 0u; j < rt(QK); j = j + 1u) {
            levels[j] = u32(wl[j]);
        }
    } else {
        var vmin = F32_MAX;
        var vmax = -F32_MAX;
        for (var j = 0u; j < rt(QK); j = j + 1u) {
            let v = wx[j];
            if (v < vmin) {
                vmin = v;
            }
            if (v > vmax) {
                vmax = v;
            }
        }
        d = div_rn(vmax - vmin, f32(top));
        m = vmin;
        let id = inverse_or_zero(d);
        for (var j = 0u; j < rt(QK); j = j + 1u) {
            let v = xmul(wx[j] - vmin, id) + 0.5;
            if (nbits == 4u) {
                levels[j] = u32(min(15, c_float_to_i8(v)));
            } else {
                levels[j] = c_float_to_byte(v); // (uint8_t) cast, no clamp in q5_1_ref
            }
        }
    }
    put_u16(pos, f32_to_f16_bits(d));
    put_u16(pos + 2u, f32_to_f16_bits(m));
    if (nbits == 5u) {
        put_u32(pos + 4u, fifth_bits(&levels));
        pack_nibbles(pos + 8u, &levels);
    } else {
        pack_nibbles(pos + 4u, &levels);
    }
}

@compute @workgroup_size(64)
fn quantize_q8_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    for (var k = 0u; k < 2u; k = k + 1u) {
        let blk = unit * 2u + k;
        for (var j = 0u; j < rt(QK); j = j + 1u) {
            wx[j] = src[blk * QK + j];
        }
        q8_0_block(k * 34u);
    }
    store_unit(unit, 17u);
}

@compute @workgroup_size(64)
fn quantize_q4_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    for (var k = 0u; k < 2u; k = k + 1u) {
        load_block(unit * 2u + k);
        qx_0_block(k * 18u, 4u);
    }
    store_unit(unit, 9u);
}

@compute @workgroup_size(64)
fn quantize_q5_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    for (var k = 0u; k < 2u; k = k + 1u) {
        load_block(unit * 2u + k);
        qx_0_block(k * 22u, 5u);
    }
    store_unit(unit, 11u);
}

@compute @workgroup_size(64)
fn quantize_q4_1(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    load_block(unit);
    qx_1_block(0u, 4u);
    store_unit(unit, 5u);
}

@compute @workgroup_size(64)
fn quantize_q5_1(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = unit_index(gid);
    if (unit >= params.n_units) {
        return;
    }
    load_block(unit);
    qx_1_block(0u, 5u);
    store_unit(unit, 6u);
}
