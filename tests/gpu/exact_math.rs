//! The rounding helpers of shaders/exact.wgsl, run through a probe kernel and compared bit for
//! bit with Rust on adversarial inputs (subnormals, ties, huge/tiny, NaN, ±0).

use crate::devices::Device;
use crate::support::rng::Rng;

use qforge::quant::{f16_to_f32, f32_to_bf16, f32_to_f16, nearest_int};

fn same_float(gpu: u32, cpu: f32) -> bool {
    let g = f32::from_bits(gpu);
    if cpu.is_nan() {
        g.is_nan()
    } else {
        gpu == cpu.to_bits()
    }
}

fn special_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        3.5,
        0.49999997,
        -0.49999997,
        8388607.5,
        4194303.0,
        -4194303.0,
        4194302.5,
        4194301.5,
        127.0,
        1.0 / 3.0,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::from_bits(0x007f_ffff),
        f32::from_bits(0x0040_0000),
        f32::from_bits(0x0000_0003),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffc1_2345),
        65504.0,
        65520.0,
        1e-8,
        1e20,
        1e-20,
        1e38,
        1e-38,
    ];
    for bits in [
        0x3f80_1000u32,
        0x3f80_3000,
        0x3f80_8000,
        0x3f81_8000,
        0x3380_0000,
        0x3340_0000,
    ] {
        v.push(f32::from_bits(bits));
    }
    v
}

fn pairs() -> Vec<(f32, f32)> {
    let specials = special_values();
    let mut p = Vec::new();
    for &a in &specials {
        for &b in &specials {
            p.push((a, b));
        }
    }
    let mut rng = Rng::new(42);
    // Every f16 bit pattern through b's low half (f16→f32), with random a.
    for h in 0..=u16::MAX as u32 {
        let a = f32::from_bits(rng.next_u64() as u32);
        p.push((a, f32::from_bits(h)));
    }
    // Random bit patterns over the whole range, and mixed magnitudes.
    for _ in 0..60_000 {
        p.push((
            f32::from_bits(rng.next_u64() as u32),
            f32::from_bits(rng.next_u64() as u32),
        ));
    }
    for _ in 0..60_000 {
        let a = (rng.gauss() as f64 * 10f64.powf(rng.uniform() * 90.0 - 45.0)) as f32;
        let b = (rng.gauss() as f64 * 10f64.powf(rng.uniform() * 90.0 - 45.0)) as f32;
        p.push((a, b));
    }
    // Subnormal-heavy: results and operands near the bottom of the range.
    for _ in 0..20_000 {
        let a = f32::from_bits((rng.next_u64() as u32) & 0x80ff_ffff);
        let b = f32::from_bits(((rng.next_u64() as u32) & 0x81ff_ffff) | 0x3f00_0000);
        p.push((a, b));
    }
    // nearest_int / roundf ties: k + 0.5 and neighbours.
    for k in -3000..3000 {
        let t = k as f32 + 0.5;
        p.push((t, 1.0));
        p.push((f32::from_bits(t.to_bits() + 1), 1.0));
        p.push((f32::from_bits(t.to_bits() - 1), 1.0));
    }
    p
}

device_test!(exact_helpers_match_rust_bit_for_bit, gpu);
fn exact_helpers_match_rust_bit_for_bit(device: Device) {
    let ctx = device.gpu();
    let pairs = pairs();
    let got = ctx.probe_exact(&pairs).expect("probe kernel runs");
    assert_eq!(got.len(), pairs.len());
    let mut failures = Vec::new();
    let mut check = |what: &str, ok: bool, a: f32, b: f32, gpu: u32| {
        if !ok && failures.len() < 20 {
            failures.push(format!(
                "{what}: a={a:e} ({:#010x}) b={b:e} ({:#010x}) gpu={gpu:#010x}",
                a.to_bits(),
                b.to_bits()
            ));
        }
    };
    let mut checked_nearest = 0usize;
    let (mut div_normal, mut div_proved, mut sqrt_normal, mut sqrt_proved) = (0, 0, 0, 0);
    for (&(a, b), w) in pairs.iter().zip(&got) {
        check("xmul", same_float(w[0], a * b), a, b, w[0]);
        check("div_rn", same_float(w[1], a / b), a, b, w[1]);
        check("sqrt_rn", same_float(w[2], a.sqrt()), a, b, w[2]);
        if a.abs() <= 4194303.0 {
            checked_nearest += 1;
            check("nearest_int", w[3] as i32 == nearest_int(a), a, b, w[3]);
        }
        check("round_half_away", same_float(w[4], a.round()), a, b, w[4]);
        check("f32_to_f16", w[5] == f32_to_f16(a) as u32, a, b, w[5]);
        let h = (b.to_bits() & 0xffff) as u16;
        check("f16_to_f32", w[6] == f16_to_f32(h).to_bits(), a, b, w[6]);
        check("f32_to_bf16", w[7] == f32_to_bf16(a) as u32, a, b, w[7]);
        check("xmul+add", same_float(w[8], a * b + b), a, b, w[8]);
        // x86 cvttss2si, what the reference build's (int) casts compile to.
        let x86 = if a.is_nan() || a.abs() >= 2147483648.0 {
            i32::MIN
        } else {
            a as i32
        };
        check("c_float_to_int", w[9] as i32 == x86, a, b, w[9]);
        check("div_rn_bitwise", same_float(w[10], a / b), a, b, w[10]);
        check("sqrt_rn_bitwise", same_float(w[11], a.sqrt()), a, b, w[11]);
        // The fast paths' exact checks never accept a neighbour of the right answer, and do
        // accept the right answer for normal operands and results (else the bitwise loops
        // would run for most inputs, see exact.wgsl).
        check("div_is_rn accepts a neighbour", w[12] & 6 == 0, a, b, w[12]);
        check(
            "sqrt_is_rn accepts a neighbour",
            w[12] & 48 == 0,
            a,
            b,
            w[12],
        );
        let q = a / b;
        if a.is_normal() && b.is_normal() && q.is_normal() {
            div_normal += 1;
            div_proved += (w[12] & 1) as usize;
        }
        if a.is_normal() && a > 0.0 {
            sqrt_normal += 1;
            sqrt_proved += ((w[12] >> 3) & 1) as usize;
            check("sqrt_is_rn rejects", w[12] & 8 != 0, a, b, w[12]);
        }
    }
    assert!(checked_nearest > 100_000);
    eprintln!("fast path proofs: div {div_proved}/{div_normal}, sqrt {sqrt_proved}/{sqrt_normal}");
    assert!(div_normal > 50_000 && sqrt_normal > 50_000);
    // Only ties can make the division check give up on a right answer (2^-24 of random cases).
    assert!(
        div_proved * 1000 >= div_normal * 999,
        "{div_proved}/{div_normal}"
    );
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
