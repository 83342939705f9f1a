//! The decoder attention's loops compiled for AVX2, and f16 caches widened in registers.

use std::arch::x86_64::*;

use half::f16;

use crate::cached_attention::{attend_on, Head};

/// [`crate::cached_attention::attend`] on f16 rows, eight lanes at a time (`query.len()` a multiple of 8).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attend_f16(
    head: Head<f16>,
    query: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = query.len();
    let (keys, values) = (head.keys.as_ptr(), head.values.as_ptr());
    assert!(head.keys.len() >= scores.len() * d && head.values.len() >= scores.len() * d);
    let q = query.as_ptr();
    let mut max = f32::NEG_INFINITY;
    for (j, score) in scores.iter_mut().enumerate() {
        // SAFETY: row `j` of `d` is within the keys (asserted), lanes `c..c + 8` within it.
        let dot = unsafe {
            let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let row = keys.add(j * d);
            let mut c = 0;
            while c + 16 <= d {
                let k0 = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c).cast()));
                let k1 = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c + 8).cast()));
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c)), k0, a);
                b = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c + 8)), k1, b);
                c += 16;
            }
            if c < d {
                let k = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c).cast()));
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c)), k, a);
            }
            sum(_mm256_add_ps(a, b))
        };
        *score = head.scale * dot;
        max = max.max(*score);
    }
    let mut total = 0f32;
    for score in scores.iter_mut() {
        *score = (*score - max).exp();
        total += *score;
    }
    out.fill(0.0);
    let o = out.as_mut_ptr();
    for (j, &w) in scores.iter().enumerate() {
        // SAFETY: row `j` of `d` is within the values (asserted); `out` holds `d`.
        unsafe {
            let (w, row) = (_mm256_set1_ps(w / total), values.add(j * d));
            for c in (0..d).step_by(8) {
                let v = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c).cast()));
                let acc = _mm256_fmadd_ps(w, v, _mm256_loadu_ps(o.add(c)));
                _mm256_storeu_ps(o.add(c), acc);
            }
        }
    }
}

/// The sum of the eight lanes.
#[target_feature(enable = "avx2")]
fn sum(x: __m256) -> f32 {
    let x = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps(x, x, 1)))
}

/// [`crate::cached_attention::attend`] compiled for AVX2: twice as wide as the baseline's SSE2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn attend(head: Head, query: &[f32], scores: &mut [f32], out: &mut [f32]) {
    attend_on(head, query, scores, out)
}
