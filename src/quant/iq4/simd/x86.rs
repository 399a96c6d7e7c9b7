//! `TableLanes` for the x86-64 tokens: a 16-entry lookup (AVX-512: one `vpermps` over a zmm;
//! AVX2: two 8-entry `vpermps` and a blend on bit 3 of the index) and the unordered `!(a < b)`.

// The AVX-512 intrinsics are stable since Rust 1.89, above the declared rust-version (see the
// K-quants' x86 module).
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::TableLanes;
use crate::quant::kquants::simd::x86::{Avx2, Avx512};

// SAFETY (all `unsafe` blocks below): the token's existence proves the CPU supports the
// instructions; they only read registers.
impl TableLanes for Avx2 {
    type Table = (__m256, __m256);

    #[inline(always)]
    fn table(self, t: &[f32; 16]) -> (__m256, __m256) {
        unsafe {
            (
                _mm256_loadu_ps(t.as_ptr()),
                _mm256_loadu_ps(t.as_ptr().add(8)),
            )
        }
    }
    #[inline(always)]
    fn lookup(self, t: (__m256, __m256), idx: __m256i) -> __m256 {
        unsafe {
            let lo = _mm256_permutevar8x32_ps(t.0, idx);
            let hi = _mm256_permutevar8x32_ps(t.1, idx);
            // Bit 3 of the index moved to the sign bit, which is what blendv reads.
            let upper = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx));
            _mm256_blendv_ps(lo, hi, upper)
        }
    }
    #[inline(always)]
    fn not_lt(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_cmp_ps::<_CMP_NLT_UQ>(a, b) }
    }
}

impl TableLanes for Avx512 {
    type Table = __m512;

    #[inline(always)]
    fn table(self, t: &[f32; 16]) -> __m512 {
        unsafe { _mm512_loadu_ps(t.as_ptr()) }
    }
    #[inline(always)]
    fn lookup(self, t: __m512, idx: __m512i) -> __m512 {
        unsafe { _mm512_permutexvar_ps(idx, t) }
    }
    #[inline(always)]
    fn not_lt(self, a: __m512, b: __m512) -> __mmask16 {
        unsafe { _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(a, b) }
    }
}
