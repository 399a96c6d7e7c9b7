//! The one seeded generator: SplitMix64, with the uniform and normal draws synthetic models,
//! GPU canaries, benchmarks and tests use. Deterministic everywhere, no dependency, and stable:
//! committed goldens are made from its streams, so its arithmetic must never change.

/// SplitMix64 (Steele, Lea and Flood 2014).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in (0, 1], 53 bits: never zero, so its logarithm is finite.
    pub fn uniform_nonzero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller on [`Rng::uniform`], the first draw clamped away from 0).
    pub fn gauss(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Standard normal as f32 (Box–Muller on [`Rng::uniform_nonzero`]); the stream synthetic
    /// models are drawn from.
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform_nonzero(), self.uniform_nonzero());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_stream_is_splitmix64() {
        // First outputs of SplitMix64 from seed 0 (the reference implementation's values).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn uniform_nonzero_is_never_zero() {
        let mut r = Rng::new(7);
        assert!((0..10_000).all(|_| r.uniform_nonzero() > 0.0));
    }
}
