//! NEON kernel for a vision tower's attention ([`crate::vision_attention`]), every aarch64 CPU.
//!
//! The x86 kernels' scheme on four-lane vectors, with ARM's multiply-add by element (`FMLA
//! v.4s, v.4s, v.s[l]`): the head's keys packed into panels of four keys, and a tile of four
//! queries takes four depth steps against four panels from one vector of each query, 64
//! multiply-adds for 20 loads; the weighted values likewise take four scores from one vector.
//! Depths, keys and value columns are padded to four with zeros, so no loop has a tail.

use crate::vision_attention::{Sizes, Work};
use std::arch::aarch64::*;

/// Lanes a vector, keys a panel.
const LANES: usize = 4;
/// Queries a tile.
const ROWS: usize = 4;
/// Panels (score columns) or value vectors a step.
const WIDE: usize = 4;

/// A head's operands padded for the kernel: queries `[s, d4]`, keys in panels of four
/// (`[panels, d4, 4]`: key `4p + l` at depth `c` is `keys[(p · d4 + c) · 4 + l]`), values
/// `[width, e4]`; zeros in the padding.
struct Packed<'a> {
    q: &'a [f32],
    keys: &'a [f32],
    v: &'a [f32],
    n: Sizes,
    d4: usize,
    e4: usize,
    panels: usize,
    /// Score row length: the keys rounded up to a panel.
    width: usize,
}

/// [`crate::vision_attention`]'s `head` on NEON: `out` (`[s, e]`) `= softmax(q kᵀ) v` of
/// `work`'s `[s, d]` queries, `[t, d]` keys and `[t, e]` values.
pub(crate) fn head(work: &mut Work, n: Sizes, out: &mut [f32]) {
    let Sizes { s, t, d, e } = n;
    assert!(work.q.len() >= s * d && work.k.len() >= t * d && work.v.len() >= t * e);
    assert!(out.len() >= s * e);
    let (d4, e4) = (d.next_multiple_of(LANES), e.next_multiple_of(LANES));
    let panels = t.div_ceil(LANES);
    let width = panels * LANES;
    work.scratch.clear();
    work.scratch.resize(
        s * d4 + panels * d4 * LANES + width * e4 + ROWS * width,
        0.0,
    );
    let (q, rest) = work.scratch.split_at_mut(s * d4);
    let (keys, rest) = rest.split_at_mut(panels * d4 * LANES);
    let (v, scores) = rest.split_at_mut(width * e4);
    for (row, query) in q.chunks_exact_mut(d4).zip(work.q.chunks_exact(d)) {
        row[..d].copy_from_slice(query);
    }
    for (j, key) in work.k.chunks_exact(d).take(t).enumerate() {
        let (p, l) = (j / LANES, j % LANES);
        for (c, &x) in key.iter().enumerate() {
            keys[(p * d4 + c) * LANES + l] = x;
        }
    }
    for (row, value) in v.chunks_exact_mut(e4).zip(work.v.chunks_exact(e)).take(t) {
        row[..e].copy_from_slice(value);
    }
    let at = Packed {
        q,
        keys,
        v,
        n,
        d4,
        e4,
        panels,
        width,
    };
    let mut i = 0;
    while i < s {
        let r = (s - i).min(ROWS);
        // SAFETY: NEON is in every aarch64 CPU; rows `i..i + r` exist, `scores` holds `ROWS`
        // rows of `width`, `out` `s · e` elements (asserted above).
        unsafe {
            match r {
                4 => run::<4>(&at, i, scores, out),
                3 => run::<3>(&at, i, scores, out),
                2 => run::<2>(&at, i, scores, out),
                _ => run::<1>(&at, i, scores, out),
            }
        }
        i += r;
    }
}

/// Queries `i..i + R`: scores, softmax, weighted values into `out`.
///
/// # Safety
/// As [`head`] checked: query rows `i..i + R` exist, `scores` holds `R` rows of `width`,
/// `out` rows `i..i + R` of `e`.
#[target_feature(enable = "neon")]
unsafe fn run<const R: usize>(at: &Packed, i: usize, scores: &mut [f32], out: &mut [f32]) {
    let s = scores[..R * at.width].as_mut_ptr();
    let mut p = 0;
    while p < at.panels {
        let step = (at.panels - p).min(WIDE);
        // SAFETY: panels `p..p + step` exist; `scores` rows are `width` long.
        unsafe {
            match step {
                4 => key_scores::<R, 4>(at, i, p, s),
                3 => key_scores::<R, 3>(at, i, p, s),
                2 => key_scores::<R, 2>(at, i, p, s),
                _ => key_scores::<R, 1>(at, i, p, s),
            }
        }
        p += step;
    }
    let mut inverse = [0f32; R];
    for (r, inverse) in inverse.iter_mut().enumerate() {
        // SAFETY: row `r` of `scores` is `width` long.
        *inverse = unsafe { softmax(s.add(r * at.width), at.n.t, at.width) };
    }
    let vectors = at.e4 / LANES;
    let out = &mut out[i * at.n.e..][..R * at.n.e];
    let mut c = 0;
    while c < vectors {
        let step = (vectors - c).min(WIDE);
        // SAFETY: value vectors `c..c + step` are within the padded rows of `e4`.
        unsafe {
            match step {
                4 => weighted_values::<R, 4>(at, s, c, &inverse, out),
                3 => weighted_values::<R, 3>(at, s, c, &inverse, out),
                2 => weighted_values::<R, 2>(at, s, c, &inverse, out),
                _ => weighted_values::<R, 1>(at, s, c, &inverse, out),
            }
        }
        c += step;
    }
}

/// `acc[r][j] += k[j] · q[r][L]` for one depth step: panel `j`'s four keys at depth `c + L`,
/// query `r`'s element from lane `L` of its vector.
#[inline(always)]
unsafe fn depth_step<const L: i32, const R: usize, const P: usize>(
    acc: &mut [[float32x4_t; P]; R],
    panels: *const f32,
    d4: usize,
    c: usize,
    q: &[float32x4_t; R],
) {
    // SAFETY: the caller's panels hold depth `c + L` (`c + L < d4`).
    let k: [float32x4_t; P] = std::array::from_fn(|j| unsafe {
        vld1q_f32(panels.add((j * d4 + c + L as usize) * LANES))
    });
    for (acc, q) in acc.iter_mut().zip(q) {
        for (acc, &k) in acc.iter_mut().zip(&k) {
            *acc = vfmaq_laneq_f32::<L>(*acc, k, *q);
        }
    }
}

/// Scores of queries `i..i + R` against panels `p..p + P`, into `s` (rows of `width`).
#[target_feature(enable = "neon")]
unsafe fn key_scores<const R: usize, const P: usize>(at: &Packed, i: usize, p: usize, s: *mut f32) {
    let d4 = at.d4;
    let mut acc = [[vdupq_n_f32(0.0); P]; R];
    let q = at.q[i * d4..][..R * d4].as_ptr();
    let panels = at.keys[p * d4 * LANES..][..P * d4 * LANES].as_ptr();
    for c in (0..d4).step_by(LANES) {
        // SAFETY: query rows `0..R` hold `d4`, the panels `d4` depths (sliced above).
        unsafe {
            let qv: [float32x4_t; R] = std::array::from_fn(|r| vld1q_f32(q.add(r * d4 + c)));
            depth_step::<0, R, P>(&mut acc, panels, d4, c, &qv);
            depth_step::<1, R, P>(&mut acc, panels, d4, c, &qv);
            depth_step::<2, R, P>(&mut acc, panels, d4, c, &qv);
            depth_step::<3, R, P>(&mut acc, panels, d4, c, &qv);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: row `r`, panel `p + j` lie within the caller's score rows.
            unsafe { vst1q_f32(s.add(r * at.width + (p + j) * LANES), *acc) };
        }
    }
}

/// `acc[r][m] += v[key j + L][vector c + m] · w[r][L]`: one key's value vectors, each row's
/// score from lane `L` of its vector.
#[inline(always)]
unsafe fn value_step<const L: i32, const R: usize, const C: usize>(
    acc: &mut [[float32x4_t; C]; R],
    values: *const f32,
    e4: usize,
    j: usize,
    w: &[float32x4_t; R],
) {
    // SAFETY: the caller's values hold row `j + L` (`j + L < width`).
    let x: [float32x4_t; C] = std::array::from_fn(|m| unsafe {
        vld1q_f32(values.add((j + L as usize) * e4 + m * LANES))
    });
    for (acc, w) in acc.iter_mut().zip(w) {
        for (acc, &x) in acc.iter_mut().zip(&x) {
            *acc = vfmaq_laneq_f32::<L>(*acc, x, *w);
        }
    }
}

/// `out` rows `0..R`, value vectors `c..c + C`: the scores' weighted values, times each row's
/// `inverse` sum; the last vector of a row of `e` off the four lanes through a copy.
#[target_feature(enable = "neon")]
unsafe fn weighted_values<const R: usize, const C: usize>(
    at: &Packed,
    s: *const f32,
    c: usize,
    inverse: &[f32; R],
    out: &mut [f32],
) {
    let (e, e4, width) = (at.n.e, at.e4, at.width);
    let mut acc = [[vdupq_n_f32(0.0); C]; R];
    let values = at.v[c * LANES..].as_ptr();
    for j in (0..width).step_by(LANES) {
        // SAFETY: score rows `0..R` are `width` long; value rows `j..j + 4` exist (`width`
        // rows) and hold vectors `c..c + C` (`e4` columns).
        unsafe {
            let w: [float32x4_t; R] = std::array::from_fn(|r| vld1q_f32(s.add(r * width + j)));
            value_step::<0, R, C>(&mut acc, values, e4, j, &w);
            value_step::<1, R, C>(&mut acc, values, e4, j, &w);
            value_step::<2, R, C>(&mut acc, values, e4, j, &w);
            value_step::<3, R, C>(&mut acc, values, e4, j, &w);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (m, acc) in acc.iter().enumerate() {
            let col = (c + m) * LANES;
            let mut lanes = [0f32; LANES];
            // SAFETY: a four-float store into a [f32; 4].
            unsafe { vst1q_f32(lanes.as_mut_ptr(), vmulq_n_f32(*acc, inverse[r])) };
            let n = (e - col).min(LANES);
            out[r * e + col..][..n].copy_from_slice(&lanes[..n]);
        }
    }
}

/// The first `t` of the `width` scores at `row` turned into `exp(x - max)`, the rest into 0;
/// returns one over their sum.
#[target_feature(enable = "neon")]
unsafe fn softmax(row: *mut f32, t: usize, width: usize) -> f32 {
    let index = vld1q_u32([0u32, 1, 2, 3].as_ptr());
    // Lanes of the vector at `at` that hold scores.
    let valid = |at: usize| vcltq_u32(index, vdupq_n_u32((t - at).min(LANES) as u32));
    let low = vdupq_n_f32(f32::NEG_INFINITY);
    let mut max = low;
    for at in (0..width).step_by(LANES) {
        // SAFETY: `at + 4 <= width`, within the row.
        let x = unsafe { vld1q_f32(row.add(at)) };
        max = vmaxq_f32(max, vbslq_f32(valid(at), x, low));
    }
    let max = vdupq_n_f32(vmaxvq_f32(max));
    let mut sum = vdupq_n_f32(0.0);
    for at in (0..width).step_by(LANES) {
        // SAFETY: as above.
        unsafe {
            let x = exp(vsubq_f32(vld1q_f32(row.add(at)), max));
            let x = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(x), valid(at)));
            vst1q_f32(row.add(at), x);
            sum = vaddq_f32(sum, x);
        }
    }
    1.0 / vaddvq_f32(sum)
}

/// `eˣ` for `x ≤ 0` on four lanes, as the x86 kernels compute it: `x = n ln 2 + r`, a
/// degree-6 polynomial in `r`, `2ⁿ` (`n ≥ -126`, a normal number) built in the exponent bits.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn exp(x: float32x4_t) -> float32x4_t {
    let x = vmaxq_f32(vdupq_n_f32(-87.0), x); // NaN stays NaN
    let n = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
    let r = vfmsq_n_f32(x, n, 0.693_359_4);
    let r = vfmsq_n_f32(r, n, -2.121_944_4e-4);
    let mut p = vdupq_n_f32(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let bits = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(p, vreinterpretq_f32_s32(bits))
}
