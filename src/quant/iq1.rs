//! The 1-bit grid types: IQ1_S (1.5625 bits per weight) and IQ1_M (1.75 bits per weight).
//!
//! Both store each group of 8 weights as an index into the 2048-point ternary codebook
//! (`kgrid_1bit_2048`, in [`super::iq_grid`]): a point has 8 coordinates in {−1, 0, 1}, and the
//! dequantized value is `scale·(coordinate ± IQ1S_DELTA)`, where the sign of the shift is chosen
//! per group of 32 (IQ1_S) or per group of 8 (IQ1_M).
//!
//! The quantizers reproduce `quantize_row_iq1_s_impl` and `quantize_row_iq1_m_impl`
//! (ggml-quants.c, llama.cpp 0c1e57098), reached through `quantize_iq1_s` / `quantize_iq1_m`:
//! per block, the weights are sorted by value, and every split of the sorted order into three
//! runs (−1, 0, +1) is scored exactly with prefix sums; the best split's ternary pattern is looked
//! up in the codebook, and a pattern that is not a codebook point is replaced by the best of its
//! nearest codebook points. The dequantizers reproduce `dequantize_row_iq1_s` / `_m`.

use super::iq_grid::{self, Codebook, Lattice};
use super::{
    f16_to_f32, f32_to_f16, nearest_int, read_u16, GgmlType, RowDequantizer, RowQuantizer,
};

/// Elements per super-block (QK_K).
pub const SUPER_BLOCK: usize = 256;
/// Elements per IQ1_S scale block (`IQ1S_BLOCK_SIZE`).
pub const IQ1S_BLOCK: usize = 32;
/// Elements per IQ1_M scale block (`IQ1M_BLOCK_SIZE`).
pub const IQ1M_BLOCK: usize = 16;
/// The shift added to (or subtracted from) every ternary coordinate (`IQ1S_DELTA`; IQ1_M's
/// `IQ1M_DELTA` has the same value and its dequantizer uses this one).
pub const IQ1S_DELTA: f32 = 0.125;
/// IQ1_M's shift (`IQ1M_DELTA`), used by its quantizer.
pub const IQ1M_DELTA: f32 = 0.125;

/// Below this block magnitude an IQ1_S block is stored as zero (`GROUP_MAX_EPS_IQ1_S`).
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;
/// Below this block magnitude an IQ1_M block is stored as zero (`GROUP_MAX_EPS_IQ1_M`).
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;

/// The CPU quantizer for `ty` if it is IQ1_S or IQ1_M.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::IQ1_S => quantize_row_iq1_s,
        GgmlType::IQ1_M => quantize_row_iq1_m,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is IQ1_S or IQ1_M.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::IQ1_S => dequantize_row_iq1_s,
        GgmlType::IQ1_M => dequantize_row_iq1_m,
        _ => return None,
    })
}

/// Whether the quantizer of `ty` (of this family) needs importance weights for every tensor:
/// IQ1_S (llama.cpp asserts `quant_weights`, so callers refuse such tensors first; given none,
/// [`quantize_block_iq1_s`] uses IQ1_M's x² weights). IQ1_M runs without them.
pub fn needs_weights(ty: GgmlType) -> bool {
    ty == GgmlType::IQ1_S
}

// ---------------------------------------------------------------------------------------------
// Block layouts
// ---------------------------------------------------------------------------------------------

/// IQ1_S, 50 bytes: `d` (f16) at 0..2, `qs` at 2..34, `qh` (eight u16 LE) at 34..50.
///
/// Group g (of 32, 8 weights each) is codebook point `qs[g] | ((qh[g/4] >> 3·(g%4)) & 7) << 8`.
/// Bits 12..15 of `qh[b]` hold block b's 3-bit scale `s` and, in bit 15, the sign of the shift;
/// value = d·(2s + 1)·(coordinate + delta), delta = −IQ1S_DELTA when bit 15 is set, else +.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIq1S {
    /// The super-block scale, f16 bits.
    pub d: u16,
    /// Low 8 bits of each group's codebook index.
    pub qs: [u8; 32],
    /// Per 32-element block: high index bits of its 4 groups, the 3-bit scale, the shift sign.
    pub qh: [u16; 8],
}

impl BlockIq1S {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 50;

    /// An all-zero block (what the quantizer starts from).
    pub const ZERO: BlockIq1S = BlockIq1S {
        d: 0,
        qs: [0; 32],
        qh: [0; 8],
    };

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..34].copy_from_slice(&self.qs);
        for (o, h) in out[34..50].chunks_exact_mut(2).zip(&self.qh) {
            o.copy_from_slice(&h.to_le_bytes());
        }
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq1S {
        let mut qh = [0u16; 8];
        for (i, h) in qh.iter_mut().enumerate() {
            *h = read_u16(b, 34 + 2 * i);
        }
        BlockIq1S {
            d: read_u16(b, 0),
            qs: b[2..34].try_into().unwrap(),
            qh,
        }
    }

    /// The codebook index of group `g` (0..32).
    pub fn grid_index(&self, g: usize) -> usize {
        self.qs[g] as usize | ((((self.qh[g / 4] >> (3 * (g % 4))) & 7) as usize) << 8)
    }
}

/// IQ1_M, 56 bytes: `qs` at 0..32, `qh` at 32..48, `scales` at 48..56 (read as four u16 LE).
///
/// Group g (of 32) is codebook point `qs[g] | ((qh[g/2] >> 4·(g%2)) & 7) << 8`; bit 3 (even g)
/// or bit 7 (odd g) of `qh[g/2]` set means the group's shift is −IQ1S_DELTA. The four u16 scale
/// words hold sixteen 3-bit block scales (block b at bits 3·(b%4) of word b/4) and, in their top
/// nibbles (word 0 lowest), the f16 super-block scale d. Value = d·(2s + 1)·(coordinate + delta).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIq1M {
    /// Low 8 bits of each group's codebook index.
    pub qs: [u8; 32],
    /// Per 16-element block: the high index bits and shift signs of its two groups.
    pub qh: [u8; 16],
    /// The 3-bit block scales and the scattered f16 super-block scale, as four u16 words.
    pub scales: [u16; 4],
}

impl BlockIq1M {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 56;

    /// An all-zero block (what the quantizer starts from).
    pub const ZERO: BlockIq1M = BlockIq1M {
        qs: [0; 32],
        qh: [0; 16],
        scales: [0; 4],
    };

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..32].copy_from_slice(&self.qs);
        out[32..48].copy_from_slice(&self.qh);
        for (o, s) in out[48..56].chunks_exact_mut(2).zip(&self.scales) {
            o.copy_from_slice(&s.to_le_bytes());
        }
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq1M {
        let mut scales = [0u16; 4];
        for (i, s) in scales.iter_mut().enumerate() {
            *s = read_u16(b, 48 + 2 * i);
        }
        BlockIq1M {
            qs: b[0..32].try_into().unwrap(),
            qh: b[32..48].try_into().unwrap(),
            scales,
        }
    }

    /// The f16 bits of the super-block scale, gathered from the top nibbles of the scale words.
    pub fn d(&self) -> u16 {
        let sc = &self.scales;
        (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)
    }

    /// The 3-bit scale of 16-element block `b` (0..16).
    pub fn block_scale(&self, b: usize) -> u16 {
        (self.scales[b / 4] >> (3 * (b % 4))) & 7
    }

    /// The codebook index of group `g` (0..32).
    pub fn grid_index(&self, g: usize) -> usize {
        self.qs[g] as usize | ((((self.qh[g / 2] >> (4 * (g % 2))) & 7) as usize) << 8)
    }

    /// Whether group `g` (0..32) is shifted by −IQ1S_DELTA (else +).
    pub fn negative_shift(&self, g: usize) -> bool {
        self.qh[g / 2] & (0x08 << (4 * (g % 2))) != 0
    }
}

// ---------------------------------------------------------------------------------------------
// The codebook
// ---------------------------------------------------------------------------------------------

/// Points of the codebook (`NGRID_IQ1S`).
const NGRID: usize = 2048;

/// The IQ1 codebook prepared for quantization (grid, map, neighbour lists).
fn lattice() -> &'static Lattice {
    iq_grid::lattice(Codebook::Iq1S)
}

/// The levels (0, 1, 2 for −1, 0, +1) of codebook point `i`: the grid stores 2·level + 1.
#[inline(always)]
fn levels(lat: &Lattice, i: usize) -> [u8; 8] {
    lat.grid[i].map(|g| ((g - 1) / 2) as u8)
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of the two quantizers
// ---------------------------------------------------------------------------------------------

/// `2·Σx²/QK_K` over a super-block: the `sigma2` of the importance weights.
#[inline(always)]
fn sigma2_of(x: &[f32]) -> f32 {
    let mut sumx2 = 0.0f32;
    for &v in x {
        sumx2 += v * v;
    }
    2.0 * sumx2 / SUPER_BLOCK as f32
}

/// The search weights of one block: qw·√(sigma2 + x²) with an imatrix, else x².
#[inline(always)]
fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32]) {
    match qw {
        Some(qw) => {
            for i in 0..xb.len() {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..xb.len() {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
}

/// max |x| over a block (`MAX` in index order; no NaN reaches the quantizers).
#[inline(always)]
fn max_abs(xb: &[f32]) -> f32 {
    let mut max = xb[0].abs();
    for &v in &xb[1..] {
        max = if max > v.abs() { max } else { v.abs() };
    }
    max
}

/// The block's indices in ascending order of value. The reference sorts (value, index) pairs
/// with glibc `qsort` and a comparator on the value alone; glibc's qsort is a merge sort for
/// arrays this small, which is stable, so equal values (including −0 and +0) keep index order —
/// exactly what a stable sort by value gives.
#[inline(always)]
fn sorted_order<const N: usize>(xb: &[f32]) -> [u8; N] {
    let mut order = [0u8; N];
    for (j, o) in order.iter_mut().enumerate() {
        *o = j as u8;
    }
    order.sort_by(|&a, &b| {
        xb[a as usize]
            .partial_cmp(&xb[b as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order
}

/// Ternary levels of a split: sorted positions < i1 get 0 (−1), < i2 get 1 (0), the rest 2 (+1).
#[inline(always)]
fn split_levels<const N: usize>(order: &[u8; N], i1: usize, i2: usize) -> [u8; N] {
    let mut l = [0u8; N];
    for (j, &i) in order.iter().enumerate() {
        l[i as usize] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
    l
}

/// The 2-bit packed pattern of 8 levels.
#[inline(always)]
fn pattern(l: &[u8]) -> u16 {
    let mut u = 0u16;
    for (j, &v) in l[..8].iter().enumerate() {
        u |= (v as u16) << (2 * j);
    }
    u
}

/// The codebook point for one group of 8 with levels `l` at `scale` and shift values `xx`:
/// the pattern itself when it is a point, else its neighbour with the least
/// Σ w·(scale·xx[level] − x)² (first wins ties). Reproduces the lookup in the quantizers and
/// `iq1_find_best_neighbour2`. Returns (index, whether the pattern was on the grid).
fn grid_point(
    lat: &Lattice,
    l: &[u8],
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    xx: &[f32; 3],
) -> (u16, bool) {
    let u = pattern(l);
    if let Some(i) = lat.index_of(u) {
        return (i as u16, true);
    }
    let neighbours = lat.neighbours_of(u);
    let d2_of = |p: &[u8; 8]| {
        let mut d2 = 0.0f32;
        for i in 0..8 {
            let q = xx[p[i] as usize];
            let w = weight[i];
            let diff = scale * q - xval[i];
            d2 += w * diff * diff;
        }
        d2
    };
    let mut best_score = f32::MAX;
    let mut best: Option<u16> = None;
    for &n in neighbours {
        let d2 = d2_of(&levels(lat, n as usize));
        if d2 < best_score {
            best_score = d2;
            best = Some(n);
        }
    }
    if best.is_none() {
        // Only reached when every neighbour's score is ≥ f32::MAX (huge weights). The
        // reference then scans the whole codebook, but reads x at the codebook index instead
        // of the coordinate (past the group), and aborts if that finds nothing either; here the
        // scan uses the coordinates and the first neighbour is the last resort.
        for i in 0..NGRID {
            let d2 = d2_of(&levels(lat, i));
            if d2 < best_score {
                best_score = d2;
                best = Some(i as u16);
            }
        }
    }
    (best.unwrap_or(neighbours[0]), false)
}

/// The least-squares scale Σ w·q·x / Σ w·q² over the chosen codebook points of a block (q the
/// shifted value of each level, `xx_of(group)` the shift values of each group of 8), in index
/// order; `None` unless both sums are positive.
fn refit_scale(
    lat: &Lattice,
    xb: &[f32],
    weight: &[f32],
    index: &[u16],
    xx_of: impl Fn(usize) -> &'static [f32; 3],
) -> Option<f32> {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for (k, &idx) in index.iter().enumerate() {
        let p = levels(lat, idx as usize);
        let xx = xx_of(k);
        for j in 0..8 {
            let w = weight[8 * k + j];
            let q = xx[p[j] as usize];
            sumqx += w * q * xb[8 * k + j];
            sumq2 += w * q * q;
        }
    }
    (sumqx > 0.0 && sumq2 > 0.0).then(|| sumqx / sumq2)
}

/// The ternary values with a positive shift: −1 + δ, δ, 1 + δ (`x_p`).
static IQ1S_XP: [f32; 3] = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
/// The ternary values with a negative shift: −1 − δ, −δ, 1 − δ (`x_m`).
static IQ1S_XM: [f32; 3] = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];
/// IQ1_M's `x_p`.
static IQ1M_XP: [f32; 3] = [-1.0 + IQ1M_DELTA, IQ1M_DELTA, 1.0 + IQ1M_DELTA];
/// IQ1_M's `x_m`.
static IQ1M_XM: [f32; 3] = [-1.0 - IQ1M_DELTA, -IQ1M_DELTA, 1.0 - IQ1M_DELTA];

// ---------------------------------------------------------------------------------------------
// IQ1_S
// ---------------------------------------------------------------------------------------------

/// One 32-element IQ1_S block's search result.
struct Iq1sBlock {
    scale: f32,
    /// +1 for the positive shift, −1 for the negative one.
    shift: i8,
}

/// One IQ1_S super-block: `quantize_row_iq1_s_impl` for 256 weights. `qw` is the imatrix slice
/// of these columns; without one (llama.cpp aborts there; the pipeline refuses, see
/// [`needs_weights`]) the weights are x², as IQ1_M's quantizer does.
pub fn quantize_block_iq1_s(x: &[f32], qw: Option<&[f32]>) -> BlockIq1S {
    const N: usize = IQ1S_BLOCK;
    let lat = lattice();
    let x = &x[..SUPER_BLOCK];
    let mut y = BlockIq1S::ZERO;
    let sigma2 = sigma2_of(x);
    let mut blocks: [Iq1sBlock; SUPER_BLOCK / N] = std::array::from_fn(|_| Iq1sBlock {
        scale: 0.0,
        shift: 1,
    });
    let mut max_scale = 0.0f32;
    let mut weight = [0.0f32; N];
    for ib in 0..SUPER_BLOCK / N {
        let xb = &x[N * ib..N * (ib + 1)];
        block_weights(
            xb,
            qw.map(|w| &w[N * ib..N * (ib + 1)]),
            sigma2,
            &mut weight,
        );
        let max = max_abs(xb);
        if max < GROUP_MAX_EPS_IQ1_S {
            continue;
        }
        let order = sorted_order::<N>(xb);
        let mut sumx = [0.0f32; N + 1];
        let mut sumw = [0.0f32; N + 1];
        for (j, &i) in order.iter().enumerate() {
            let i = i as usize;
            sumx[j + 1] = sumx[j] + weight[i] * xb[i];
            sumw[j + 1] = sumw[j] + weight[i];
        }
        let mut best_score = -f32::MAX;
        let mut scale = max;
        let mut best: Option<(usize, usize, i8)> = None;
        for i1 in 0..=N {
            for i2 in i1..=N {
                for (xs, shift) in [(&IQ1S_XP, 1i8), (&IQ1S_XM, -1i8)] {
                    let sumqx = (sumx[i1] - sumx[0]) * xs[0]
                        + (sumx[i2] - sumx[i1]) * xs[1]
                        + (sumx[N] - sumx[i2]) * xs[2];
                    let sumq2 = (sumw[i1] - sumw[0]) * xs[0] * xs[0]
                        + (sumw[i2] - sumw[i1]) * xs[1] * xs[1]
                        + (sumw[N] - sumw[i2]) * xs[2] * xs[2];
                    if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                        scale = sumqx / sumq2;
                        best_score = scale * sumqx;
                        best = Some((i1, i2, shift));
                    }
                }
            }
        }
        let Some((i1, i2, mut shift)) = best else {
            continue;
        };
        let mut l = split_levels(&order, i1, i2);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            shift = -shift;
        }
        let xx: &'static [f32; 3] = if shift == 1 { &IQ1S_XP } else { &IQ1S_XM };
        let mut index = [0u16; N / 8];
        let mut all_on_grid = true;
        for (k, slot) in index.iter_mut().enumerate() {
            let r = 8 * k..8 * (k + 1);
            let (i, on) = grid_point(lat, &l[r.clone()], &xb[r.clone()], &weight[r], scale, xx);
            *slot = i;
            all_on_grid &= on;
        }
        if !all_on_grid {
            if let Some(s) = refit_scale(lat, xb, &weight, &index, |_| xx) {
                scale = s;
            }
        }
        let mut h = 0u16;
        for (k, &i) in index.iter().enumerate() {
            y.qs[(N / 8) * ib + k] = (i & 255) as u8;
            h |= (i >> 8) << (3 * k);
        }
        y.qh[ib] = h;
        blocks[ib] = Iq1sBlock { scale, shift };
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return y;
    }
    let d = max_scale / 15.0;
    // The 1.125 is the reference's own correction of the stored scale.
    y.d = f32_to_f16(d * 1.125);
    let id = 1.0 / d;
    for (ib, b) in blocks.iter().enumerate() {
        let mut l = nearest_int(0.5 * (id * b.scale - 1.0)).clamp(0, 7) as u16;
        if b.shift == -1 {
            l |= 8;
        }
        y.qh[ib] |= l << 12;
    }
    y
}

fn quantize_row_iq1_s(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % SUPER_BLOCK, 0);
    for (ib, (xb, ob)) in x
        .chunks_exact(SUPER_BLOCK)
        .zip(out.chunks_exact_mut(BlockIq1S::BYTES))
        .enumerate()
    {
        let qwb = qw.map(|w| &w[ib * SUPER_BLOCK..(ib + 1) * SUPER_BLOCK]);
        quantize_block_iq1_s(xb, qwb).write(ob);
    }
}

// ---------------------------------------------------------------------------------------------
// IQ1_M
// ---------------------------------------------------------------------------------------------

/// The shift values of group `k` (0 or 1) of an IQ1_M block with sign combination `shifts`
/// (0: +,+; 1: +,−; 2: −,+; 3: −,−).
#[inline(always)]
fn iq1m_xx(shifts: u8, k: usize) -> &'static [f32; 3] {
    let positive = if k == 0 {
        shifts < 2
    } else {
        shifts.is_multiple_of(2)
    };
    if positive {
        &IQ1M_XP
    } else {
        &IQ1M_XM
    }
}

/// The `qh` bits of each sign combination (`masks`): bit 3 marks the first group negative,
/// bit 7 the second.
const IQ1M_SHIFT_MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];

/// One IQ1_M super-block: `quantize_row_iq1_m_impl` for 256 weights (weights x² without an
/// imatrix, as the reference does).
pub fn quantize_block_iq1_m(x: &[f32], qw: Option<&[f32]>) -> BlockIq1M {
    const N: usize = IQ1M_BLOCK;
    let lat = lattice();
    let x = &x[..SUPER_BLOCK];
    let mut y = BlockIq1M::ZERO;
    let sigma2 = sigma2_of(x);
    let mut scales = [0.0f32; SUPER_BLOCK / N];
    let mut shifts = [0u8; SUPER_BLOCK / N];
    let mut max_scale = 0.0f32;
    let mut weight = [0.0f32; N];

    let (xp, xm) = (&IQ1M_XP, &IQ1M_XM);
    // The split score collapses to T·v₂ − P(i1) − P(i2) for Σqx and to
    // W·v₂² + Pw(i1)·(v₀² − v₁²) + Pw(i2)·(v₁² − v₂²) for Σq², since v₁ − v₀ = v₂ − v₁ = 1.
    let p2 = xp[2];
    let m2 = xm[2];
    let cp1 = xp[0] * xp[0] - xp[1] * xp[1];
    let cp2 = xp[1] * xp[1] - xp[2] * xp[2];
    let cm1 = xm[0] * xm[0] - xm[1] * xm[1];
    let cm2 = xm[1] * xm[1] - xm[2] * xm[2];

    for ib in 0..SUPER_BLOCK / N {
        let xb = &x[N * ib..N * (ib + 1)];
        block_weights(
            xb,
            qw.map(|w| &w[N * ib..N * (ib + 1)]),
            sigma2,
            &mut weight,
        );
        let max = max_abs(xb);
        if max < GROUP_MAX_EPS_IQ1_M {
            continue;
        }
        let order = sorted_order::<N>(xb);
        // Prefix sums per half of the block (each half has its own shift sign).
        let mut px = [[0.0f32; N + 1]; 2];
        let mut pw = [[0.0f32; N + 1]; 2];
        for (j, &i) in order.iter().enumerate() {
            let i = i as usize;
            let h = if i < N / 2 { 0 } else { 1 };
            px[h][j + 1] = px[h][j] + weight[i] * xb[i];
            px[1 - h][j + 1] = px[1 - h][j];
            pw[h][j + 1] = pw[h][j] + weight[i];
            pw[1 - h][j + 1] = pw[1 - h][j];
        }
        let txs = [px[0][N], px[1][N]];
        let tws = [pw[0][N], pw[1][N]];
        let mut best_score = -f32::MAX;
        let mut scale = max;
        let mut best: Option<(usize, usize, u8)> = None;
        for i1 in 0..=N {
            for i2 in i1..=N {
                let mut qx_p = [0.0f32; 2];
                let mut qx_m = [0.0f32; 2];
                let mut q2_p = [0.0f32; 2];
                let mut q2_m = [0.0f32; 2];
                for h in 0..2 {
                    let sx = px[h][i1] + px[h][i2];
                    qx_p[h] = txs[h] * p2 - sx;
                    qx_m[h] = txs[h] * m2 - sx;
                    q2_p[h] = tws[h] * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2;
                    q2_m[h] = tws[h] * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2;
                }
                let sumqx = [
                    qx_p[0] + qx_p[1],
                    qx_p[0] + qx_m[1],
                    qx_m[0] + qx_p[1],
                    qx_m[0] + qx_m[1],
                ];
                let sumq2 = [
                    q2_p[0] + q2_p[1],
                    q2_p[0] + q2_m[1],
                    q2_m[0] + q2_p[1],
                    q2_m[0] + q2_m[1],
                ];
                for k in 0..4 {
                    if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                        scale = sumqx[k] / sumq2[k];
                        best_score = scale * sumqx[k];
                        best = Some((i1, i2, k as u8));
                    }
                }
            }
        }
        let Some((i1, i2, mut best_k)) = best else {
            continue;
        };
        let mut l = split_levels(&order, i1, i2);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            // Flipping the levels flips both signs: 0 ↔ 3, 1 ↔ 2.
            best_k = 3 - best_k;
        }
        let mut index = [0u16; N / 8];
        let mut all_on_grid = true;
        for (k, slot) in index.iter_mut().enumerate() {
            let r = 8 * k..8 * (k + 1);
            let xx = iq1m_xx(best_k, k);
            let (i, on) = grid_point(lat, &l[r.clone()], &xb[r.clone()], &weight[r], scale, xx);
            *slot = i;
            all_on_grid &= on;
        }
        if !all_on_grid {
            if let Some(s) = refit_scale(lat, xb, &weight, &index, |k| iq1m_xx(best_k, k)) {
                scale = s;
            }
        }
        y.qs[2 * ib] = (index[0] & 255) as u8;
        y.qs[2 * ib + 1] = (index[1] & 255) as u8;
        y.qh[ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
        scales[ib] = scale;
        shifts[ib] = best_k;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return y;
    }

    // Quantize the block scales to 3 bits against d = max_scale/15, then refit d by least
    // squares over the whole super-block with the quantized block scales.
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for ib in 0..SUPER_BLOCK / N {
        let l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7);
        y.scales[ib / 4] |= (l as u16) << (3 * (ib % 4));
        y.qh[ib] |= IQ1M_SHIFT_MASKS[shifts[ib] as usize];
        let xb = &x[N * ib..N * (ib + 1)];
        block_weights(
            xb,
            qw.map(|w| &w[N * ib..N * (ib + 1)]),
            sigma2,
            &mut weight,
        );
        let ls = (2 * l + 1) as f32;
        for k in 0..N / 8 {
            let xx = iq1m_xx(shifts[ib], k);
            let idx = y.qs[2 * ib + k] as usize | ((((y.qh[ib] >> (4 * k)) & 7) as usize) << 8);
            let p = levels(lat, idx);
            for j in 0..8 {
                let w = weight[8 * k + j];
                let q = xx[p[j] as usize] * ls;
                sumqx += w * q * xb[8 * k + j];
                sumq2 += w * q * q;
            }
        }
    }
    if sumq2 > 0.0 {
        d = sumqx / sumq2;
    }
    // The 1.1125 is the reference's own correction of the stored scale.
    let s = f32_to_f16(d * 1.1125);
    y.scales[0] |= (s & 0x000f) << 12;
    y.scales[1] |= (s & 0x00f0) << 8;
    y.scales[2] |= (s & 0x0f00) << 4;
    y.scales[3] |= s & 0xf000;
    y
}

fn quantize_row_iq1_m(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % SUPER_BLOCK, 0);
    for (ib, (xb, ob)) in x
        .chunks_exact(SUPER_BLOCK)
        .zip(out.chunks_exact_mut(BlockIq1M::BYTES))
        .enumerate()
    {
        let qwb = qw.map(|w| &w[ib * SUPER_BLOCK..(ib + 1) * SUPER_BLOCK]);
        quantize_block_iq1_m(xb, qwb).write(ob);
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantizers
// ---------------------------------------------------------------------------------------------

/// `dequantize_row_iq1_s`: d·(2s + 1)·(coordinate ± δ).
fn dequantize_row_iq1_s(bytes: &[u8], out: &mut [f32]) {
    let grid = iq_grid::dequant_grid(Codebook::Iq1S);
    for (b, y) in bytes
        .chunks_exact(BlockIq1S::BYTES)
        .zip(out.chunks_exact_mut(SUPER_BLOCK))
    {
        let blk = BlockIq1S::read(b);
        let d = f16_to_f32(blk.d);
        for ib in 0..SUPER_BLOCK / IQ1S_BLOCK {
            let qh = blk.qh[ib];
            let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
            let delta = if qh & 0x8000 != 0 {
                -IQ1S_DELTA
            } else {
                IQ1S_DELTA
            };
            for k in 0..4 {
                let g = &grid[blk.grid_index(4 * ib + k)];
                let yg = &mut y[32 * ib + 8 * k..32 * ib + 8 * k + 8];
                for j in 0..8 {
                    yg[j] = dl * (g[j] as f32 + delta);
                }
            }
        }
    }
}

/// `dequantize_row_iq1_m`: d·(2s + 1)·(coordinate ± δ), s per 16 weights, the sign per 8.
fn dequantize_row_iq1_m(bytes: &[u8], out: &mut [f32]) {
    let grid = iq_grid::dequant_grid(Codebook::Iq1S);
    for (b, y) in bytes
        .chunks_exact(BlockIq1M::BYTES)
        .zip(out.chunks_exact_mut(SUPER_BLOCK))
    {
        let blk = BlockIq1M::read(b);
        let d = f16_to_f32(blk.d());
        for g in 0..SUPER_BLOCK / 8 {
            let dl = d * (2 * blk.block_scale(g / 2) + 1) as f32;
            let delta = if blk.negative_shift(g) {
                -IQ1S_DELTA
            } else {
                IQ1S_DELTA
            };
            let c = &grid[blk.grid_index(g)];
            for j in 0..8 {
                y[8 * g + j] = dl * (c[j] as f32 + delta);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_keep_index_order_as_glibc_qsort_does() {
        // glibc's qsort merge-sorts small arrays (stable); −0 and +0 compare equal. The golden
        // tests fail with any other order of ties (checked by reversing it).
        let x = [0.5f32, -1.0, 0.5, -0.0, 0.0, -1.0, 0.5, -0.0];
        let order = sorted_order::<8>(&x);
        assert_eq!(order, [1, 5, 3, 4, 7, 0, 2, 6]);
    }

    #[test]
    fn block_layouts_round_trip_and_unpack() {
        let mut s = BlockIq1S::ZERO;
        s.d = 0x3c00;
        for g in 0..32 {
            s.qs[g] = (37 * g) as u8;
        }
        for b in 0..8 {
            s.qh[b] = 0x1234u16.wrapping_mul(b as u16 + 1) | (0x8000 * (b as u16 % 2));
        }
        let mut bytes = [0u8; BlockIq1S::BYTES];
        s.write(&mut bytes);
        assert_eq!(BlockIq1S::read(&bytes), s);
        assert_eq!(bytes[34..36], s.qh[0].to_le_bytes());
        assert_eq!(
            s.grid_index(6),
            s.qs[6] as usize | (((s.qh[1] >> 6) & 7) as usize) << 8
        );

        let mut m = BlockIq1M::ZERO;
        m.qh[3] = 0xd2; // group 6: index bits 2, +shift; group 7: bits 5, −shift
        m.qs[6] = 9;
        m.qs[7] = 10;
        // d = 1.0 (0x3c00) scattered into the top nibbles (lowest nibble in word 0), block 5's
        // scale = 6.
        m.scales = [0x0000, 6 << 3, 0xc000, 0x3000];
        let mut bytes = [0u8; BlockIq1M::BYTES];
        m.write(&mut bytes);
        assert_eq!(BlockIq1M::read(&bytes), m);
        assert_eq!(m.d(), 0x3c00);
        assert_eq!(m.block_scale(5), 6);
        assert_eq!(m.grid_index(6), 0x200 | 9);
        assert_eq!(m.grid_index(7), 0x500 | 10);
        assert!(!m.negative_shift(6));
        assert!(m.negative_shift(7));
    }

    /// Weights that are exactly a codebook point at a scale, shifted by +δ, with uniform
    /// importance: the quantizers find those points (on the grid, and the exact fit scores
    /// best) and the signs of the shift; the values come back within the reference's own scale
    /// corrections (×1.125 for IQ1_S, ×1.1125 for IQ1_M, applied to the stored scale).
    #[test]
    fn points_of_the_codebook_come_back() {
        let grid = iq_grid::dequant_grid(Codebook::Iq1S);
        let points = [5usize, 700, 1234, 2047];
        let mut x = [0.0f32; SUPER_BLOCK];
        for (g, xg) in x.chunks_exact_mut(8).enumerate() {
            let p = &grid[points[g % 4]];
            for j in 0..8 {
                xg[j] = 0.3 * (p[j] as f32 + IQ1S_DELTA);
            }
        }
        let qw = [1.0f32; SUPER_BLOCK];
        let blk = quantize_block_iq1_s(&x, Some(&qw));
        for g in 0..32 {
            assert_eq!(blk.grid_index(g), points[g % 4], "group {g}");
        }
        let mut bytes = [0u8; BlockIq1S::BYTES];
        blk.write(&mut bytes);
        let mut y = [0.0f32; SUPER_BLOCK];
        dequantize_row_iq1_s(&bytes, &mut y);
        let d = f16_to_f32(blk.d);
        for ib in 0..8 {
            let dl = d * (2 * ((blk.qh[ib] >> 12) & 7) + 1) as f32;
            assert_eq!(blk.qh[ib] & 0x8000, 0, "positive shift");
            for i in 32 * ib..32 * (ib + 1) {
                let p = &grid[points[(i / 8) % 4]];
                assert_eq!(y[i], dl * (p[i % 8] as f32 + IQ1S_DELTA));
                assert!((y[i] - x[i]).abs() <= 0.13 * x[i].abs() + 1e-6);
            }
        }
        // IQ1_M: the same points, now each group of 8 with its own sign of the shift.
        let mut x = [0.0f32; SUPER_BLOCK];
        for (g, xg) in x.chunks_exact_mut(8).enumerate() {
            let p = &grid[points[g % 4]];
            let delta = if g % 3 == 0 { -IQ1M_DELTA } else { IQ1M_DELTA };
            for j in 0..8 {
                xg[j] = 0.3 * (p[j] as f32 + delta);
            }
        }
        let blk = quantize_block_iq1_m(&x, None);
        let mut bytes = [0u8; BlockIq1M::BYTES];
        blk.write(&mut bytes);
        let mut y = [0.0f32; SUPER_BLOCK];
        dequantize_row_iq1_m(&bytes, &mut y);
        for g in 0..32 {
            assert_eq!(blk.grid_index(g), points[g % 4], "group {g}");
            assert_eq!(blk.negative_shift(g), g % 3 == 0, "group {g}");
        }
        for i in 0..SUPER_BLOCK {
            assert!(
                (y[i] - x[i]).abs() <= 0.12 * x[i].abs() + 1e-6,
                "{i}: {} vs {}",
                y[i],
                x[i]
            );
        }
    }

    #[test]
    fn tiny_blocks_are_zero() {
        let x = [1e-13f32; SUPER_BLOCK];
        let qw = [1.0f32; SUPER_BLOCK];
        assert_eq!(quantize_block_iq1_s(&x, Some(&qw)), BlockIq1S::ZERO);
        let x = [1e-8f32; SUPER_BLOCK];
        assert_eq!(quantize_block_iq1_m(&x, Some(&qw)), BlockIq1M::ZERO);
    }
}
