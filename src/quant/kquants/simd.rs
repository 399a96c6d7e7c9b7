//! SIMD K-quant kernels that run several super-blocks side by side: one vector lane is one
//! 256-element super-block, and every lane executes exactly the scalar sequence of IEEE single
//! operations of the oracle in `kquants.rs` (same order, same association, no FMA, strict-improvement
//! acceptance done with per-lane masks), so the bytes cannot differ. Control flow that depends on
//! the data becomes per-lane selection; a lane that the scalar code would have left early still
//! computes, but its results are masked away.
//!
//! What is vectorized is the expensive part: the per-sub-block scale searches and the final
//! requantization against the stored scales. The cheap per-block remainder (quantizing the
//! sub-block scales against the fp16 super-block scale, bit packing) runs the scalar oracle's
//! own functions on each lane's results.
//!
//! x86-64 only: AVX2 (8 lanes) and AVX-512F (16 lanes), chosen at run time. All five K-quants
//! have kernels; a row is processed in batches of W super-blocks, the last batch padded with
//! copies of its first block whose results are discarded.

// Index loops walk parallel lane arrays in the scalar code's element order.
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// Which kernel family a call should use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Portable Rust, on every target.
    Scalar,
    /// x86-64 AVX2 + FMA kernels.
    Avx2,
    /// x86-64 AVX-512 kernels.
    Avx512,
}

/// The fastest backend this CPU supports.
pub fn best_backend() -> Backend {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Backend::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Backend::Avx2;
        }
    }
    Backend::Scalar
}

/// Every backend this CPU can run (scalar first), for tests and benchmarks.
pub fn available_backends() -> Vec<Backend> {
    let mut v = vec![Backend::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push(Backend::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(Backend::Avx512);
        }
    }
    v
}

/// The per-lane operations the kernels are written in. Every float operation is the IEEE
/// single-precision operation of the same name applied lane by lane (division and square root
/// correctly rounded), so a lane computes bit for bit what the scalar code computes.
///
/// Implementations are zero-sized tokens that can only be made once the CPU feature is known to
/// be present; the methods are `#[inline(always)]` so that they inline into the
/// `#[target_feature]` entry points.
pub(crate) trait Lanes: Copy {
    /// Lanes per vector (super-blocks per batch).
    const W: usize;
    type F: Copy;
    type I: Copy;
    type M: Copy;

    fn splat(self, v: f32) -> Self::F;
    /// Loads `W` floats from the start of `src`.
    fn load(self, src: &[f32]) -> Self::F;
    fn store(self, v: Self::F, dst: &mut [f32]);
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    fn sqrt(self, a: Self::F) -> Self::F;
    fn abs(self, a: Self::F) -> Self::F;
    /// Sign flip (`-a`, so `-(+0) = -0`).
    fn neg(self, a: Self::F) -> Self::F;
    /// Ordered comparisons (false if either side is NaN), like C's `<`, `>`, `<=`, `==`.
    fn lt(self, a: Self::F, b: Self::F) -> Self::M;
    fn gt(self, a: Self::F, b: Self::F) -> Self::M;
    fn le(self, a: Self::F, b: Self::F) -> Self::M;
    fn eq(self, a: Self::F, b: Self::F) -> Self::M;
    /// C's `!=` (true if either side is NaN).
    fn ne(self, a: Self::F, b: Self::F) -> Self::M;
    /// `m ? a : b` per lane.
    fn select(self, m: Self::M, a: Self::F, b: Self::F) -> Self::F;
    /// ggml's `nearest_int` per lane (add 1.5·2²³, keep the low mantissa bits).
    fn nearest_int(self, a: Self::F) -> Self::I;
    fn isplat(self, v: i32) -> Self::I;
    fn imin(self, a: Self::I, b: Self::I) -> Self::I;
    fn imax(self, a: Self::I, b: Self::I) -> Self::I;
    fn iadd(self, a: Self::I, b: Self::I) -> Self::I;
    /// Exact int → float conversion (levels are small).
    fn to_f32(self, a: Self::I) -> Self::F;
    /// Float → int conversion of values that are already exact small integers.
    fn to_i32(self, a: Self::F) -> Self::I;
    fn iselect(self, m: Self::M, a: Self::I, b: Self::I) -> Self::I;
    fn istore(self, v: Self::I, dst: &mut [i32]);
    /// Loads `W` ints from the start of `src`.
    fn iload(self, src: &[i32]) -> Self::I;
    fn and(self, a: Self::M, b: Self::M) -> Self::M;
    fn or(self, a: Self::M, b: Self::M) -> Self::M;
    /// Per-lane integer equality.
    fn ieq(self, a: Self::I, b: Self::I) -> Self::M;
    /// `a & !b`.
    fn andnot(self, a: Self::M, b: Self::M) -> Self::M;
    fn any(self, m: Self::M) -> bool;
}

/// The widest batch any backend uses (AVX-512: 16 lanes).
pub(crate) const MAX_LANES: usize = 16;

/// Copies `nb ≤ W` consecutive super-blocks of `src` into lane-major order
/// (`dst[i*W + lane] = block[lane][i]`); missing lanes repeat block 0 so that they compute on
/// ordinary data (their results are discarded).
#[inline(always)]
pub(crate) fn transpose_in(src: &[f32], nb: usize, w: usize, dst: &mut [f32]) {
    for lane in 0..w {
        let b = if lane < nb { lane } else { 0 };
        let blk = &src[b * QK_K..(b + 1) * QK_K];
        for i in 0..QK_K {
            dst[i * w + lane] = blk[i];
        }
    }
}

use super::QK_K;

/// Reproduces `make_qkx2_quants` (`qkx3 == false`) or `make_qkx3_quants` with explicit weights
/// (`qkx3 == true`) on every lane at once, for a group of `x.len()` elements (16 or 32).
/// Writes each element's level to `levels` and returns `(scale, neg_min)` per lane.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn min_scale_search_lanes<S: Lanes>(
    s: S,
    nmax: i32,
    x: &[S::F],
    w: &[S::F],
    levels: &mut [S::I],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
    qkx3: bool,
) -> (S::F, S::F) {
    let n = x.len();
    let zero = s.splat(0.0);
    let err = |d: S::F| if use_mad { s.abs(d) } else { s.mul(d, d) };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = s.mul(sum_w, x[0]);
    for i in 1..n {
        min = s.select(s.lt(x[i], min), x[i], min);
        max = s.select(s.gt(x[i], max), x[i], max);
        sum_w = s.add(sum_w, w[i]);
        sum_x = s.add(sum_x, s.mul(w[i], x[i]));
    }
    min = s.select(s.gt(min, zero), zero, min);
    let no_range = if qkx3 { s.le(max, min) } else { s.eq(max, min) };
    // x - min, kept up to date as `min` moves (the C search subtracts on every pass); levels
    // are carried as exact floats and converted once at the end.
    let mut shifted = [zero; 32];
    for i in 0..n {
        shifted[i] = s.sub(x[i], min);
    }
    let mut best_levels = [zero; 32];
    let mut iscale = s.div(s.splat(nmax as f32), s.sub(max, min));
    let mut scale = s.div(s.splat(1.0), iscale);
    let lo = s.isplat(0);
    let hi = s.isplat(nmax);
    let mut best_error = zero;
    for i in 0..n {
        let l = s.imax(lo, s.imin(hi, s.nearest_int(s.mul(iscale, shifted[i]))));
        let lf = s.to_f32(l);
        best_levels[i] = lf;
        let diff = s.sub(s.add(s.mul(scale, lf), min), x[i]);
        best_error = s.add(best_error, s.mul(w[i], err(diff)));
    }
    let mut trial = [zero; 32];
    let steps = if nstep < 1 { 0 } else { nstep + 1 };
    for step in 0..steps {
        iscale = s.div(
            s.splat(rmin + rdelta * step as f32 + nmax as f32),
            s.sub(max, min),
        );
        let mut sum_l = zero;
        let mut sum_l2 = zero;
        let mut sum_xl = zero;
        for i in 0..n {
            let l = s.imax(lo, s.imin(hi, s.nearest_int(s.mul(iscale, shifted[i]))));
            let lf = s.to_f32(l);
            trial[i] = lf;
            let wl = s.mul(w[i], lf);
            sum_l = s.add(sum_l, wl);
            sum_l2 = s.add(sum_l2, s.mul(wl, lf));
            sum_xl = s.add(sum_xl, s.mul(wl, x[i]));
        }
        let det = s.sub(s.mul(sum_w, sum_l2), s.mul(sum_l, sum_l));
        let fit = s.andnot(s.gt(det, zero), no_range);
        if !s.any(fit) {
            continue;
        }
        let mut this_scale = s.div(s.sub(s.mul(sum_w, sum_xl), s.mul(sum_x, sum_l)), det);
        let mut this_min = s.div(s.sub(s.mul(sum_l2, sum_x), s.mul(sum_l, sum_xl)), det);
        let min_pos = s.gt(this_min, zero);
        this_min = s.select(min_pos, zero, this_min);
        this_scale = s.select(min_pos, s.div(sum_xl, sum_l2), this_scale);
        let mut cur_error = zero;
        for i in 0..n {
            let diff = s.sub(s.add(s.mul(this_scale, trial[i]), this_min), x[i]);
            cur_error = s.add(cur_error, s.mul(w[i], err(diff)));
        }
        let better = s.and(fit, s.lt(cur_error, best_error));
        if !s.any(better) {
            continue;
        }
        best_error = s.select(better, cur_error, best_error);
        scale = s.select(better, this_scale, scale);
        min = s.select(better, this_min, min);
        for i in 0..n {
            best_levels[i] = s.select(better, trial[i], best_levels[i]);
            shifted[i] = s.sub(x[i], min);
        }
    }
    for i in 0..n {
        levels[i] = s.iselect(no_range, lo, s.to_i32(best_levels[i]));
    }
    scale = s.select(no_range, zero, scale);
    (scale, s.neg(min))
}

/// Reproduces `make_qx_quants(n, nmax, x, L, 1, w)` on every lane: the symmetric search with
/// rmse_type 1, weights `w` (the caller passes x² where C would derive it). Writes levels
/// (offset by `nmax`) to `levels` and returns the scale per lane.
#[inline(always)]
pub(crate) fn qx_search_lanes<S: Lanes>(
    s: S,
    nmax: i32,
    x: &[S::F],
    w: &[S::F],
    levels: &mut [S::I],
) -> S::F {
    let n = x.len();
    let zero = s.splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for i in 0..n {
        let ax = s.abs(x[i]);
        let bigger = s.gt(ax, amax);
        amax = s.select(bigger, ax, amax);
        max = s.select(bigger, x[i], max);
    }
    let all_zero = s.lt(amax, s.splat(super::GROUP_MAX_EPS));
    let lo = s.isplat(-nmax);
    let hi = s.isplat(nmax - 1);
    let offset = s.isplat(nmax);
    let iscale = s.div(s.splat((-nmax) as f32), max);
    // w·x is a loop invariant (the same rounded product on every pass).
    let mut wx = [zero; 32];
    for i in 0..n {
        wx[i] = s.mul(w[i], x[i]);
    }
    let mut sumlx = zero;
    let mut suml2 = zero;
    for i in 0..n {
        let l = s.imax(lo, s.imin(hi, s.nearest_int(s.mul(iscale, x[i]))));
        levels[i] = s.iadd(l, offset);
        let lf = s.to_f32(l);
        sumlx = s.add(sumlx, s.mul(wx[i], lf));
        suml2 = s.add(suml2, s.mul(s.mul(w[i], lf), lf));
    }
    let mut scale = s.select(s.ne(suml2, zero), s.div(sumlx, suml2), zero);
    let mut best = s.mul(scale, sumlx);
    let mut trial = [s.isplat(0); 32];
    for step in -9..=9 {
        if step == 0 {
            continue;
        }
        let iscale = s.div(s.splat(-(nmax as f32 + 0.1 * step as f32)), max);
        let mut sumlx = zero;
        let mut suml2 = zero;
        for i in 0..n {
            let l = s.imax(lo, s.imin(hi, s.nearest_int(s.mul(iscale, x[i]))));
            trial[i] = l;
            let lf = s.to_f32(l);
            sumlx = s.add(sumlx, s.mul(wx[i], lf));
            suml2 = s.add(suml2, s.mul(s.mul(w[i], lf), lf));
        }
        let better = s.andnot(
            s.and(
                s.gt(suml2, zero),
                s.gt(s.mul(sumlx, sumlx), s.mul(best, suml2)),
            ),
            all_zero,
        );
        if !s.any(better) {
            continue;
        }
        for i in 0..n {
            levels[i] = s.iselect(better, s.iadd(trial[i], offset), levels[i]);
        }
        scale = s.select(better, s.div(sumlx, suml2), scale);
        best = s.select(better, s.mul(scale, sumlx), best);
    }
    let zero_level = s.isplat(0);
    for i in 0..n {
        levels[i] = s.iselect(all_zero, zero_level, levels[i]);
    }
    s.select(all_zero, zero, scale)
}

/// Q4_K (`q5 == false`) or Q5_K blocks of `x` (1 ..= W super-blocks) into `out`, with or
/// without importance weights: vectorized sub-block searches, then the scalar oracle's scale
/// quantization, requantization and packing per block.
#[inline(always)]
pub(crate) fn quantize_batch_q4_q5<S: Lanes>(
    s: S,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
    q5: bool,
) {
    use super::{pack_q4_k, pack_q5_k, quantize_scales_k, quantize_scales_k_imatrix, scale_min_k4};
    let w = S::W;
    let nb = x.len() / QK_K;
    debug_assert!(nb >= 1 && nb <= w && x.len() == nb * QK_K);
    let block_bytes = if q5 {
        super::BLOCK_Q5_K_BYTES
    } else {
        super::BLOCK_Q4_K_BYTES
    };
    let mut xt = [0f32; QK_K * MAX_LANES];
    transpose_in(x, nb, w, &mut xt);
    let mut qwt = [0f32; QK_K * MAX_LANES];
    if let Some(qw) = qw {
        transpose_in(qw, nb, w, &mut qwt);
    }
    let (nmax, rmin, nstep) = if q5 { (31, -0.5, 15) } else { (15, -1.0, 20) };
    let mut scales = [0f32; 8 * MAX_LANES];
    let mut mins = [0f32; 8 * MAX_LANES];
    let mut sws = [0f32; 8 * MAX_LANES];
    let mut lv = [0i32; QK_K * MAX_LANES];
    let zero = s.splat(0.0);
    let mut xs = [zero; 32];
    let mut ws = [zero; 32];
    let mut ls = [s.isplat(0); 32];
    let sigma2 = if qw.is_some() {
        let mut sum_x2 = zero;
        for i in 0..QK_K {
            let v = s.load(&xt[i * w..]);
            sum_x2 = s.add(sum_x2, s.mul(v, v));
        }
        s.div(s.mul(s.splat(2.0), sum_x2), s.splat(QK_K as f32))
    } else {
        zero
    };
    for j in 0..8 {
        for i in 0..32 {
            xs[i] = s.load(&xt[(32 * j + i) * w..]);
        }
        let (scale, neg_min) = if qw.is_none() {
            let mut sum_x2 = zero;
            for i in 0..32 {
                sum_x2 = s.add(sum_x2, s.mul(xs[i], xs[i]));
            }
            let av_x = s.sqrt(s.div(sum_x2, s.splat(32.0)));
            for i in 0..32 {
                ws[i] = s.add(av_x, s.abs(xs[i]));
            }
            min_scale_search_lanes(s, nmax, &xs, &ws, &mut ls, rmin, 0.1, nstep, false, false)
        } else {
            let mut sum_w = zero;
            for i in 0..32 {
                let q = s.load(&qwt[(32 * j + i) * w..]);
                ws[i] = s.mul(q, s.sqrt(s.add(sigma2, s.mul(xs[i], xs[i]))));
                sum_w = s.add(sum_w, ws[i]);
            }
            s.store(sum_w, &mut sws[j * w..]);
            min_scale_search_lanes(s, nmax, &xs, &ws, &mut ls, -0.9, 0.05, 36, false, true)
        };
        s.store(scale, &mut scales[j * w..]);
        s.store(neg_min, &mut mins[j * w..]);
        for i in 0..32 {
            s.istore(ls[i], &mut lv[(32 * j + i) * w..]);
        }
    }
    // Per block: the scalar scale quantization, then each sub-block's effective scale and
    // offset exactly as the scalar requantization derives them (padding lanes stay inactive).
    let mut dls = [0f32; 8 * MAX_LANES];
    let mut mls = [0f32; 8 * MAX_LANES];
    for lane in 0..nb {
        let block_scales = std::array::from_fn(|j| scales[j * w + lane]);
        let block_mins = std::array::from_fn(|j| mins[j * w + lane]);
        let ob = &mut out[lane * block_bytes..(lane + 1) * block_bytes];
        let (d, dmin) = if qw.is_some() {
            let sw = std::array::from_fn(|j| sws[j * w + lane]);
            quantize_scales_k_imatrix(&block_scales, &block_mins, &sw, q5, ob)
        } else {
            quantize_scales_k(&block_scales, &block_mins, ob)
        };
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &ob[4..16]);
            dls[j * w + lane] = d * sc as f32;
            mls[j * w + lane] = dmin * m as f32;
        }
    }
    let lo = s.isplat(0);
    let hi = s.isplat(nmax);
    for j in 0..8 {
        let dl = s.load(&dls[j * w..]);
        let ml = s.load(&mls[j * w..]);
        let active = s.ne(dl, zero);
        if !s.any(active) {
            continue;
        }
        for i in 0..32 {
            let k = (32 * j + i) * w;
            let x = s.load(&xt[k..]);
            let l = s.imax(lo, s.imin(hi, s.nearest_int(s.div(s.add(x, ml), dl))));
            let old = s.iload(&lv[k..]);
            s.istore(s.iselect(active, l, old), &mut lv[k..]);
        }
    }
    for lane in 0..nb {
        let levels: [u8; QK_K] = std::array::from_fn(|i| lv[i * w + lane] as u8);
        let ob = &mut out[lane * block_bytes..(lane + 1) * block_bytes];
        if q5 {
            let (qh, qs) = ob[16..].split_at_mut(32);
            pack_q5_k(&levels, qh, qs);
        } else {
            pack_q4_k(&levels, &mut ob[16..]);
        }
    }
}

/// Q6_K blocks of `x` (1 ..= W super-blocks) into `out`: vectorized sub-block searches, then
/// the scalar oracle's finish per block.
#[inline(always)]
pub(crate) fn quantize_batch_q6<S: Lanes>(s: S, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    use super::{pack_q6_k, quantize_scales_q6_k, BLOCK_Q6_K_BYTES};
    let w = S::W;
    let nb = x.len() / QK_K;
    debug_assert!(nb >= 1 && nb <= w && x.len() == nb * QK_K);
    let mut xt = [0f32; QK_K * MAX_LANES];
    transpose_in(x, nb, w, &mut xt);
    let mut qwt = [0f32; QK_K * MAX_LANES];
    if let Some(qw) = qw {
        transpose_in(qw, nb, w, &mut qwt);
    }
    let mut scales = [0f32; 16 * MAX_LANES];
    let mut lv = [0i32; QK_K * MAX_LANES];
    let zero = s.splat(0.0);
    let mut xs = [zero; 16];
    let mut ws = [zero; 16];
    let mut ls = [s.isplat(0); 16];
    for ib in 0..16 {
        for i in 0..16 {
            xs[i] = s.load(&xt[(16 * ib + i) * w..]);
            ws[i] = if qw.is_some() {
                s.load(&qwt[(16 * ib + i) * w..])
            } else {
                s.mul(xs[i], xs[i])
            };
        }
        let scale = qx_search_lanes(s, 32, &xs, &ws, &mut ls);
        s.store(scale, &mut scales[ib * w..]);
        for i in 0..16 {
            s.istore(ls[i], &mut lv[(16 * ib + i) * w..]);
        }
    }
    let mut dls = [0f32; 16 * MAX_LANES];
    let mut zero_block = [true; MAX_LANES];
    for lane in 0..nb {
        let block_scales: [f32; 16] = std::array::from_fn(|ib| scales[ib * w + lane]);
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for &scale in &block_scales {
            let a = scale.abs();
            if a > max_abs_scale {
                max_abs_scale = a;
                max_scale = scale;
            }
        }
        let ob = &mut out[lane * BLOCK_Q6_K_BYTES..(lane + 1) * BLOCK_Q6_K_BYTES];
        if let Some(d) = quantize_scales_q6_k(&block_scales, max_scale, max_abs_scale, ob) {
            zero_block[lane] = false;
            for j in 0..16 {
                dls[j * w + lane] = d * (ob[192 + j] as i8) as f32;
            }
        }
    }
    let lo = s.isplat(-32);
    let hi = s.isplat(31);
    let offset = s.isplat(32);
    for j in 0..16 {
        let dl = s.load(&dls[j * w..]);
        let active = s.ne(dl, zero);
        if !s.any(active) {
            continue;
        }
        for i in 0..16 {
            let k = (16 * j + i) * w;
            let x = s.load(&xt[k..]);
            let l = s.imax(lo, s.imin(hi, s.nearest_int(s.div(x, dl))));
            let old = s.iload(&lv[k..]);
            s.istore(s.iselect(active, s.iadd(l, offset), old), &mut lv[k..]);
        }
    }
    for lane in 0..nb {
        if zero_block[lane] {
            continue;
        }
        let levels: [i8; QK_K] = std::array::from_fn(|i| lv[i * w + lane] as i8);
        pack_q6_k(
            &levels,
            &mut out[lane * BLOCK_Q6_K_BYTES..(lane + 1) * BLOCK_Q6_K_BYTES],
        );
    }
}

/// Reproduces `make_q3_quants(n, nmax, x, L, true)` on every lane: weights x², then up to five
/// coordinate-descent passes; a lane whose pass changes nothing stops (is masked) exactly where
/// the C loop breaks. Writes levels offset by `nmax` and returns the scale per lane.
#[inline(always)]
pub(crate) fn q3_search_lanes<S: Lanes>(s: S, nmax: i32, x: &[S::F], levels: &mut [S::I]) -> S::F {
    let n = x.len();
    let zero = s.splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for i in 0..n {
        let ax = s.abs(x[i]);
        let bigger = s.gt(ax, amax);
        amax = s.select(bigger, ax, amax);
        max = s.select(bigger, x[i], max);
    }
    let all_zero = s.lt(amax, s.splat(super::GROUP_MAX_EPS));
    let lo = s.isplat(-nmax);
    let hi = s.isplat(nmax - 1);
    let iscale = s.div(s.splat((-nmax) as f32), max);
    let mut w = [zero; 32];
    let mut wx = [zero; 32];
    let mut lv = [s.isplat(0); 32];
    let mut sumlx = zero;
    let mut suml2 = zero;
    for i in 0..n {
        w[i] = s.mul(x[i], x[i]);
        wx[i] = s.mul(w[i], x[i]);
        let l = s.imax(lo, s.imin(hi, s.nearest_int(s.mul(iscale, x[i]))));
        lv[i] = l;
        let lf = s.to_f32(l);
        sumlx = s.add(sumlx, s.mul(wx[i], lf));
        suml2 = s.add(suml2, s.mul(s.mul(w[i], lf), lf));
    }
    let all_lanes = s.eq(zero, zero);
    let mut running = s.andnot(all_lanes, all_zero);
    for _ in 0..5 {
        if !s.any(running) {
            break;
        }
        let mut changed = s.lt(zero, zero);
        for i in 0..n {
            let cur = s.to_f32(lv[i]);
            let slx = s.sub(sumlx, s.mul(wx[i], cur));
            let positive = s.gt(slx, zero);
            let sl2 = s.sub(suml2, s.mul(s.mul(w[i], cur), cur));
            let new_l = s.imax(lo, s.imin(hi, s.nearest_int(s.div(s.mul(x[i], sl2), slx))));
            let moved = s.andnot(positive, s.ieq(new_l, lv[i]));
            let nf = s.to_f32(new_l);
            let slx_new = s.add(slx, s.mul(wx[i], nf));
            let sl2_new = s.add(sl2, s.mul(s.mul(w[i], nf), nf));
            let improves = s.and(
                s.gt(sl2_new, zero),
                s.gt(
                    s.mul(s.mul(slx_new, slx_new), suml2),
                    s.mul(s.mul(sumlx, sumlx), sl2_new),
                ),
            );
            let take = s.and(running, s.and(moved, improves));
            lv[i] = s.iselect(take, new_l, lv[i]);
            sumlx = s.select(take, slx_new, sumlx);
            suml2 = s.select(take, sl2_new, suml2);
            changed = s.or(changed, take);
        }
        running = s.and(running, changed);
    }
    let offset = s.isplat(nmax);
    let zero_level = s.isplat(0);
    for i in 0..n {
        levels[i] = s.iselect(all_zero, zero_level, s.iadd(lv[i], offset));
    }
    let scale = s.select(s.gt(suml2, zero), s.div(sumlx, suml2), zero);
    s.select(all_zero, zero, scale)
}

/// Q2_K blocks of `x` (1 ..= W super-blocks): vectorized sub-block searches and requantization,
/// scalar scale quantization and packing per block.
#[inline(always)]
pub(crate) fn quantize_batch_q2<S: Lanes>(s: S, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    use super::{pack_2bit, quantize_scales_q2_k, quantize_scales_q2_k_imatrix, BLOCK_Q2_K_BYTES};
    let w = S::W;
    let nb = x.len() / QK_K;
    let mut xt = [0f32; QK_K * MAX_LANES];
    transpose_in(x, nb, w, &mut xt);
    let mut qwt = [0f32; QK_K * MAX_LANES];
    if let Some(qw) = qw {
        transpose_in(qw, nb, w, &mut qwt);
    }
    let mut scales = [0f32; 16 * MAX_LANES];
    let mut mins = [0f32; 16 * MAX_LANES];
    let mut sws = [0f32; 16 * MAX_LANES];
    let mut lv = [0i32; QK_K * MAX_LANES];
    let zero = s.splat(0.0);
    let mut xs = [zero; 16];
    let mut ws = [zero; 16];
    let mut ls = [s.isplat(0); 16];
    let sigma2 = if qw.is_some() {
        let mut sum_x2 = zero;
        for i in 0..QK_K {
            let v = s.load(&xt[i * w..]);
            sum_x2 = s.add(sum_x2, s.mul(v, v));
        }
        s.div(s.mul(s.splat(1.0), sum_x2), s.splat(QK_K as f32))
    } else {
        zero
    };
    for j in 0..16 {
        for i in 0..16 {
            xs[i] = s.load(&xt[(16 * j + i) * w..]);
        }
        let (scale, neg_min) = if qw.is_none() {
            for i in 0..16 {
                ws[i] = s.abs(xs[i]);
            }
            min_scale_search_lanes(s, 3, &xs, &ws, &mut ls, -0.5, 0.1, 15, true, false)
        } else {
            let mut sum_w = zero;
            for i in 0..16 {
                let q = s.load(&qwt[(16 * j + i) * w..]);
                ws[i] = s.mul(q, s.sqrt(s.add(sigma2, s.mul(xs[i], xs[i]))));
                sum_w = s.add(sum_w, ws[i]);
            }
            s.store(sum_w, &mut sws[j * w..]);
            min_scale_search_lanes(s, 3, &xs, &ws, &mut ls, -0.9, 0.05, 36, false, true)
        };
        s.store(scale, &mut scales[j * w..]);
        s.store(neg_min, &mut mins[j * w..]);
        for i in 0..16 {
            s.istore(ls[i], &mut lv[(16 * j + i) * w..]);
        }
    }
    let mut dls = [0f32; 16 * MAX_LANES];
    let mut mls = [0f32; 16 * MAX_LANES];
    for lane in 0..nb {
        let block_scales = std::array::from_fn(|j| scales[j * w + lane]);
        let block_mins = std::array::from_fn(|j| mins[j * w + lane]);
        let ob = &mut out[lane * BLOCK_Q2_K_BYTES..(lane + 1) * BLOCK_Q2_K_BYTES];
        let (d, dmin) = if qw.is_some() {
            let sw = std::array::from_fn(|j| sws[j * w + lane]);
            quantize_scales_q2_k_imatrix(&block_scales, &block_mins, &sw, ob)
        } else {
            quantize_scales_q2_k(&block_scales, &block_mins, ob)
        };
        for j in 0..16 {
            dls[j * w + lane] = d * (ob[j] & 0xF) as f32;
            mls[j * w + lane] = dmin * (ob[j] >> 4) as f32;
        }
    }
    let lo = s.isplat(0);
    let hi = s.isplat(3);
    for j in 0..16 {
        let dl = s.load(&dls[j * w..]);
        let ml = s.load(&mls[j * w..]);
        let active = s.ne(dl, zero);
        if !s.any(active) {
            continue;
        }
        for i in 0..16 {
            let k = (16 * j + i) * w;
            let x = s.load(&xt[k..]);
            let l = s.imax(lo, s.imin(hi, s.nearest_int(s.div(s.add(x, ml), dl))));
            let old = s.iload(&lv[k..]);
            s.istore(s.iselect(active, l, old), &mut lv[k..]);
        }
    }
    for lane in 0..nb {
        let levels: [u8; QK_K] = std::array::from_fn(|i| lv[i * w + lane] as u8);
        let ob = &mut out[lane * BLOCK_Q2_K_BYTES..(lane + 1) * BLOCK_Q2_K_BYTES];
        pack_2bit(&levels, &mut ob[16..80]);
    }
}

/// Q3_K blocks of `x` (1 ..= W super-blocks): vectorized sub-block searches and requantization,
/// scalar scale quantization and packing per block.
#[inline(always)]
pub(crate) fn quantize_batch_q3<S: Lanes>(s: S, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    use super::{
        pack_q3_k, q3_k_scale, quantize_scales_q3_k, quantize_scales_q3_k_imatrix, BLOCK_Q3_K_BYTES,
    };
    let w = S::W;
    let nb = x.len() / QK_K;
    let mut xt = [0f32; QK_K * MAX_LANES];
    transpose_in(x, nb, w, &mut xt);
    let mut qwt = [0f32; QK_K * MAX_LANES];
    if let Some(qw) = qw {
        transpose_in(qw, nb, w, &mut qwt);
    }
    let mut scales = [0f32; 16 * MAX_LANES];
    let mut sws = [0f32; 16 * MAX_LANES];
    let mut lv = [0i32; QK_K * MAX_LANES];
    let zero = s.splat(0.0);
    let mut xs = [zero; 16];
    let mut ws = [zero; 16];
    let mut ls = [s.isplat(0); 16];
    let sigma2 = if qw.is_some() {
        let mut sum_x2 = zero;
        for i in 0..QK_K {
            let v = s.load(&xt[i * w..]);
            sum_x2 = s.add(sum_x2, s.mul(v, v));
        }
        s.div(s.mul(s.splat(2.0), sum_x2), s.splat(QK_K as f32))
    } else {
        zero
    };
    for j in 0..16 {
        for i in 0..16 {
            xs[i] = s.load(&xt[(16 * j + i) * w..]);
        }
        let scale = if qw.is_none() {
            q3_search_lanes(s, 4, &xs, &mut ls)
        } else {
            let mut sum_w = zero;
            for i in 0..16 {
                let q = s.load(&qwt[(16 * j + i) * w..]);
                ws[i] = s.mul(q, s.sqrt(s.add(sigma2, s.mul(xs[i], xs[i]))));
                sum_w = s.add(sum_w, ws[i]);
            }
            s.store(sum_w, &mut sws[j * w..]);
            qx_search_lanes(s, 4, &xs, &ws, &mut ls)
        };
        s.store(scale, &mut scales[j * w..]);
        for i in 0..16 {
            s.istore(ls[i], &mut lv[(16 * j + i) * w..]);
        }
    }
    let mut dls = [0f32; 16 * MAX_LANES];
    for lane in 0..nb {
        let block_scales = std::array::from_fn(|j| scales[j * w + lane]);
        let ob = &mut out[lane * BLOCK_Q3_K_BYTES..(lane + 1) * BLOCK_Q3_K_BYTES];
        if qw.is_some() {
            let sw = std::array::from_fn(|j| sws[j * w + lane]);
            quantize_scales_q3_k_imatrix(&block_scales, &sw, ob);
        } else {
            quantize_scales_q3_k(&block_scales, ob);
        }
        let d_all = super::f16_to_f32(super::read_u16(ob, 108));
        for j in 0..16 {
            dls[j * w + lane] = d_all * q3_k_scale(j, &ob[96..108]) as f32;
        }
    }
    let lo = s.isplat(-4);
    let hi = s.isplat(3);
    let offset = s.isplat(4);
    for j in 0..16 {
        let dl = s.load(&dls[j * w..]);
        let active = s.ne(dl, zero);
        if !s.any(active) {
            continue;
        }
        for i in 0..16 {
            let k = (16 * j + i) * w;
            let x = s.load(&xt[k..]);
            let l = s.imax(lo, s.imin(hi, s.nearest_int(s.div(x, dl))));
            let old = s.iload(&lv[k..]);
            s.istore(s.iselect(active, s.iadd(l, offset), old), &mut lv[k..]);
        }
    }
    for lane in 0..nb {
        let mut levels: [u8; QK_K] = std::array::from_fn(|i| lv[i * w + lane] as u8);
        let ob = &mut out[lane * BLOCK_Q3_K_BYTES..(lane + 1) * BLOCK_Q3_K_BYTES];
        pack_q3_k(&mut levels, ob);
    }
}

/// The types with SIMD kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl Kernel {
    fn block_bytes(self) -> usize {
        match self {
            Kernel::Q2K => super::BLOCK_Q2_K_BYTES,
            Kernel::Q3K => super::BLOCK_Q3_K_BYTES,
            Kernel::Q4K => super::BLOCK_Q4_K_BYTES,
            Kernel::Q5K => super::BLOCK_Q5_K_BYTES,
            Kernel::Q6K => super::BLOCK_Q6_K_BYTES,
        }
    }
}

/// Quantizes a row batch by batch of `S::W` super-blocks (the last batch padded).
#[inline(always)]
fn quantize_row_lanes<S: Lanes>(
    s: S,
    kernel: Kernel,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) {
    let step = S::W * QK_K;
    let bb = kernel.block_bytes();
    for (k, (xb, ob)) in x.chunks(step).zip(out.chunks_mut(S::W * bb)).enumerate() {
        let wb = qw.map(|w| &w[k * step..k * step + xb.len()]);
        match kernel {
            Kernel::Q2K => quantize_batch_q2(s, xb, wb, ob),
            Kernel::Q3K => quantize_batch_q3(s, xb, wb, ob),
            Kernel::Q4K => quantize_batch_q4_q5(s, xb, wb, ob, false),
            Kernel::Q5K => quantize_batch_q4_q5(s, xb, wb, ob, true),
            Kernel::Q6K => quantize_batch_q6(s, xb, wb, ob),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(kernel: Kernel, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_lanes(x86::Avx2::new_unchecked(), kernel, x, qw, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_row_avx512(kernel: Kernel, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_row_lanes(x86::Avx512::new_unchecked(), kernel, x, qw, out)
}

/// Quantizes one row (whole super-blocks; `out` exactly its bytes) with `backend`'s kernel.
/// Returns false (doing nothing) for `Backend::Scalar` or a backend this CPU lacks, so the caller
/// runs the scalar oracle.
pub(crate) fn quantize_row_simd(
    backend: Backend,
    kernel: Kernel,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match backend {
            Backend::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
                // SAFETY: AVX-512F was just detected.
                unsafe { quantize_row_avx512(kernel, x, qw, out) };
                return true;
            }
            Backend::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
                // SAFETY: AVX2 was just detected.
                unsafe { quantize_row_avx2(kernel, x, qw, out) };
                return true;
            }
            _ => {}
        }
    }
    let _ = (backend, kernel, x, qw, out);
    false
}
