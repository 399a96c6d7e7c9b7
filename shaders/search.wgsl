// search.wgsl — the scale searches shared by several formats, the GPU twin of
// src/quant/search.rs. Each works on the private working arrays below, on elements
// [base, base + n): `wx` values, `ww` importance weights, `wl` chosen levels, `wlaux` candidate
// levels. WORK_ELEMS (elements of the largest block of the family) is set by the host.
//
// Every multiply goes through xmul and every division through div_rn (see exact.wgsl): the
// order of operations below is the C reference's, operation by operation.

var<private> wx: array<f32, WORK_ELEMS>;
var<private> ww: array<f32, WORK_ELEMS>;
var<private> wl: array<i32, WORK_ELEMS>;
var<private> wlaux: array<i32, WORK_ELEMS>;

// Copy input elements [first, first + n) into wx[0..n) (both multiples of 4: whole vec4 reads).
fn load_work(first: u32, n: u32) {
    let v0 = first >> 2u;
    for (var k = 0u; k < rt(n / 4u); k = k + 1u) {
        let v = src[v0 + k];
        wx[4u * k] = v.x;
        wx[4u * k + 1u] = v.y;
        wx[4u * k + 2u] = v.z;
        wx[4u * k + 3u] = v.w;
    }
}

// Constants spelled as exact hexadecimal floats: a decimal literal's rounding to f32 is not
// promised by WGSL.
const GROUP_MAX_EPS: f32 = 0x1.203afap-50f; // 1e-15f
const F32_0_1: f32 = 0x1.99999ap-4f;        // 0.1f
const F32_MAX: f32 = 0x1.fffffep+127f;      // FLT_MAX

// The weight make_qx_quants gives element i: ww[i] when weights are given, else by rmse_type.
fn qx_weight(i: u32, rmse_type: i32, use_w: bool) -> f32 {
    if (use_w) {
        return ww[i];
    }
    let x = wx[i];
    if (rmse_type == 1) {
        return xmul(x, x);
    }
    if (rmse_type == 2) {
        return 1.0;
    }
    if (rmse_type == 3) {
        return abs(x);
    }
    return sqrt_rn(abs(x));
}

// Reproduces ggml's `make_qx_quants`: symmetric levels in [-nmax, nmax-1] stored biased by
// nmax in `wl`, scale refined over 18 trial inverse scales (unless rmse_type is 0; a negative
// rmse_type returns after the first fit). Returns the scale.
fn make_qx_quants(base: u32, n: u32, nmax: i32, rmse_type_in: i32, use_w: bool) -> f32 {
    var vmax = 0.0;
    var amax = 0.0;
    for (var i = 0u; i < rt(n); i = i + 1u) {
        let ax = abs(wx[base + i]);
        if (ax > amax) {
            amax = ax;
            vmax = wx[base + i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (var i = 0u; i < rt(n); i = i + 1u) {
            wl[base + i] = 0;
        }
        return 0.0;
    }
    var iscale = div_rn(f32(-nmax), vmax);
    if (rmse_type_in == 0) {
        for (var i = 0u; i < rt(n); i = i + 1u) {
            let l = nearest_int(xmul(iscale, wx[base + i]));
            wl[base + i] = nmax + max(-nmax, min(nmax - 1, l));
        }
        return div_rn(1.0, iscale);
    }
    var rmse_type = rmse_type_in;
    var return_early = false;
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        return_early = true;
    }
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < rt(n); i = i + 1u) {
        var l = nearest_int(xmul(iscale, wx[base + i]));
        l = max(-nmax, min(nmax - 1, l));
        wl[base + i] = l + nmax;
        let w = qx_weight(base + i, rmse_type, use_w);
        let lf = f32(l);
        sumlx = sumlx + xmul(xmul(w, wx[base + i]), lf);
        suml2 = suml2 + xmul(xmul(w, lf), lf);
    }
    var scale = 0.0;
    if (suml2 != 0.0) {
        scale = div_rn(sumlx, suml2);
    }
    if (return_early) {
        if (suml2 > 0.0) {
            return xmul(0.5, scale + div_rn(1.0, iscale));
        }
        return div_rn(1.0, iscale);
    }
    var best = xmul(scale, sumlx);
    for (var is = -9; is <= 9; is = is + 1) {
        if (is == 0) {
            continue;
        }
        iscale = div_rn(-(f32(nmax) + xmul(F32_0_1, f32(is))), vmax);
        sumlx = 0.0;
        suml2 = 0.0;
        for (var i = 0u; i < rt(n); i = i + 1u) {
            var l = nearest_int(xmul(iscale, wx[base + i]));
            l = max(-nmax, min(nmax - 1, l));
            let w = qx_weight(base + i, rmse_type, use_w);
            let lf = f32(l);
            sumlx = sumlx + xmul(xmul(w, wx[base + i]), lf);
            suml2 = suml2 + xmul(xmul(w, lf), lf);
        }
        if (suml2 > 0.0 && xmul(sumlx, sumlx) > xmul(best, suml2)) {
            for (var i = 0u; i < rt(n); i = i + 1u) {
                let l = nearest_int(xmul(iscale, wx[base + i]));
                wl[base + i] = nmax + max(-nmax, min(nmax - 1, l));
            }
            scale = div_rn(sumlx, suml2);
            best = xmul(scale, sumlx);
        }
    }
    return scale;
}

struct ScaleMin {
    scale: f32,
    the_min: f32, // ggml's `*the_min`: minus the (non-positive) offset
}

// ww[i] when weights are given, else x².
fn sq_weight(i: u32, use_w: bool) -> f32 {
    if (use_w) {
        return ww[i];
    }
    return xmul(wx[i], wx[i]);
}

// The body shared by make_qkx2_quants and make_qkx3_quants (their arithmetic is identical; see
// src/quant/search.rs `min_scale_search`): asymmetric levels in [0, nmax] in `wl` with a scale
// and a non-positive offset fitted by weighted least squares over nstep+1 trial scales. A group
// has no range when max == min (`empty_when_equal`, qkx2) or max <= min (qkx3); the two differ
// only for NaN input.
fn min_scale_search(base: u32, n: u32, nmax: i32, rmin: f32, rdelta: f32, nstep: i32,
                    use_mad: bool, use_w: bool, empty_when_equal: bool) -> ScaleMin {
    var vmin = wx[base];
    var vmax = wx[base];
    var sum_w = sq_weight(base, use_w);
    var sum_x = xmul(sum_w, wx[base]);
    for (var i = 1u; i < rt(n); i = i + 1u) {
        let x = wx[base + i];
        if (x < vmin) {
            vmin = x;
        }
        if (x > vmax) {
            vmax = x;
        }
        let w = sq_weight(base + i, use_w);
        sum_w = sum_w + w;
        sum_x = sum_x + xmul(w, x);
    }
    if (vmin > 0.0) {
        vmin = 0.0;
    }
    var no_range = vmax <= vmin;
    if (empty_when_equal) {
        no_range = vmax == vmin;
    }
    if (no_range) {
        for (var i = 0u; i < rt(n); i = i + 1u) {
            wl[base + i] = 0;
        }
        return ScaleMin(0.0, -vmin);
    }
    var iscale = div_rn(f32(nmax), vmax - vmin);
    var scale = div_rn(1.0, iscale);
    var best_mad = 0.0;
    for (var i = 0u; i < rt(n); i = i + 1u) {
        let x = wx[base + i];
        let l = max(0, min(nmax, nearest_int(xmul(iscale, x - vmin))));
        wl[base + i] = l;
        var diff = xmul(scale, f32(l)) + vmin - x;
        if (use_mad) {
            diff = abs(diff);
        } else {
            diff = xmul(diff, diff);
        }
        best_mad = best_mad + xmul(sq_weight(base + i, use_w), diff);
    }
    if (nstep < 1) {
        return ScaleMin(scale, -vmin);
    }
    for (var is = 0; is <= nstep; is = is + 1) {
        // opaque(): rmin and nmax are often literals, and Mesa's NIR reassociates
        // (c1 + t) + c2 into t + (c1 + c2), which rounds differently.
        iscale = div_rn(opaque(rmin + xmul(rdelta, f32(is))) + f32(nmax), vmax - vmin);
        var sum_l = 0.0;
        var sum_l2 = 0.0;
        var sum_xl = 0.0;
        for (var i = 0u; i < rt(n); i = i + 1u) {
            let x = wx[base + i];
            let l = max(0, min(nmax, nearest_int(xmul(iscale, x - vmin))));
            wlaux[base + i] = l;
            let w = sq_weight(base + i, use_w);
            let lf = f32(l);
            sum_l = sum_l + xmul(w, lf);
            sum_l2 = sum_l2 + xmul(xmul(w, lf), lf);
            sum_xl = sum_xl + xmul(xmul(w, lf), x);
        }
        let det = xmul(sum_w, sum_l2) - xmul(sum_l, sum_l);
        if (det > 0.0) {
            var this_scale = div_rn(xmul(sum_w, sum_xl) - xmul(sum_x, sum_l), det);
            var this_min = div_rn(xmul(sum_l2, sum_x) - xmul(sum_l, sum_xl), det);
            if (this_min > 0.0) {
                this_min = 0.0;
                this_scale = div_rn(sum_xl, sum_l2);
            }
            var mad = 0.0;
            for (var i = 0u; i < rt(n); i = i + 1u) {
                var diff = xmul(this_scale, f32(wlaux[base + i])) + this_min - wx[base + i];
                if (use_mad) {
                    diff = abs(diff);
                } else {
                    diff = xmul(diff, diff);
                }
                mad = mad + xmul(sq_weight(base + i, use_w), diff);
            }
            if (mad < best_mad) {
                for (var i = 0u; i < rt(n); i = i + 1u) {
                    wl[base + i] = wlaux[base + i];
                }
                best_mad = mad;
                scale = this_scale;
                vmin = this_min;
            }
        }
    }
    return ScaleMin(scale, -vmin);
}

// Reproduces ggml's `make_qkx3_quants`: weights ww (or x² without them), no range when
// max <= min.
fn make_qkx3_quants(base: u32, n: u32, nmax: i32, rmin: f32, rdelta: f32, nstep: i32,
                    use_mad: bool, use_w: bool) -> ScaleMin {
    return min_scale_search(base, n, nmax, rmin, rdelta, nstep, use_mad, use_w, false);
}

// Reproduces ggml's `make_qkx2_quants`: the weights in ww are mandatory, no range when
// max == min.
fn make_qkx2_quants(base: u32, n: u32, nmax: i32, rmin: f32, rdelta: f32, nstep: i32,
                    use_mad: bool) -> ScaleMin {
    return min_scale_search(base, n, nmax, rmin, rdelta, nstep, use_mad, true, true);
}

// Reproduces ggml's `make_qp_quants`: non-negative values wx[base..base+n) (sub-block scales or
// mins) to levels in [0, nmax] with quant weights ww, the best of 9 trial inverse scales, then up
// to five coordinate-descent passes. Levels are stored as C's uint8_t would hold them (a negative
// input wraps), and read back wrapped where C reads L[i]. Returns the scale.
fn make_qp_quants(base: u32, n: u32, nmax: i32) -> f32 {
    var vmax = 0.0;
    for (var i = 0u; i < rt(n); i = i + 1u) {
        let v = wx[base + i];
        vmax = select(v, vmax, vmax > v);
    }
    if (vmax < GROUP_MAX_EPS) {
        for (var i = 0u; i < rt(n); i = i + 1u) {
            wl[base + i] = 0;
        }
        return 0.0;
    }
    var iscale = div_rn(f32(nmax), vmax);
    for (var i = 0u; i < rt(n); i = i + 1u) {
        wl[base + i] = nearest_int(xmul(iscale, wx[base + i])) & 0xff;
    }
    let scale = div_rn(1.0, iscale);
    var best_mse = 0.0;
    for (var i = 0u; i < rt(n); i = i + 1u) {
        let diff = wx[base + i] - xmul(scale, f32(wl[base + i]));
        best_mse = best_mse + xmul(xmul(ww[base + i], diff), diff);
    }
    for (var is = -4; is <= 4; is = is + 1) {
        if (is == 0) {
            continue;
        }
        let iscale_is = div_rn(xmul(F32_0_1, f32(is)) + f32(nmax), vmax);
        let scale_is = div_rn(1.0, iscale_is);
        var mse = 0.0;
        for (var i = 0u; i < rt(n); i = i + 1u) {
            let l = min(nmax, nearest_int(xmul(iscale_is, wx[base + i])));
            let diff = wx[base + i] - xmul(scale_is, f32(l));
            mse = mse + xmul(xmul(ww[base + i], diff), diff);
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < rt(n); i = i + 1u) {
        let l = min(nmax, nearest_int(xmul(iscale, wx[base + i])));
        wl[base + i] = l & 0xff;
        let w = ww[base + i];
        let lf = f32(l);
        sumlx = sumlx + xmul(xmul(w, wx[base + i]), lf);
        suml2 = suml2 + xmul(xmul(w, lf), lf);
    }
    for (var itry = 0u; itry < rt(5u); itry = itry + 1u) {
        var n_changed = 0u;
        for (var i = 0u; i < rt(n); i = i + 1u) {
            let w = ww[base + i];
            let x = wx[base + i];
            let cur = f32(wl[base + i]);
            var slx = sumlx - xmul(xmul(w, x), cur);
            var sl2 = suml2 - xmul(xmul(w, cur), cur);
            if (slx > 0.0 && sl2 > 0.0) {
                let new_l = min(nmax, nearest_int(div_rn(xmul(x, sl2), slx)));
                if (new_l != wl[base + i]) {
                    let nf = f32(new_l);
                    slx = slx + xmul(xmul(w, x), nf);
                    sl2 = sl2 + xmul(xmul(w, nf), nf);
                    if (xmul(xmul(slx, slx), suml2) > xmul(xmul(sumlx, sumlx), sl2)) {
                        wl[base + i] = new_l & 0xff;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed = n_changed + 1u;
                    }
                }
            }
        }
        if (n_changed == 0u) {
            break;
        }
    }
    if (suml2 > 0.0) {
        return div_rn(sumlx, suml2);
    }
    return 0.0;
}

// Reproduces ggml's `make_q3_quants`: symmetric levels in [-nmax, nmax-1] (stored biased by
// nmax in `wl`), weights x², and with `do_rmse` up to five coordinate-descent passes that move
// single levels while the weighted fit strictly improves. Returns the scale.
fn make_q3_quants(base: u32, n: u32, nmax: i32, do_rmse: bool) -> f32 {
    var vmax = 0.0;
    var amax = 0.0;
    for (var i = 0u; i < rt(n); i = i + 1u) {
        let ax = abs(wx[base + i]);
        if (ax > amax) {
            amax = ax;
            vmax = wx[base + i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (var i = 0u; i < rt(n); i = i + 1u) {
            wl[base + i] = 0;
        }
        return 0.0;
    }
    let iscale = div_rn(f32(-nmax), vmax);
    if (!do_rmse) {
        for (var i = 0u; i < rt(n); i = i + 1u) {
            let l = max(-nmax, min(nmax - 1, nearest_int(xmul(iscale, wx[base + i]))));
            wl[base + i] = l + nmax;
        }
        return div_rn(1.0, iscale);
    }
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < rt(n); i = i + 1u) {
        let x = wx[base + i];
        let l = max(-nmax, min(nmax - 1, nearest_int(xmul(iscale, x))));
        wl[base + i] = l;
        let w = xmul(x, x);
        let lf = f32(l);
        sumlx = sumlx + xmul(xmul(w, x), lf);
        suml2 = suml2 + xmul(xmul(w, lf), lf);
    }
    for (var itry = 0u; itry < rt(5u); itry = itry + 1u) {
        var n_changed = 0u;
        for (var i = 0u; i < rt(n); i = i + 1u) {
            let x = wx[base + i];
            let w = xmul(x, x);
            let cur = f32(wl[base + i]);
            var slx = sumlx - xmul(xmul(w, x), cur);
            if (slx > 0.0) {
                var sl2 = suml2 - xmul(xmul(w, cur), cur);
                let new_l = max(-nmax, min(nmax - 1, nearest_int(div_rn(xmul(x, sl2), slx))));
                if (new_l != wl[base + i]) {
                    let nf = f32(new_l);
                    slx = slx + xmul(xmul(w, x), nf);
                    sl2 = sl2 + xmul(xmul(w, nf), nf);
                    if (sl2 > 0.0 && xmul(xmul(slx, slx), suml2) > xmul(xmul(sumlx, sumlx), sl2)) {
                        wl[base + i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed = n_changed + 1u;
                    }
                }
            }
        }
        if (n_changed == 0u) {
            break;
        }
    }
    for (var i = 0u; i < rt(n); i = i + 1u) {
        wl[base + i] = wl[base + i] + nmax;
    }
    if (suml2 > 0.0) {
        return div_rn(sumlx, suml2);
    }
    return 0.0;
}
