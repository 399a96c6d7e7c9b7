// iq3.wgsl — IQ3_XXS and IQ3_S: the GPU twin of src/quant/iq3.rs, which reproduces
// quantize_row_iq3_xxs_impl / quantize_row_iq3_s_impl (with and without an imatrix).
//
// The codebook tables come from the host (src/gpu/tables.rs) in binding 3 as u32 words, at the
// offsets the host declares in this module's prelude:
//   IQ3*_CODES + p   the codebook code of point p (level i in bits 3i..3i+3)
//   IQ3*_MAP + u     for level tuple u: the point index (when bits 16.. are 0), else
//                    (neighbour list start) | (list length << 16)
//   start + j        the neighbour lists, one point index per word
// and the type's constants (IQ3_EPS_XXS, IQ3_TRIAL_STEP, IQ3_FUDGE_XXS, IQ3_FUDGE_S) as exact
// hexadecimal floats written from the CPU's constants.
//
// Units (whole u32 words): two super-blocks, IQ3_XXS 2×98 = 196 bytes, IQ3_S 2×110 = 220.
//
// Loop budget: lavapipe silently ends an invocation's loops after 65535 iterations in total
// (see exact.wgsl). Inner loops over the four coordinates of a group are written out, and the
// neighbour scan takes eight neighbours per iteration, so a super-block needs at most
// 8·(setup + (2·n_try + 2)·(16 + 8·⌈38/8⌉)) ≈ 8·(140 + 32·56) ≈ 15.5k iterations, a unit of two
// 31k whatever the data (src/gpu/tables.rs checks this bound against the real lists).

const IQ3_QK: u32 = 256u;
const IQ3_F32_MAX: f32 = 0x1.fffffep+127f; // FLT_MAX

// The sub-block being searched: magnitudes, weights and their square roots.
var<private> iq3_xval: array<f32, 32>;
var<private> iq3_w: array<f32, 32>;
var<private> iq3_waux: array<f32, 32>;
// The sub-block's result: a codebook point per group, the sign bits per run of eight.
var<private> iq3_pts: array<u32, 8>;
var<private> iq3_signs: array<u32, 4>;

fn iq3_table(i: u32) -> u32 {
    return row_stats[i];
}

// Magnitude 2l + 1 of coordinate i of the point whose code is `code`.
fn iq3_mag(code: u32, i: u32) -> f32 {
    return f32(2u * ((code >> (3u * i)) & 7u) + 1u);
}

// round(½(t − 1)) clamped to [0, hi] for t = id·x, as nearest_int does it on the CPU. A
// non-finite t (an inverse scale that overflowed) gives 0 there: the adder's +inf has no
// mantissa bits (→ −4194304), and x86's default NaN of inf·0 has exactly the top one (→ 0).
fn iq3_round_level(id: f32, x: f32, hi: i32) -> u32 {
    let t = xmul(id, x);
    if ((bitcast<u32>(t) & 0x7f800000u) == 0x7f800000u) {
        return 0u;
    }
    return u32(clamp(nearest_int(xmul(0.5, t - 1.0)), 0, hi));
}

// Weighted squared error Σ waux·(scale·q − x)² of point p for group k (iq3_find_best_neighbour).
fn iq3_d2(codes: u32, p: u32, k: u32, scale: f32) -> f32 {
    let code = iq3_table(codes + p);
    let b = 4u * k;
    let e0 = xmul(scale, iq3_mag(code, 0u)) - iq3_xval[b];
    let e1 = xmul(scale, iq3_mag(code, 1u)) - iq3_xval[b + 1u];
    let e2 = xmul(scale, iq3_mag(code, 2u)) - iq3_xval[b + 2u];
    let e3 = xmul(scale, iq3_mag(code, 3u)) - iq3_xval[b + 3u];
    var d2 = 0.0;
    d2 = d2 + xmul(xmul(iq3_waux[b], e0), e0);
    d2 = d2 + xmul(xmul(iq3_waux[b + 1u], e1), e1);
    d2 = d2 + xmul(xmul(iq3_waux[b + 2u], e2), e2);
    d2 = d2 + xmul(xmul(iq3_waux[b + 3u], e3), e3);
    return d2;
}

struct Iq3Best {
    d2: f32,
    p: u32,
}

// Keep neighbour j of the list at `start` if its error is strictly smaller.
fn iq3_consider(codes: u32, start: u32, j: u32, len: u32, k: u32, scale: f32, b: Iq3Best) -> Iq3Best {
    if (j >= len) {
        return b;
    }
    let p = iq3_table(start + j);
    let d2 = iq3_d2(codes, p, k, scale);
    if (d2 < b.d2) {
        return Iq3Best(d2, p);
    }
    return b;
}

// The point for group k at inverse scale id (levels rounded, then snapped to the nearest listed
// neighbour at `scale` when off the codebook), with bit 31 set when it was off the codebook.
fn iq3_snap(codes: u32, map: u32, k: u32, id: f32, scale: f32) -> u32 {
    let b = 4u * k;
    let u = iq3_round_level(id, iq3_xval[b], 7)
        | (iq3_round_level(id, iq3_xval[b + 1u], 7) << 3u)
        | (iq3_round_level(id, iq3_xval[b + 2u], 7) << 6u)
        | (iq3_round_level(id, iq3_xval[b + 3u], 7) << 9u);
    let e = iq3_table(map + u);
    let len = e >> 16u;
    if (len == 0u) {
        return e;
    }
    let start = e & 0xffffu;
    // Only non-finite errors keep the first neighbour unbeaten (the CPU does the same).
    var best = Iq3Best(IQ3_F32_MAX, iq3_table(start));
    for (var j = 0u; j < rt(len); j = j + 8u) {
        best = iq3_consider(codes, start, j, len, k, scale, best);
        best = iq3_consider(codes, start, j + 1u, len, k, scale, best);
        best = iq3_consider(codes, start, j + 2u, len, k, scale, best);
        best = iq3_consider(codes, start, j + 3u, len, k, scale, best);
        best = iq3_consider(codes, start, j + 4u, len, k, scale, best);
        best = iq3_consider(codes, start, j + 5u, len, k, scale, best);
        best = iq3_consider(codes, start, j + 6u, len, k, scale, best);
        best = iq3_consider(codes, start, j + 7u, len, k, scale, best);
    }
    return best.p | 0x80000000u;
}

struct Iq3Sums {
    qx: f32,
    q2: f32,
}

// Σ w·x·q and Σ w·q² over the sub-block for the points `pts`, in element order.
fn iq3_sums(codes: u32, pts: array<u32, 8>) -> Iq3Sums {
    var qx = 0.0;
    var q2 = 0.0;
    for (var k = 0u; k < rt(8u); k = k + 1u) {
        let code = iq3_table(codes + pts[k]);
        let b = 4u * k;
        let q0 = iq3_mag(code, 0u);
        let q1 = iq3_mag(code, 1u);
        let q2_ = iq3_mag(code, 2u);
        let q3 = iq3_mag(code, 3u);
        qx = qx + xmul(xmul(iq3_w[b], iq3_xval[b]), q0);
        q2 = q2 + xmul(xmul(iq3_w[b], q0), q0);
        qx = qx + xmul(xmul(iq3_w[b + 1u], iq3_xval[b + 1u]), q1);
        q2 = q2 + xmul(xmul(iq3_w[b + 1u], q1), q1);
        qx = qx + xmul(xmul(iq3_w[b + 2u], iq3_xval[b + 2u]), q2_);
        q2 = q2 + xmul(xmul(iq3_w[b + 2u], q2_), q2_);
        qx = qx + xmul(xmul(iq3_w[b + 3u], iq3_xval[b + 3u]), q3);
        q2 = q2 + xmul(xmul(iq3_w[b + 3u], q3), q3);
    }
    return Iq3Sums(qx, q2);
}

// One sub-block (src[x0..x0+32), columns from `col`): its scale into the return value, its
// points and signs into iq3_pts / iq3_signs; −1 for a sub-block the type stores as zero.
fn iq3_sub_block(x0: u32, col: u32, sigma2: f32, xxs: bool, imatrix: bool) -> f32 {
    let codes = select(IQ3S_CODES, IQ3XXS_CODES, xxs);
    let map = select(IQ3S_MAP, IQ3XXS_MAP, xxs);
    let n_try = select(9, 15, xxs);
    let v0 = x0 >> 2u;
    for (var q = 0u; q < rt(8u); q = q + 1u) {
        let v = src[v0 + q];
        for (var i = 0u; i < 4u; i = i + 1u) {
            let j = 4u * q + i;
            let x = v[i];
            var w = xmul(x, x);
            if (imatrix) {
                w = xmul(qw[col + j], sqrt_rn(sigma2 + xmul(x, x)));
            }
            iq3_w[j] = w;
            iq3_waux[j] = sqrt_rn(w);
        }
    }
    for (var k = 0u; k < rt(4u); k = k + 1u) {
        var s = 0u;
        var n_negative = 0u;
        for (var i = 0u; i < 8u; i = i + 1u) {
            let x = sx(x0 + 8u * k + i);
            // x >= 0 keeps −0.0 as it is, with a clear sign bit (as the CPU does).
            if (x >= 0.0) {
                iq3_xval[8u * k + i] = x;
            } else {
                iq3_xval[8u * k + i] = -x;
                n_negative = n_negative + 1u;
                s = s | (1u << i);
            }
        }
        if (xxs) {
            if ((n_negative & 1u) == 1u) {
                // Flip the weight that costs least, (w·x)·x smallest, the first on ties.
                var imin = 0u;
                let x_first = sx(x0 + 8u * k);
                var vmin = xmul(xmul(iq3_w[8u * k], x_first), x_first);
                for (var i = 1u; i < 8u; i = i + 1u) {
                    let x = sx(x0 + 8u * k + i);
                    let e = xmul(xmul(iq3_w[8u * k + i], x), x);
                    if (e < vmin) {
                        vmin = e;
                        imin = i;
                    }
                }
                iq3_xval[8u * k + imin] = -iq3_xval[8u * k + imin];
                s = s ^ (1u << imin);
            }
            s = s & 0x7fu;
        }
        iq3_signs[k] = s;
    }
    var vmax = iq3_xval[0];
    for (var i = 1u; i < rt(32u); i = i + 1u) {
        vmax = select(iq3_xval[i], vmax, vmax > iq3_xval[i]);
    }
    if ((xxs && vmax < IQ3_EPS_XXS) || (!xxs && vmax == 0.0)) {
        return -1.0;
    }

    // Without an accepted trial the levels stay 0: the point of tuple 0.
    let origin = iq3_table(map);
    var pts: array<u32, 8>;
    for (var k = 0u; k < 8u; k = k + 1u) {
        pts[k] = origin;
    }
    var off_grid = select(0xffu, 0u, xxs);
    var best = 0.0;
    var scale = div_rn(vmax, 15.0);
    for (var is = -n_try; is <= n_try + i32(params.zero); is = is + 1) {
        let id = div_rn(15.0 + xmul(f32(is), IQ3_TRIAL_STEP), vmax);
        let this_scale = div_rn(1.0, id);
        var trial: array<u32, 8>;
        var trial_off = 0u;
        for (var k = 0u; k < rt(8u); k = k + 1u) {
            let r = iq3_snap(codes, map, k, id, this_scale);
            trial[k] = r & 0xffffu;
            trial_off = trial_off | ((r >> 31u) << k);
        }
        let s = iq3_sums(codes, trial);
        if (s.q2 > 0.0 && xmul(s.qx, s.qx) > xmul(best, s.q2)) {
            scale = div_rn(s.qx, s.q2);
            best = xmul(scale, s.qx);
            pts = trial;
            off_grid = trial_off;
        }
    }
    if (off_grid != 0u && scale > 0.0) {
        let id = div_rn(1.0, scale);
        for (var k = 0u; k < rt(8u); k = k + 1u) {
            // IQ3_XXS re-snaps only the groups that were off the codebook, IQ3_S every group.
            if (!xxs || ((off_grid >> k) & 1u) == 1u) {
                pts[k] = iq3_snap(codes, map, k, id, scale) & 0xffffu;
            }
        }
        let s = iq3_sums(codes, pts);
        if (s.q2 > 0.0) {
            scale = div_rn(s.qx, s.q2);
        }
    }
    if (scale < 0.0) {
        scale = -scale;
        for (var k = 0u; k < 4u; k = k + 1u) {
            iq3_signs[k] = ~iq3_signs[k] & select(0xffu, 0x7fu, xxs);
        }
    }
    iq3_pts = pts;
    return scale;
}

// Σx² · 2 / 256 over src[x0..x0+256): the σ² of the importance weights.
fn iq3_sigma2(x0: u32) -> f32 {
    var s = 0.0;
    let v0 = x0 >> 2u;
    for (var q = 0u; q < rt(64u); q = q + 1u) {
        let v = src[v0 + q];
        s = s + xmul(v.x, v.x);
        s = s + xmul(v.y, v.y);
        s = s + xmul(v.z, v.z);
        s = s + xmul(v.w, v.w);
    }
    return div_rn(xmul(2.0, s), 256.0);
}

// One IQ3_XXS super-block (src[x0..x0+256)) at byte `pos`: all zero when every sub-block scale
// is 0; else d = max/31 stored as f16 of d·1.0125, sub-block codes from the inverse of d.
fn quantize_block_iq3_xxs(x0: u32, col: u32, pos: u32, imatrix: bool) {
    let sigma2 = iq3_sigma2(x0);
    var grid: array<u32, 64>;
    var words: array<u32, 8>;
    var scales: array<f32, 8>;
    var max_scale = 0.0;
    for (var ib = 0u; ib < rt(8u); ib = ib + 1u) {
        let scale = iq3_sub_block(x0 + 32u * ib, col + 32u * ib, sigma2, true, imatrix);
        if (scale < 0.0) {
            for (var k = 0u; k < 8u; k = k + 1u) {
                grid[8u * ib + k] = 0u;
            }
            words[ib] = 0u;
            scales[ib] = 0.0;
            continue;
        }
        for (var k = 0u; k < 8u; k = k + 1u) {
            grid[8u * ib + k] = iq3_pts[k];
        }
        words[ib] = iq3_signs[0] | (iq3_signs[1] << 7u) | (iq3_signs[2] << 14u)
            | (iq3_signs[3] << 21u);
        scales[ib] = scale;
        max_scale = select(scale, max_scale, max_scale > scale);
    }
    if (max_scale == 0.0) {
        return; // the unit's words start cleared
    }
    let d = div_rn(max_scale, 31.0);
    put_u16(pos, f32_to_f16_bits(xmul(d, IQ3_FUDGE_XXS)));
    let id = div_rn(1.0, d);
    for (var g = 0u; g < rt(64u); g = g + 1u) {
        put_byte(pos + 2u + g, grid[g]);
    }
    for (var ib = 0u; ib < rt(8u); ib = ib + 1u) {
        let code = iq3_round_level(id, scales[ib], 15);
        put_u32(pos + 66u + 4u * ib, words[ib] | (code << 28u));
    }
}

// One IQ3_S super-block at byte `pos`. A zero sub-block advances neither the qs nor the signs
// position (qh is indexed by sub-block), as on the CPU; d = max/31 stored as f16 of d·1.033.
fn quantize_block_iq3_s(x0: u32, col: u32, pos: u32, imatrix: bool) {
    let sigma2 = iq3_sigma2(x0);
    var scales: array<f32, 8>;
    var max_scale = 0.0;
    var cursor = 0u;
    for (var ib = 0u; ib < rt(8u); ib = ib + 1u) {
        let scale = iq3_sub_block(x0 + 32u * ib, col + 32u * ib, sigma2, false, imatrix);
        if (scale < 0.0) {
            scales[ib] = 0.0;
            continue;
        }
        var qh = 0u;
        for (var k = 0u; k < 8u; k = k + 1u) {
            put_byte(pos + 2u + 8u * cursor + k, iq3_pts[k] & 0xffu);
            qh = qh | ((iq3_pts[k] >> 8u) << k);
        }
        put_byte(pos + 66u + ib, qh);
        for (var k = 0u; k < 4u; k = k + 1u) {
            put_byte(pos + 74u + 4u * cursor + k, iq3_signs[k]);
        }
        cursor = cursor + 1u;
        scales[ib] = scale;
        max_scale = select(scale, max_scale, max_scale > scale);
    }
    if (max_scale == 0.0) {
        return;
    }
    let d = div_rn(max_scale, 31.0);
    put_u16(pos, f32_to_f16_bits(xmul(d, IQ3_FUDGE_S)));
    let id = div_rn(1.0, d);
    for (var ib = 0u; ib < rt(8u); ib = ib + 2u) {
        let l1 = iq3_round_level(id, scales[ib], 15);
        let l2 = iq3_round_level(id, scales[ib + 1u], 15);
        put_byte(pos + 106u + ib / 2u, l1 | (l2 << 4u));
    }
}

// A plain and an imatrix entry point per type (`imatrix` a literal): one path per pipeline.
fn iq3_units(gid: vec3<u32>, xxs: bool, imatrix: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 2u; k = k + 1u) {
            let blk = unit * 2u + k;
            let col = block_col(blk, IQ3_QK);
            if (xxs) {
                quantize_block_iq3_xxs(blk * IQ3_QK, col, k * 98u, imatrix);
            } else {
                quantize_block_iq3_s(blk * IQ3_QK, col, k * 110u, imatrix);
            }
        }
        store_unit(unit, select(55u, 49u, xxs));
    }
}

@compute @workgroup_size(64)
fn quantize_iq3_xxs(@builtin(global_invocation_id) gid: vec3<u32>) {
    iq3_units(gid, true, false);
}

@compute @workgroup_size(64)
fn quantize_iq3_xxs_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    iq3_units(gid, true, true);
}

@compute @workgroup_size(64)
fn quantize_iq3_s(@builtin(global_invocation_id) gid: vec3<u32>) {
    iq3_units(gid, false, false);
}

@compute @workgroup_size(64)
fn quantize_iq3_s_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    iq3_units(gid, false, true);
}
