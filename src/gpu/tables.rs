//! Lookup tables a kernel family reads from binding 3 (u32 words), and the WGSL constants that
//! say where they are. Only the IQ3 family has any: its codebooks' codes, index maps and
//! neighbour lists, laid out from [`crate::quant::iq3_grid`] (so the GPU searches exactly the
//! lists the CPU does). They live in a storage buffer rather than in the shader source: a
//! dynamically indexed constant array becomes a per-invocation private copy of ~50k words.

use crate::quant::iq3;
use crate::quant::iq3_grid::{self, Cell, Iq3Grid};

/// The IQ3 tables: the words to upload, and the WGSL declarations of their offsets and of the
/// types' constants, for the module's prelude.
pub struct Iq3Tables {
    /// IQ3_XXS codes, IQ3_S codes, IQ3_XXS map, IQ3_S map, then the neighbour lists.
    pub words: Vec<u32>,
    /// `const` declarations for shaders/iq3.wgsl.
    pub wgsl: String,
}

/// Appends `grid`'s codes at the current end of `words`; returns their offset.
fn push_codes(words: &mut Vec<u32>, grid: &Iq3Grid) -> u32 {
    let at = words.len() as u32;
    words.extend(grid.points.iter().map(|p| iq3_grid::tuple_index(*p) as u32));
    at
}

/// Appends `grid`'s 4096-entry map, its neighbour lists going to `lists` (whose words will
/// start at `lists_at`); returns the map's offset. An entry is the point index, or the list's
/// start | its length << 16.
fn push_map(words: &mut Vec<u32>, lists: &mut Vec<u32>, lists_at: u32, grid: &Iq3Grid) -> u32 {
    let at = words.len() as u32;
    for u in 0..4096 {
        words.push(match grid.cell(u) {
            Cell::OnGrid(j) => j as u32,
            Cell::Off(list) => {
                let start = lists_at + lists.len() as u32;
                assert!(start < 1 << 16 && !list.is_empty() && list.len() < 1 << 16);
                lists.extend(list.iter().map(|&j| j as u32));
                start | (list.len() as u32) << 16
            }
        });
    }
    at
}

/// An f32 as an exact WGSL hexadecimal literal (normal, positive values).
fn wgsl_f32(x: f32) -> String {
    let bits = x.to_bits();
    assert!(x > 0.0 && x.is_normal());
    let exp = ((bits >> 23) & 0xff) as i32 - 127;
    // 23 fraction bits, written as 6 hex digits (the last one holding 3 bits, shifted up).
    format!("0x1.{:06x}p{exp}f", (bits & 0x7f_ffff) << 1)
}

impl Iq3Tables {
    /// The tables, built once from the CPU's codebook tables.
    pub fn get() -> &'static Iq3Tables {
        static T: std::sync::OnceLock<Iq3Tables> = std::sync::OnceLock::new();
        T.get_or_init(|| {
            let (xxs, s) = (iq3_grid::grid_256(), iq3_grid::grid_512());
            let mut words = Vec::new();
            let codes_xxs = push_codes(&mut words, xxs);
            let codes_s = push_codes(&mut words, s);
            let lists_at = (words.len() + 2 * 4096) as u32;
            let mut lists = Vec::new();
            let map_xxs = push_map(&mut words, &mut lists, lists_at, xxs);
            let map_s = push_map(&mut words, &mut lists, lists_at, s);
            assert_eq!(words.len() as u32, lists_at);
            words.extend(lists);
            let wgsl = format!(
                "const IQ3XXS_CODES: u32 = {codes_xxs}u;\nconst IQ3S_CODES: u32 = {codes_s}u;\n\
                 const IQ3XXS_MAP: u32 = {map_xxs}u;\nconst IQ3S_MAP: u32 = {map_s}u;\n\
                 const IQ3_EPS_XXS: f32 = {};\nconst IQ3_TRIAL_STEP: f32 = {};\n\
                 const IQ3_FUDGE_XXS: f32 = {};\nconst IQ3_FUDGE_S: f32 = {};\n",
                wgsl_f32(iq3::GROUP_MAX_EPS_IQ3_XXS),
                wgsl_f32(iq3::TRIAL_STEP),
                wgsl_f32(iq3::FUDGE_XXS),
                wgsl_f32(iq3::FUDGE_S),
            );
            Iq3Tables { words, wgsl }
        })
    }
}

/// The most loop iterations one invocation of shaders/iq3.wgsl can run (a unit of two
/// super-blocks), by its loop structure and the longest neighbour list: lavapipe silently
/// stops an invocation's loops at 65535 (see shaders/exact.wgsl).
pub fn iq3_loop_bound() -> usize {
    let longest = [iq3_grid::grid_256(), iq3_grid::grid_512()]
        .iter()
        .flat_map(|g| {
            (0..4096).map(move |u| match g.cell(u) {
                Cell::OnGrid(_) => 0,
                Cell::Off(list) => list.len(),
            })
        })
        .max()
        .unwrap();
    // Per snap: the neighbour scan, eight a turn. Per trial (and the re-snap): 8 snaps and 8
    // turns of the sums. Trials: 2·15 + 1 at most, plus the re-snap.
    let per_pass = 8 + 8 * longest.div_ceil(8) + 8;
    let passes = 2 * 15 + 1 + 1;
    // Sub-block setup: weights 8 + 32, signs 4 + 32 + 4·7 (parity), max 31.
    let setup = 8 + 32 + 4 + 32 + 28 + 31;
    // Per super-block: σ² 64, grid bytes 64, scale codes 8.
    let per_super = 8 * (setup + passes * per_pass) + 64 + 64 + 8;
    // Two super-blocks a unit, and storing its words.
    2 * per_super + 55
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_literals_are_exact() {
        assert_eq!(wgsl_f32(1.0), "0x1.000000p0f");
        assert_eq!(wgsl_f32(0.2), "0x1.99999ap-3f");
        assert_eq!(wgsl_f32(1e-8), "0x1.5798eep-27f");
        assert_eq!(wgsl_f32(1.0125), "0x1.033334p0f");
    }

    #[test]
    fn tables_point_into_themselves() {
        let t = Iq3Tables::get();
        let (xxs, s) = (iq3_grid::grid_256(), iq3_grid::grid_512());
        assert_eq!(
            t.words.len(),
            256 + 512 + 2 * 4096 + xxs.n_neighbours() + s.n_neighbours()
        );
        // Tuple 0 is point 0 of both codebooks, and an off-grid entry's list is the CPU's.
        assert_eq!(t.words[256 + 512], 0);
        let u = (0..4096)
            .find(|&u| matches!(s.cell(u), Cell::Off(_)))
            .unwrap();
        let e = t.words[256 + 512 + 4096 + u] as usize;
        let (start, len) = (e & 0xffff, e >> 16);
        let Cell::Off(list) = s.cell(u) else {
            unreachable!()
        };
        let got: Vec<u16> = t.words[start..start + len]
            .iter()
            .map(|&w| w as u16)
            .collect();
        assert_eq!(got, list);
    }

    #[test]
    fn iq3_kernel_stays_within_lavapipe_loop_limit() {
        let bound = iq3_loop_bound();
        assert!(bound < 65535, "{bound}");
        // What the shader comment promises.
        assert!(bound < 32_000, "{bound}");
    }
}
