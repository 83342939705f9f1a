//! AVX-512 kernel, picked at run time when the CPU has it.
//!
//! The head's keys are packed into panels of sixteen keys, `d` vectors each (key `16p + l`,
//! depth `c` at lane `l` of vector `c` of panel `p`). A tile of up to six queries takes its
//! scores against four panels at a time (24 accumulators, one broadcast query element and four
//! loads per depth step), their softmax in place, then the weighted sum of the values four
//! vectors of columns at a time (24 accumulators again, one broadcast weight and four value
//! loads per key).

use crate::vision_attention::{Keys, Sizes, Work};
use std::arch::x86_64::*;

/// Whether the CPU has the AVX-512 parts the kernel uses.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Lanes a vector, keys a panel.
const LANES: usize = 16;
/// Queries a tile.
const ROWS: usize = 6;
/// Panels (score columns) or value vectors a step.
const WIDE: usize = 4;

/// [`crate::vision_attention::head`] on this CPU.
///
/// # Safety
/// The CPU has [`available`]'s features; `work` holds `[s, d]` queries, `[t, d]` keys and
/// `[t, e]` values, `out` `s · e` elements.
#[target_feature(enable = "avx512f")]
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

/// The lanes below `len` of a vector starting at column `at`.
fn lanes(at: usize, len: usize) -> __mmask16 {
    let n = (len - at).min(LANES);
    ((1u32 << n) - 1) as __mmask16
}

/// Queries `i..i + R`: scores, softmax, weighted values into `out`.
///
/// # Safety
/// As [`head`]'s; `scores` holds `R` rows of `width`.
#[target_feature(enable = "avx512f")]
unsafe fn run<const R: usize>(at: &Keys, i: usize, scores: &mut [f32], out: &mut [f32]) {
    let Sizes { t, d, e, .. } = at.n;
    let q = at.q[i * d..][..R * d].as_ptr();
    let s = scores.as_mut_ptr();
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
#[target_feature(enable = "avx512f")]
unsafe fn key_scores<const R: usize, const P: usize>(
    at: &Keys,
    q: *const f32,
    p: usize,
    s: *mut f32,
) {
    let d = at.n.d;
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let panels = at.packed.as_ptr().add(p * d * LANES);
    for c in 0..d {
        let k: [__m512; P] =
            std::array::from_fn(|j| _mm512_loadu_ps(panels.add((j * d + c) * LANES)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*q.add(r * d + c));
            for (acc, &k) in acc.iter_mut().zip(&k) {
                *acc = _mm512_fmadd_ps(x, k, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(s.add(r * at.width + (p + j) * LANES), *acc);
        }
    }
}

/// `out` rows `0..R`, value vectors `c..c + C`: the scores' weighted values, times each
/// row's `inverse` sum.
#[target_feature(enable = "avx512f")]
unsafe fn weighted_values<const R: usize, const C: usize>(
    at: &Keys,
    s: *const f32,
    c: usize,
    inverse: &[f32; R],
    out: *mut f32,
) {
    let Sizes { t, e, .. } = at.n;
    let masks: [__mmask16; C] = std::array::from_fn(|j| lanes((c + j) * LANES, e));
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let v = at.v.as_ptr().add(c * LANES);
    for j in 0..t {
        let x: [__m512; C] =
            std::array::from_fn(|m| _mm512_maskz_loadu_ps(masks[m], v.add(j * e + m * LANES)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*s.add(r * at.width + j));
            for (acc, &x) in acc.iter_mut().zip(&x) {
                *acc = _mm512_fmadd_ps(w, x, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let inverse = _mm512_set1_ps(inverse[r]);
        for (m, acc) in acc.iter().enumerate() {
            let at = out.add(r * e + (c + m) * LANES);
            _mm512_mask_storeu_ps(at, masks[m], _mm512_mul_ps(*acc, inverse));
        }
    }
}

/// The first `t` scores at `row` (of `t` rounded up to 16) turned into `exp(x - max)`, the
/// rest into 0; returns one over their sum.
#[target_feature(enable = "avx512f")]
unsafe fn softmax(row: *mut f32, t: usize) -> f32 {
    let vectors = t.div_ceil(LANES);
    let low = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut max = low;
    for v in 0..vectors {
        let x = _mm512_mask_loadu_ps(low, lanes(v * LANES, t), row.add(v * LANES));
        max = _mm512_max_ps(max, x);
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let mut sum = _mm512_setzero_ps();
    for v in 0..vectors {
        let at = row.add(v * LANES);
        let x = exp(_mm512_sub_ps(_mm512_loadu_ps(at), max));
        let x = _mm512_maskz_mov_ps(lanes(v * LANES, t), x);
        _mm512_storeu_ps(at, x);
        sum = _mm512_add_ps(sum, x);
    }
    1.0 / _mm512_reduce_add_ps(sum)
}

/// `eˣ` for `x ≤ 0` (scores less their maximum): `x = n ln 2 + r`, `|r| ≤ ln 2 / 2`, `eʳ` by
/// its Taylor polynomial to `r⁶` (the next term < 1.2e-7 relative), scaled by `2ⁿ`.
/// Below -87 (`e⁻⁸⁷` ≈ 1.6e-38) it is taken as `e⁻⁸⁷`; NaN stays NaN.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_set1_ps(-87.0), x); // NaN (second) passes
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    // ln 2 in two parts, the first exact in few bits, so `n · hi` is exact (Cody and Waite).
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}
