// iq4.wgsl — IQ4_NL, IQ4_XS and MXFP4: the GPU twin of src/quant/iq4.rs. The IQ4 types
// reproduce quantize_row_iq4_nl_impl with ntry = 7 (what quantize_iq4_nl / quantize_iq4_xs
// run, with or without an imatrix): 32-element blocks mapped onto the 16 non-linear levels
// times a scale. MXFP4 (at the end) reproduces quantize_row_mxfp4_ref.
//
// Units (whole u32 words): IQ4_NL 2×18 = 36 bytes, IQ4_XS 1×136, MXFP4 4×17. The 32-element block being
// searched is in wx, its weights in ww (search.wgsl's working arrays; WORK_ELEMS = 32); other
// values are read from `src`. σ² is per (super-)block: no pre-pass.

const IQ4_BLOCK: u32 = 32u;
const IQ4_SUPER: u32 = 256u;
const IQ4_NTRY: i32 = 7;

// kvalues_iq4nl, ascending (a private copy: WGSL cannot index a constant array dynamically).
var<private> kvalues: array<f32, 16> = array<f32, 16>(
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
    1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
);

// Index of the level nearest to x (best_index_int8): bisection, then the lower neighbour only
// when strictly nearer, so ties go up.
fn best_index(x: f32) -> u32 {
    if (x <= kvalues[0]) {
        return 0u;
    }
    if (x >= kvalues[15]) {
        return 15u;
    }
    var lo = 0u;
    var hi = 15u;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (x < kvalues[mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if (x - kvalues[hi - 1u] < kvalues[hi] - x) {
        return hi - 1u;
    }
    return hi;
}

// Σx² · (2/n) over src[x0..x0+n): the σ² of the importance weights.
fn iq4_sigma2(x0: u32, n: u32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < rt(n); j = j + 1u) {
        let v = sx(x0 + j);
        s = s + xmul(v, v);
    }
    return xmul(s, div_rn(2.0, f32(n)));
}

struct SumPair {
    sumqx: f32,
    sumq2: f32,
}

// Σ w·q·x and Σ w·q² over the block at `base` for the levels nearest to id·x.
fn iq4_weighted_sums(base: u32, id: f32) -> SumPair {
    var sumqx = 0.0;
    var sumq2 = 0.0;
    for (var j = 0u; j < rt(IQ4_BLOCK); j = j + 1u) {
        let x = wx[base + j];
        let q = kvalues[best_index(xmul(id, x))];
        let w = ww[base + j];
        sumqx = sumqx + xmul(xmul(w, q), x);
        sumq2 = sumq2 + xmul(xmul(w, q), q);
    }
    return SumPair(sumqx, sumq2);
}

// The best scale of the 32-element block src[x0..x0+32) (best_block_scale in iq4.rs): weights
// qw·sqrt(σ² + x²) (or x²), the least-squares scale at d = max/127, then 15 trial inverse
// scales kept on strict improvement. 0 for a block below GROUP_MAX_EPS.
fn iq4_best_block_scale(x0: u32, col: u32, sigma2: f32, imatrix: bool) -> f32 {
    let base = 0u;
    load_work(x0, IQ4_BLOCK);
    for (var j = 0u; j < rt(IQ4_BLOCK); j = j + 1u) {
        let x = wx[base + j];
        if (imatrix) {
            ww[base + j] = xmul(qw[col + j], sqrt_rn(sigma2 + xmul(x, x)));
        } else {
            ww[base + j] = xmul(x, x);
        }
    }
    var amax = 0.0;
    var vmax = 0.0;
    for (var j = 0u; j < rt(IQ4_BLOCK); j = j + 1u) {
        let v = wx[base + j];
        if (abs(v) > amax) {
            amax = abs(v);
            vmax = v;
        }
    }
    if (amax < GROUP_MAX_EPS) {
        return 0.0;
    }
    let d0 = div_rn(-vmax, kvalues[0]);
    let first = iq4_weighted_sums(base, div_rn(1.0, d0));
    var d = 0.0;
    if (first.sumq2 > 0.0) {
        d = div_rn(first.sumqx, first.sumq2);
    }
    var best = xmul(d, first.sumqx);
    for (var itry = -IQ4_NTRY; itry <= IQ4_NTRY; itry = itry + 1) {
        let id = div_rn(f32(itry - 127), vmax);
        let s = iq4_weighted_sums(base, id);
        if (s.sumq2 > 0.0 && xmul(s.sumqx, s.sumqx) > xmul(best, s.sumq2)) {
            d = div_rn(s.sumqx, s.sumq2);
            best = xmul(d, s.sumqx);
        }
    }
    return d;
}

fn inverse_or_zero(d: f32) -> f32 {
    if (d != 0.0) {
        return div_rn(1.0, d);
    }
    return 0.0;
}

// The 32 levels of the block src[x0..x0+32) for inverse scale `id`, packed at byte `pos`:
// element j < 16 low nibble of byte j, element j + 16 its high nibble.
fn iq4_pack_block(x0: u32, id: f32, pos: u32) {
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        let lo = best_index(xmul(id, sx(x0 + j)));
        let hi = best_index(xmul(id, sx(x0 + j + 16u)));
        put_byte(pos + j, lo | (hi << 4u));
    }
}

// One IQ4_NL block (elements src[x0..x0+32), columns from `col`) at byte `pos`: the f32 scale
// rounded to fp16 is stored, the levels re-picked with the inverse of the f32 scale.
fn quantize_block_iq4_nl(x0: u32, col: u32, pos: u32, imatrix: bool) {
    let sigma2 = iq4_sigma2(x0, IQ4_BLOCK);
    let d = iq4_best_block_scale(x0, col, sigma2, imatrix);
    put_u16(pos, f32_to_f16_bits(d));
    iq4_pack_block(x0, inverse_or_zero(d), pos + 2u);
}

// One IQ4_XS super-block (src[x0..x0+256)) at byte `pos`: block scales quantized to 6 bits
// against d = −max_scale/32 (max_scale the signed block scale of largest magnitude, first wins),
// each block's levels re-picked with 1/(d·l) from the f32 d.
fn quantize_block_iq4_xs(x0: u32, col: u32, pos: u32, imatrix: bool) {
    let sigma2 = iq4_sigma2(x0, IQ4_SUPER);
    var scales: array<f32, 8>;
    var max_scale = 0.0;
    var amax_scale = 0.0;
    for (var ib = 0u; ib < rt(8u); ib = ib + 1u) {
        let s = iq4_best_block_scale(x0 + ib * IQ4_BLOCK, col + ib * IQ4_BLOCK, sigma2, imatrix);
        scales[ib] = s;
        if (abs(s) > amax_scale) {
            amax_scale = abs(s);
            max_scale = s;
        }
    }
    let d = div_rn(-max_scale, 32.0);
    let id = inverse_or_zero(d);
    put_u16(pos, f32_to_f16_bits(d));
    var scales_h = 0u;
    var scales_l = 0u; // the four scales_l bytes, little-endian
    for (var ib = 0u; ib < rt(8u); ib = ib + 1u) {
        let l = max(-32, min(31, nearest_int(xmul(id, scales[ib]))));
        let dl = xmul(d, f32(l));
        iq4_pack_block(x0 + ib * IQ4_BLOCK, inverse_or_zero(dl), pos + 8u + 16u * ib);
        let biased = u32(l + 32);
        scales_l = scales_l | ((biased & 0xfu) << (8u * (ib / 2u) + 4u * (ib % 2u)));
        scales_h = scales_h | ((biased >> 4u) << (2u * ib));
    }
    put_u16(pos + 2u, scales_h);
    put_u32(pos + 4u, scales_l);
}

// A plain and an imatrix entry point per type (`imatrix` a literal): one path per pipeline.
fn iq4_nl_units(gid: vec3<u32>, imatrix: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 2u; k = k + 1u) {
            let blk = unit * 2u + k;
            quantize_block_iq4_nl(blk * IQ4_BLOCK, block_col(blk, IQ4_BLOCK), k * 18u, imatrix);
        }
        store_unit(unit, 9u);
    }
}

fn iq4_xs_units(gid: vec3<u32>, imatrix: bool) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        quantize_block_iq4_xs(unit * IQ4_SUPER, block_col(unit, IQ4_SUPER), 0u, imatrix);
        store_unit(unit, 34u);
    }
}

@compute @workgroup_size(64)
fn quantize_iq4_nl(@builtin(global_invocation_id) gid: vec3<u32>) {
    iq4_nl_units(gid, false);
}

@compute @workgroup_size(64)
fn quantize_iq4_nl_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    iq4_nl_units(gid, true);
}

@compute @workgroup_size(64)
fn quantize_iq4_xs(@builtin(global_invocation_id) gid: vec3<u32>) {
    iq4_xs_units(gid, false);
}

@compute @workgroup_size(64)
fn quantize_iq4_xs_imatrix(@builtin(global_invocation_id) gid: vec3<u32>) {
    iq4_xs_units(gid, true);
}

// ---------------------------------------------------------------------------------------------
// MXFP4 (quantize_row_mxfp4_ref; the imatrix is ignored): 32-element blocks of FP4 E2M1 codes
// under one E8M0 exponent. Unit: 4 × 17 = 68 bytes.
// ---------------------------------------------------------------------------------------------

const MXFP4_BLOCK: u32 = 32u;

// The E2M1 values doubled, by 4-bit code (kvalues_mxfp4); codes 8.. are the negatives.
var<private> kvalues_mxfp4: array<f32, 16> = array<f32, 16>(
    0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0,
    0.0, -1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0,
);

// floorf(log2f(x)) for a positive finite x without a log (floor_log2 in iq4.rs, which derives
// it): the exponent E, plus one when x lies within ⌊ln 2·2^r⌋ ulps below 2^(E+1), where the
// f32 log2 rounds up to E + 1.
fn mxfp4_floor_log2(x: f32) -> i32 {
    let u = bitcast<u32>(x);
    var e: i32;
    var i: u32;
    var s: i32;
    if (u >= 0x00800000u) {
        e = i32(u >> 23u) - 127;
        i = 0x00800000u - (u & 0x007fffffu);
        s = 24;
    } else {
        let b = 31 - i32(countLeadingZeros(u));
        e = b - 149;
        i = (2u << u32(b)) - u;
        s = b + 1;
    }
    let n = e + 1;
    if (n == 0) {
        return e;
    }
    let m = u32(abs(n));
    let p = 31 - i32(countLeadingZeros(m));
    var c = 24 - p;
    if (n > 0 && (m & (m - 1u)) == 0u) {
        c = 25 - p;
    }
    let r = s - c;
    if (r >= 1 && i <= (0xb17217f7u >> u32(32 - r))) {
        return e + 1;
    }
    return e;
}

// Half the E8M0 scale 2^(e − 127), from its bits (e < 2: the subnormals 2^−128, 2^−127).
fn e8m0_to_f32_half(e: u32) -> f32 {
    if (e < 2u) {
        return bitcast<f32>(0x00200000u << e);
    }
    return bitcast<f32>((e - 1u) << 23u);
}

// The code whose level·d is nearest to x: a linear scan, the first code wins ties.
fn best_index_mxfp4(x: f32, d: f32) -> u32 {
    var best = 0u;
    var best_err = abs(xmul(kvalues_mxfp4[0], d) - x);
    for (var k = 1u; k < rt(16u); k = k + 1u) {
        let err = abs(xmul(kvalues_mxfp4[k], d) - x);
        if (err < best_err) {
            best = k;
            best_err = err;
        }
    }
    return best;
}

// One MXFP4 block (src[x0..x0+32)) at byte `pos`: the exponent byte, then element j < 16 in the
// low nibble of byte j + 1, element j + 16 in its high nibble.
fn quantize_block_mxfp4(x0: u32, pos: u32) {
    var amax = 0.0;
    for (var j = 0u; j < rt(MXFP4_BLOCK); j = j + 1u) {
        let a = abs(sx(x0 + j));
        if (amax < a) {
            amax = a;
        }
    }
    var e = 0u;
    if (amax > 0.0) {
        // floor(log2) − 2 + 127 as a C (uint8_t) cast keeps it: the low byte.
        e = bitcast<u32>(mxfp4_floor_log2(amax) + 125) & 0xffu;
    }
    let d = e8m0_to_f32_half(e);
    put_byte(pos, e);
    for (var j = 0u; j < rt(16u); j = j + 1u) {
        let lo = best_index_mxfp4(sx(x0 + j), d);
        let hi = best_index_mxfp4(sx(x0 + j + 16u), d);
        put_byte(pos + 1u + j, lo | (hi << 4u));
    }
}

@compute @workgroup_size(64)
fn quantize_mxfp4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let units = unit_range(gid);
    for (var unit = units.x; unit < units.y; unit = unit + 1u) {
        for (var k = 0u; k < 4u; k = k + 1u) {
            quantize_block_mxfp4((unit * 4u + k) * MXFP4_BLOCK, k * 17u);
        }
        store_unit(unit, 17u);
    }
}
