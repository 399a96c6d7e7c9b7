//! The 3-bit codebook types IQ3_XXS (3.06 bits/weight) and IQ3_S (3.44 bits/weight): 256-weight
//! super-blocks of eight 32-weight sub-blocks; each group of four magnitudes is one point of a
//! codebook ([`super::iq3_grid`]) times the sub-block scale, with signs stored per weight.
//!
//! Quantization reproduces `quantize_row_iq3_xxs_impl` and `quantize_row_iq3_s_impl`
//! (ggml-quants.c, llama.cpp 0c1e57098), with and without an importance matrix: per sub-block,
//! a scan of trial scales picks the levels (snapping an off-codebook group to its best listed
//! neighbour), the least-squares scale is kept on STRICT improvement, the groups still off the
//! codebook are re-snapped at the winning scale, and the sub-block scales become 4-bit codes of
//! a super-block scale. Dequantization reproduces `dequantize_row_iq3_xxs` / `_iq3_s`.

use super::iq3_grid::{self, sign_byte, tuple_index, Cell, Iq3Grid};
use super::{
    f16_to_f32, f32_to_f16, nearest_int, read_u16, GgmlType, RowDequantizer, RowQuantizer,
};

/// Weights per super-block.
pub const QK_K: usize = 256;
/// Weights per sub-block (one scale, eight groups of four).
const SUB: usize = 32;
/// Sub-blocks per super-block.
const N_SUB: usize = QK_K / SUB;

/// Below this sub-block magnitude an IQ3_XXS sub-block is stored as zero
/// (`GROUP_MAX_EPS_IQ3_XXS`); IQ3_S only skips a sub-block that is exactly zero.
pub const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;
/// Trial inverse scales are (15 + is·TRIAL_STEP)/max.
pub const TRIAL_STEP: f32 = 0.2;
/// IQ3_XXS stores d = (max sub-block scale / 31)·FUDGE_XXS.
pub const FUDGE_XXS: f32 = 1.0125;
/// IQ3_S stores d = (max sub-block scale / 31)·FUDGE_S.
pub const FUDGE_S: f32 = 1.033;

/// The CPU quantizer for `ty` if it is IQ3_XXS or IQ3_S.
pub fn quantizer(ty: GgmlType) -> Option<RowQuantizer> {
    Some(match ty {
        GgmlType::IQ3_XXS => quantize_row_iq3_xxs,
        GgmlType::IQ3_S => quantize_row_iq3_s,
        _ => return None,
    })
}

/// The CPU dequantizer for `ty` if it is IQ3_XXS or IQ3_S.
pub fn dequantizer(ty: GgmlType) -> Option<RowDequantizer> {
    Some(match ty {
        GgmlType::IQ3_XXS => dequantize_row_iq3_xxs,
        GgmlType::IQ3_S => dequantize_row_iq3_s,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Block layouts
// ---------------------------------------------------------------------------------------------

/// IQ3_XXS, 98 bytes: `d` (f16) at 0..2, `grid` at 2..66, `scales_and_signs` (eight u32 LE) at
/// 66..98. Sub-block b's group g (weights 32b + 4g ..) is codebook point `grid[8b + g]`; word
/// b holds the 7-bit sign code of each of its four runs of eight weights in bits 7h..7h + 7
/// (h < 4, expanded by [`sign_byte`]) and its 4-bit scale code `ls` in bits 28..32; value =
/// d·(0.5 + ls)·0.5·magnitude·sign, magnitudes from [`iq3_grid::iq3xxs_grid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIq3Xxs {
    /// The super-block scale, f16 bits.
    pub d: u16,
    /// The codebook index of each group of four.
    pub grid: [u8; 64],
    /// Per sub-block: four 7-bit sign codes and the 4-bit scale code.
    pub scales_and_signs: [u32; 8],
}

impl BlockIq3Xxs {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 98;

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..66].copy_from_slice(&self.grid);
        for (o, w) in out[66..98].chunks_exact_mut(4).zip(&self.scales_and_signs) {
            o.copy_from_slice(&w.to_le_bytes());
        }
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq3Xxs {
        BlockIq3Xxs {
            d: read_u16(b, 0),
            grid: b[2..66].try_into().unwrap(),
            scales_and_signs: std::array::from_fn(|i| {
                u32::from_le_bytes(b[66 + 4 * i..70 + 4 * i].try_into().unwrap())
            }),
        }
    }
}

/// IQ3_S, 110 bytes: `d` (f16) at 0..2, `qs` at 2..66, `qh` at 66..74, `signs` at 74..106,
/// `scales` at 106..110. Sub-block b's group g is codebook point `qs[8b + g] | bit g of qh[b]
/// << 8`; `signs[4b + h]` holds the signs of weights 32b + 8h .. + 8 (bit i set = negative);
/// its 4-bit scale code `ls` is nibble b % 2 of `scales[b / 2]`; value = d·(1 + 2·ls)·(2l + 1)
/// ·sign. (The quantizer packs `qs` and `signs` of the non-zero sub-blocks only, in order — see
/// [`quantize_block_iq3_s`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIq3S {
    /// The super-block scale, f16 bits.
    pub d: u16,
    /// Low 8 bits of each group's codebook index.
    pub qs: [u8; 64],
    /// Bit 8 of each group's codebook index, one byte per sub-block.
    pub qh: [u8; 8],
    /// One sign bit per weight.
    pub signs: [u8; 32],
    /// The 4-bit scale codes, two per byte.
    pub scales: [u8; 4],
}

impl BlockIq3S {
    /// Size of the block on disk, in bytes.
    pub const BYTES: usize = 110;

    /// The all-zero block.
    const ZERO: BlockIq3S = BlockIq3S {
        d: 0,
        qs: [0; 64],
        qh: [0; 8],
        signs: [0; 32],
        scales: [0; 4],
    };

    /// Writes the block in its on-disk layout to `out[..BYTES]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..66].copy_from_slice(&self.qs);
        out[66..74].copy_from_slice(&self.qh);
        out[74..106].copy_from_slice(&self.signs);
        out[106..110].copy_from_slice(&self.scales);
    }

    /// Reads a block from its on-disk layout in `b[..BYTES]`.
    pub fn read(b: &[u8]) -> BlockIq3S {
        BlockIq3S {
            d: read_u16(b, 0),
            qs: b[2..66].try_into().unwrap(),
            qh: b[66..74].try_into().unwrap(),
            signs: b[74..106].try_into().unwrap(),
            scales: b[106..110].try_into().unwrap(),
        }
    }

    /// The codebook index of group `g` (of 64).
    pub fn point(&self, g: usize) -> usize {
        self.qs[g] as usize | (((self.qh[g / 8] >> (g % 8)) & 1) as usize) << 8
    }
}

// ---------------------------------------------------------------------------------------------
// The sub-block search
// ---------------------------------------------------------------------------------------------

/// What differs between the two types' searches.
struct Variant {
    grid: &'static Iq3Grid,
    /// Trial scales (15 + 0.2·is)/max for is in −n_try..=n_try.
    n_try: i32,
    /// IQ3_XXS stores 7 sign bits per 8 weights: an odd count of negatives is made even by
    /// flipping the least important weight, and groups already on the codebook are not
    /// re-snapped (they start "on grid"); IQ3_S stores every sign and re-snaps every group.
    even_signs: bool,
}

fn xxs() -> Variant {
    Variant {
        grid: iq3_grid::grid_256(),
        n_try: 15,
        even_signs: true,
    }
}

fn s() -> Variant {
    Variant {
        grid: iq3_grid::grid_512(),
        n_try: 9,
        even_signs: false,
    }
}

/// One quantized sub-block.
struct SubBlock {
    /// The (non-negative) sub-block scale.
    scale: f32,
    /// The codebook point of each group of four.
    points: [u16; 8],
    /// The sign bits of each run of eight weights (7 bits for IQ3_XXS).
    signs: [u8; 4],
}

/// The magnitude 2l + 1 of coordinate i of `point`, as the quantizer's grid stores it.
#[inline(always)]
fn magnitude(grid: &Iq3Grid, point: u16, i: usize) -> f32 {
    (2 * grid.points[point as usize][i] as i32 + 1) as f32
}

/// The neighbour of least weighted error Σ w·(scale·q − x)² (reproduces
/// `iq3_find_best_neighbour`: the first of equal errors wins). Only a non-finite input can make
/// every error non-finite (llama.cpp aborts there); then the first neighbour is taken.
#[inline(always)]
fn best_neighbour(grid: &Iq3Grid, list: &[u16], xval: &[f32], w: &[f32], scale: f32) -> u16 {
    let mut best_d2 = f32::MAX;
    let mut best = list[0];
    for &j in list {
        let mut d2 = 0.0f32;
        for i in 0..4 {
            let diff = scale * magnitude(grid, j, i) - xval[i];
            d2 += w[i] * diff * diff;
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = j;
        }
    }
    best
}

/// The codebook point for group `k` at inverse scale `id` (levels round(½(id·x − 1)) clamped
/// to 0..8), and whether the rounded levels were on the codebook before snapping.
#[inline(always)]
fn snap_group(
    v: &Variant,
    xval: &[f32; SUB],
    waux: &[f32; SUB],
    k: usize,
    id: f32,
    scale: f32,
) -> (u16, bool) {
    let levels: [u8; 4] =
        std::array::from_fn(|i| nearest_int(0.5 * (id * xval[4 * k + i] - 1.0)).clamp(0, 7) as u8);
    match v.grid.cell(tuple_index(levels)) {
        Cell::OnGrid(j) => (j, true),
        Cell::Off(list) => (
            best_neighbour(
                v.grid,
                list,
                &xval[4 * k..4 * k + 4],
                &waux[4 * k..4 * k + 4],
                scale,
            ),
            false,
        ),
    }
}

/// Σ w·x·q and Σ w·q² over the sub-block for the given points, in index order.
#[inline(always)]
fn sums(v: &Variant, weight: &[f32; SUB], xval: &[f32; SUB], points: &[u16; 8]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for i in 0..SUB {
        let w = weight[i];
        let q = magnitude(v.grid, points[i / 4], i % 4);
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// One sub-block (the body of the per-32 loop of `quantize_row_iq3_xxs_impl` /
/// `quantize_row_iq3_s_impl`). `None` for a sub-block the type stores as zero.
fn quantize_sub_block(
    v: &Variant,
    xb: &[f32],
    qw: Option<&[f32]>,
    sigma2: f32,
) -> Option<SubBlock> {
    let mut weight = [0.0f32; SUB];
    match qw {
        Some(qw) => {
            for i in 0..SUB {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..SUB {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
    let waux: [f32; SUB] = std::array::from_fn(|i| weight[i].sqrt());

    // Magnitudes and signs; `x >= 0` keeps −0.0 as it is, with a clear sign bit.
    let mut xval = [0.0f32; SUB];
    let mut signs = [0u8; 4];
    for (k, sk) in signs.iter_mut().enumerate() {
        let mut s = 0u8;
        let mut n_negative = 0;
        for i in 0..8 {
            let x = xb[8 * k + i];
            if x >= 0.0 {
                xval[8 * k + i] = x;
            } else {
                xval[8 * k + i] = -x;
                n_negative += 1;
                s |= 1 << i;
            }
        }
        if v.even_signs {
            if n_negative % 2 == 1 {
                // Flip the weight that costs least: smallest (w·x)·x, first on ties; its
                // magnitude goes negative so the search sees the sign it will be stored with.
                let e = |i: usize| weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                let mut imin = 0;
                let mut min = e(0);
                for i in 1..8 {
                    if e(i) < min {
                        min = e(i);
                        imin = i;
                    }
                }
                xval[8 * k + imin] = -xval[8 * k + imin];
                s ^= 1 << imin;
            }
            s &= 0x7f;
        }
        *sk = s;
    }
    let mut max = xval[0];
    for &x in &xval[1..] {
        max = if max > x { max } else { x };
    }
    let is_zero = if v.even_signs {
        max < GROUP_MAX_EPS_IQ3_XXS
    } else {
        max == 0.0
    };
    if is_zero {
        return None;
    }

    // Without any accepted trial the levels stay 0, which is codebook point 0.
    let Cell::OnGrid(origin) = v.grid.cell(0) else {
        unreachable!("both codebooks hold the all-zero tuple")
    };
    let mut points = [origin; 8];
    let mut on_grid = [v.even_signs; 8];
    let mut best = 0.0f32;
    let mut scale = max / 15.0;
    for is in -v.n_try..=v.n_try {
        let id = (15.0 + is as f32 * TRIAL_STEP) / max;
        let this_scale = 1.0 / id;
        let mut trial = [0u16; 8];
        let mut trial_on_grid = [true; 8];
        for k in 0..8 {
            (trial[k], trial_on_grid[k]) = snap_group(v, &xval, &waux, k, id, this_scale);
        }
        let (sumqx, sumq2) = sums(v, &weight, &xval, &trial);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            points = trial;
            on_grid = trial_on_grid;
        }
    }
    if on_grid.contains(&false) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..8 {
            if v.even_signs && on_grid[k] {
                continue;
            }
            points[k] = snap_group(v, &xval, &waux, k, id, scale).0;
        }
        let (sumqx, sumq2) = sums(v, &weight, &xval, &points);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    if scale < 0.0 {
        // A negative least-squares scale (possible only through odd weights): store its
        // magnitude and flip every stored sign instead.
        scale = -scale;
        for s in &mut signs {
            *s = if v.even_signs { !*s & 0x7f } else { !*s };
        }
    }
    Some(SubBlock {
        scale,
        points,
        signs,
    })
}

/// Σx²·2/256 over the super-block: the `sigma2` of the importance weights.
#[inline(always)]
fn sigma2_of(x: &[f32]) -> f32 {
    let mut sumx2 = 0.0f32;
    for &v in x {
        sumx2 += v * v;
    }
    2.0 * sumx2 / QK_K as f32
}

/// The 4-bit code of a sub-block scale against the super-block scale d = max/31 (from its
/// inverse `id`, unrounded): round(½(id·scale − 1)) clamped to 0..16.
#[inline(always)]
fn scale_code(id: f32, scale: f32) -> u8 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, 15) as u8
}

/// `max_scale > s ? max_scale : s`, as ggml's MAX.
#[inline(always)]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// One IQ3_XXS super-block (`quantize_row_iq3_xxs_impl` for 256 weights). The stored d is
/// (max/31)·1.0125 in f16; the scale codes use the inverse of the unrounded max/31.
pub fn quantize_block_iq3_xxs(x: &[f32], qw: Option<&[f32]>) -> BlockIq3Xxs {
    let v = xxs();
    let x = &x[..QK_K];
    let sigma2 = sigma2_of(x);
    let mut blk = BlockIq3Xxs {
        d: 0,
        grid: [0; 64],
        scales_and_signs: [0; 8],
    };
    let mut scales = [0.0f32; N_SUB];
    let mut max_scale = 0.0f32;
    for ib in 0..N_SUB {
        let xb = &x[SUB * ib..SUB * (ib + 1)];
        let qwb = qw.map(|w| &w[SUB * ib..SUB * (ib + 1)]);
        let Some(sb) = quantize_sub_block(&v, xb, qwb, sigma2) else {
            continue;
        };
        for k in 0..8 {
            blk.grid[8 * ib + k] = sb.points[k] as u8;
        }
        blk.scales_and_signs[ib] = sb
            .signs
            .iter()
            .enumerate()
            .fold(0, |w, (h, &s)| w | (s as u32) << (7 * h));
        scales[ib] = sb.scale;
        max_scale = c_max(max_scale, sb.scale);
    }
    if max_scale == 0.0 {
        return BlockIq3Xxs {
            d: 0,
            grid: [0; 64],
            scales_and_signs: [0; 8],
        };
    }
    let d = max_scale / 31.0;
    blk.d = f32_to_f16(d * FUDGE_XXS);
    let id = 1.0 / d;
    for (word, &scale) in blk.scales_and_signs.iter_mut().zip(&scales) {
        *word |= (scale_code(id, scale) as u32) << 28;
    }
    blk
}

/// One IQ3_S super-block (`quantize_row_iq3_s_impl` for 256 weights, 32-weight sub-blocks).
/// As there, a zero sub-block advances neither the `qs` nor the `signs` cursor (`qh` is indexed
/// by sub-block), so the later sub-blocks' groups and signs are stored shifted down; the
/// stored d is (max/31)·1.033 in f16.
pub fn quantize_block_iq3_s(x: &[f32], qw: Option<&[f32]>) -> BlockIq3S {
    let v = s();
    let x = &x[..QK_K];
    let sigma2 = sigma2_of(x);
    let mut blk = BlockIq3S::ZERO;
    let mut scales = [0.0f32; N_SUB];
    let mut max_scale = 0.0f32;
    let mut cursor = 0;
    for ib in 0..N_SUB {
        let xb = &x[SUB * ib..SUB * (ib + 1)];
        let qwb = qw.map(|w| &w[SUB * ib..SUB * (ib + 1)]);
        let Some(sb) = quantize_sub_block(&v, xb, qwb, sigma2) else {
            continue;
        };
        for k in 0..8 {
            blk.qs[8 * cursor + k] = (sb.points[k] & 0xff) as u8;
            blk.qh[ib] |= ((sb.points[k] >> 8) as u8) << k;
        }
        blk.signs[4 * cursor..4 * cursor + 4].copy_from_slice(&sb.signs);
        cursor += 1;
        scales[ib] = sb.scale;
        max_scale = c_max(max_scale, sb.scale);
    }
    if max_scale == 0.0 {
        return blk;
    }
    let d = max_scale / 31.0;
    blk.d = f32_to_f16(d * FUDGE_S);
    let id = 1.0 / d;
    for ib in (0..N_SUB).step_by(2) {
        blk.scales[ib / 2] = scale_code(id, scales[ib]) | scale_code(id, scales[ib + 1]) << 4;
    }
    blk
}

fn quantize_row_iq3_xxs(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % QK_K, 0);
    for (ib, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BlockIq3Xxs::BYTES))
        .enumerate()
    {
        let qwb = qw.map(|w| &w[ib * QK_K..(ib + 1) * QK_K]);
        quantize_block_iq3_xxs(xb, qwb).write(ob);
    }
}

fn quantize_row_iq3_s(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % QK_K, 0);
    for (ib, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BlockIq3S::BYTES))
        .enumerate()
    {
        let qwb = qw.map(|w| &w[ib * QK_K..(ib + 1) * QK_K]);
        quantize_block_iq3_s(xb, qwb).write(ob);
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantizers
// ---------------------------------------------------------------------------------------------

/// Byte i of a packed grid entry: the magnitude of coordinate i.
#[inline(always)]
fn grid_byte(entry: u32, i: usize) -> f32 {
    ((entry >> (8 * i)) & 0xff) as f32
}

/// `dequantize_row_iq3_xxs`: db = d·(0.5 + ls)·0.5, value = db·magnitude·±1.
fn dequantize_row_iq3_xxs(bytes: &[u8], out: &mut [f32]) {
    let grid = iq3_grid::iq3xxs_grid();
    for (b, y) in bytes
        .chunks_exact(BlockIq3Xxs::BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let blk = BlockIq3Xxs::read(b);
        let d = f16_to_f32(blk.d);
        for ib in 0..N_SUB {
            let word = blk.scales_and_signs[ib];
            let db = d * (0.5 + (word >> 28) as f32) * 0.5;
            for h in 0..4 {
                let signs = sign_byte(((word >> (7 * h)) & 0x7f) as u8);
                let yb = &mut y[SUB * ib + 8 * h..SUB * ib + 8 * h + 8];
                for (j, yj) in yb.iter_mut().enumerate() {
                    let entry = grid[blk.grid[8 * ib + 2 * h + j / 4] as usize];
                    let sign = if signs & (1 << j) != 0 { -1.0 } else { 1.0 };
                    *yj = db * grid_byte(entry, j % 4) * sign;
                }
            }
        }
    }
}

/// `dequantize_row_iq3_s`: db = d·(1 + 2·ls), value = db·(2l + 1)·±1.
fn dequantize_row_iq3_s(bytes: &[u8], out: &mut [f32]) {
    let grid = iq3_grid::iq3s_grid();
    for (b, y) in bytes
        .chunks_exact(BlockIq3S::BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let blk = BlockIq3S::read(b);
        let d = f16_to_f32(blk.d);
        for ib in 0..N_SUB {
            let ls = (blk.scales[ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let db = d * (1 + 2 * ls as i32) as f32;
            for h in 0..4 {
                let signs = blk.signs[4 * ib + h];
                let yb = &mut y[SUB * ib + 8 * h..SUB * ib + 8 * h + 8];
                for (j, yj) in yb.iter_mut().enumerate() {
                    let entry = grid[blk.point(8 * ib + 2 * h + j / 4)];
                    let sign = if signs & (1 << j) != 0 { -1.0 } else { 1.0 };
                    *yj = db * grid_byte(entry, j % 4) * sign;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible spread of values (no RNG crate in unit tests: a fixed LCG).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    #[test]
    fn blocks_round_trip_their_layout() {
        let x = values(256, 7);
        let b = quantize_block_iq3_xxs(&x, None);
        let mut bytes = [0u8; BlockIq3Xxs::BYTES];
        b.write(&mut bytes);
        assert_eq!(BlockIq3Xxs::read(&bytes), b);
        let b = quantize_block_iq3_s(&x, None);
        let mut bytes = [0u8; BlockIq3S::BYTES];
        b.write(&mut bytes);
        assert_eq!(BlockIq3S::read(&bytes), b);
    }

    #[test]
    fn dequantized_values_track_the_input() {
        for (ty, seed) in [(GgmlType::IQ3_XXS, 1), (GgmlType::IQ3_S, 2)] {
            let x = values(1024, seed);
            let mut q = vec![0u8; 4 * ty.type_size()];
            quantizer(ty).unwrap()(&x, None, &mut q);
            let mut y = vec![0f32; 1024];
            dequantizer(ty).unwrap()(&q, &mut y);
            let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
            let sig: f32 = x.iter().map(|a| a * a).sum();
            // ~3 bits per weight: relative RMS error well under 0.3.
            assert!(
                (err / sig).sqrt() < 0.3,
                "{ty}: rel. rms {}",
                (err / sig).sqrt()
            );
        }
    }

    #[test]
    fn iq3_xxs_signs_are_even_per_eight() {
        let x = values(256, 3);
        let b = quantize_block_iq3_xxs(&x, None);
        let mut y = [0f32; 256];
        let mut bytes = [0u8; BlockIq3Xxs::BYTES];
        b.write(&mut bytes);
        dequantize_row_iq3_xxs(&bytes, &mut y);
        for eight in y.chunks_exact(8) {
            assert_eq!(eight.iter().filter(|v| v.is_sign_negative()).count() % 2, 0);
        }
    }

    #[test]
    fn zero_sub_blocks_shift_iq3_s_groups_down() {
        // Sub-block 0 zero, sub-block 1 not: its groups and signs land in the first slots, its
        // high bits stay in qh[1].
        let mut x = vec![0.0f32; 256];
        x[32..64].copy_from_slice(&values(32, 5));
        let b = quantize_block_iq3_s(&x, None);
        let mut alone = vec![0.0f32; 256];
        alone[..32].copy_from_slice(&x[32..64]);
        let a = quantize_block_iq3_s(&alone, None);
        assert_eq!(b.qs[..8], a.qs[..8]);
        assert_eq!(b.signs[..4], a.signs[..4]);
        assert_eq!(b.qh[1], a.qh[0]);
        assert_eq!(b.qs[8..], [0; 56]);
        assert_eq!(b.scales[0] >> 4, a.scales[0] & 0x0f);
    }

    #[test]
    fn all_zero_blocks_are_zero_bytes() {
        let x = [0.0f32; 256];
        let mut bytes = [0xffu8; BlockIq3Xxs::BYTES];
        quantize_block_iq3_xxs(&x, None).write(&mut bytes);
        assert_eq!(bytes, [0; BlockIq3Xxs::BYTES]);
        let mut bytes = [0xffu8; BlockIq3S::BYTES];
        quantize_block_iq3_s(&x, None).write(&mut bytes);
        assert_eq!(bytes, [0; BlockIq3S::BYTES]);
    }
}
