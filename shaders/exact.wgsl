// exact.wgsl — rounding-explicit arithmetic shared by every qforge kernel.
//
// Why this file exists: the CPU reference (ggml-quants.c built without FMA, mirrored by
// src/quant) rounds after every single operation. WGSL promises much less:
//   * a*b+c may be contracted into one fused multiply-add (naga emits no SPIR-V NoContraction;
//     NVIDIA/AMD drivers do contract, DX12 turns fma into `mad`);
//   * `/` and `sqrt` may be off by a few ULP;
//   * subnormals may be flushed to zero;
//   * quantizeToF16 flushes f16 subnormals, and max/min disagree on ±0.
// So every operation whose rounding decides a byte of output goes through a helper here:
//
//   opaque(x)        x unchanged, but its bits pass through an XOR with `params.zero`, a uniform
//                    the host always sets to 0. The compiler cannot know it is 0, so the value
//                    must be materialised (rounded to f32) before anything consumes it: nothing
//                    before opaque() can be fused with anything after it.
//   xmul(a, b)       opaque(a * b): a product rounded on its own, safe to feed into an add.
//                    (a*b alone is correctly rounded in WGSL; only contraction is the risk.)
//   div_rn(a, b)     a / b correctly rounded (ties to even). The hardware quotient is taken
//                    only when an exact integer residual check proves it is the correctly
//                    rounded one (normal operands and result; see div_is_rn); otherwise
//                    div_rn_bitwise computes it by restoring long division of the 24-bit
//                    significands: 25 quotient bits + a sticky bit from the remainder, subnormal
//                    inputs normalised first and subnormal results denormalised with correct
//                    rounding, so a driver that flushes float subnormals cannot change the answer.
//   sqrt_rn(a)       sqrt correctly rounded: the hardware root when the exact check sqrt_is_rn
//                    proves it, else sqrt_rn_bitwise, the bit-by-bit integer square root of the
//                    significand scaled to 50 bits (25 root bits + sticky from the remainder).
//                    Why the fast paths: lavapipe (llvmpipe) ends every loop of an invocation
//                    once 65535 loop iterations in total have run (LP_MAX_TGSI_LOOP_ITERATIONS),
//                    silently; 25-iteration loops per division made the K-quant searches exceed
//                    that. The checks are loop-free, and on a correctly rounding driver the
//                    bitwise loops only run for subnormal, special or power-of-two results.
//   nearest_int(f)   ggml's round-half-even through the adder: opaque(f) + 12582912.0, then the
//                    low mantissa bits (valid for |f| <= 4194303, as on the CPU).
//   round_half_away  C's roundf (ties away from zero), from trunc and an exact fraction.
//   c_float_to_int   C's float→integer conversion as the reference build compiled it (x86
//                    cvttss2si): truncation; NaN and out-of-range values give INT_MIN. WGSL's
//                    i32() saturates and leaves NaN unspecified, so kernels never call i32() on
//                    a float that might be out of range (a 1/d that overflowed to inf, say).
//                    c_float_to_byte: the low byte of that, i.e. C's (int8_t)/(uint8_t) casts.
//   f32_to_f16_bits, f16_bits_to_f32, f32_to_bf16_bits
//                    conversions done entirely on integer bit patterns: round-to-nearest-even,
//                    f16 subnormals kept, overflow to ±inf; f32→f16 writes every NaN as ggml's
//                    canonical 0x7e00 with the input's sign, f16→f32 and bf16 keep the payload's
//                    top bits (what the CPU path does).
//
// NaN and ±0 are handled explicitly in each helper: the sign of zero follows IEEE (x/±0 → ±inf,
// 0/x → signed 0, sqrt(-0) = -0); arithmetic NaN results are the canonical quiet NaN 0x7fc00000
// (or the quieted NaN operand). Valid model tensors never contain NaN (they are refused before
// quantization), so NaN payloads are documented, not promised.
//
// Plain `+`, `-`, `*` (not feeding an add), comparisons, abs, floor/trunc and bit operations are
// exact in WGSL and used directly — one at a time. Compilers may still rewrite a *chain*: Mesa's
// NIR reassociates (c1 + t) + c2 into t + (c1 + c2) when c1, c2 are constants (after inlining,
// function arguments often are). So no add chain may have two constant operands unless the
// inner sum goes through opaque(). What this file cannot make exact — a driver that flushes
// subnormal *operands* of a plain add or multiply — the self-check's canary set (which contains
// f32 subnormals) detects, and the kernel is then disabled on that adapter.
//
// Requires the host to declare `params` with a `zero: u32` field (see io.wgsl).

const F32_SIGN: u32 = 0x80000000u;
const F32_QNAN: u32 = 0x7fc00000u;

fn opaque(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) ^ params.zero);
}

// A loop bound the compiler cannot see through (n + 0 from the uniform): stops NIR/LLVM from
// fully unrolling and inlining the same loop at every call site, which made pipeline builds
// take seconds per kernel on lavapipe. Costs one add; the loops are short anyway.
fn rt(n: u32) -> u32 {
    return n + params.zero;
}

fn xmul(a: f32, b: f32) -> f32 {
    return opaque(a * b);
}

fn is_nan_bits(u: u32) -> bool {
    return (u & 0x7fffffffu) > 0x7f800000u;
}

// Significand with hidden bit (in [2^23, 2^24)) and unbiased-by-127 exponent of a finite,
// non-zero f32 given as bits; subnormals are normalised.
struct Unpacked {
    m: u32,
    e: i32,
}

fn unpack_finite(u: u32) -> Unpacked {
    let e = (u >> 23u) & 0xffu;
    let m = u & 0x7fffffu;
    if (e == 0u) {
        let shift = countLeadingZeros(m) - 8u;
        return Unpacked(m << shift, 1 - i32(shift));
    }
    return Unpacked(m | 0x800000u, i32(e));
}

// Assemble sign | value where value = q * 2^(e - 127 - 24), q a 25-bit number in [2^24, 2^25)
// (24 significand bits + one round bit), `sticky` = any non-zero bits below q. Rounds to
// nearest even, handles overflow to inf and gradual underflow.
fn pack_rounded(sign: u32, q: u32, e: i32, sticky_in: bool) -> f32 {
    var sticky = sticky_in;
    if (e >= 1) {
        var mant = q >> 1u;
        let round_bit = (q & 1u) != 0u;
        if (round_bit && (sticky || (mant & 1u) != 0u)) {
            mant = mant + 1u;
        }
        var ee = e;
        if (mant == 0x1000000u) {
            mant = mant >> 1u;
            ee = ee + 1;
        }
        if (ee >= 255) {
            return bitcast<f32>(sign | 0x7f800000u);
        }
        return bitcast<f32>(sign | (u32(ee) << 23u) | (mant & 0x7fffffu));
    }
    // Subnormal result: field = q * 2^(e-2), i.e. shift right by s = 2 - e >= 2.
    let s = u32(2 - e);
    if (s > 26u) {
        return bitcast<f32>(sign);
    }
    var m = q >> s;
    let round_bit = ((q >> (s - 1u)) & 1u) != 0u;
    sticky = sticky || (q & ((1u << (s - 1u)) - 1u)) != 0u;
    if (round_bit && (sticky || (m & 1u) != 0u)) {
        m = m + 1u; // may carry into the smallest normal: the bit pattern is still right
    }
    return bitcast<f32>(sign | m);
}

fn div_rn_bitwise(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let sign = (ua ^ ub) & F32_SIGN;
    let aa = ua & 0x7fffffffu;
    let ab = ub & 0x7fffffffu;
    if (is_nan_bits(ua)) {
        return bitcast<f32>(ua | 0x400000u);
    }
    if (is_nan_bits(ub)) {
        return bitcast<f32>(ub | 0x400000u);
    }
    if (aa == 0x7f800000u) {
        if (ab == 0x7f800000u) {
            return bitcast<f32>(F32_QNAN);
        }
        return bitcast<f32>(sign | 0x7f800000u);
    }
    if (ab == 0x7f800000u) {
        return bitcast<f32>(sign);
    }
    if (ab == 0u) {
        if (aa == 0u) {
            return bitcast<f32>(F32_QNAN);
        }
        return bitcast<f32>(sign | 0x7f800000u);
    }
    if (aa == 0u) {
        return bitcast<f32>(sign);
    }
    let pa = unpack_finite(aa);
    let pb = unpack_finite(ab);
    var r = pa.m;
    var e = pa.e - pb.e + 127;
    if (r < pb.m) {
        r = r << 1u;
        e = e - 1;
    }
    // Restoring division: r/m_b in [1, 2) → 25 quotient bits, the first one always 1.
    var q = 0u;
    for (var i = 0u; i < rt(25u); i = i + 1u) {
        q = q << 1u;
        if (r >= pb.m) {
            r = r - pb.m;
            q = q | 1u;
        }
        r = r << 1u;
    }
    return pack_rounded(sign, q, e, r != 0u);
}

fn sqrt_rn_bitwise(a: f32) -> f32 {
    let u = bitcast<u32>(a);
    if (is_nan_bits(u)) {
        return bitcast<f32>(u | 0x400000u);
    }
    if ((u & 0x7fffffffu) == 0u) {
        return a; // sqrt(±0) = ±0
    }
    if ((u & F32_SIGN) != 0u) {
        return bitcast<f32>(F32_QNAN);
    }
    if (u == 0x7f800000u) {
        return a;
    }
    let p = unpack_finite(u);
    // value = m * 2^(E - 23) with E = e - 127; make E even so the root's exponent is E/2.
    var m = p.m;
    var big_e = p.e - 127;
    if ((big_e & 1) != 0) {
        m = m << 1u;
        big_e = big_e - 1;
    }
    // Radicand R = m << 25 (< 2^50), consumed two bits at a time from the top: pair i (from
    // 24 down to 0) holds R's bits 2i+1..2i, i.e. m's bits 2i-24..2i-25.
    var rem = 0u;
    var root = 0u;
    for (var t = 0u; t < rt(25u); t = t + 1u) {
        let s = 2 * (24 - i32(t)) - 25;
        var pair = 0u;
        if (s >= 0) {
            pair = (m >> u32(s)) & 3u;
        } else if (s == -1) {
            pair = (m << 1u) & 3u;
        }
        rem = (rem << 2u) | pair;
        let trial = (root << 2u) | 1u;
        if (rem >= trial) {
            rem = rem - trial;
            root = (root << 1u) | 1u;
        } else {
            root = root << 1u;
        }
    }
    // root in [2^24, 2^25): sqrt(m * 2^-23) * 2^24.
    return pack_rounded(0u, root, big_e / 2 + 127, rem != 0u);
}

// 64-bit unsigned integers as vec2(low word, high word), for the exact residual checks.
fn wide_mul(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let mid = a0 * b1 + a1 * b0; // both terms < 2^32; their sum may carry
    let mid_carry = select(0u, 0x10000u, mid < a0 * b1);
    let lo = p00 + (mid << 16u);
    let carry = select(0u, 1u, lo < p00);
    return vec2<u32>(lo, a1 * b1 + (mid >> 16u) + mid_carry + carry);
}

// v << s for s < 64.
fn wide_shl(v: u32, s: u32) -> vec2<u32> {
    if (s == 0u) {
        return vec2<u32>(v, 0u);
    }
    if (s < 32u) {
        return vec2<u32>(v << s, v >> (32u - s));
    }
    return vec2<u32>(0u, v << (s - 32u));
}

fn wide_lt(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y < b.y || (a.y == b.y && a.x < b.x);
}

// a - b for a >= b.
fn wide_sub(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

// Whether q is a / b correctly rounded, proven exactly; false also means "not proven" (any
// operand or q not normal, a q of the wrong sign or far off): the caller then takes the bitwise
// path. With a = ma·2^(ea-150), b = mb·2^(eb-150), q = mq·2^(eq-150) and u = ulp(q):
//   a/b − q = (T − P) / (2·mb) · u,   T = 2·ma·2^s, P = 2·mq·mb, s = ea − eb − eq + 150,
// so q is the nearest float iff |T − P| < mb, or = mb (a tie) with mq even. Below a power of two
// (mq = 2^23) the next float down is only u/2 away: there 2·|T − P| <= mb is required.
fn div_is_rn(a: f32, b: f32, q: f32) -> bool {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let uq = bitcast<u32>(q);
    let ea = (ua >> 23u) & 0xffu;
    let eb = (ub >> 23u) & 0xffu;
    let eq = (uq >> 23u) & 0xffu;
    if (ea == 0u || ea == 255u || eb == 0u || eb == 255u || eq == 0u || eq == 255u) {
        return false;
    }
    if (((ua ^ ub ^ uq) & F32_SIGN) != 0u) {
        return false;
    }
    let s = i32(ea) - i32(eb) - i32(eq) + 150;
    if (s < 0 || s > 38) {
        return false;
    }
    let ma = (ua & 0x7fffffu) | 0x800000u;
    let mb = (ub & 0x7fffffu) | 0x800000u;
    let mq = (uq & 0x7fffffu) | 0x800000u;
    let t = wide_shl(2u * ma, u32(s));
    let p = wide_mul(2u * mq, mb);
    let below = wide_lt(t, p); // the exact quotient is below q
    var d: vec2<u32>;
    if (below) {
        d = wide_sub(p, t);
    } else {
        d = wide_sub(t, p);
    }
    if (d.y != 0u || d.x > mb) {
        return false;
    }
    if (below && mq == 0x800000u) {
        return 2u * d.x <= mb; // a tie here goes to q: its significand is even
    }
    return d.x < mb || (mq & 1u) == 0u;
}

fn div_rn(a: f32, b: f32) -> f32 {
    let q = a / b;
    var r = q;
    if (!div_is_rn(a, b, q)) {
        r = div_rn_bitwise(a, b);
    }
    return r;
}

// Whether r is sqrt(a) correctly rounded, proven exactly (false also means "not proven"). With
// a = ma·2^(ea-150), r = mr·2^(er-150) and u = ulp(r), r is the nearest float iff
//   r − u/2 < sqrt(a) < r + u/2  ⟺  (4·mr − 2)² < 16·ma·2^s < (4·mr + 2)²,   s = ea − 2·er + 150
// (a square root is never exactly halfway between two floats). For a power of two r
// (mr = 2^23) the next float down is only u/2 away: the lower bound is then (4·mr − 1)².
fn sqrt_is_rn(a: f32, r: f32) -> bool {
    let ua = bitcast<u32>(a);
    let ur = bitcast<u32>(r);
    let ea = (ua >> 23u) & 0xffu;
    let er = (ur >> 23u) & 0xffu;
    if (((ua | ur) & F32_SIGN) != 0u || ea == 0u || ea == 255u || er == 0u || er == 255u) {
        return false;
    }
    let s = i32(ea) - 2 * i32(er) + 150;
    if (s < 0 || s > 32) {
        return false;
    }
    let ma = (ua & 0x7fffffu) | 0x800000u;
    let mr = (ur & 0x7fffffu) | 0x800000u;
    let x16 = wide_shl(16u * ma, u32(s));
    let lower = 4u * mr - select(2u, 1u, mr == 0x800000u);
    let upper = 4u * mr + 2u;
    return wide_lt(wide_mul(lower, lower), x16) && wide_lt(x16, wide_mul(upper, upper));
}

fn sqrt_rn(a: f32) -> f32 {
    let root = sqrt(a);
    var r = root;
    if (!sqrt_is_rn(a, root)) {
        r = sqrt_rn_bitwise(a);
    }
    return r;
}

fn nearest_int(f: f32) -> i32 {
    let v = opaque(f) + 12582912.0;
    return (bitcast<i32>(v) & 0x007fffff) - 0x00400000;
}

fn round_half_away(x_in: f32) -> f32 {
    let x = opaque(x_in); // x is often a product: keep it out of a fused x*y - t
    let t = trunc(x);
    let frac = abs(x - t); // exact: the fraction of a float is representable
    if (frac >= 0.5) {
        return t + select(-1.0, 1.0, x > 0.0);
    }
    return t;
}

fn c_float_to_int(x: f32) -> i32 {
    if (!(abs(x) < 2147483648.0)) { // NaN fails every comparison
        return bitcast<i32>(0x80000000u);
    }
    return i32(x);
}

fn c_float_to_byte(x: f32) -> u32 {
    return bitcast<u32>(c_float_to_int(x)) & 0xffu;
}

// (int8_t) of a float, sign-extended back to i32.
fn c_float_to_i8(x: f32) -> i32 {
    return (c_float_to_int(x) << 24u) >> 24u;
}

fn f32_to_f16_bits(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    let sign = (u >> 16u) & 0x8000u;
    let e = (u >> 23u) & 0xffu;
    let m = u & 0x7fffffu;
    if (e == 0xffu) {
        // ±inf, or ggml's canonical quiet NaN with the input's sign.
        return sign | select(0x7c00u, 0x7e00u, m != 0u);
    }
    let he = i32(e) - 127 + 15;
    if (he >= 31) {
        return sign | 0x7c00u;
    }
    if (he <= 0) {
        if (he < -10) {
            return sign;
        }
        let mm = m | 0x800000u;
        let shift = u32(14 - he);
        var hm = mm >> shift;
        let round_bit = 1u << (shift - 1u);
        if ((mm & round_bit) != 0u && (mm & (3u * round_bit - 1u)) != 0u) {
            hm = hm + 1u;
        }
        return sign | hm;
    }
    var h = sign | (u32(he) << 10u) | (m >> 13u);
    if ((m & 0x1000u) != 0u && (m & 0x2fffu) != 0u) {
        h = h + 1u; // a carry into the exponent (even up to inf) is the right answer
    }
    return h;
}

fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        if (m == 0u) {
            return bitcast<f32>(sign);
        }
        let k = countLeadingZeros(m) - 21u; // shift that puts the leading 1 at bit 10
        let e32 = 113u - k;
        return bitcast<f32>(sign | (e32 << 23u) | (((m << k) & 0x3ffu) << 13u));
    }
    if (e == 31u) {
        if (m == 0u) {
            return bitcast<f32>(sign | 0x7f800000u);
        }
        return bitcast<f32>(sign | 0x7fc00000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

fn f32_to_bf16_bits(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (u >> 16u) | 64u;
    }
    return (u + (0x7fffu + ((u >> 16u) & 1u))) >> 16u;
}

// The fp16 round trip the CPU does when it stores a scale and reads it back.
fn round_to_f16(x: f32) -> f32 {
    return f16_bits_to_f32(f32_to_f16_bits(x));
}
