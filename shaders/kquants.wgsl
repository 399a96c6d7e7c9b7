// kquants.wgsl — Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: the GPU twin of src/quant/kquants.rs.
// Without an imatrix each kernel reproduces ggml's quantize_row_<t>_ref; with one,
// quantize_row_<t>_impl. Step names follow the CPU file (fit, quantize scales, finish =
// requantize against the stored fp16 scales, then pack).
//
// One invocation quantizes whole super-blocks of QK_K = 256 elements. Units (whole u32 words):
// Q2_K 1×84 bytes, Q3_K 2×110, Q4_K 1×144, Q5_K 1×176, Q6_K 2×210.
//
// Storage: the super-block's values are read from `src` where needed (xv); its 256 levels live
// one byte each in `levels`. Each search (search.wgsl) runs on one sub-block copied into
// wx/ww/wl[0..n) (WORK_ELEMS = 32), and so does the second-level search of the 16 or 8
// sub-block scales. Small private arrays matter: with super-block-sized working arrays
// lavapipe (Mesa 22.3) took 30+ s to build a pipeline and then lost private-array writes.
// σ² is per super-block here (not per row), so no pre-pass is needed.

const QK_K: u32 = 256u;
// The current super-block: index of its first element in `src`, and of its first column (for
// the importance weights).
var<private> x0: u32;
var<private> col0: u32;
// Its 256 levels, one byte each (as the C code's uint8_t L[]), four to a word.
var<private> levels: array<u32, 64>;

// Per super-block results of the sub-block searches.
var<private> sub_scale: array<f32, 16>;
var<private> sub_min: array<f32, 16>;
var<private> sub_weight: array<f32, 16>; // Σ of the sub-block's importance weights
// Packed scale bytes of the block being built, read back by the requantization as C reads them.
var<private> scale_bytes: array<u32, 16>;

fn xv(i: u32) -> f32 {
    return sx(x0 + i);
}

fn get_level(i: u32) -> u32 {
    return (levels[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn set_level(i: u32, v: u32) {
    let shift = (i & 3u) * 8u;
    levels[i >> 2u] = (levels[i >> 2u] & ~(0xffu << shift)) | ((v & 0xffu) << shift);
}

// Make super-block `blk` (chunk-relative) the current one.
fn select_super_block(blk: u32) {
    x0 = blk * QK_K;
    col0 = block_col(blk, QK_K);
}

// Copy elements [start, start + n) of the super-block into wx[0..n).
fn load_sub_block(start: u32, n: u32) {
    load_work(x0 + start, n);
}

// Keep the search's levels wl[0..n) as the levels of elements [start, start + n).
fn keep_levels(start: u32, n: u32) {
    for (var i = 0u; i < rt(n); i = i + 1u) {
        set_level(start + i, bitcast<u32>(wl[i]));
    }
}

// σ² of the imatrix paths: factor · Σx² / 256 (factor 1 for Q2_K, 2 for the others).
fn block_sigma2(factor: f32) -> f32 {
    var sum_x2 = 0.0;
    for (var j = 0u; j < rt(QK_K); j = j + 1u) {
        let v = xv(j);
        sum_x2 = sum_x2 + xmul(v, v);
    }
    return div_rn(xmul(factor, sum_x2), f32(QK_K));
}

// With sub-block `s` (of `n` elements) in wx: ww = qw · sqrt(σ² + x²), and their sum in
// sub_weight[s].
fn imatrix_weights(s: u32, n: u32, sigma2: f32) {
    let col = col0 + s * n;
    var sum_w = 0.0;
    for (var l = 0u; l < rt(n); l = l + 1u) {
        let x = wx[l];
        let w = xmul(qw[col + l], sqrt_rn(sigma2 + xmul(x, x)));
        ww[l] = w;
        sum_w = sum_w + w;
    }
    sub_weight[s] = sum_w;
}

// The fp16 store-and-read-back of a scale at byte `pos`.
fn put_f16(pos: u32, v: f32) -> f32 {
    let h = f32_to_f16_bits(v);
    put_u16(pos, h);
    return f16_bits_to_f32(h);
}

// Two 2-bit fields per 128 elements four deep: byte l of each 32-byte group holds elements
// l, l+32, l+64, l+96 of its 128-element half (Q2_K and Q3_K low bits).
fn pack_2bit(pos: u32) {
    for (var half = 0u; half < 2u; half = half + 1u) {
        let base = half * 128u;
        for (var l = 0u; l < rt(32u); l = l + 1u) {
            let b = get_level(base + l) | (get_level(base + l + 32u) << 2u)
                | (get_level(base + l + 64u) << 4u) | (get_level(base + l + 96u) << 6u);
            put_byte(pos + half * 32u + l, b);
        }
    }
}

// The second-level search's levels wl[0..n) as C's uint8_t/int8_t would hold them (low byte).
fn second_level_levels(n: u32, out_levels: ptr<function, array<u32, 16>>) {
    for (var j = 0u; j < rt(n); j = j + 1u) {
        (*out_levels)[j] = bitcast<u32>(wl[j]) & 0xffu;
    }
}

// make_qp_quants of the sub-block scales, then of the mins (n of each), weighted by the
// sub-block weight sums; their levels (low bytes) into ls / lm. Returns (scale of the scales,
// scale of the mins). One call site in a loop: every call of a search is inlined by the driver,
// and pipeline build time grows with each copy.
fn quantize_scales_and_mins(n: u32, nmax: i32, ls: ptr<function, array<u32, 16>>,
                            lm: ptr<function, array<u32, 16>>) -> vec2<f32> {
    var result = vec2<f32>(0.0, 0.0);
    for (var which = 0u; which < rt(2u); which = which + 1u) {
        for (var j = 0u; j < rt(n); j = j + 1u) {
            wx[j] = select(sub_scale[j], sub_min[j], which == 1u);
            ww[j] = sub_weight[j];
        }
        result[which] = make_qp_quants(0u, n, nmax);
        for (var j = 0u; j < rt(n); j = j + 1u) {
            let l = bitcast<u32>(wl[j]) & 0xffu;
            if (which == 0u) {
                (*ls)[j] = l;
            } else {
                (*lm)[j] = l;
            }
        }
    }
    return result;
}

// ─────────────────────────────────────────── Q2_K ───────────────────────────────────────────
// Layout: scales[16] (low nibble scale, high nibble min) @0, qs[64] @16, d @80, dmin @82.

// Requantize each 16-element sub-block against the stored scales (keeping the search's levels
// where a sub-block's scale is zero), then pack.
fn finish_q2_k(pos: u32, d: f32, dmin: f32) {
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        let sc = scale_bytes[j];
        let dl = xmul(d, f32(sc & 0xfu));
        if (dl == 0.0) {
            continue;
        }
        let ml = xmul(dmin, f32(sc >> 4u));
        for (var ii = 0u; ii < rt(16u); ii = ii + 1u) {
            let l = nearest_int(div_rn(xv(16u * j + ii) + ml, dl));
            set_level(16u * j + ii, u32(max(0, min(3, l))));
        }
    }
    pack_2bit(pos + 16u);
}

// The sub-block searches of Q2_K: quantize_row_q2_K_ref's make_qkx2_quants on weights |x|, or
// with an imatrix quantize_row_q2_K_impl's make_qkx3_quants on qw·sqrt(σ² + x²) (one inlined
// search for both).
fn fit_sub_blocks_q2_k(imatrix: bool) {
    var sigma2 = 0.0;
    if (imatrix) {
        sigma2 = block_sigma2(1.0);
    }
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        load_sub_block(16u * j, 16u);
        if (imatrix) {
            imatrix_weights(j, 16u, sigma2);
        } else {
            for (var l = 0u; l < rt(16u); l = l + 1u) {
                ww[l] = abs(wx[l]);
            }
        }
        let sm = min_scale_search(0u, 16u, 3,
                                  select(-0.5, -0x1.ccccccp-1f, imatrix),
                                  select(F32_0_1, 0x1.99999ap-5f, imatrix),
                                  select(15, 36, imatrix), !imatrix, true, !imatrix);
        keep_levels(16u * j, 16u);
        sub_scale[j] = sm.scale;
        sub_min[j] = sm.the_min;
    }
}

// quantize_row_q2_K_ref's scale quantization: 4-bit scales and mins relative to the largest,
// d = max_scale/15, dmin = max_min/15.
fn quantize_scales_q2_k(pos: u32) -> vec2<f32> {
    var max_scale = 0.0;
    var max_min = 0.0;
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        if (sub_scale[j] > max_scale) {
            max_scale = sub_scale[j];
        }
        if (sub_min[j] > max_min) {
            max_min = sub_min[j];
        }
    }
    var d: f32;
    if (max_scale > 0.0) {
        let iscale = div_rn(15.0, max_scale);
        for (var j = 0u; j < rt(16u); j = j + 1u) {
            scale_bytes[j] = bitcast<u32>(nearest_int(xmul(iscale, sub_scale[j]))) & 0xffu;
        }
        d = put_f16(pos + 80u, div_rn(max_scale, 15.0));
    } else {
        for (var j = 0u; j < rt(16u); j = j + 1u) {
            scale_bytes[j] = 0u;
        }
        d = put_f16(pos + 80u, 0.0);
    }
    var dmin: f32;
    if (max_min > 0.0) {
        let iscale = div_rn(15.0, max_min);
        for (var j = 0u; j < rt(16u); j = j + 1u) {
            let m = bitcast<u32>(nearest_int(xmul(iscale, sub_min[j])));
            scale_bytes[j] = (scale_bytes[j] | (m << 4u)) & 0xffu;
        }
        dmin = put_f16(pos + 82u, div_rn(max_min, 15.0));
    } else {
        dmin = put_f16(pos + 82u, 0.0);
    }
    return vec2<f32>(d, dmin);
}

// quantize_row_q2_K_impl's scale quantization: make_qp_quants of scales and mins.
fn quantize_scales_q2_k_imatrix(pos: u32) -> vec2<f32> {
    var ls: array<u32, 16>;
    var lm: array<u32, 16>;
    let dm = quantize_scales_and_mins(16u, 15, &ls, &lm);
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        scale_bytes[j] = (ls[j] | (lm[j] << 4u)) & 0xffu;
    }
    return vec2<f32>(put_f16(pos + 80u, dm.x), put_f16(pos + 82u, dm.y));
}

// One Q2_K block: quantize_row_q2_K_ref, or quantize_row_q2_K_impl with an imatrix.
fn quantize_block_q2_k(pos: u32, imatrix: bool) {
    fit_sub_blocks_q2_k(imatrix);
    var dm: vec2<f32>;
    if (imatrix) {
        dm = quantize_scales_q2_k_imatrix(pos);
    } else {
        dm = quantize_scales_q2_k(pos);
    }
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        put_byte(pos + j, scale_bytes[j]);
    }
    finish_q2_k(pos, dm.x, dm.y);
}

// ─────────────────────────────────────────── Q3_K ───────────────────────────────────────────
// Layout: hmask[32] @0, qs[64] @32, scales[12] @96 (sixteen 6-bit values offset by 32), d @108.

// Pack sixteen 6-bit values into scale_bytes[0..12): low nibbles of 0–7 / 8–15 in the low /
// high halves of bytes 0–7, top two bits in bytes 8–11 (value j at bit 2·(j/4) of byte 8 + j%4).
fn pack_q3_k_scales(l6: ptr<function, array<u32, 16>>) {
    for (var j = 0u; j < 12u; j = j + 1u) {
        scale_bytes[j] = 0u;
    }
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        let l = (*l6)[j] & 0xffu;
        if (j < 8u) {
            scale_bytes[j] = l & 0xfu;
        } else {
            scale_bytes[j - 8u] = (scale_bytes[j - 8u] | ((l & 0xfu) << 4u)) & 0xffu;
        }
        let hb = j % 4u + 8u;
        scale_bytes[hb] = (scale_bytes[hb] | ((l >> 4u) << (2u * (j / 4u)))) & 0xffu;
    }
}

// Sub-block j's signed scale from the packed bytes.
fn q3_k_scale(j: u32) -> i32 {
    var low: u32;
    if (j < 8u) {
        low = scale_bytes[j] & 0xfu;
    } else {
        low = scale_bytes[j - 8u] >> 4u;
    }
    let high = (scale_bytes[8u + j % 4u] >> (2u * (j / 4u))) & 3u;
    return ((bitcast<i32>(low | (high << 4u)) << 24u) >> 24u) - 32;
}

// Put the scale bytes, requantize against them, split the high bit into hmask, pack.
fn finish_q3_k(pos: u32, d_all: f32) {
    for (var j = 0u; j < 12u; j = j + 1u) {
        put_byte(pos + 96u + j, scale_bytes[j]);
    }
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        let d = xmul(d_all, f32(q3_k_scale(j)));
        if (d == 0.0) {
            continue;
        }
        for (var ii = 0u; ii < rt(16u); ii = ii + 1u) {
            let l = max(-4, min(3, nearest_int(div_rn(xv(16u * j + ii), d))));
            set_level(16u * j + ii, u32(l + 4));
        }
    }
    for (var m = 0u; m < rt(32u); m = m + 1u) {
        var h = 0u;
        for (var b = 0u; b < 8u; b = b + 1u) {
            let j = m + 32u * b;
            let l = get_level(j);
            if (l > 3u) {
                h = h | (1u << b);
                set_level(j, l - 4u);
            }
        }
        put_byte(pos + m, h);
    }
    pack_2bit(pos + 32u);
}

// quantize_row_q3_K_ref, one block.
fn quantize_block_q3_k(pos: u32) {
    var max_scale = 0.0;
    var amax = 0.0;
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        load_sub_block(16u * j, 16u);
        let s = make_q3_quants(0u, 16u, 4, true);
        keep_levels(16u * j, 16u);
        sub_scale[j] = s;
        if (abs(s) > amax) {
            amax = abs(s);
            max_scale = s;
        }
    }
    var d_all: f32;
    if (max_scale != 0.0) {
        let iscale = div_rn(-32.0, max_scale);
        var l6: array<u32, 16>;
        for (var j = 0u; j < rt(16u); j = j + 1u) {
            // (int8_t) of the level, then clamped to [-32, 31] and biased.
            let l = (nearest_int(xmul(iscale, sub_scale[j])) << 24u) >> 24u;
            l6[j] = u32(max(-32, min(31, l)) + 32);
        }
        pack_q3_k_scales(&l6);
        d_all = put_f16(pos + 108u, div_rn(1.0, iscale));
    } else {
        for (var j = 0u; j < 12u; j = j + 1u) {
            scale_bytes[j] = 0u;
        }
        d_all = put_f16(pos + 108u, 0.0);
    }
    finish_q3_k(pos, d_all);
}

// quantize_row_q3_K_impl, one block: make_qx_quants on each sub-block (weights qw·sqrt(σ² + x²)),
// then on the 16 sub-block scales (weights: the sub-blocks' weight sums). Pass 16 of the loop
// is that second search, so the driver inlines one copy of make_qx_quants, not two.
fn quantize_block_q3_k_imatrix(pos: u32) {
    let sigma2 = block_sigma2(2.0);
    var ls: array<u32, 16>;
    var d_block = 0.0;
    for (var j = 0u; j < rt(17u); j = j + 1u) {
        let scales_pass = j == 16u;
        if (scales_pass) {
            for (var i = 0u; i < rt(16u); i = i + 1u) {
                wx[i] = sub_scale[i];
                ww[i] = sub_weight[i];
            }
        } else {
            load_sub_block(16u * j, 16u);
            imatrix_weights(j, 16u, sigma2);
        }
        let s = make_qx_quants(0u, 16u, select(4, 32, scales_pass), 1, true);
        if (scales_pass) {
            d_block = s;
            second_level_levels(16u, &ls);
        } else {
            sub_scale[j] = s;
            keep_levels(16u * j, 16u);
        }
    }
    pack_q3_k_scales(&ls);
    let d_all = put_f16(pos + 108u, d_block);
    finish_q3_k(pos, d_all);
}

// ───────────────────────────────────────── Q4_K, Q5_K ─────────────────────────────────────────
// Q4_K layout: d @0, dmin @2, scales[12] @4, qs[128] @16.
// Q5_K layout: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48.

// The sub-block searches of Q4_K/Q5_K (one inlined search for both paths): without an
// imatrix make_qkx2_quants (rmin, 0.1, nstep) on weights sqrt(mean x²) + |x| per 32-element
// sub-block; with one make_qkx3_quants (−0.9, 0.05, 36) on qw·sqrt(σ² + x²).
fn fit_sub_blocks_k(imatrix: bool, nmax: i32, rmin: f32, nstep: i32) {
    var sigma2 = 0.0;
    if (imatrix) {
        sigma2 = block_sigma2(2.0);
    }
    for (var j = 0u; j < rt(8u); j = j + 1u) {
        load_sub_block(32u * j, 32u);
        if (imatrix) {
            imatrix_weights(j, 32u, sigma2);
        } else {
            var sum_x2 = 0.0;
            for (var l = 0u; l < rt(32u); l = l + 1u) {
                sum_x2 = sum_x2 + xmul(wx[l], wx[l]);
            }
            let av_x = sqrt_rn(div_rn(sum_x2, 32.0));
            for (var l = 0u; l < rt(32u); l = l + 1u) {
                ww[l] = av_x + abs(wx[l]);
            }
        }
        let sm = min_scale_search(0u, 32u, nmax,
                                  select(rmin, -0x1.ccccccp-1f, imatrix),
                                  select(F32_0_1, 0x1.99999ap-5f, imatrix),
                                  select(nstep, 36, imatrix), false, true, !imatrix);
        keep_levels(32u * j, 32u);
        sub_scale[j] = sm.scale;
        sub_min[j] = sm.the_min;
    }
}

// Eight 6-bit scales and mins into scale_bytes[0..12) (pack_scale_min_k4), with C's uint8_t
// truncation of wider inputs.
fn pack_scale_min_k4(ls: ptr<function, array<u32, 16>>, lm: ptr<function, array<u32, 16>>) {
    for (var j = 0u; j < 12u; j = j + 1u) {
        scale_bytes[j] = 0u;
    }
    for (var j = 0u; j < rt(8u); j = j + 1u) {
        let s = (*ls)[j] & 0xffu;
        let m = (*lm)[j] & 0xffu;
        if (j < 4u) {
            scale_bytes[j] = s;
            scale_bytes[j + 4u] = m;
        } else {
            scale_bytes[j + 4u] = ((s & 0xfu) | ((m & 0xfu) << 4u)) & 0xffu;
            scale_bytes[j - 4u] = (scale_bytes[j - 4u] | ((s >> 4u) << 6u)) & 0xffu;
            scale_bytes[j] = (scale_bytes[j] | ((m >> 4u) << 6u)) & 0xffu;
        }
    }
}

// Scale and min of sub-block j from the packed bytes (get_scale_min_k4), as vec2(scale, min).
fn scale_min_k4(j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(scale_bytes[j] & 63u, scale_bytes[j + 4u] & 63u);
    }
    return vec2<u32>(
        (scale_bytes[j + 4u] & 0xfu) | ((scale_bytes[j - 4u] >> 6u) << 4u),
        (scale_bytes[j + 4u] >> 4u) | ((scale_bytes[j] >> 6u) << 4u),
    );
}

// No-imatrix scale quantization: 6-bit scales and mins relative to the largest, fp16
// d = max_scale/63, dmin = max_min/63. Returns the read-back (d, dmin).
fn quantize_scales_k(pos: u32) -> vec2<f32> {
    var max_scale = 0.0;
    var max_min = 0.0;
    for (var j = 0u; j < rt(8u); j = j + 1u) {
        if (sub_scale[j] > max_scale) {
            max_scale = sub_scale[j];
        }
        if (sub_min[j] > max_min) {
            max_min = sub_min[j];
        }
    }
    var inv_scale = 0.0;
    if (max_scale > 0.0) {
        inv_scale = div_rn(63.0, max_scale);
    }
    var inv_min = 0.0;
    if (max_min > 0.0) {
        inv_min = div_rn(63.0, max_min);
    }
    var ls: array<u32, 16>;
    var lm: array<u32, 16>;
    for (var j = 0u; j < rt(8u); j = j + 1u) {
        ls[j] = min(bitcast<u32>(nearest_int(xmul(inv_scale, sub_scale[j]))) & 0xffu, 63u);
        lm[j] = min(bitcast<u32>(nearest_int(xmul(inv_min, sub_min[j]))) & 0xffu, 63u);
    }
    pack_scale_min_k4(&ls, &lm);
    let d = put_f16(pos, div_rn(max_scale, 63.0));
    let dmin = put_f16(pos + 2u, div_rn(max_min, 63.0));
    return vec2<f32>(d, dmin);
}

// Imatrix scale quantization via make_qp_quants weighted by the sub-block weight sums. Q5_K
// clamps the levels to 63, Q4_K does not.
fn quantize_scales_k_imatrix(pos: u32, clamp_levels: bool) -> vec2<f32> {
    var ls: array<u32, 16>;
    var lm: array<u32, 16>;
    let dm = quantize_scales_and_mins(8u, 63, &ls, &lm);
    if (clamp_levels) {
        for (var j = 0u; j < rt(8u); j = j + 1u) {
            ls[j] = min(ls[j], 63u);
            lm[j] = min(lm[j], 63u);
        }
    }
    pack_scale_min_k4(&ls, &lm);
    let d = put_f16(pos, dm.x);
    let dmin = put_f16(pos + 2u, dm.y);
    return vec2<f32>(d, dmin);
}

// Put the scale bytes; requantize every sub-block with a non-zero stored scale to [0, nmax].
fn requantize_k(pos: u32, dm: vec2<f32>, nmax: i32) {
    for (var j = 0u; j < 12u; j = j + 1u) {
        put_byte(pos + 4u + j, scale_bytes[j]);
    }
    for (var j = 0u; j < rt(8u); j = j + 1u) {
        let sm = scale_min_k4(j);
        let dl = xmul(dm.x, f32(sm.x));
        if (dl == 0.0) {
            continue;
        }
        let ml = xmul(dm.y, f32(sm.y));
        for (var k = 0u; k < rt(8u); k = k + 1u) {
            let v = src[((x0 + 32u * j) >> 2u) + k];
            for (var c = 0u; c < 4u; c = c + 1u) {
                let l = nearest_int(div_rn(v[c] + ml, dl));
                set_level(32u * j + 4u * k + c, u32(max(0, min(nmax, l))));
            }
        }
    }
}

// Q4_K nibbles: byte l of each 32-byte group holds element l (low) and l+32 (high) of its span.
fn finish_q4_k(pos: u32, dm: vec2<f32>) {
    requantize_k(pos, dm, 15);
    for (var g = 0u; g < 4u; g = g + 1u) {
        for (var l = 0u; l < rt(32u); l = l + 1u) {
            let b = get_level(64u * g + l) | (get_level(64u * g + l + 32u) << 4u);
            put_byte(pos + 16u + 32u * g + l, b);
        }
    }
}

// Q5_K: nibbles as Q4_K, and the fifth bits of elements 64g + l / 64g + 32 + l at bits 2g / 2g+1
// of qh[l].
fn finish_q5_k(pos: u32, dm: vec2<f32>) {
    requantize_k(pos, dm, 31);
    for (var l = 0u; l < rt(32u); l = l + 1u) {
        var qh = 0u;
        for (var g = 0u; g < 4u; g = g + 1u) {
            var lo = get_level(64u * g + l);
            if (lo > 15u) {
                lo = lo - 16u;
                qh = qh | (1u << (2u * g));
            }
            var hi = get_level(64u * g + l + 32u);
            if (hi > 15u) {
                hi = hi - 16u;
                qh = qh | (2u << (2u * g));
            }
            put_byte(pos + 48u + 32u * g + l, lo | (hi << 4u));
        }
        put_byte(pos + 16u + l, qh);
    }
}

// ─────────────────────────────────────────── Q6_K ───────────────────────────────────────────
// Layout: ql[128] @0, qh[64] @128, i8 scales[16] @192, d @208.

// quantize_row_q6_K_ref (no weights) / quantize_row_q6_K_impl (the importance weights go to the
// search unchanged), one block: sub-block searches, then finish_q6_k.
fn quantize_block_q6_k(pos: u32, use_w: bool) {
    var max_scale = 0.0;
    var max_abs_scale = 0.0;
    for (var ib = 0u; ib < rt(16u); ib = ib + 1u) {
        load_sub_block(16u * ib, 16u);
        if (use_w) {
            for (var l = 0u; l < rt(16u); l = l + 1u) {
                ww[l] = qw[col0 + 16u * ib + l];
            }
        }
        let s = make_qx_quants(0u, 16u, 32, 1, use_w);
        keep_levels(16u * ib, 16u);
        sub_scale[ib] = s;
        if (abs(s) > max_abs_scale) {
            max_abs_scale = abs(s);
            max_scale = s;
        }
    }
    finish_q6_k(pos, max_scale, max_abs_scale);
}

// 8-bit scales relative to the largest-magnitude one, requantization against the stored fp16 d,
// packing. A block whose scales are all (near) zero is stored as zero bytes (ob starts zeroed).
fn finish_q6_k(pos: u32, max_scale: f32, max_abs_scale: f32) {
    if (max_abs_scale < GROUP_MAX_EPS) {
        return;
    }
    let iscale = div_rn(-128.0, max_scale);
    let d = put_f16(pos + 208u, div_rn(1.0, iscale));
    for (var ib = 0u; ib < rt(16u); ib = ib + 1u) {
        // min(·, 127) then C's (int8_t) truncation, read back as int8_t.
        let sc = (min(nearest_int(xmul(iscale, sub_scale[ib])), 127) << 24u) >> 24u;
        put_byte(pos + 192u + ib, bitcast<u32>(sc));
        let dl = xmul(d, f32(sc));
        if (dl == 0.0) {
            continue;
        }
        for (var ii = 0u; ii < rt(16u); ii = ii + 1u) {
            let l = max(-32, min(31, nearest_int(div_rn(xv(16u * ib + ii), dl))));
            set_level(16u * ib + ii, u32(l + 32));
        }
    }
    for (var half = 0u; half < 2u; half = half + 1u) {
        let lv = half * 128u;
        for (var l = 0u; l < rt(32u); l = l + 1u) {
            let a = get_level(lv + l);
            let b = get_level(lv + l + 32u);
            let c = get_level(lv + l + 64u);
            let e = get_level(lv + l + 96u);
            put_byte(pos + half * 64u + l, (a & 0xfu) | ((c & 0xfu) << 4u));
            put_byte(pos + half * 64u + l + 32u, (b & 0xfu) | ((e & 0xfu) << 4u));
            put_byte(pos + 128u + half * 32u + l,
                     (a >> 4u) | ((b >> 4u) << 2u) | ((c >> 4u) << 4u) | ((e >> 4u) << 6u));
        }
    }
}

// ───────────────────────────────────────── entry points ─────────────────────────────────────────
// Each type has a plain and an imatrix entry point (`imatrix` a literal), so a pipeline holds
// one path: lavapipe runs both sides of even a uniform branch, and build time grows with code.

fn q2_k_units(gid: vec3<u32>, imatrix: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        select_super_block(unit);
        quantize_block_q2_k(0u, imatrix);
        store_unit(unit, 21u);
    }
}

fn q3_k_units(gid: vec3<u32>, imatrix: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 2u; k = k + 1u) {
            select_super_block(unit * 2u + k);
            if (imatrix) {
                quantize_block_q3_k_imatrix(k * 110u);
            } else {
                quantize_block_q3_k(k * 110u);
            }
        }
        store_unit(unit, 55u);
    }
}

fn q4_k_units(gid: vec3<u32>, imatrix: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        select_super_block(unit);
        fit_sub_blocks_k(imatrix, 15, -1.0, 20);
        var dm: vec2<f32>;
        if (imatrix) {
            dm = quantize_scales_k_imatrix(0u, false);
        } else {
            dm = quantize_scales_k(0u);
        }
        finish_q4_k(0u, dm);
        store_unit(unit, 36u);
    }
}

fn q5_k_units(gid: vec3<u32>, imatrix: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        select_super_block(unit);
        fit_sub_blocks_k(imatrix, 31, -0.5, 15);
        var dm: vec2<f32>;
        if (imatrix) {
            dm = quantize_scales_k_imatrix(0u, true);
        } else {
            dm = quantize_scales_k(0u);
        }
        finish_q5_k(0u, dm);
        store_unit(unit, 44u);
    }
}

fn q6_k_units(gid: vec3<u32>, imatrix: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 2u; k = k + 1u) {
            select_super_block(unit * 2u + k);
            quantize_block_q6_k(k * 210u, imatrix);
        }
        store_unit(unit, 105u);
    }
}

@compute @workgroup_size(64)
fn quantize_q2_k(@builtin(global_invocation_id) gid: vec3<u32>) {
    q2_k_units(gid, false);
}

@compute @workgroup_size(64)
fn quantize_q2_k_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    q2_k_units(gid, true);
}

@compute @workgroup_size(64)
fn quantize_q3_k(@builtin(global_invocation_id) gid: vec3<u32>) {
    q3_k_units(gid, false);
}

@compute @workgroup_size(64)
fn quantize_q3_k_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    q3_k_units(gid, true);
}

@compute @workgroup_size(64)
fn quantize_q4_k(@builtin(global_invocation_id) gid: vec3<u32>) {
    q4_k_units(gid, false);
}

@compute @workgroup_size(64)
fn quantize_q4_k_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    q4_k_units(gid, true);
}

@compute @workgroup_size(64)
fn quantize_q5_k(@builtin(global_invocation_id) gid: vec3<u32>) {
    q5_k_units(gid, false);
}

@compute @workgroup_size(64)
fn quantize_q5_k_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    q5_k_units(gid, true);
}

@compute @workgroup_size(64)
fn quantize_q6_k(@builtin(global_invocation_id) gid: vec3<u32>) {
    q6_k_units(gid, false);
}

@compute @workgroup_size(64)
fn quantize_q6_k_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    q6_k_units(gid, true);
}
