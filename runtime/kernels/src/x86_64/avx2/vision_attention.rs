//! AVX2 + FMA kernel, picked at run time when the CPU has them but not AVX-512.
//!
//! [`crate::x86_64::avx512::vision_attention`]'s scheme on eight-lane vectors: the head's keys packed into panels of
//! eight keys, a tile of up to six queries takes its scores against two panels at a time (12
//! accumulators, one broadcast query element and two loads per depth step), their softmax in
//! place, then the weighted sum of the values two vectors of columns at a time.

use crate::vision_attention::{Keys, Sizes, Work};
use std::arch::x86_64::*;

/// Whether the CPU has the AVX2 parts the kernel uses.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Lanes a vector, keys a panel.
const LANES: usize = 8;
/// Queries a tile.
const ROWS: usize = 6;
/// Panels (score columns) or value vectors a step.
const WIDE: usize = 2;

/// [`crate::vision_attention::head`] on this CPU.
///
/// # Safety
/// The CPU has [`available`]'s features; `work` holds `[s, d]` queries, `[t, d]` keys and
/// `[t, e]` values, `out` `s · e` elements.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn head(work: &mut Work, n: Sizes, out: &mut [f32]) {
    assert!(out.len() >= n.s * n.e);
    let (at, scores) = crate::vision_attention::pack_keys(work, n, LANES, ROWS);
    let mut i = 0;
    while i < n.s {
        let r = (n.s - i).min(ROWS);
        // SAFETY: as the caller promised; rows `i..i + r` exist.
        unsafe {
            match r {
                6 => run::<6>(&at, i, scores, out),
                5 => run::<5>(&at, i, scores, out),
                4 => run::<4>(&at, i, scores, out),
                3 => run::<3>(&at, i, scores, out),
                2 => run::<2>(&at, i, scores, out),
                _ => run::<1>(&at, i, scores, out),
            }
        }
        i += r;
    }
}

/// The lanes below `len` of a vector starting at column `at`, as a `maskload` mask.
#[target_feature(enable = "avx2")]
fn lanes(at: usize, len: usize) -> __m256i {
    let n = (len - at).min(LANES) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Queries `i..i + R`: scores, softmax, weighted values into `out`.
///
/// # Safety
/// As [`head`]'s; `scores` holds `R` rows of `width`.
#[target_feature(enable = "avx2,fma")]
unsafe fn run<const R: usize>(at: &Keys, i: usize, scores: &mut [f32], out: &mut [f32]) {
    let Sizes { t, d, e, .. } = at.n;
    let q = at.q[i * d..][..R * d].as_ptr();
    let s = scores[..R * at.width].as_mut_ptr();
    let mut p = 0;
    while p < at.panels {
        // SAFETY: panels `p..p + P` exist; `scores` rows are `width` long.
        unsafe {
            match at.panels - p >= WIDE {
                true => key_scores::<R, WIDE>(at, q, p, s),
                false => key_scores::<R, 1>(at, q, p, s),
            }
        }
        p += if at.panels - p >= WIDE { WIDE } else { 1 };
    }
    let mut inverse = [0f32; R];
    for (r, inverse) in inverse.iter_mut().enumerate() {
        // SAFETY: row `r` of `scores` is `width` long.
        *inverse = unsafe { softmax(s.add(r * at.width), t) };
    }
    let vectors = e.div_ceil(LANES);
    let out = out[i * e..][..R * e].as_mut_ptr();
    let mut c = 0;
    while c < vectors {
        // SAFETY: value vectors `c..c + C` start inside each row of `e`.
        unsafe {
            match vectors - c >= WIDE {
                true => weighted_values::<R, WIDE>(at, s, c, &inverse, out),
                false => weighted_values::<R, 1>(at, s, c, &inverse, out),
            }
        }
        c += if vectors - c >= WIDE { WIDE } else { 1 };
    }
}

/// Scores of `R` queries (rows of `d` at `q`) against panels `p..p + P`, into `s`.
#[target_feature(enable = "avx2,fma")]
unsafe fn key_scores<const R: usize, const P: usize>(
    at: &Keys,
    q: *const f32,
    p: usize,
    s: *mut f32,
) {
    let d = at.n.d;
    let mut acc = [[_mm256_setzero_ps(); P]; R];
    let panels = at.packed.as_ptr().add(p * d * LANES);
    for c in 0..d {
        let k: [__m256; P] =
            std::array::from_fn(|j| _mm256_loadu_ps(panels.add((j * d + c) * LANES)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_set1_ps(*q.add(r * d + c));
            for (acc, &k) in acc.iter_mut().zip(&k) {
                *acc = _mm256_fmadd_ps(x, k, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(s.add(r * at.width + (p + j) * LANES), *acc);
        }
    }
}

/// `out` rows `0..R`, value vectors `c..c + C`: the scores' weighted values, times each
/// row's `inverse` sum.
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_values<const R: usize, const C: usize>(
    at: &Keys,
    s: *const f32,
    c: usize,
    inverse: &[f32; R],
    out: *mut f32,
) {
    let Sizes { t, e, .. } = at.n;
    let masks: [__m256i; C] = std::array::from_fn(|j| lanes((c + j) * LANES, e));
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let v = at.v.as_ptr().add(c * LANES);
    for j in 0..t {
        let x: [__m256; C] =
            std::array::from_fn(|m| _mm256_maskload_ps(v.add(j * e + m * LANES), masks[m]));
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = _mm256_set1_ps(*s.add(r * at.width + j));
            for (acc, &x) in acc.iter_mut().zip(&x) {
                *acc = _mm256_fmadd_ps(w, x, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let inverse = _mm256_set1_ps(inverse[r]);
        for (m, acc) in acc.iter().enumerate() {
            let at = out.add(r * e + (c + m) * LANES);
            _mm256_maskstore_ps(at, masks[m], _mm256_mul_ps(*acc, inverse));
        }
    }
}

/// The largest of the eight lanes of `x`.
#[target_feature(enable = "avx2")]
fn max_across(x: __m256) -> f32 {
    let x = _mm256_max_ps(x, _mm256_permute2f128_ps::<1>(x, x));
    let x = _mm256_max_ps(x, _mm256_shuffle_ps::<0b01_00_11_10>(x, x));
    let x = _mm256_max_ps(x, _mm256_shuffle_ps::<0b10_11_00_01>(x, x));
    _mm256_cvtss_f32(x)
}

/// The sum of the eight lanes of `x`.
#[target_feature(enable = "avx2")]
fn sum_across(x: __m256) -> f32 {
    let x = _mm256_add_ps(x, _mm256_permute2f128_ps::<1>(x, x));
    let x = _mm256_add_ps(x, _mm256_shuffle_ps::<0b01_00_11_10>(x, x));
    let x = _mm256_add_ps(x, _mm256_shuffle_ps::<0b10_11_00_01>(x, x));
    _mm256_cvtss_f32(x)
}

/// The first `t` scores at `row` (of `t` rounded up to 8) turned into `exp(x - max)`, the
/// rest into 0; returns one over their sum.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax(row: *mut f32, t: usize) -> f32 {
    let vectors = t.div_ceil(LANES);
    let low = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut max = low;
    for v in 0..vectors {
        let x = _mm256_loadu_ps(row.add(v * LANES));
        let x = _mm256_blendv_ps(low, x, _mm256_castsi256_ps(lanes(v * LANES, t)));
        max = _mm256_max_ps(max, x);
    }
    let max = _mm256_set1_ps(max_across(max));
    let mut sum = _mm256_setzero_ps();
    for v in 0..vectors {
        let at = row.add(v * LANES);
        let x = exp(_mm256_sub_ps(_mm256_loadu_ps(at), max));
        let x = _mm256_and_ps(x, _mm256_castsi256_ps(lanes(v * LANES, t)));
        _mm256_storeu_ps(at, x);
        sum = _mm256_add_ps(sum, x);
    }
    1.0 / sum_across(sum)
}

/// [`crate::x86_64::avx512::vision_attention::exp`] on eight lanes: `eˣ` for `x ≤ 0`, the same reduction and
/// polynomial; `2ⁿ` (`n ≥ -126`, a normal number) built in the exponent bits.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn exp(x: __m256) -> __m256 {
    let x = _mm256_max_ps(_mm256_set1_ps(-87.0), x); // NaN (second) passes
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
}
