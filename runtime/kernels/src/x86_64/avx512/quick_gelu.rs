//! Quick GELU on sixteen lanes ([`crate::quick_gelu`]).

use std::arch::x86_64::*;

/// `x · sigmoid(α x)` sixteen lanes at a time: `e = exp(-|α x|)` (never overflows),
/// `sigmoid = 1 / (1 + e)` for `α x ≥ 0`, `e / (1 + e)` below.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn apply(alpha: f32, xs: &mut [f32]) {
    let (a, one) = (_mm512_set1_ps(alpha), _mm512_set1_ps(1.0));
    let sign = _mm512_set1_epi32(i32::MIN);
    for chunk in xs.chunks_mut(16) {
        let mask = ((1u32 << chunk.len()) - 1) as __mmask16;
        let at = chunk.as_mut_ptr();
        let x = _mm512_maskz_loadu_ps(mask, at);
        let z = _mm512_mul_ps(a, x);
        // -|z|: the sign bit set.
        let negative = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(z), sign));
        let e = crate::x86_64::avx512::vision_attention::exp(negative);
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z, _mm512_setzero_ps());
        let numerator = _mm512_mask_blend_ps(below, one, e);
        let sigmoid = _mm512_div_ps(numerator, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(at, mask, _mm512_mul_ps(x, sigmoid));
    }
}
