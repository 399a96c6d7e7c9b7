//! The IQ3 codebooks and everything llama.cpp derives from them (reproduces `iq3xs_init_impl`,
//! ggml-quants.c, and the `iq3xxs_grid` / `iq3s_grid` / `ksigns_iq2xs` tables of ggml-common.h).
//!
//! An IQ3 group is four weights whose magnitudes are odd multiples 2l + 1 (l = 0..8) of a
//! scale; only the 4-tuples of levels in a codebook can be stored, by their index there. The
//! two codebooks are the format's data; the rest is computed once, on first use:
//!
//! - the index map: for each of the 8⁴ = 4096 level tuples, its codebook index, or
//! - its neighbour list: the codebook points at the two (IQ3_XXS) or three (IQ3_S) smallest
//!   squared distances from it, every point at those distances, ordered by (distance, index) —
//!   the order llama.cpp's qsort comparator gives, which decides ties in the search;
//! - the dequantization grids: each point's four magnitudes as bytes, 2l + 1 for IQ3_S and
//!   4·(2l + 1) for IQ3_XXS except that its top level l = 7 is 62, not 60;
//! - the sign bytes: 7 stored sign bits plus an eighth that makes the count of minus signs even.

use std::sync::OnceLock;

/// IQ3_XXS's 256 points (`kgrid_256` of `iq3xs_init_impl`): coordinate i of a point is the
/// 3-bit level `(code >> 3i) & 7`, ascending by code.
pub const CODEBOOK_256: [u16; 256] = [
    0, 2, 4, 9, 11, 15, 16, 18, 25, 34, 59, 61, 65, 67, 72, 74, 81, 85, 88, 90, 97, 108, 120, 128,
    130, 132, 137, 144, 146, 153, 155, 159, 169, 175, 189, 193, 199, 200, 202, 213, 248, 267, 287,
    292, 303, 315, 317, 321, 327, 346, 362, 413, 436, 456, 460, 462, 483, 497, 513, 515, 520, 522,
    529, 531, 536, 538, 540, 551, 552, 576, 578, 585, 592, 594, 641, 643, 648, 650, 657, 664, 698,
    704, 706, 720, 729, 742, 758, 769, 773, 808, 848, 852, 870, 889, 901, 978, 992, 1024, 1026,
    1033, 1035, 1040, 1042, 1046, 1049, 1058, 1089, 1091, 1093, 1096, 1098, 1105, 1112, 1139, 1143,
    1144, 1152, 1154, 1161, 1167, 1168, 1170, 1183, 1184, 1197, 1217, 1224, 1228, 1272, 1276, 1309,
    1323, 1347, 1367, 1377, 1404, 1473, 1475, 1486, 1509, 1537, 1544, 1546, 1553, 1555, 1576, 1589,
    1594, 1600, 1602, 1616, 1625, 1636, 1638, 1665, 1667, 1672, 1685, 1706, 1722, 1737, 1755, 1816,
    1831, 1850, 1856, 1862, 1874, 1901, 1932, 1950, 1971, 2011, 2032, 2052, 2063, 2077, 2079, 2091,
    2095, 2172, 2192, 2207, 2208, 2224, 2230, 2247, 2277, 2308, 2345, 2356, 2389, 2403, 2424, 2501,
    2504, 2506, 2520, 2570, 2593, 2616, 2624, 2630, 2646, 2669, 2700, 2714, 2746, 2754, 2795, 2824,
    2835, 2839, 2874, 2882, 2905, 2984, 3028, 3042, 3092, 3108, 3110, 3124, 3153, 3185, 3215, 3252,
    3288, 3294, 3364, 3397, 3434, 3483, 3523, 3537, 3587, 3589, 3591, 3592, 3610, 3626, 3670, 3680,
    3722, 3749, 3754, 3776, 3789, 3803, 3824, 3857, 3873, 3904, 3906, 3924, 3992,
];
/// IQ3_S's 512 points (`kgrid_512` of `iq3xs_init_impl`), coded as [`CODEBOOK_256`].
pub const CODEBOOK_512: [u16; 512] = [
    0, 1, 2, 5, 7, 8, 9, 10, 12, 14, 16, 17, 21, 27, 32, 34, 37, 39, 41, 43, 48, 50, 57, 60, 63,
    64, 65, 66, 68, 72, 73, 77, 80, 83, 87, 89, 93, 100, 113, 117, 122, 128, 129, 133, 135, 136,
    139, 142, 145, 149, 152, 156, 162, 165, 167, 169, 171, 184, 187, 195, 201, 205, 208, 210, 217,
    219, 222, 228, 232, 234, 247, 249, 253, 256, 267, 271, 273, 276, 282, 288, 291, 297, 312, 322,
    324, 336, 338, 342, 347, 353, 357, 359, 374, 379, 390, 393, 395, 409, 426, 441, 448, 450, 452,
    464, 466, 470, 475, 488, 492, 512, 513, 514, 516, 520, 521, 523, 525, 527, 528, 530, 537, 540,
    542, 556, 558, 561, 570, 576, 577, 579, 582, 584, 588, 593, 600, 603, 609, 616, 618, 632, 638,
    640, 650, 653, 655, 656, 660, 666, 672, 675, 685, 688, 698, 705, 708, 711, 712, 715, 721, 727,
    728, 732, 737, 754, 760, 771, 773, 778, 780, 793, 795, 802, 806, 808, 812, 833, 840, 843, 849,
    856, 858, 873, 912, 916, 919, 932, 934, 961, 963, 968, 970, 977, 989, 993, 1010, 1016, 1024,
    1025, 1027, 1029, 1031, 1032, 1034, 1036, 1038, 1041, 1043, 1047, 1048, 1050, 1057, 1059, 1061,
    1064, 1066, 1079, 1080, 1083, 1085, 1088, 1090, 1096, 1099, 1103, 1106, 1109, 1113, 1116, 1122,
    1129, 1153, 1156, 1159, 1169, 1171, 1176, 1183, 1185, 1195, 1199, 1209, 1212, 1216, 1218, 1221,
    1225, 1234, 1236, 1241, 1243, 1250, 1256, 1270, 1281, 1287, 1296, 1299, 1306, 1309, 1313, 1338,
    1341, 1348, 1353, 1362, 1375, 1376, 1387, 1400, 1408, 1410, 1415, 1425, 1453, 1457, 1477, 1481,
    1494, 1496, 1507, 1512, 1538, 1545, 1547, 1549, 1551, 1554, 1561, 1563, 1565, 1570, 1572, 1575,
    1577, 1587, 1593, 1601, 1603, 1605, 1612, 1617, 1619, 1632, 1648, 1658, 1662, 1664, 1674, 1680,
    1690, 1692, 1704, 1729, 1736, 1740, 1745, 1747, 1751, 1752, 1761, 1763, 1767, 1773, 1787, 1795,
    1801, 1806, 1810, 1817, 1834, 1840, 1844, 1857, 1864, 1866, 1877, 1882, 1892, 1902, 1915, 1934,
    1953, 1985, 1987, 2000, 2002, 2013, 2048, 2052, 2058, 2064, 2068, 2071, 2074, 2081, 2088, 2104,
    2114, 2119, 2121, 2123, 2130, 2136, 2141, 2147, 2153, 2157, 2177, 2179, 2184, 2189, 2193, 2203,
    2208, 2223, 2226, 2232, 2244, 2249, 2251, 2256, 2258, 2265, 2269, 2304, 2306, 2324, 2335, 2336,
    2361, 2373, 2375, 2385, 2418, 2443, 2460, 2480, 2504, 2509, 2520, 2531, 2537, 2562, 2568, 2572,
    2578, 2592, 2596, 2599, 2602, 2614, 2620, 2625, 2627, 2629, 2634, 2641, 2650, 2682, 2688, 2697,
    2707, 2712, 2718, 2731, 2754, 2759, 2760, 2775, 2788, 2793, 2805, 2811, 2817, 2820, 2832, 2842,
    2854, 2890, 2902, 2921, 2923, 2978, 3010, 3012, 3026, 3081, 3083, 3085, 3097, 3099, 3120, 3136,
    3152, 3159, 3188, 3210, 3228, 3234, 3245, 3250, 3256, 3264, 3276, 3281, 3296, 3349, 3363, 3378,
    3392, 3395, 3420, 3440, 3461, 3488, 3529, 3531, 3584, 3588, 3591, 3600, 3602, 3614, 3616, 3628,
    3634, 3650, 3657, 3668, 3683, 3685, 3713, 3716, 3720, 3726, 3729, 3736, 3753, 3778, 3802, 3805,
    3819, 3841, 3845, 3851, 3856, 3880, 3922, 3938, 3970, 3993, 4032,
];

/// Level tuples: 8 levels in each of 4 coordinates.
const N_TUPLES: usize = 4096;

/// IQ3_XXS's dequantization magnitudes by level: 4·(2l + 1), except 62 at the top.
const IQ3XXS_LEVELS: [u8; 8] = [4, 12, 20, 28, 36, 44, 52, 62];

/// Where a level tuple stands in a codebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell<'a> {
    /// The tuple is the codebook point with this index.
    OnGrid(u16),
    /// The tuple is not in the codebook; these are the points to try, nearest first.
    Off(&'a [u16]),
}

/// One codebook with its derived search tables.
#[derive(Debug)]
pub struct Iq3Grid {
    /// The levels (0..8) of each point's four coordinates, by point index.
    pub points: Vec<[u8; 4]>,
    /// Per level tuple: `Ok(point index)` or `Err((start, len))` into `neighbours`.
    map: Vec<Result<u16, (u32, u16)>>,
    /// Every off-grid tuple's neighbour list, back to back in tuple order.
    neighbours: Vec<u16>,
}

/// The tuple index of four levels: level i in bits 3i..3i + 3.
#[inline(always)]
pub fn tuple_index(levels: [u8; 4]) -> usize {
    levels
        .iter()
        .enumerate()
        .fold(0, |u, (i, &l)| u | (l as usize) << (3 * i))
}

/// The four levels of a codebook code (or a tuple index): bits 3i..3i + 3.
#[inline(always)]
fn levels_of(code: usize) -> [u8; 4] {
    std::array::from_fn(|i| ((code >> (3 * i)) & 7) as u8)
}

impl Iq3Grid {
    /// Derives the tables of `codebook`, keeping, for an off-grid tuple, the points at its
    /// `n_distances` smallest squared distances.
    fn derive(codebook: &[u16], n_distances: usize) -> Iq3Grid {
        let points: Vec<[u8; 4]> = codebook.iter().map(|&c| levels_of(c as usize)).collect();
        let mut map = vec![Err((0, 0)); N_TUPLES];
        for (j, &c) in codebook.iter().enumerate() {
            map[c as usize] = Ok(j as u16);
        }
        let mut neighbours = Vec::new();
        let mut by_distance: Vec<(i32, u16)> = Vec::with_capacity(points.len());
        for (u, cell) in map.iter_mut().enumerate() {
            if cell.is_ok() {
                continue;
            }
            // Distances in the stored magnitudes 2l + 1 (the same as 4× those in levels).
            let pos = levels_of(u);
            by_distance.clear();
            by_distance.extend(points.iter().enumerate().map(|(j, p)| {
                let d2: i32 = (0..4)
                    .map(|i| {
                        let d = 2 * (p[i] as i32 - pos[i] as i32);
                        d * d
                    })
                    .sum();
                (d2, j as u16)
            }));
            // A total order (distance, then index), so the sort algorithm cannot change it.
            by_distance.sort_unstable();
            let start = neighbours.len();
            let mut distinct = 1;
            let mut last = by_distance[0].0;
            for &(d2, j) in &by_distance {
                if d2 > last {
                    if distinct == n_distances {
                        break;
                    }
                    distinct += 1;
                    last = d2;
                }
                neighbours.push(j);
            }
            *cell = Err((start as u32, (neighbours.len() - start) as u16));
        }
        Iq3Grid {
            points,
            map,
            neighbours,
        }
    }

    /// Where the level tuple with index `u` (see [`tuple_index`]) stands.
    #[inline(always)]
    pub fn cell(&self, u: usize) -> Cell<'_> {
        match self.map[u] {
            Ok(j) => Cell::OnGrid(j),
            Err((start, len)) => {
                Cell::Off(&self.neighbours[start as usize..start as usize + len as usize])
            }
        }
    }

    /// Number of neighbour entries over all off-grid tuples.
    pub fn n_neighbours(&self) -> usize {
        self.neighbours.len()
    }
}

/// IQ3_XXS's codebook with its tables (two distances of neighbours).
pub fn grid_256() -> &'static Iq3Grid {
    static G: OnceLock<Iq3Grid> = OnceLock::new();
    G.get_or_init(|| Iq3Grid::derive(&CODEBOOK_256, 2))
}

/// IQ3_S's codebook with its tables (three distances of neighbours).
pub fn grid_512() -> &'static Iq3Grid {
    static G: OnceLock<Iq3Grid> = OnceLock::new();
    G.get_or_init(|| Iq3Grid::derive(&CODEBOOK_512, 3))
}

/// Four magnitude bytes packed little-endian, coordinate 0 lowest (how ggml-common.h lists
/// its grids).
fn pack(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes)
}

/// `iq3xxs_grid`: each IQ3_XXS point's four dequantization magnitudes.
pub fn iq3xxs_grid() -> &'static [u32; 256] {
    static G: OnceLock<[u32; 256]> = OnceLock::new();
    G.get_or_init(|| {
        std::array::from_fn(|j| {
            pack(levels_of(CODEBOOK_256[j] as usize).map(|l| IQ3XXS_LEVELS[l as usize]))
        })
    })
}

/// `iq3s_grid`: each IQ3_S point's four magnitudes 2l + 1.
pub fn iq3s_grid() -> &'static [u32; 512] {
    static G: OnceLock<[u32; 512]> = OnceLock::new();
    G.get_or_init(|| {
        std::array::from_fn(|j| pack(levels_of(CODEBOOK_512[j] as usize).map(|l| 2 * l + 1)))
    })
}

/// `ksigns_iq2xs[s]`: the 7 stored sign bits `s` plus bit 7 set when their count is odd, so
/// that a group of eight always has an even number of minus signs.
#[inline(always)]
pub fn sign_byte(s: u8) -> u8 {
    let s = s & 0x7f;
    s | (((s.count_ones() & 1) as u8) << 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequant_grids_match_ggml_common() {
        // Entries read in ggml-common.h (llama.cpp 0c1e57098).
        let xxs = iq3xxs_grid();
        assert_eq!(xxs[0], 0x04040404);
        assert_eq!(xxs[1], 0x04040414);
        assert_eq!(xxs[5], 0x04040c3e);
        assert_eq!(xxs[100], 0x14040c1c);
        assert_eq!(xxs[255], 0x3e341c04);
        let s = iq3s_grid();
        assert_eq!(s[0], 0x01010101);
        assert_eq!(s[4], 0x0101010f);
        assert_eq!(s[100], 0x010f0101);
        assert_eq!(s[300], 0x07030503);
        assert_eq!(s[511], 0x0f0f0101);
    }

    #[test]
    fn sign_bytes_match_ggml_common() {
        // ksigns_iq2xs, first and last rows.
        let first = [
            0, 129, 130, 3, 132, 5, 6, 135, 136, 9, 10, 139, 12, 141, 142, 15,
        ];
        for (s, &b) in first.iter().enumerate() {
            assert_eq!(sign_byte(s as u8), b);
        }
        let last = [
            240, 113, 114, 243, 116, 245, 246, 119, 120, 249, 250, 123, 252, 125, 126, 255,
        ];
        for (i, &b) in last.iter().enumerate() {
            assert_eq!(sign_byte(112 + i as u8), b);
        }
    }

    #[test]
    fn map_and_neighbours_cover_every_tuple() {
        for (grid, codebook, n_distances) in [
            (grid_256(), &CODEBOOK_256[..], 2),
            (grid_512(), &CODEBOOK_512[..], 3),
        ] {
            for (j, &c) in codebook.iter().enumerate() {
                assert_eq!(grid.cell(c as usize), Cell::OnGrid(j as u16));
                assert_eq!(tuple_index(grid.points[j]), c as usize);
            }
            let d2 = |u: usize, j: u16| -> i32 {
                let (a, b) = (levels_of(u), grid.points[j as usize]);
                (0..4).map(|i| (a[i] as i32 - b[i] as i32).pow(2)).sum()
            };
            for u in 0..N_TUPLES {
                let Cell::Off(list) = grid.cell(u) else {
                    continue;
                };
                assert!(!list.is_empty());
                // Sorted by (distance, index), with exactly n_distances distinct distances.
                for w in list.windows(2) {
                    assert!((d2(u, w[0]), w[0]) < (d2(u, w[1]), w[1]), "tuple {u}");
                }
                let mut ds: Vec<i32> = list.iter().map(|&j| d2(u, j)).collect();
                ds.dedup();
                assert_eq!(ds.len(), n_distances, "tuple {u}");
                // Nothing left out: every point nearer than the farthest kept one is kept.
                let far = *ds.last().unwrap();
                let within = (0..codebook.len() as u16)
                    .filter(|&j| d2(u, j) <= far)
                    .count();
                assert_eq!(within, list.len(), "tuple {u}");
                let min_all = (0..codebook.len() as u16).map(|j| d2(u, j)).min().unwrap();
                assert_eq!(ds[0], min_all);
            }
        }
    }

    #[test]
    fn neighbour_list_sizes() {
        // Pinned: what an independent script applying iq3xs_init_impl's rule found (and what
        // the golden tests exercise): 3840 off-grid tuples with 18985 neighbours, the longest
        // list 36 (IQ3_XXS); 3584 with 24733, the longest 38 (IQ3_S).
        for (grid, n_off, total, longest) in
            [(grid_256(), 3840, 18985, 36), (grid_512(), 3584, 24733, 38)]
        {
            let lens: Vec<usize> = (0..N_TUPLES)
                .filter_map(|u| match grid.cell(u) {
                    Cell::Off(list) => Some(list.len()),
                    Cell::OnGrid(_) => None,
                })
                .collect();
            assert_eq!(lens.len(), n_off);
            assert_eq!(grid.n_neighbours(), total);
            assert_eq!(lens.iter().sum::<usize>(), total);
            assert_eq!(*lens.iter().max().unwrap(), longest);
        }
    }
}
