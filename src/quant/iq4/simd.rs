//! SIMD IQ4_NL / IQ4_XS: one vector lane is one 32-element block, so 8 (AVX2) or 16 (AVX-512)
//! blocks are searched side by side. Every lane executes exactly the scalar sequence of IEEE
//! single operations of the oracle in `iq4.rs` (same order, same association, no FMA; the
//! strict-improvement acceptance becomes a per-lane mask), and no lane reads another's data, so
//! the bytes cannot differ.
//!
//! What is vectorized is the expensive part, the fifteen-plus-one trial scales of each block
//! (`best_block_scale`) and the final pick of every element's level. The cheap per-block
//! remainder (IQ4_XS's 6-bit block scales, the f16 scale, nibble packing) runs the scalar
//! oracle's own functions on each lane's results. IQ4_XS's `sigma2` spans a whole super-block,
//! so it is the scalar `sigma2_of` per super-block, handed to that super-block's eight lanes.
//!
//! The nearest level (`best_index_int8`) is a branch-free search: the largest k in 1..=14 with
//! `!(x < level[k])` (0 if none) by four halving steps, then the scalar code's own comparison
//! `x − level[k] < level[k+1] − x` picks k or k + 1. `!(x < ·)` holds for NaN, which sends a NaN
//! to index 15 as the bisection in C does; a sentinel +∞ at index 15 of the step table stops
//! every finite x at 14.
//!
//! x86-64 only, on the K-quants' `Lanes` (AVX2 or AVX-512F, detected at run time) plus a 16-entry
//! table lookup. A row is processed in batches of W blocks (IQ4_XS: W/8 super-blocks); on
//! AVX-512 a last batch of at most 8 blocks runs on AVX2, and a last partial batch is padded
//! with copies of its first block whose results are discarded.

// Index loops walk parallel lane arrays in the scalar code's element order.
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
mod x86;

use super::{
    f32_to_f16, pack_block, quantize_xs_scales, sigma2_of, xs_inverse_block_scale, BlockIq4Nl,
    BlockIq4Xs, BLOCK, GROUP_MAX_EPS, KVALUES_IQ4NL, NTRY, SUPER_BLOCK, XS_BLOCKS,
};
use crate::quant::kquants::simd::{Lanes, MAX_LANES};
use crate::quant::kquants::Backend;

/// `Lanes` plus what the level search needs.
pub(crate) trait TableLanes: Lanes {
    /// 16 floats held in registers for [`TableLanes::lookup`].
    type Table: Copy;
    /// Loads a 16-entry table.
    fn table(self, t: &[f32; 16]) -> Self::Table;
    /// `t[idx]` per lane; every index is in 0..16.
    fn lookup(self, t: Self::Table, idx: Self::I) -> Self::F;
    /// C's `!(a < b)` per lane (true if either side is NaN).
    fn not_lt(self, a: Self::F, b: Self::F) -> Self::M;
}

/// The two kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// IQ4_NL: every block its own scale and `sigma2`.
    Nl,
    /// IQ4_XS: eight blocks per super-block share `sigma2` and the f16 scale.
    Xs,
}

/// The level tables of the search, loaded once per row.
struct Levels<S: TableLanes> {
    /// The step comparisons' table: level[k], with +∞ at 15.
    step: S::Table,
    /// level[k] for the lower candidate k (level[15] at 15).
    lower: S::Table,
    /// level[k + 1] for the upper candidate (level[15] at 15).
    upper: S::Table,
    /// level[4], level[8], level[12]: the first two steps select instead of looking up.
    l4: S::F,
    l8: S::F,
    l12: S::F,
}

impl<S: TableLanes> Levels<S> {
    #[inline(always)]
    fn new(s: S) -> Levels<S> {
        let v = |k: usize| KVALUES_IQ4NL[k.min(15)] as f32;
        let step: [f32; 16] = std::array::from_fn(|k| if k == 15 { f32::INFINITY } else { v(k) });
        let lower: [f32; 16] = std::array::from_fn(v);
        let upper: [f32; 16] = std::array::from_fn(|k| v(k + 1));
        Levels {
            step: s.table(&step),
            lower: s.table(&lower),
            upper: s.table(&upper),
            l4: s.splat(v(4)),
            l8: s.splat(v(8)),
            l12: s.splat(v(12)),
        }
    }
}

/// The bracket of `x` per lane: k (the largest of 1..=14 with `!(x < level[k])`, else 0; 15 for
/// NaN and +∞), level[k], level[k+1], and whether the lower one is STRICTLY nearer (the C tie
/// rule: ties go up).
#[inline(always)]
fn bracket<S: TableLanes>(s: S, t: &Levels<S>, x: S::F) -> (S::I, S::F, S::F, S::M) {
    let m8 = s.not_lt(x, t.l8);
    let mut k = s.iselect(m8, s.isplat(8), s.isplat(0));
    let cand = s.iadd(k, s.isplat(4));
    k = s.iselect(s.not_lt(x, s.select(m8, t.l12, t.l4)), cand, k);
    for step in [2, 1] {
        let cand = s.iadd(k, s.isplat(step));
        k = s.iselect(s.not_lt(x, s.lookup(t.step, cand)), cand, k);
    }
    let lo = s.lookup(t.lower, k);
    let hi = s.lookup(t.upper, k);
    let down = s.lt(s.sub(x, lo), s.sub(hi, x));
    (k, lo, hi, down)
}

/// The value of the level nearest to `x` per lane (`values[best_index_int8(x)]`).
#[inline(always)]
fn nearest_level<S: TableLanes>(s: S, t: &Levels<S>, x: S::F) -> S::F {
    let (_, lo, hi, down) = bracket(s, t, x);
    s.select(down, lo, hi)
}

/// The index of the level nearest to `x` per lane (`best_index_int8(x)`, i.e. `best_index`).
#[inline(always)]
fn nearest_index<S: TableLanes>(s: S, t: &Levels<S>, x: S::F) -> S::I {
    let (k, _, _, down) = bracket(s, t, x);
    let up = s.imin(s.iadd(k, s.isplat(1)), s.isplat(15));
    s.iselect(down, k, up)
}

/// Σ (w·q)·x and Σ (w·q)·q over the block for the levels nearest to `id·x`, per lane
/// (`weighted_sums`).
#[inline(always)]
fn weighted_sums<S: TableLanes>(
    s: S,
    t: &Levels<S>,
    xs: &[S::F; BLOCK],
    ws: &[S::F; BLOCK],
    id: S::F,
) -> (S::F, S::F) {
    let mut sumqx = s.splat(0.0);
    let mut sumq2 = s.splat(0.0);
    for j in 0..BLOCK {
        let q = nearest_level(s, t, s.mul(id, xs[j]));
        let wq = s.mul(ws[j], q);
        sumqx = s.add(sumqx, s.mul(wq, xs[j]));
        sumq2 = s.add(sumq2, s.mul(wq, q));
    }
    (sumqx, sumq2)
}

/// `best_block_scale` on every lane: the least-squares scale at d = max/127, then the 15 trial
/// inverse scales (itry − 127)/max, each kept on STRICT improvement; 0 where the block's
/// magnitude is below GROUP_MAX_EPS (such a lane computes on, its result masked away).
#[inline(always)]
fn best_block_scales<S: TableLanes>(
    s: S,
    t: &Levels<S>,
    xs: &[S::F; BLOCK],
    ws: &[S::F; BLOCK],
) -> S::F {
    let zero = s.splat(0.0);
    let mut amax = zero;
    let mut max = zero;
    for j in 0..BLOCK {
        let ax = s.abs(xs[j]);
        let bigger = s.gt(ax, amax);
        amax = s.select(bigger, ax, amax);
        max = s.select(bigger, xs[j], max);
    }
    let all_zero = s.lt(amax, s.splat(GROUP_MAX_EPS));
    let v0 = KVALUES_IQ4NL[0] as f32;
    let d = s.div(s.neg(max), s.splat(v0));
    let (sumqx, sumq2) = weighted_sums(s, t, xs, ws, s.div(s.splat(1.0), d));
    let mut d = s.select(s.gt(sumq2, zero), s.div(sumqx, sumq2), zero);
    let mut best = s.mul(d, sumqx);
    for itry in -NTRY..=NTRY {
        let id = s.div(s.splat((itry + KVALUES_IQ4NL[0] as i32) as f32), max);
        let (sumqx, sumq2) = weighted_sums(s, t, xs, ws, id);
        let better = s.and(
            s.gt(sumq2, zero),
            s.gt(s.mul(sumqx, sumqx), s.mul(best, sumq2)),
        );
        if !s.any(better) {
            continue;
        }
        let nd = s.div(sumqx, sumq2);
        d = s.select(better, nd, d);
        best = s.select(better, s.mul(nd, sumqx), best);
    }
    s.select(all_zero, zero, d)
}

/// One batch in lane-major order: element j of lane b at `[j*W + b]`.
struct Batch {
    x: [f32; BLOCK * MAX_LANES],
    qw: [f32; BLOCK * MAX_LANES],
}

impl Batch {
    /// Copies `nb ≤ w` consecutive blocks of `x` (and `qw`) into lane-major order; missing lanes
    /// repeat block 0 so they compute on ordinary data (their results are discarded).
    #[inline(always)]
    fn load(x: &[f32], qw: Option<&[f32]>, nb: usize, w: usize) -> Batch {
        let mut b = Batch {
            x: [0.0; BLOCK * MAX_LANES],
            qw: [0.0; BLOCK * MAX_LANES],
        };
        for lane in 0..w {
            let src = if lane < nb { lane } else { 0 };
            for j in 0..BLOCK {
                b.x[j * w + lane] = x[src * BLOCK + j];
            }
            if let Some(qw) = qw {
                for j in 0..BLOCK {
                    b.qw[j * w + lane] = qw[src * BLOCK + j];
                }
            }
        }
        b
    }
}

/// The weights of the search per lane: `qw·sqrt(sigma2 + x²)` with importance weights, else x².
#[inline(always)]
fn search_weights<S: TableLanes>(
    s: S,
    b: &Batch,
    xs: &[S::F; BLOCK],
    sigma2: S::F,
    imatrix: bool,
) -> [S::F; BLOCK] {
    std::array::from_fn(|j| {
        let x2 = s.mul(xs[j], xs[j]);
        if imatrix {
            s.mul(s.load(&b.qw[j * S::W..]), s.sqrt(s.add(sigma2, x2)))
        } else {
            x2
        }
    })
}

/// Every element's level index at the per-lane inverse scale `id`, lane-major.
#[inline(always)]
fn pick_levels<S: TableLanes>(
    s: S,
    t: &Levels<S>,
    xs: &[S::F; BLOCK],
    id: S::F,
    out: &mut [i32; BLOCK * MAX_LANES],
) {
    for j in 0..BLOCK {
        s.istore(nearest_index(s, t, s.mul(id, xs[j])), &mut out[j * S::W..]);
    }
}

/// Lane `lane`'s 32 levels packed into `qs[..16]`.
#[inline(always)]
fn pack_lane(levels: &[i32; BLOCK * MAX_LANES], w: usize, lane: usize, qs: &mut [u8]) {
    let l: [u8; BLOCK] = std::array::from_fn(|j| levels[j * w + lane] as u8);
    pack_block(&l, qs);
}

/// IQ4_NL: `x` holds 1 ..= W blocks; their bytes go to `out`.
#[inline(always)]
fn quantize_batch_nl<S: TableLanes>(
    s: S,
    t: &Levels<S>,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) {
    let w = S::W;
    let nb = x.len() / BLOCK;
    debug_assert!(nb >= 1 && nb <= w);
    let b = Batch::load(x, qw, nb, w);
    let xs: [S::F; BLOCK] = std::array::from_fn(|j| s.load(&b.x[j * w..]));
    // sigma2_of per block: Σx² in element order, times 2/32.
    let mut sum_x2 = s.splat(0.0);
    for j in 0..BLOCK {
        sum_x2 = s.add(sum_x2, s.mul(xs[j], xs[j]));
    }
    let sigma2 = s.mul(sum_x2, s.splat(2.0 / BLOCK as f32));
    let ws = search_weights(s, &b, &xs, sigma2, qw.is_some());
    let d = best_block_scales(s, t, &xs, &ws);
    let zero = s.splat(0.0);
    let id = s.select(s.ne(d, zero), s.div(s.splat(1.0), d), zero);
    let mut levels = [0i32; BLOCK * MAX_LANES];
    pick_levels(s, t, &xs, id, &mut levels);
    let mut ds = [0f32; MAX_LANES];
    s.store(d, &mut ds);
    for lane in 0..nb {
        let mut blk = BlockIq4Nl {
            d: f32_to_f16(ds[lane]),
            qs: [0; 16],
        };
        pack_lane(&levels, w, lane, &mut blk.qs);
        blk.write(&mut out[lane * BlockIq4Nl::BYTES..(lane + 1) * BlockIq4Nl::BYTES]);
    }
}

/// IQ4_XS: `x` holds 1 ..= W/8 super-blocks (lane b is block b%8 of super-block b/8); their
/// bytes go to `out`.
#[inline(always)]
fn quantize_batch_xs<S: TableLanes>(
    s: S,
    t: &Levels<S>,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) {
    let w = S::W;
    let nsb = x.len() / SUPER_BLOCK;
    let nb = nsb * XS_BLOCKS;
    debug_assert!(nsb >= 1 && nb <= w);
    let b = Batch::load(x, qw, nb, w);
    let xs: [S::F; BLOCK] = std::array::from_fn(|j| s.load(&b.x[j * w..]));
    let mut sigma2 = [0f32; MAX_LANES];
    if qw.is_some() {
        for (sb, xsb) in x.chunks_exact(SUPER_BLOCK).enumerate() {
            sigma2[sb * XS_BLOCKS..(sb + 1) * XS_BLOCKS].fill(sigma2_of(xsb));
        }
    }
    let ws = search_weights(s, &b, &xs, s.load(&sigma2), qw.is_some());
    let mut scales = [0f32; MAX_LANES];
    s.store(best_block_scales(s, t, &xs, &ws), &mut scales);
    // Per super-block: the 6-bit block scales, then each lane's inverse block scale.
    let mut idl = [0f32; MAX_LANES];
    let mut blocks = [BlockIq4Xs::new(0.0, &[0; XS_BLOCKS]); MAX_LANES / XS_BLOCKS];
    for sb in 0..nsb {
        let lanes = sb * XS_BLOCKS..(sb + 1) * XS_BLOCKS;
        let (d, ls) = quantize_xs_scales(scales[lanes.clone()].try_into().unwrap());
        for (ib, &l) in ls.iter().enumerate() {
            idl[lanes.start + ib] = xs_inverse_block_scale(d, l);
        }
        blocks[sb] = BlockIq4Xs::new(d, &ls);
    }
    let mut levels = [0i32; BLOCK * MAX_LANES];
    pick_levels(s, t, &xs, s.load(&idl), &mut levels);
    for (sb, blk) in blocks[..nsb].iter_mut().enumerate() {
        for ib in 0..XS_BLOCKS {
            pack_lane(
                &levels,
                w,
                sb * XS_BLOCKS + ib,
                &mut blk.qs[16 * ib..16 * ib + 16],
            );
        }
        blk.write(&mut out[sb * BlockIq4Xs::BYTES..(sb + 1) * BlockIq4Xs::BYTES]);
    }
}

/// Quantizes whole blocks (IQ4_XS: whole super-blocks) batch by batch of `S::W` blocks.
#[inline(always)]
fn quantize_lanes<S: TableLanes>(
    s: S,
    kernel: Kernel,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) {
    let t = Levels::new(s);
    let step = S::W * BLOCK;
    let bytes = match kernel {
        Kernel::Nl => S::W * BlockIq4Nl::BYTES,
        Kernel::Xs => S::W / XS_BLOCKS * BlockIq4Xs::BYTES,
    };
    for (k, (xb, ob)) in x.chunks(step).zip(out.chunks_mut(bytes)).enumerate() {
        let wb = qw.map(|w| &w[k * step..k * step + xb.len()]);
        match kernel {
            Kernel::Nl => quantize_batch_nl(s, &t, xb, wb, ob),
            Kernel::Xs => quantize_batch_xs(s, &t, xb, wb, ob),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(kernel: Kernel, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    use crate::quant::kquants::simd::x86::Avx2;
    quantize_lanes(Avx2::new_unchecked(), kernel, x, qw, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_avx512(kernel: Kernel, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    use crate::quant::kquants::simd::x86::Avx512;
    quantize_lanes(Avx512::new_unchecked(), kernel, x, qw, out)
}

/// Quantizes one row (whole blocks; `out` exactly its bytes) with `backend`'s kernels. Returns
/// false (doing nothing) for `Backend::Scalar` or a backend this CPU lacks, so the caller runs
/// the scalar oracle.
pub(crate) fn quantize_row_simd(
    backend: Backend,
    kernel: Kernel,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        match backend {
            Backend::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
                // A last batch of at most 8 blocks costs half as many lanes on AVX2.
                let (unit, bytes) = match kernel {
                    Kernel::Nl => (BLOCK, BlockIq4Nl::BYTES),
                    Kernel::Xs => (SUPER_BLOCK, BlockIq4Xs::BYTES),
                };
                let units = x.len() / unit;
                let per_batch = 16 * BLOCK / unit;
                let tail = units % per_batch;
                let split = if avx2 && tail > 0 && tail * unit <= 8 * BLOCK {
                    units - tail
                } else {
                    units
                };
                let (x0, x1) = x.split_at(split * unit);
                let (o0, o1) = out.split_at_mut(split * bytes);
                let (w0, w1) = match qw {
                    Some(w) => {
                        let (a, b) = w.split_at(split * unit);
                        (Some(a), Some(b))
                    }
                    None => (None, None),
                };
                // SAFETY: AVX-512F (and AVX2 for the tail) were just detected.
                unsafe {
                    quantize_avx512(kernel, x0, w0, o0);
                    if !x1.is_empty() {
                        quantize_avx2(kernel, x1, w1, o1);
                    }
                }
                return true;
            }
            Backend::Avx2 if avx2 => {
                // SAFETY: AVX2 was just detected.
                unsafe { quantize_avx2(kernel, x, qw, out) };
                return true;
            }
            _ => {}
        }
    }
    let _ = (backend, kernel, x, qw, out);
    false
}
