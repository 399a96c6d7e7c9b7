// legacy.wgsl — Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: the GPU twin of src/quant/legacy.rs.
// Without an imatrix these reproduce ggml's quantize_row_<t>_ref; with one, Q4_0/Q5_0 reproduce
// quantize_row_q4_0_impl / q5_0_impl (make_qx_quants on weights qw·sqrt(σ²+x²)) and Q4_1/Q5_1
// quantize_row_q4_1_impl / q5_1_impl (make_qkx3_quants). Q8_0 ignores the imatrix, as ggml does.
//
// Unit sizes (whole u32 words): Q8_0 2×34 = 68 bytes, Q4_0 2×18 = 36, Q5_0 2×22 = 44,
// Q4_1 1×20, Q5_1 1×24. σ² of each row (row_sigma2) is computed by a pre-pass into row_stats.
//
// The plain (_ref) paths read their block straight from `src` in loops of constant length: on
// lavapipe, copying it into the searches' private arrays first (dynamically indexed, so kept
// in scratch memory) made these kernels three times slower. Only the imatrix searches use wx/ww.

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
        let v = sx(base + j);
        sum_x2 = sum_x2 + xmul(v, v);
    }
    dst[row] = bitcast<u32>(div_rn(sum_x2, f32(params.n_per_row)));
}

// Load block `blk` into wx and its weights qw·sqrt(σ² + x²) into ww (imatrix paths).
fn load_weighted_block(blk: u32) {
    load_work(blk * QK, QK);
    let col = block_col(blk, QK);
    let sigma2 = row_stats[block_row(blk)];
    for (var j = 0u; j < rt(QK); j = j + 1u) {
        ww[j] = xmul(qw[col + j], sqrt_rn(sigma2 + xmul(wx[j], wx[j])));
    }
}

// d and 1/d (0 when d is 0) the way the _ref functions compute them.
fn inverse_or_zero(d: f32) -> f32 {
    if (d != 0.0) {
        return div_rn(1.0, d);
    }
    return 0.0;
}

// Signed absolute maximum of src[xoff..xoff+32): the first element of largest magnitude, with
// its sign.
fn signed_absmax(xoff: u32) -> f32 {
    var amax = 0.0;
    var vmax = 0.0;
    for (var k = 0u; k < QK / 4u; k = k + 1u) {
        let v = src[(xoff >> 2u) + k];
        for (var c = 0u; c < 4u; c = c + 1u) {
            if (amax < abs(v[c])) {
                amax = abs(v[c]);
                vmax = v[c];
            }
        }
    }
    return vmax;
}

// Pack the 32 levels an imatrix search left in wl as ggml does: byte j = level j | level j+16
// << 4 at `qs_pos`; returns the fifth bits (bit j for level j) for 5-bit types.
fn pack_search_levels(qs_pos: u32) -> u32 {
    var qh = 0u;
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        let lo = u32(wl[j]);
        let hi = u32(wl[j + 16u]);
        put_byte(qs_pos + j, (lo & 0x0fu) | ((hi & 0x0fu) << 4u));
        qh = qh | (((lo >> 4u) & 1u) << j) | (((hi >> 4u) & 1u) << (j + 16u));
    }
    return qh;
}

// block_q8_0 of src[xoff..xoff+32) at byte `pos`: fp16 d, 32 × i8.
fn q8_0_block(xoff: u32, pos: u32) {
    let v0 = xoff >> 2u;
    var amax = 0.0;
    for (var k = 0u; k < QK / 4u; k = k + 1u) {
        let a = abs(src[v0 + k]);
        amax = select(a.x, amax, amax > a.x);
        amax = select(a.y, amax, amax > a.y);
        amax = select(a.z, amax, amax > a.z);
        amax = select(a.w, amax, amax > a.w);
    }
    let d = div_rn(amax, 127.0);
    let id = inverse_or_zero(d);
    put_u16(pos, f32_to_f16_bits(d));
    for (var k = 0u; k < QK / 4u; k = k + 1u) {
        let v = src[v0 + k];
        let p = pos + 2u + 4u * k;
        put_byte(p, c_float_to_byte(round_half_away(v.x * id)));
        put_byte(p + 1u, c_float_to_byte(round_half_away(v.y * id)));
        put_byte(p + 2u, c_float_to_byte(round_half_away(v.z * id)));
        put_byte(p + 3u, c_float_to_byte(round_half_away(v.w * id)));
    }
}

// block_q4_0 / block_q5_0 of block `blk` at `pos` (nbits 4 or 5): fp16 d, [u32 qh], 16 bytes of
// nibbles.
fn qx_0_block(blk: u32, pos: u32, nbits: u32, imatrix: bool) {
    let qs_pos = pos + select(2u, 6u, nbits == 5u);
    var d: f32;
    var qh = 0u;
    if (imatrix) {
        load_weighted_block(blk);
        d = make_qx_quants(0u, QK, i32(1u << (nbits - 1u)), 1, true);
        qh = pack_search_levels(qs_pos);
    } else {
        let xoff = blk * QK;
        let half_range = f32(1u << (nbits - 1u));          // 8 or 16
        let top = i32((1u << nbits) - 1u);                   // 15 or 31
        let vmax = signed_absmax(xoff);
        d = div_rn(vmax, -half_range);
        let id = inverse_or_zero(d);
        let bias = half_range + 0.5;                         // 8.5 or 16.5, exact
        for (var k = 0u; k < 4u; k = k + 1u) {
            let vlo = src[(xoff >> 2u) + k];
            let vhi = src[(xoff >> 2u) + k + 4u];
            for (var c = 0u; c < 4u; c = c + 1u) {
                let j = 4u * k + c;
                let lo = u32(min(top, c_float_to_i8(xmul(vlo[c], id) + bias)));
                let hi = u32(min(top, c_float_to_i8(xmul(vhi[c], id) + bias)));
                put_byte(qs_pos + j, (lo & 0x0fu) | ((hi & 0x0fu) << 4u));
                qh = qh | (((lo >> 4u) & 1u) << j) | (((hi >> 4u) & 1u) << (j + 16u));
            }
        }
    }
    put_u16(pos, f32_to_f16_bits(d));
    if (nbits == 5u) {
        put_u32(pos + 2u, qh);
    }
}

// block_q4_1 / block_q5_1 of block `blk` at `pos`: fp16 d, fp16 m, [u32 qh], 16 bytes of
// nibbles.
fn qx_1_block(blk: u32, pos: u32, nbits: u32, imatrix: bool) {
    let qs_pos = pos + select(4u, 8u, nbits == 5u);
    var d: f32;
    var m: f32;
    var qh = 0u;
    if (imatrix) {
        load_weighted_block(blk);
        let rmin = -0x1.ccccccp-1f;                        // -0.9f
        let rdelta = 0x1.99999ap-5f;                       // 0.05f
        let top = i32((1u << nbits) - 1u);                 // 15 or 31
        let sm = make_qkx3_quants(0u, QK, top, rmin, rdelta, 36, false, true);
        d = sm.scale;
        m = -sm.the_min;
        qh = pack_search_levels(qs_pos);
    } else {
        let xoff = blk * QK;
        var vmin = F32_MAX;
        var vmax = -F32_MAX;
        for (var k = 0u; k < QK / 4u; k = k + 1u) {
            let v4 = src[(xoff >> 2u) + k];
            for (var c = 0u; c < 4u; c = c + 1u) {
                let v = v4[c];
                if (v < vmin) {
                    vmin = v;
                }
                if (v > vmax) {
                    vmax = v;
                }
            }
        }
        d = div_rn(vmax - vmin, f32((1u << nbits) - 1u));
        m = vmin;
        let id = inverse_or_zero(d);
        for (var k = 0u; k < 4u; k = k + 1u) {
            let vlo = src[(xoff >> 2u) + k];
            let vhi = src[(xoff >> 2u) + k + 4u];
            for (var c = 0u; c < 4u; c = c + 1u) {
                let j = 4u * k + c;
                let a = xmul(vlo[c] - vmin, id) + 0.5;
                let b = xmul(vhi[c] - vmin, id) + 0.5;
                var lo: u32;
                var hi: u32;
                if (nbits == 4u) {
                    lo = u32(min(15, c_float_to_i8(a)));
                    hi = u32(min(15, c_float_to_i8(b)));
                } else {
                    lo = c_float_to_byte(a); // (uint8_t) cast, no clamp in q5_1_ref
                    hi = c_float_to_byte(b);
                }
                put_byte(qs_pos + j, (lo & 0x0fu) | ((hi & 0x0fu) << 4u));
                qh = qh | (((lo >> 4u) & 1u) << j) | (((hi >> 4u) & 1u) << (j + 16u));
            }
        }
    }
    put_u16(pos, f32_to_f16_bits(d));
    put_u16(pos + 2u, f32_to_f16_bits(m));
    if (nbits == 5u) {
        put_u32(pos + 4u, qh);
    }
}

@compute @workgroup_size(64)
fn quantize_q8_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        q8_0_block(unit * 2u * QK, 0u);
        q8_0_block((unit * 2u + 1u) * QK, 34u);
        store_unit(unit, 17u);
    }
}

// Each type with an imatrix path has two entry points (`imatrix` a literal): a pipeline then
// holds one path only. lavapipe runs both sides of a branch, even a uniform one, so a dead
// imatrix path made the plain kernels twice as slow (and pipelines slower to build).
fn qx_0_units(gid: vec3<u32>, nbits: u32, imatrix: bool) {
    let units = unit_range(gid);
    let block_bytes = select(18u, 22u, nbits == 5u);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        qx_0_block(unit * 2u, 0u, nbits, imatrix);
        qx_0_block(unit * 2u + 1u, block_bytes, nbits, imatrix);
        store_unit(unit, block_bytes / 2u);
    }
}

fn qx_1_units(gid: vec3<u32>, nbits: u32, imatrix: bool) {
    let units = unit_range(gid);
    let block_words = select(5u, 6u, nbits == 5u);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        qx_1_block(unit, 0u, nbits, imatrix);
        store_unit(unit, block_words);
    }
}

@compute @workgroup_size(64)
fn quantize_q4_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    qx_0_units(gid, 4u, false);
}

@compute @workgroup_size(64)
fn quantize_q4_0_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    qx_0_units(gid, 4u, true);
}

@compute @workgroup_size(64)
fn quantize_q5_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    qx_0_units(gid, 5u, false);
}

@compute @workgroup_size(64)
fn quantize_q5_0_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    qx_0_units(gid, 5u, true);
}

@compute @workgroup_size(64)
fn quantize_q4_1(@builtin(global_invocation_id) gid: vec3<u32>) {
    qx_1_units(gid, 4u, false);
}

@compute @workgroup_size(64)
fn quantize_q4_1_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    qx_1_units(gid, 4u, true);
}

@compute @workgroup_size(64)
fn quantize_q5_1(@builtin(global_invocation_id) gid: vec3<u32>) {
    qx_1_units(gid, 5u, false);
}

@compute @workgroup_size(64)
fn quantize_q5_1_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    qx_1_units(gid, 5u, true);
}
