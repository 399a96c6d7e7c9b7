//! The 2-bit lattice types IQ2_XXS, IQ2_XS and IQ2_S: super-blocks of 256 weights in groups of
//! 8, each group one point of an 8-dimensional codebook ([`super::iq_grid`]) with its own signs,
//! under 32-element (IQ2_XXS) or 16-element (IQ2_XS, IQ2_S) block scales of 4 bits and one f16
//! super-block scale.
//!
//! Quantization (llama.cpp 0c1e57098) reproduces `quantize_row_iq2_xxs_impl`,
//! `quantize_row_iq2_xs_impl` and `quantize_row_iq2_s_impl` (ggml-quants.c), the functions
//! llama-quantize calls (`quantize_iq2_xxs` etc. run them row by row). IQ2_XXS and IQ2_XS cannot
//! run without importance weights (llama.cpp asserts; see [`needs_weights`]); IQ2_S uses
//! x² + σ²/4 as the weights then. Dequantization reproduces `dequantize_row_iq2_*`.
//!
//! How a group is quantized, common to the three: its signs are split off (|x| is fitted; IQ2_XXS
//! and IQ2_XS store 7 sign bits and make the count of negatives even by flipping the sign of the
//! least important element), then for a range of trial scales every element is rounded to the
//! level l ∈ {0, 1, 2} nearest x/(scale·2) − ½ (the lattice values are 2l + 1); a tuple that is not
//! a codebook point is replaced by its best neighbour ([`Lattice::find_best_neighbour`]); the trial
//! with the best weighted least-squares fit wins, on STRICT improvement.

// Index loops walk several parallel arrays (values, weights, levels, groups) in the reference's
// element order; iterator chains would hide that order, which is what byte-exactness rests on.
#![allow(clippy::needless_range_loop)]

use super::iq_grid::{self, Codebook, Lattice, KSIGNS_IQ2XS};
use super::search::{make_qp_quants, GROUP_MAX_EPS};
use super::{
    f16_to_f32, f32_to_f16, nearest_int, read_u16, GgmlType, RowDequantizer, RowQuantizer,
};

/// Elements per super-block.
pub const SUPER_BLOCK: usize = 256;

/// IQ2_S treats a 16-element block as zero below this magnitude (`GROUP_MAX_EPS_IQ2_S`).
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

/// Levels run 0..=KMAX_Q−1; `kMaxQ` in llama.cpp.
const KMAX_Q: i32 = 3;

/// The CPU quantizer for `ty` if it is one of IQ2_XXS, IQ2_XS and IQ2_S.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::IQ2_XXS => quantize_row_iq2_xxs,
        GgmlType::IQ2_XS => quantize_row_iq2_xs,
        GgmlType::IQ2_S => quantize_row_iq2_s,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is one of IQ2_XXS, IQ2_XS and IQ2_S.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::IQ2_XXS => dequantize_row_iq2_xxs,
        GgmlType::IQ2_XS => dequantize_row_iq2_xs,
        GgmlType::IQ2_S => dequantize_row_iq2_s,
        _ => return None,
    })
}

/// Whether the quantizer of `ty` (of this family) cannot run without importance weights:
/// IQ2_XXS and IQ2_XS (llama.cpp's `GGML_ASSERT(quant_weights)`). Their row quantizers panic
/// when given none; callers refuse such tensors first.
pub fn needs_weights(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ2_XXS | GgmlType::IQ2_XS)
}

// ---------------------------------------------------------------------------------------------
// Block layouts
// ---------------------------------------------------------------------------------------------

/// IQ2_XXS, 66 bytes: `d` (f16) at 0..2, then `qs` as 16 little-endian u32 at 2..66, two per
/// 32-element block b: word 2b holds the codebook indices of its 4 groups (one byte each,
/// group k in bits 8k..8k+8); word 2b+1 holds the 7-bit sign codes of the 4 groups (group k in
/// bits 7k..7k+7, expanded by [`KSIGNS_IQ2XS`]) and the block's 4-bit scale s in bits 28..32.
/// Value = d·(0.5 + s)·0.25 · grid value · sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIq2Xxs {
    /// The super-block scale, f16 bits.
    pub d: u16,
    /// The packed words (layout in the struct docs).
    pub qs: [u32; 16],
}

impl BlockIq2Xxs {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 66;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        for (o, w) in out[2..66].chunks_exact_mut(4).zip(&self.qs) {
            o.copy_from_slice(&w.to_le_bytes());
        }
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq2Xxs {
        BlockIq2Xxs {
            d: read_u16(b, 0),
            qs: std::array::from_fn(|i| {
                u32::from_le_bytes(b[2 + 4 * i..6 + 4 * i].try_into().unwrap())
            }),
        }
    }
}

/// IQ2_XS, 74 bytes: `d` (f16) at 0..2, `qs` as 32 little-endian u16 at 2..66 (group g: the
/// 9-bit codebook index in bits 0..9, the 7-bit sign code in bits 9..16), `scales` at 66..74
/// (16-element block b's 4-bit scale in nibble b%2 of `scales[b/2]`).
/// Value = d·(0.5 + s)·0.25 · grid value · sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIq2Xs {
    /// The super-block scale, f16 bits.
    pub d: u16,
    /// Index and sign code per group of 8.
    pub qs: [u16; 32],
    /// Two 4-bit block scales per byte.
    pub scales: [u8; 8],
}

impl BlockIq2Xs {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 74;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        for (o, w) in out[2..66].chunks_exact_mut(2).zip(&self.qs) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out[66..74].copy_from_slice(&self.scales);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq2Xs {
        BlockIq2Xs {
            d: read_u16(b, 0),
            qs: std::array::from_fn(|i| read_u16(b, 2 + 2 * i)),
            scales: b[66..74].try_into().unwrap(),
        }
    }
}

/// IQ2_S, 82 bytes: `d` (f16) at 0..2, `qs` at 2..66 — the low 8 bits of group g's 10-bit
/// codebook index in `qs[g]` (g < 32) and its 8 sign bits (bit i set = element i negative) in
/// `qs[32 + g]` —, `qh` at 66..74 (index bits 8..10 of group g in bits 2(g%4).. of `qh[g/4]`),
/// `scales` at 74..82 (as IQ2_XS). Value = d·(0.5 + s)·0.25 · grid value · sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIq2S {
    /// The super-block scale, f16 bits.
    pub d: u16,
    /// Low index bytes, then sign bytes.
    pub qs: [u8; 64],
    /// High index bits, 2 per group.
    pub qh: [u8; 8],
    /// Two 4-bit block scales per byte.
    pub scales: [u8; 8],
}

impl Default for BlockIq2S {
    fn default() -> Self {
        BlockIq2S {
            d: 0,
            qs: [0; 64],
            qh: [0; 8],
            scales: [0; 8],
        }
    }
}

impl BlockIq2S {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 82;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..66].copy_from_slice(&self.qs);
        out[66..74].copy_from_slice(&self.qh);
        out[74..82].copy_from_slice(&self.scales);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq2S {
        BlockIq2S {
            d: read_u16(b, 0),
            qs: b[2..66].try_into().unwrap(),
            qh: b[66..74].try_into().unwrap(),
            scales: b[74..82].try_into().unwrap(),
        }
    }

    /// The 10-bit codebook index of group `g` (0..32).
    pub fn grid_index(&self, g: usize) -> usize {
        self.qs[g] as usize | (((self.qh[g / 4] >> (2 * (g % 4))) & 3) as usize) << 8
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of the search
// ---------------------------------------------------------------------------------------------

/// Σx² of the super-block (in index order).
#[inline(always)]
fn sum_x2(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// The level of `xval` for the inverse scale `id`: nearest_int(½(id·x − 1)) clamped to 0..=2.
#[inline(always)]
fn level_of(id: f32, xval: f32) -> i8 {
    nearest_int(0.5 * (id * xval - 1.0)).clamp(0, KMAX_Q - 1) as i8
}

/// The packed level tuple of one group.
#[inline(always)]
fn pack_levels(l: &[i8]) -> u16 {
    let mut u = 0u16;
    for (i, &v) in l[..8].iter().enumerate() {
        u |= (v as u16) << (2 * i);
    }
    u
}

/// Levels of one group for inverse scale `id`, replaced by the best neighbour (at `scale`) when
/// [`round_group`] on each of the four 8-weight groups of a 32-weight block.
fn round_groups(lat: &Lattice, id: f32, scale: f32, xval: &[f32], waux: &[f32], l: &mut [i8]) {
    for k in 0..4 {
        let r = 8 * k..8 * k + 8;
        round_group(
            lat,
            id,
            scale,
            &xval[r.clone()],
            &waux[r.clone()],
            &mut l[r],
        );
    }
}

/// the tuple is off the grid. Returns whether the rounded tuple was on the grid.
#[inline(always)]
fn round_group(
    lat: &Lattice,
    id: f32,
    scale: f32,
    xval: &[f32],
    waux: &[f32],
    l: &mut [i8],
) -> bool {
    for i in 0..8 {
        l[i] = level_of(id, xval[i]);
    }
    let u = pack_levels(l);
    if lat.index_of(u).is_some() {
        return true;
    }
    lat.find_best_neighbour(u, xval, waux, scale, l);
    false
}

/// Σ w·x·q and Σ w·q² with q = 2l + 1, in index order (`(w·x)·q`, `(w·q)·q`).
#[inline(always)]
fn fit_sums(weight: &[f32], xval: &[f32], l: &[i8]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for i in 0..weight.len() {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The codebook index of an on-grid group.
///
/// # Panics
/// If the levels are not a codebook point (llama.cpp aborts with "found point not on grid").
#[inline(always)]
fn grid_index_of(lat: &Lattice, l: &[i8]) -> usize {
    lat.index_of(pack_levels(l))
        .expect("iq2: final levels are not a codebook point")
}

/// |x| of one group of 8 into `xval`, and its sign bits (bit i set = x[i] < 0). With `parity`,
/// an odd count of negatives is made even by flipping the element of least w·x² (the first on
/// ties) — its |x| becomes −|x| and its sign bit toggles — so 7 bits can store the signs.
#[inline(always)]
fn split_signs(x: &[f32], weight: &[f32], parity: bool, xval: &mut [f32]) -> u8 {
    let mut s = 0u8;
    let mut nflip = 0;
    for i in 0..8 {
        if x[i] >= 0.0 {
            xval[i] = x[i];
        } else {
            xval[i] = -x[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if parity && nflip % 2 == 1 {
        let mut imin = 0;
        let mut min = weight[0] * x[0] * x[0];
        for i in 1..8 {
            let ax = weight[i] * x[i] * x[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s
}

/// C's `MAX` over a slice: the running value is kept unless the next one is strictly greater.
#[inline(always)]
fn c_max(v: &[f32]) -> f32 {
    let mut m = v[0];
    for &x in &v[1..] {
        m = if m > x { m } else { x };
    }
    m
}

/// The 4-bit block scale code of `scale` against the super-block's 1/d: nearest_int(½(id·s − 1))
/// clamped to 0..=15.
#[inline(always)]
fn scale_code(id: f32, scale: f32) -> u8 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, 15) as u8
}

// ---------------------------------------------------------------------------------------------
// IQ2_XXS
// ---------------------------------------------------------------------------------------------

/// One IQ2_XXS super-block: `quantize_row_iq2_xxs_impl` on 256 weights with importance `qw`.
pub fn quantize_block_iq2_xxs(x: &[f32], qw: &[f32]) -> BlockIq2Xxs {
    let lat = iq_grid::lattice(Codebook::Iq2Xxs);
    let x = &x[..SUPER_BLOCK];
    let sigma2 = sum_x2(x) / SUPER_BLOCK as f32;
    let mut q2 = [0u32; 16];
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        let qwb = &qw[32 * ib..32 * ib + 32];
        let mut weight = [0.0f32; 32];
        let mut waux = [0.0f32; 32];
        for i in 0..32 {
            weight[i] = qwb[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            waux[i] = weight[i].sqrt();
        }
        let mut xval = [0.0f32; 32];
        let mut signs = [0u8; 4];
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            signs[k] = split_signs(&xb[r.clone()], &weight[r.clone()], true, &mut xval[r]) & 127;
        }
        if c_max(&xval) < GROUP_MAX_EPS {
            continue;
        }
        let mut lq = [0u8; 32];
        let mut scale = make_qp_quants(KMAX_Q + 1, &xval, &mut lq, &weight);
        let eff_max = scale * KMAX_Q as f32;
        if eff_max <= 0.0 {
            continue;
        }
        let mut l = [0i8; 32];
        let mut laux = [0i8; 32];
        let mut best = 0.0f32;
        for is in -6..=6 {
            let id = ((2 * KMAX_Q - 1) as f32 + is as f32 * 0.1) / eff_max;
            let this_scale = 1.0 / id;
            round_groups(lat, id, this_scale, &xval, &waux, &mut laux);
            let (sumqx, sumq2) = fit_sums(&weight, &xval, &laux);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                l = laux;
            }
        }
        if scale > 0.0 {
            let id = 1.0 / scale;
            round_groups(lat, id, scale, &xval, &waux, &mut l);
            let (sumqx, sumq2) = fit_sums(&weight, &xval, &l);
            if sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        if scale < 0.0 {
            // llama.cpp's guard (never seen): a positive scale with every sign flipped.
            scale = -scale;
            for s in &mut signs {
                *s = !*s & 127;
            }
        }
        for k in 0..4 {
            let g = grid_index_of(lat, &l[8 * k..8 * k + 8]) as u32;
            q2[2 * ib] |= g << (8 * k);
            q2[2 * ib + 1] |= (signs[k] as u32) << (7 * k);
        }
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return BlockIq2Xxs::default();
    }
    let d = max_scale / 31.0;
    let id = 1.0 / d;
    for ib in 0..8 {
        q2[2 * ib + 1] |= (scale_code(id, scales[ib]) as u32) << 28;
    }
    BlockIq2Xxs {
        d: f32_to_f16(d),
        qs: q2,
    }
}

// ---------------------------------------------------------------------------------------------
// IQ2_XS and IQ2_S: 16-element blocks
// ---------------------------------------------------------------------------------------------

/// What differs between the 16-element-block searches of IQ2_XS and IQ2_S.
struct Block16 {
    lattice: &'static Lattice,
    /// 7 stored sign bits with even parity (IQ2_XS) or 8 (IQ2_S).
    parity: bool,
    /// Below this magnitude a block is zero.
    eps: f32,
}

/// One 16-element block's search (the shared body of `quantize_row_iq2_xs_impl` and
/// `quantize_row_iq2_s_impl`): the block scale (0 for a zero block), and per group of 8 its
/// codebook index and sign bits.
fn quantize_block16(p: &Block16, xb: &[f32], weight: &[f32; 16]) -> (f32, [usize; 2], [u8; 2]) {
    let lat = p.lattice;
    let mut waux = [0.0f32; 16];
    for i in 0..16 {
        waux[i] = weight[i].sqrt();
    }
    let mut xval = [0.0f32; 16];
    let mut signs = [0u8; 2];
    for k in 0..2 {
        let r = 8 * k..8 * k + 8;
        let s = split_signs(&xb[r.clone()], &weight[r.clone()], p.parity, &mut xval[r]);
        signs[k] = if p.parity { s & 127 } else { s };
    }
    let max = c_max(&xval);
    if max < p.eps {
        return (0.0, [0; 2], [0; 2]);
    }
    let mut l = [0i8; 16];
    let mut laux = [0i8; 16];
    let mut best = 0.0f32;
    let mut scale = max / (2 * KMAX_Q - 1) as f32;
    let mut on_grid = [true; 2];
    for is in -9..=9 {
        let id = ((2 * KMAX_Q - 1) as f32 + is as f32 * 0.1) / max;
        let this_scale = 1.0 / id;
        let mut on_grid_aux = [true; 2];
        for k in 0..2 {
            let r = 8 * k..8 * k + 8;
            on_grid_aux[k] = round_group(
                lat,
                id,
                this_scale,
                &xval[r.clone()],
                &waux[r.clone()],
                &mut laux[r],
            );
        }
        let (sumqx, sumq2) = fit_sums(weight, &xval, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l = laux;
            on_grid = on_grid_aux;
        }
    }
    if on_grid.contains(&false) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..2 {
            if on_grid[k] {
                continue;
            }
            let r = 8 * k..8 * k + 8;
            round_group(
                lat,
                id,
                scale,
                &xval[r.clone()],
                &waux[r.clone()],
                &mut l[r],
            );
        }
        let (sumqx, sumq2) = fit_sums(weight, &xval, &l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    if scale < 0.0 {
        // llama.cpp's guard (never seen): a positive scale with every sign flipped.
        scale = -scale;
        for s in &mut signs {
            *s = if p.parity { !*s & 127 } else { !*s };
        }
    }
    let index = [grid_index_of(lat, &l[0..8]), grid_index_of(lat, &l[8..16])];
    (scale, index, signs)
}

/// One IQ2_XS super-block: `quantize_row_iq2_xs_impl` on 256 weights with importance `qw`.
pub fn quantize_block_iq2_xs(x: &[f32], qw: &[f32]) -> BlockIq2Xs {
    let p = Block16 {
        lattice: iq_grid::lattice(Codebook::Iq2Xs),
        parity: true,
        eps: GROUP_MAX_EPS,
    };
    let x = &x[..SUPER_BLOCK];
    let sigma2 = sum_x2(x) / SUPER_BLOCK as f32;
    let mut blk = BlockIq2Xs::default();
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    for ib in 0..16 {
        let xb = &x[16 * ib..16 * ib + 16];
        let qwb = &qw[16 * ib..16 * ib + 16];
        let weight: [f32; 16] = std::array::from_fn(|i| qwb[i] * (sigma2 + xb[i] * xb[i]).sqrt());
        // A zero block comes back as index 0 and no signs: the zeros llama.cpp leaves.
        let (scale, index, signs) = quantize_block16(&p, xb, &weight);
        for k in 0..2 {
            blk.qs[2 * ib + k] = index[k] as u16 | (signs[k] as u16) << 9;
        }
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return BlockIq2Xs::default();
    }
    let d = max_scale / 31.0;
    blk.d = f32_to_f16(d);
    let id = 1.0 / d;
    for ib in 0..16 {
        blk.scales[ib / 2] |= scale_code(id, scales[ib]) << (4 * (ib % 2));
    }
    blk
}

/// One IQ2_S super-block: `quantize_row_iq2_s_impl` on 256 weights, with importance `qw` or,
/// without, the weights x² + σ²/4. The stored d is max_scale/31·0.9875 while block scales are
/// coded against max_scale/31.
pub fn quantize_block_iq2_s(x: &[f32], qw: Option<&[f32]>) -> BlockIq2S {
    let p = Block16 {
        lattice: iq_grid::lattice(Codebook::Iq2S),
        parity: false,
        eps: GROUP_MAX_EPS_IQ2_S,
    };
    let x = &x[..SUPER_BLOCK];
    let sigma2 = 2.0 * sum_x2(x) / SUPER_BLOCK as f32;
    let mut blk = BlockIq2S::default();
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    for ib in 0..16 {
        let xb = &x[16 * ib..16 * ib + 16];
        let weight: [f32; 16] = match qw {
            Some(qw) => {
                let qwb = &qw[16 * ib..16 * ib + 16];
                std::array::from_fn(|i| qwb[i] * (sigma2 + xb[i] * xb[i]).sqrt())
            }
            None => std::array::from_fn(|i| 0.25 * sigma2 + xb[i] * xb[i]),
        };
        // A zero block comes back as index 0 and no signs: the zeros llama.cpp leaves.
        let (scale, index, signs) = quantize_block16(&p, xb, &weight);
        for k in 0..2 {
            let g = 2 * ib + k;
            blk.qs[g] = (index[k] & 255) as u8;
            blk.qh[g / 4] |= ((index[k] >> 8) as u8) << (2 * (g % 4));
            blk.qs[32 + g] = signs[k];
        }
        scales[ib] = scale;
        max_scale = if max_scale > scale { max_scale } else { scale };
    }
    if max_scale == 0.0 {
        return blk;
    }
    let d = max_scale / 31.0;
    blk.d = f32_to_f16(d * 0.9875);
    let id = 1.0 / d;
    for ib in 0..16 {
        blk.scales[ib / 2] |= scale_code(id, scales[ib]) << (4 * (ib % 2));
    }
    blk
}

// ---------------------------------------------------------------------------------------------
// Row entry points
// ---------------------------------------------------------------------------------------------

/// Importance weights are required: llama.cpp asserts on their absence.
fn required(qw: Option<&[f32]>, ty: GgmlType) -> &[f32] {
    qw.unwrap_or_else(|| panic!("quantizing to {ty} needs importance weights (an imatrix)"))
}

fn quantize_row_iq2_xxs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let qw = required(qw, GgmlType::IQ2_XXS);
    for (ib, (xb, ob)) in x
        .chunks_exact(SUPER_BLOCK)
        .zip(out.chunks_exact_mut(BlockIq2Xxs::BYTES))
        .enumerate()
    {
        quantize_block_iq2_xxs(xb, &qw[ib * SUPER_BLOCK..(ib + 1) * SUPER_BLOCK]).write(ob);
    }
}

fn quantize_row_iq2_xs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let qw = required(qw, GgmlType::IQ2_XS);
    for (ib, (xb, ob)) in x
        .chunks_exact(SUPER_BLOCK)
        .zip(out.chunks_exact_mut(BlockIq2Xs::BYTES))
        .enumerate()
    {
        quantize_block_iq2_xs(xb, &qw[ib * SUPER_BLOCK..(ib + 1) * SUPER_BLOCK]).write(ob);
    }
}

fn quantize_row_iq2_s(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    for (ib, (xb, ob)) in x
        .chunks_exact(SUPER_BLOCK)
        .zip(out.chunks_exact_mut(BlockIq2S::BYTES))
        .enumerate()
    {
        let qwb = qw.map(|w| &w[ib * SUPER_BLOCK..(ib + 1) * SUPER_BLOCK]);
        quantize_block_iq2_s(xb, qwb).write(ob);
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantizers (dequantize_row_iq2_xxs / _xs / _s): (d·(0.5 + s)·0.25)·grid·sign
// ---------------------------------------------------------------------------------------------

/// The weight scale of a block with 4-bit code `s` under super-block scale `d`.
#[inline(always)]
fn block_scale(d: f32, s: u32) -> f32 {
    d * (0.5 + s as f32) * 0.25
}

/// One group of 8: `db`·grid value, negated where `signs` has the element's bit.
#[inline(always)]
fn write_group(y: &mut [f32], db: f32, grid: &[i8; 8], signs: u8) {
    for j in 0..8 {
        let sign = if signs & (1 << j) != 0 { -1.0 } else { 1.0 };
        y[j] = db * grid[j] as u8 as f32 * sign;
    }
}

fn dequantize_row_iq2_xxs(bytes: &[u8], out: &mut [f32]) {
    let grid = iq_grid::dequant_grid(Codebook::Iq2Xxs);
    for (b, y) in bytes
        .chunks_exact(BlockIq2Xxs::BYTES)
        .zip(out.chunks_exact_mut(SUPER_BLOCK))
    {
        let blk = BlockIq2Xxs::read(b);
        let d = f16_to_f32(blk.d);
        for ib in 0..8 {
            let (idx, aux) = (blk.qs[2 * ib], blk.qs[2 * ib + 1]);
            let db = block_scale(d, aux >> 28);
            for k in 0..4 {
                let g = ((idx >> (8 * k)) & 255) as usize;
                let signs = KSIGNS_IQ2XS[((aux >> (7 * k)) & 127) as usize];
                write_group(&mut y[32 * ib + 8 * k..], db, &grid[g], signs);
            }
        }
    }
}

fn dequantize_row_iq2_xs(bytes: &[u8], out: &mut [f32]) {
    let grid = iq_grid::dequant_grid(Codebook::Iq2Xs);
    for (b, y) in bytes
        .chunks_exact(BlockIq2Xs::BYTES)
        .zip(out.chunks_exact_mut(SUPER_BLOCK))
    {
        let blk = BlockIq2Xs::read(b);
        let d = f16_to_f32(blk.d);
        for g in 0..32 {
            let s = (blk.scales[g / 4] >> (4 * ((g / 2) % 2))) & 15;
            let db = block_scale(d, s as u32);
            let q = blk.qs[g];
            let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
            write_group(&mut y[8 * g..], db, &grid[(q & 511) as usize], signs);
        }
    }
}

fn dequantize_row_iq2_s(bytes: &[u8], out: &mut [f32]) {
    let grid = iq_grid::dequant_grid(Codebook::Iq2S);
    for (b, y) in bytes
        .chunks_exact(BlockIq2S::BYTES)
        .zip(out.chunks_exact_mut(SUPER_BLOCK))
    {
        let blk = BlockIq2S::read(b);
        let d = f16_to_f32(blk.d);
        for g in 0..32 {
            let s = (blk.scales[g / 4] >> (4 * ((g / 2) % 2))) & 15;
            let db = block_scale(d, s as u32);
            write_group(
                &mut y[8 * g..],
                db,
                &grid[blk.grid_index(g)],
                blk.qs[32 + g],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn rel_rmse(ty: GgmlType, x: &[f32], qw: Option<&[f32]>) -> f64 {
        let q = quantizer(ty).unwrap();
        let dq = dequantizer(ty).unwrap();
        let mut bytes = vec![0u8; x.len() / SUPER_BLOCK * ty.type_size()];
        q(x, qw, &mut bytes);
        let mut y = vec![0.0f32; x.len()];
        dq(&bytes, &mut y);
        let num: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        (num / den).sqrt()
    }

    #[test]
    fn block_sizes_match_the_types() {
        assert_eq!(BlockIq2Xxs::BYTES, GgmlType::IQ2_XXS.type_size());
        assert_eq!(BlockIq2Xs::BYTES, GgmlType::IQ2_XS.type_size());
        assert_eq!(BlockIq2S::BYTES, GgmlType::IQ2_S.type_size());
    }

    #[test]
    fn round_trips_lose_what_two_bits_lose() {
        let x = values(7, 4 * SUPER_BLOCK);
        let qw: Vec<f32> = values(8, x.len()).iter().map(|v| v.abs() + 0.1).collect();
        for ty in [GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S] {
            let e = rel_rmse(ty, &x, Some(&qw));
            assert!(e > 0.05 && e < 0.6, "{ty}: relative RMSE {e}");
        }
        let e = rel_rmse(GgmlType::IQ2_S, &x, None);
        assert!(
            e > 0.05 && e < 0.6,
            "IQ2_S without imatrix: relative RMSE {e}"
        );
    }

    #[test]
    fn zero_rows_are_zero_blocks() {
        let x = vec![0.0f32; SUPER_BLOCK];
        let qw = vec![1.0f32; SUPER_BLOCK];
        for ty in [GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S] {
            let mut bytes = vec![0xffu8; ty.type_size()];
            quantizer(ty).unwrap()(&x, Some(&qw), &mut bytes);
            assert!(bytes.iter().all(|&b| b == 0), "{ty}");
        }
    }

    #[test]
    fn the_checked_entry_point_refuses_missing_weights() {
        let x = values(1, SUPER_BLOCK);
        for ty in [GgmlType::IQ2_XXS, GgmlType::IQ2_XS] {
            let mut bytes = vec![0u8; ty.type_size()];
            let e = super::super::quantize_rows(ty, &x, SUPER_BLOCK, None, &mut bytes).unwrap_err();
            assert!(
                matches!(e, super::super::QuantError::NeedsWeights(t) if t == ty),
                "{e}"
            );
        }
        let mut bytes = vec![0u8; GgmlType::IQ2_S.type_size()];
        super::super::quantize_rows(GgmlType::IQ2_S, &x, SUPER_BLOCK, None, &mut bytes).unwrap();
    }

    #[test]
    #[should_panic(expected = "needs importance weights")]
    fn iq2_xxs_without_weights_panics_like_llama_cpp_asserts() {
        let x = values(1, SUPER_BLOCK);
        let mut bytes = vec![0u8; BlockIq2Xxs::BYTES];
        quantizer(GgmlType::IQ2_XXS).unwrap()(&x, None, &mut bytes);
    }
}
