//! Quantize → dequantize error bounds for the legacy, IQ4, ternary and MXFP4 types, and
//! adversarial blocks whose exact bytes follow from the reference algorithms (derived by hand in
//! the comments; the golden tests cover realistic data).

use crate::support::rng::Rng;
use qforge::quant::{self, f16_to_f32, f32_to_f16, GgmlType};

fn quantize(ty: GgmlType, x: &[f32], qw: Option<&[f32]>) -> Vec<u8> {
    let mut out = vec![0u8; quant::row_bytes(ty, x.len()).unwrap()];
    quant::quantize_rows(ty, x, x.len(), qw, &mut out).unwrap();
    out
}

fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    quant::dequantize_rows(ty, bytes, &mut y).unwrap();
    y
}

fn round_trip(ty: GgmlType, x: &[f32], qw: Option<&[f32]>) -> Vec<f32> {
    dequantize(ty, &quantize(ty, x, qw), x.len())
}

/// Max |x − x̂| per block must stay within `bound(block)`.
fn assert_blockwise_bound(ty: GgmlType, x: &[f32], y: &[f32], bound: impl Fn(&[f32]) -> f32) {
    let bs = ty.block_size();
    for (b, (xb, yb)) in x.chunks(bs).zip(y.chunks(bs)).enumerate() {
        let limit = bound(xb);
        for (j, (a, b2)) in xb.iter().zip(yb).enumerate() {
            assert!(
                (a - b2).abs() <= limit,
                "{ty} block {b} element {j}: {a} → {b2}, error {} > bound {limit}",
                (a - b2).abs()
            );
        }
    }
}

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn gaussian_row(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.gauss() * scale).collect()
}

/// Relative RMS error of the round trip.
fn relative_rmse(x: &[f32], y: &[f32]) -> f32 {
    let err: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let sig: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (err / sig).sqrt() as f32
}

// fp16 keeps 11 significant bits: a stored scale is off by at most 2^-11 relative.
const F16_REL: f32 = 1.0 / 2048.0;

#[test]
fn q8_0_round_trip_within_half_step() {
    let x = gaussian_row(1, 32 * 512, 1.0);
    let y = round_trip(GgmlType::Q8_0, &x, None);
    // d = amax/127: |x − q·d| ≤ d/2, plus |q|·|d − f16(d)| ≤ 127·d·2^-11.
    assert_blockwise_bound(GgmlType::Q8_0, &x, &y, |b| {
        let d = absmax(b) / 127.0;
        d * (0.5 + 127.0 * F16_REL) * 1.001
    });
    assert!(relative_rmse(&x, &y) < 0.01);
}

#[test]
fn q4_0_round_trip_within_one_step() {
    let x = gaussian_row(2, 32 * 512, 3.0);
    let y = round_trip(GgmlType::Q4_0, &x, None);
    // |d| = amax/8 and levels −8..7: half a step, except an element near −max that is clamped
    // from level 16 to 15 (a full step); the fp16 scale adds ≤ 8·|d|·2^-11.
    assert_blockwise_bound(GgmlType::Q4_0, &x, &y, |b| {
        let d = absmax(b) / 8.0;
        d * (1.0 + 8.0 * F16_REL) * 1.001
    });
    assert!(relative_rmse(&x, &y) < 0.15);
}

#[test]
fn q5_0_round_trip_within_one_step() {
    let x = gaussian_row(3, 32 * 512, 0.02);
    let y = round_trip(GgmlType::Q5_0, &x, None);
    assert_blockwise_bound(GgmlType::Q5_0, &x, &y, |b| {
        let d = absmax(b) / 16.0;
        d * (1.0 + 16.0 * F16_REL) * 1.001
    });
    assert!(relative_rmse(&x, &y) < 0.08);
}

#[test]
fn q4_1_and_q5_1_round_trip_within_half_step() {
    for (ty, levels, seed) in [(GgmlType::Q4_1, 15.0f32, 4), (GgmlType::Q5_1, 31.0, 5)] {
        let x = gaussian_row(seed, 32 * 512, 5.0);
        let y = round_trip(ty, &x, None);
        // d = (max − min)/levels: half a step; fp16 error of d (≤ levels·d·2^-11) and of the
        // min (≤ |min|·2^-11).
        assert_blockwise_bound(ty, &x, &y, |b| {
            let min = b.iter().fold(f32::MAX, |m, &v| m.min(v));
            let max = b.iter().fold(-f32::MAX, |m, &v| m.max(v));
            let d = (max - min) / levels;
            (d * (0.5 + levels * F16_REL) + min.abs() * F16_REL) * 1.001
        });
        assert!(relative_rmse(&x, &y) < if levels == 15.0 { 0.1 } else { 0.05 });
    }
}

#[test]
fn iq4_round_trips_are_close() {
    let x = gaussian_row(6, 256 * 64, 1.0);
    for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::MXFP4] {
        let y = round_trip(ty, &x, None);
        // MXFP4: d = 2^(⌊log2 amax⌋ − 3), so amax/d ∈ [8, 16) and the levels 0..12 (gaps ≤ 4d)
        // leave an element at most max(2d, amax − 12d) ≤ amax/4 away. IQ4's levels are finer
        // (widest gap 24 at d ≈ amax/127, ≈ 0.1·amax each side) but its scale is searched, so
        // the same loose amax/4 serves for it.
        assert_blockwise_bound(ty, &x, &y, |b| absmax(b) / 4.0 * 1.001);
        let rmse = relative_rmse(&x, &y);
        assert!(rmse < 0.15, "{ty}: relative rmse {rmse}");
    }
}

#[test]
fn weighted_round_trips_are_close() {
    let n = 1024;
    let x = gaussian_row(7, n * 16, 1.0);
    let mut r = Rng::new(8);
    let qw: Vec<f32> = (0..n)
        .map(|i| if i % 9 == 0 { 0.0 } else { r.unit() * 4.0 })
        .collect();
    for (ty, limit) in [
        (GgmlType::Q4_0, 0.15),
        (GgmlType::Q4_1, 0.15),
        (GgmlType::Q5_0, 0.08),
        (GgmlType::Q5_1, 0.08),
        (GgmlType::Q8_0, 0.01),
        (GgmlType::IQ4_NL, 0.15),
        (GgmlType::IQ4_XS, 0.15),
    ] {
        let mut out = vec![0u8; quant::row_bytes(ty, x.len()).unwrap()];
        quant::quantize_rows(ty, &x, n, Some(&qw), &mut out).unwrap();
        let y = dequantize(ty, &out, x.len());
        let rmse = relative_rmse(&x, &y);
        assert!(rmse < limit, "{ty} with imatrix: relative rmse {rmse}");
    }
}

#[test]
fn ternary_values_round_trip_exactly() {
    // Values in {−a, 0, a} with a representable in fp16 come back exactly: d = a, every
    // x/d is exactly −1, 0 or 1.
    let mut r = Rng::new(9);
    let a = 0.375f32;
    let x: Vec<f32> = (0..256 * 8)
        .map(|_| [-a, 0.0, a][(r.next_u64() % 3) as usize])
        .collect();
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let y = round_trip(ty, &x, None);
        for (i, (p, q)) in x.iter().zip(&y).enumerate() {
            // A block that happens to miss ±a entirely would rescale; with 256 draws it cannot.
            assert_eq!(p.to_bits(), q.to_bits(), "{ty} element {i}");
        }
    }
}

#[test]
fn ternary_round_trip_within_half_amax() {
    let x = gaussian_row(10, 256 * 16, 2.0);
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let y = round_trip(ty, &x, None);
        // Levels −d, 0, d with d = amax: at most d/2 off, plus fp16 rounding of d.
        assert_blockwise_bound(ty, &x, &y, |b| absmax(b) * (0.5 + F16_REL) * 1.001);
    }
}

#[test]
fn q8_0_integers_round_trip_exactly() {
    // amax = 127 gives d = 1: every integer in −127..=127 is exact.
    let x: Vec<f32> = (0..256).map(|i| ((i * 37) % 255) as f32 - 127.0).collect();
    assert_eq!(absmax(&x[..32]), 127.0);
    let mut x = x;
    for b in x.chunks_mut(32) {
        b[0] = 127.0;
    }
    assert_eq!(round_trip(GgmlType::Q8_0, &x, None), x);
}

// ---------------------------------------------------------------------------------------------
// Adversarial blocks with bytes derived from the reference algorithms
// ---------------------------------------------------------------------------------------------

#[test]
fn all_zero_blocks() {
    let z32 = [0.0f32; 32];
    let z256 = [0.0f32; 256];
    // Q4_0: max = +0 so d = 0/−8 = −0.0 → f16 0x8000; id = 0, q = trunc(8.5) = 8.
    let mut want = vec![0x00, 0x80];
    want.extend([0x88; 16]);
    assert_eq!(quantize(GgmlType::Q4_0, &z32, None), want);
    // Q5_0: d = −0.0 as well; q = 16: low nibbles 0, every fifth bit set.
    let mut want = vec![0x00, 0x80, 0xff, 0xff, 0xff, 0xff];
    want.extend([0x00; 16]);
    assert_eq!(quantize(GgmlType::Q5_0, &z32, None), want);
    // Q4_1 / Q5_1: min = max = 0, d = 0, q = trunc(0.5) = 0.
    assert_eq!(quantize(GgmlType::Q4_1, &z32, None), vec![0u8; 20]);
    assert_eq!(quantize(GgmlType::Q5_1, &z32, None), vec![0u8; 24]);
    // Q8_0: d = +0, q = round(0) = 0.
    assert_eq!(quantize(GgmlType::Q8_0, &z32, None), vec![0u8; 34]);
    // IQ4_NL: the block is below GROUP_MAX_EPS, scale +0; level nearest 0 is index 8 (value 1).
    let mut want = vec![0x00, 0x00];
    want.extend([0x88; 16]);
    assert_eq!(quantize(GgmlType::IQ4_NL, &z32, None), want);
    // IQ4_XS: d = −max_scale/32 = −0.0; block scales l = 0 stored as 32 (low 0, high 2).
    let mut want = vec![0x00, 0x80, 0xaa, 0xaa, 0, 0, 0, 0];
    want.extend([0x88; 128]);
    assert_eq!(quantize(GgmlType::IQ4_XS, &z256, None), want);
    // TQ1_0: every trit is 1 (weight 0): five trits 11111₃ = 121 → ⌈121·256/243⌉ = 128;
    // four trits shifted up, 1111₃·3 = 120 → ⌈120·256/243⌉ = 127; d = 0.
    let mut want = vec![0x80; 48];
    want.extend([0x7f; 4]);
    want.extend([0, 0]);
    assert_eq!(quantize(GgmlType::TQ1_0, &z256, None), want);
    // TQ2_0: every 2-bit field is 1.
    let mut want = vec![0x55; 64];
    want.extend([0, 0]);
    assert_eq!(quantize(GgmlType::TQ2_0, &z256, None), want);
    // MXFP4: e = 0, every code 0.
    assert_eq!(quantize(GgmlType::MXFP4, &z32, None), vec![0u8; 17]);
    // And zeros decode to zeros (Q4_0: (8 − 8)·(−0.0) = −0.0, which compares equal to 0).
    let y = dequantize(GgmlType::Q4_0, &quantize(GgmlType::Q4_0, &z32, None), 32);
    assert!(y.iter().all(|v| *v == 0.0));
}

#[test]
fn q4_0_magnitude_tie_keeps_first_and_clamps_opposite_extreme() {
    // |−2| = |2|: the first (−2) sets d = −2/−8 = 0.25. Then x = −2 → −8 + 8.5 → 0, and
    // x = 2 → 8 + 8.5 = 16.5 → 16 → clamped to 15.
    let mut x = [0.0f32; 32];
    x[0] = -2.0;
    x[5] = 2.0;
    x[17] = 1.0; // 4 + 8.5 → 12
    let b = qforge::quant::legacy::quantize_block_q4_0(&x);
    assert_eq!(f16_to_f32(b.d), 0.25);
    assert_eq!(b.qs[0] & 0x0f, 0);
    assert_eq!(b.qs[5] & 0x0f, 15);
    assert_eq!(b.qs[1] >> 4, 12);
    assert_eq!(b.qs[1] & 0x0f, 8);
    // Reversed order: +2 first, d = −0.25, and now −2 is the clamped one.
    x[0] = 2.0;
    x[5] = -2.0;
    let b = qforge::quant::legacy::quantize_block_q4_0(&x);
    assert_eq!(f16_to_f32(b.d), -0.25);
    assert_eq!(b.qs[0] & 0x0f, 0);
    assert_eq!(b.qs[5] & 0x0f, 15);
}

#[test]
fn q8_0_rounds_halves_away_from_zero() {
    // amax 127 → d = 1, id = 1: ±2.5 → ±3, ±0.5 → ±1, 1.5 → 2.
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 0.5;
    x[4] = -0.5;
    x[5] = 1.5;
    let b = qforge::quant::legacy::quantize_block_q8_0(&x);
    assert_eq!(b.d, 0x3c00); // d = 127/127 = 1.0
    assert_eq!(&b.qs[..6], &[127, 3, -3, 1, -1, 2]);
}

#[test]
fn subnormal_blocks_whose_inverse_scale_overflows() {
    // max = 1e−39: Q4_0's d = −1.25e−40 rounds to f16 −0, and 1/d = −inf, so every x·id is
    // ±inf or NaN; x86's conversion gives the indefinite integer whose low byte is 0.
    let mut x = [0.0f32; 32];
    x[3] = 1e-39;
    x[7] = -5e-40;
    let mut want = vec![0x00, 0x80];
    want.extend([0x00; 16]);
    assert_eq!(quantize(GgmlType::Q4_0, &x, None), want);
    // Q8_0: d = 1e−39/127 → f16 +0, quants 0.
    assert_eq!(quantize(GgmlType::Q8_0, &x, None), vec![0u8; 34]);
    // Q5_0: d = −6.25e−41 → f16 −0; quants 0, no fifth bits.
    let mut want = vec![0x00, 0x80, 0, 0, 0, 0];
    want.extend([0x00; 16]);
    assert_eq!(quantize(GgmlType::Q5_0, &x, None), want);
    // TQ1_0 over 256: amax 1e−39 → 1/amax overflows; lroundf(±inf or NaN) + 1 truncates to 1,
    // so every trit is 1 as for an all-zero block; d → f16 0.
    let mut x256 = [0.0f32; 256];
    x256[3] = 2e-39;
    x256[200] = -1e-39;
    assert_eq!(
        quantize(GgmlType::TQ1_0, &x256, None),
        quantize(GgmlType::TQ1_0, &[0.0; 256], None)
    );
    assert_eq!(
        quantize(GgmlType::TQ2_0, &x256, None),
        quantize(GgmlType::TQ2_0, &[0.0; 256], None)
    );
    // IQ4: below GROUP_MAX_EPS, the same as all zero.
    assert_eq!(
        quantize(GgmlType::IQ4_XS, &x256, None),
        quantize(GgmlType::IQ4_XS, &[0.0; 256], None)
    );
    assert_eq!(
        quantize(GgmlType::IQ4_NL, &x256[..32], None),
        quantize(GgmlType::IQ4_NL, &[0.0; 32], None)
    );
}

#[test]
fn huge_values_overflow_the_f16_scale() {
    // Q8_0: amax = 1e7 → d = 78740.16 > 65504 → f16 +inf; quants still span ±127.
    let mut x = [0.0f32; 32];
    x[0] = 1e7;
    x[1] = -1e7;
    x[2] = 5.1e6;
    let b = qforge::quant::legacy::quantize_block_q8_0(&x);
    assert_eq!(b.d, 0x7c00);
    assert_eq!(&b.qs[..3], &[127, -127, 65]); // 5.1e6·127/1e7 = 64.77
                                              // Q4_1: min −3e38, max 3e38: max − min = inf → d = inf, id = 0; (x − min)·0 is 0 or NaN,
                                              // both give quant 0; m = f16(−3e38) = −inf.
    let mut x = [1.0f32; 32];
    x[0] = -3e38;
    x[1] = 3e38;
    let b = qforge::quant::legacy::quantize_block_q4_1(&x);
    assert_eq!((b.d, b.m), (0x7c00, 0xfc00));
    assert_eq!(b.qs, [0u8; 16]);
    // 6e4 (the golden's largest magnitude) stays finite: d = 6e4/127 ≈ 472.4 → f16 472.5.
    let mut x = [0.0f32; 32];
    x[9] = -6e4;
    let b = qforge::quant::legacy::quantize_block_q8_0(&x);
    assert_eq!(f16_to_f32(b.d), 472.5);
    assert_eq!(b.qs[9], -127);
}

#[test]
fn iq4_best_index_ties_go_up() {
    use qforge::quant::iq4::{best_index, KVALUES_IQ4NL};
    // Exactly between neighbours → the upper one; a hair below → the lower one.
    for i in 0..15 {
        let (lo, hi) = (KVALUES_IQ4NL[i] as f32, KVALUES_IQ4NL[i + 1] as f32);
        let mid = (lo + hi) / 2.0;
        assert_eq!(best_index(mid) as usize, i + 1, "midpoint of {lo} and {hi}");
        assert_eq!(best_index(mid - 0.01) as usize, i);
        assert_eq!(best_index(lo) as usize, i);
    }
    assert_eq!(best_index(-1000.0), 0);
    assert_eq!(best_index(1000.0), 15);
}

#[test]
fn f16_scale_is_what_dequantization_reads() {
    // A Q8_0 scale that is not representable in f16: the decoded value uses the rounded scale.
    let mut x = [0.0f32; 32];
    x[0] = 100.0;
    let bytes = quantize(GgmlType::Q8_0, &x, None);
    let d16 = f16_to_f32(f32_to_f16(100.0 / 127.0));
    let y = dequantize(GgmlType::Q8_0, &bytes, 32);
    assert_eq!(y[0], 127.0 * d16);
}
