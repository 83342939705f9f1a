//! Quick GELU on eight lanes ([`crate::quick_gelu`]).

use std::arch::x86_64::*;

/// [`crate::x86_64::avx512::quick_gelu::apply`] eight lanes at a time; the last part-vector through a copy.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn apply(alpha: f32, xs: &mut [f32]) {
    let (a, one) = (_mm256_set1_ps(alpha), _mm256_set1_ps(1.0));
    let sign = _mm256_set1_ps(-0.0);
    let eight = |x: __m256| {
        let z = _mm256_mul_ps(a, x);
        let e = crate::x86_64::avx2::vision_attention::exp(_mm256_or_ps(z, sign));
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(z, _mm256_setzero_ps());
        let numerator = _mm256_blendv_ps(one, e, below);
        _mm256_mul_ps(x, _mm256_div_ps(numerator, _mm256_add_ps(one, e)))
    };
    let mut chunks = xs.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let at = chunk.as_mut_ptr();
        _mm256_storeu_ps(at, eight(_mm256_loadu_ps(at)));
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut buf = [0f32; 8];
        buf[..tail.len()].copy_from_slice(tail);
        _mm256_storeu_ps(buf.as_mut_ptr(), eight(_mm256_loadu_ps(buf.as_ptr())));
        tail.copy_from_slice(&buf[..tail.len()]);
    }
}
