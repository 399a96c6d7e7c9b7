//! Scale-search helpers shared by the K-quants and the imatrix legacy quantizers.
//!
//! Each function reproduces one of ggml-quants.c's static searches (llama.cpp 0c1e57098).
//! Byte-exactness depends on following the C arithmetic literally:
//! - every int → float conversion happens where C's usual arithmetic conversions put it, so
//!   `w*x*l` is `(w*x) as f32 * l as f32` evaluated left to right and `w*l*l` is `(w*l)*l`;
//! - sums are sequential in index order, never reassociated, and never fused (no `mul_add`);
//! - a later candidate replaces the current best only on STRICT improvement, so ties keep the
//!   earlier one;
//! - quant levels stored into C `uint8_t`/`int8_t` arrays are truncated with `as u8`/`as i8`
//!   exactly where C truncates, even in cases that only pathological inputs reach.

// Index loops here walk several parallel arrays in the reference's element order; iterator
// chains would hide that order, which is what byte-exactness depends on.
#![allow(clippy::needless_range_loop)]

use super::nearest_int;

/// Groups whose largest |x| is below this are treated as all zero (ggml's `GROUP_MAX_EPS`).
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// The largest group the min+scale searches are used with (K-quant sub-blocks and legacy blocks
/// are 16 or 32 wide); sizes the search's scratch levels on the stack.
const MAX_GROUP: usize = 32;

/// The weight `make_qx_quants` gives element `x` when no importance weights are passed.
#[inline(always)]
fn qx_default_weight(rmse_type: i32, x: f32) -> f32 {
    match rmse_type {
        1 => x * x,
        2 => 1.0,
        3 => x.abs(),
        _ => x.abs().sqrt(),
    }
}

/// Symmetric quantization of `x` to levels `-nmax..nmax-1` (stored offset by `nmax` into `levels`),
/// with a weighted least-squares scale refined over 18 trial inverse scales.
///
/// Reproduces `make_qx_quants`: `rmse_type` 0 returns the plain `max/-nmax` scale, a negative
/// `rmse_type` returns after the first weighted fit (the average of the fitted and plain scales),
/// otherwise the search runs; `qw` (if given) replaces the rmse_type-derived weights. Returns the
/// scale; an all-(near-)zero group gets levels 0 and scale 0.
pub fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    levels: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len();
    let levels = &mut levels[..n];
    let qw = qw.map(|w| &w[..n]);
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let av = v.abs();
        if av > amax {
            amax = av;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let mut iscale = (-nmax) as f32 / max;
    if rmse_type == 0 {
        for (l, &v) in levels.iter_mut().zip(x) {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            *l = (nmax + q) as i8;
        }
        return 1.0 / iscale;
    }
    let return_early = rmse_type < 0;
    let rmse_type = rmse_type.abs();
    // The weights and the products w·x are loop invariants: computing them once gives the same
    // rounded values the C code recomputes on every pass.
    let mut stack = [0f32; 2 * MAX_GROUP];
    let mut heap = Vec::new();
    let scratch = if n <= MAX_GROUP {
        &mut stack[..2 * n]
    } else {
        heap.resize(2 * n, 0.0);
        &mut heap[..]
    };
    let (w, wx) = scratch.split_at_mut(n);
    for i in 0..n {
        w[i] = match qw {
            Some(q) => q[i],
            None => qx_default_weight(rmse_type, x[i]),
        };
        wx[i] = w[i] * x[i];
    }
    let (w, wx) = (&*w, &*wx);
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        levels[i] = (q + nmax) as i8;
        let lf = q as f32;
        sumlx += wx[i] * lf;
        suml2 += w[i] * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for step in -9..=9 {
        if step == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * step as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let lf = q as f32;
            sumlx += wx[i] * lf;
            suml2 += w[i] * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (l, &v) in levels.iter_mut().zip(x) {
                let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
                *l = (nmax + q) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Symmetric quantization for Q3_K's sub-blocks: levels `-nmax..nmax-1` stored offset by `nmax`,
/// weights x², and (with `do_rmse`) up to five passes of coordinate descent that move single
/// levels while the weighted fit strictly improves.
///
/// Reproduces `make_q3_quants`. Returns the scale (0 for an all-(near-)zero group).
pub fn make_q3_quants(nmax: i32, x: &[f32], levels: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let levels = &mut levels[..n];
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let av = v.abs();
        if av > amax {
            amax = av;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = (-nmax) as f32 / max;
    if do_rmse {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            levels[i] = q as i8;
            let w = x[i] * x[i];
            let lf = q as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let cur = levels[i] as f32;
                let mut slx = sumlx - w * x[i] * cur;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * cur * cur;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != levels[i] as i32 {
                        let nf = new_l as f32;
                        slx += w * x[i] * nf;
                        sl2 += w * nf * nf;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            levels[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for l in levels.iter_mut() {
            *l = (*l as i32 + nmax) as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for (l, &v) in levels.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *l = (q + nmax) as i8;
    }
    1.0 / iscale
}

/// The two ways a min+scale search scores a candidate: weighted |error| or weighted error².
#[inline(always)]
fn error_term(use_mad: bool, diff: f32) -> f32 {
    if use_mad {
        diff.abs()
    } else {
        diff * diff
    }
}

/// Asymmetric (scale + min) quantization to levels `0..=nmax` with a weighted least-squares fit
/// tried at `nstep + 1` inverse scales `(nmax + rmin + rdelta*k) / (max - min)`.
///
/// Reproduces `make_qkx2_quants`; `weights` is mandatory (K-quants pass `|x|` or `av_x + |x|`).
/// Returns `(scale, neg_min)` where `neg_min` is C's `*the_min` (the negated offset, ≥ 0).
#[allow(clippy::too_many_arguments)]
pub fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    min_scale_search(
        nmax,
        x,
        |i| weights[i],
        levels,
        rmin,
        rdelta,
        nstep,
        use_mad,
        EmptyRange::WhenEqual,
    )
}

/// Like [`make_qkx2_quants`] but `weights` may be absent (then x² is used), and a degenerate
/// range is detected with `max <= min`.
///
/// Reproduces `make_qkx3_quants`. Returns `(scale, neg_min)`.
#[allow(clippy::too_many_arguments)]
pub fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    match weights {
        Some(w) => min_scale_search(
            nmax,
            x,
            |i| w[i],
            levels,
            rmin,
            rdelta,
            nstep,
            use_mad,
            EmptyRange::WhenNotAbove,
        ),
        None => min_scale_search(
            nmax,
            x,
            |i| x[i] * x[i],
            levels,
            rmin,
            rdelta,
            nstep,
            use_mad,
            EmptyRange::WhenNotAbove,
        ),
    }
}

/// How the min+scale search recognises a group with no range (`max == min` in qkx2,
/// `max <= min` in qkx3; they differ only for NaN inputs, which never reach us).
#[derive(Clone, Copy)]
enum EmptyRange {
    WhenEqual,
    WhenNotAbove,
}

/// The body shared by qkx2 and qkx3 (their arithmetic is identical).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn min_scale_search(
    nmax: i32,
    x: &[f32],
    weight: impl Fn(usize) -> f32,
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
    empty: EmptyRange,
) -> (f32, f32) {
    let n = x.len();
    assert!(
        n <= MAX_GROUP,
        "min+scale search on a group of {n} > {MAX_GROUP}"
    );
    let levels = &mut levels[..n];
    let mut w = [0f32; MAX_GROUP];
    for i in 0..n {
        w[i] = weight(i);
    }
    let w = &w[..n];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    let no_range = match empty {
        EmptyRange::WhenEqual => max == min,
        EmptyRange::WhenNotAbove => max <= min,
    };
    if no_range {
        levels.fill(0);
        return (0.0, -min);
    }
    // x - min, recomputed whenever a candidate moves `min` (the C code subtracts every time).
    let mut shifted = [0f32; MAX_GROUP];
    let shifted = &mut shifted[..n];
    for i in 0..n {
        shifted[i] = x[i] - min;
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * shifted[i]).clamp(0, nmax);
        levels[i] = q as u8;
        let diff = scale * levels[i] as f32 + min - x[i];
        best_error += w[i] * error_term(use_mad, diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut trial = [0u8; MAX_GROUP];
    let trial = &mut trial[..n];
    for step in 0..=nstep {
        iscale = (rmin + rdelta * step as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale * shifted[i]).clamp(0, nmax);
            trial[i] = q as u8;
            let lf = q as f32;
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * trial[i] as f32 + this_min - x[i];
                cur_error += w[i] * error_term(use_mad, diff);
            }
            if cur_error < best_error {
                levels.copy_from_slice(trial);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
                for i in 0..n {
                    shifted[i] = x[i] - min;
                }
            }
        }
    }
    (scale, -min)
}

/// Quantization of non-negative values (the sub-block scales and mins of Q2_K/Q4_K/Q5_K with an
/// imatrix) to levels `0..=nmax`: the best of 9 trial inverse scales by weighted squared error,
/// then up to five coordinate-descent passes on the least-squares fit.
///
/// Reproduces `make_qp_quants`, including its quirks: levels are not clamped below, so a negative
/// input yields a wrapped `u8` level (and the first fit uses the unwrapped value while later passes
/// read the wrapped one, as in C). Returns the scale.
pub fn make_qp_quants(nmax: i32, x: &[f32], levels: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    let levels = &mut levels[..n];
    let quant_weights = &quant_weights[..n];
    let mut max = 0.0f32;
    for &v in x {
        // C's MAX(max, v): keeps `max` only when strictly greater.
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * levels[i] as f32;
        let w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for step in -4..=4 {
        if step == 0 {
            continue;
        }
        let iscale_step = (0.1 * step as f32 + nmax as f32) / max;
        let scale_step = 1.0 / iscale_step;
        let mut mse = 0.0f32;
        for i in 0..n {
            let q = nearest_int(iscale_step * x[i]).min(nmax);
            let diff = x[i] - scale_step * q as f32;
            let w = quant_weights[i];
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_step;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax);
        levels[i] = q as u8;
        let w = quant_weights[i];
        let lf = q as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = quant_weights[i];
            let cur = levels[i] as f32;
            let mut slx = sumlx - w * x[i] * cur;
            let mut sl2 = suml2 - w * cur * cur;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != levels[i] as i32 {
                    let nf = new_l as f32;
                    slx += w * x[i] * nf;
                    sl2 += w * nf * nf;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        levels[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values (SplitMix64 mapped to roughly N(0,1)-ish spread).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    fn weighted_sq_error(x: &[f32], w: &[f32], rec: impl Fn(usize) -> f32) -> f64 {
        (0..x.len())
            .map(|i| w[i] as f64 * (x[i] as f64 - rec(i) as f64).powi(2))
            .sum()
    }

    #[test]
    fn near_zero_groups_quantize_to_zero() {
        let tiny = [5e-16f32, -9e-16, 0.0, 1e-16];
        let mut l = [7i8; 4];
        assert_eq!(make_qx_quants(32, &tiny, &mut l, 1, None), 0.0);
        assert_eq!(l, [0; 4]);
        let mut l = [7i8; 4];
        assert_eq!(make_q3_quants(4, &tiny, &mut l, true), 0.0);
        assert_eq!(l, [0; 4]);
        let mut lu = [7u8; 4];
        assert_eq!(make_qp_quants(63, &tiny, &mut lu, &[1.0; 4]), 0.0);
        assert_eq!(lu, [0; 4]);
        // Just above the threshold the group is quantized for real.
        let small = [2e-15f32, -1e-15, 0.0, 1e-15];
        let mut l = [0i8; 4];
        assert!(make_qx_quants(32, &small, &mut l, 1, None) != 0.0);
    }

    #[test]
    fn constant_and_zero_groups_have_no_range() {
        let mut l = [9u8; 16];
        assert_eq!(
            make_qkx2_quants(15, &[0.0; 16], &[1.0; 16], &mut l, -1.0, 0.1, 20, false),
            (0.0, -0.0)
        );
        assert_eq!(l, [0; 16]);
        // A negative constant: min = max = c, so the offset carries everything.
        let mut l = [9u8; 16];
        let (scale, neg_min) =
            make_qkx3_quants(15, &[-3.0; 16], None, &mut l, -0.9, 0.05, 36, false);
        assert_eq!((scale, neg_min), (0.0, 3.0));
        assert_eq!(l, [0; 16]);
    }

    /// Scaling the input by a power of two scales every product and sum of the searches by a
    /// power of two, which is exact in binary floating point: levels must not change and the
    /// scale must scale exactly. This catches any data-dependent non-determinism in the order
    /// of operations (and exercises all rmse types and weightings).
    #[test]
    fn searches_are_exactly_power_of_two_equivariant() {
        for seed in 0..200u64 {
            let x = values(seed, 32);
            let w: Vec<f32> = values(seed + 1000, 32).iter().map(|v| v * v).collect();
            let x4: Vec<f32> = x.iter().map(|v| v * 4.0).collect();
            for rmse in [0, 1, -1, 2, 3] {
                let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
                let sa = make_qx_quants(16, &x, &mut a, rmse, Some(&w));
                let sb = make_qx_quants(16, &x4, &mut b, rmse, Some(&w));
                assert_eq!((a, sa * 4.0), (b, sb), "qx rmse {rmse} seed {seed}");
            }
            let (mut a, mut b) = ([0i8; 16], [0i8; 16]);
            let sa = make_q3_quants(4, &x[..16], &mut a, true);
            let sb = make_q3_quants(4, &x4[..16], &mut b, true);
            assert_eq!((a, sa * 4.0), (b, sb), "q3 seed {seed}");
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            let (sa, ma) = make_qkx2_quants(15, &x, &w, &mut a, -1.0, 0.1, 20, false);
            let (sb, mb) = make_qkx2_quants(15, &x4, &w, &mut b, -1.0, 0.1, 20, false);
            assert_eq!((a, sa * 4.0, ma * 4.0), (b, sb, mb), "qkx2 seed {seed}");
            let (sa, ma) = make_qkx3_quants(31, &x, Some(&w), &mut a, -0.9, 0.05, 36, false);
            let (sb, mb) = make_qkx3_quants(31, &x4, Some(&w), &mut b, -0.9, 0.05, 36, false);
            assert_eq!((a, sa * 4.0, ma * 4.0), (b, sb, mb), "qkx3 seed {seed}");
            let ax: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let ax4: Vec<f32> = x4.iter().map(|v| v.abs()).collect();
            let sa = make_qp_quants(63, &ax[..8], &mut a[..8], &w[..8]);
            let sb = make_qp_quants(63, &ax4[..8], &mut b[..8], &w[..8]);
            assert_eq!((a, sa * 4.0), (b, sb), "qp seed {seed}");
        }
    }

    /// The searches only ever replace their first candidate with a strictly better one, so the
    /// result can be no worse (in their own metric) than the plain max-based quantization.
    #[test]
    fn searches_never_do_worse_than_their_first_candidate() {
        for seed in 0..200u64 {
            let x = values(seed, 32);
            let w: Vec<f32> = x.iter().map(|v| 0.5 + v.abs()).collect();
            let mut l = [0u8; 32];
            let (scale, neg_min) = make_qkx2_quants(15, &x, &w, &mut l, -1.0, 0.1, 20, false);
            let mut l0 = [0u8; 32];
            let (s0, m0) = make_qkx2_quants(15, &x, &w, &mut l0, -1.0, 0.1, 0, false);
            let e = weighted_sq_error(&x, &w, |i| scale * l[i] as f32 - neg_min);
            let e0 = weighted_sq_error(&x, &w, |i| s0 * l0[i] as f32 - m0);
            assert!(e <= e0 * (1.0 + 1e-5), "seed {seed}: {e} > {e0}");
            assert!(l.iter().all(|&q| q <= 15));

            let mut q = [0i8; 32];
            let scale = make_qx_quants(16, &x, &mut q, 1, None);
            let mut q0 = [0i8; 32];
            let s0 = make_qx_quants(16, &x, &mut q0, 0, None);
            let x2: Vec<f32> = x.iter().map(|v| v * v).collect();
            let e = weighted_sq_error(&x, &x2, |i| scale * (q[i] as f32 - 16.0));
            let e0 = weighted_sq_error(&x, &x2, |i| s0 * (q0[i] as f32 - 16.0));
            assert!(e <= e0 * (1.0 + 1e-5), "seed {seed}: {e} > {e0}");
            assert!(q.iter().all(|&v| (0..32).contains(&v)));
        }
    }

    /// A single spike is represented exactly by every symmetric search.
    #[test]
    fn single_spike_is_exact() {
        let mut x = [0.0f32; 16];
        x[5] = -3.0;
        let mut l = [0i8; 16];
        let scale = make_qx_quants(32, &x, &mut l, 1, None);
        assert_eq!(scale * (l[5] as f32 - 32.0), -3.0);
        assert!(l.iter().enumerate().all(|(i, &v)| i == 5 || v == 32));
        let mut l = [0i8; 16];
        let scale = make_q3_quants(4, &x, &mut l, true);
        assert_eq!(scale * (l[5] as f32 - 4.0), -3.0);
    }
}
