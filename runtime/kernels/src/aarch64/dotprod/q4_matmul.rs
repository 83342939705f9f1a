//! The Q4_0 product on interleaved weights ([`Interleaved`]) with `SDOT` by element: one
//! instruction multiplies four weight rows by the same four activations, so a block of four
//! rows is eight `SDOT`s, and the four rows' sums land in one vector, ready to store. The codes
//! stay unsigned (`0..16`); each activation block's bias (`-8 Σ x`) starts its sum instead.

use super::sdot_lane as sdot;
use crate::aarch64::neon::q4_matmul::{block_f32, widen};
use crate::q4_matmul::{Interleaved, Q8Row};
use std::arch::aarch64::*;

/// Weight rows `first..` (a multiple of four) into `out` (`[rows, m]`), Q8_0 activations.
pub(crate) fn rows_q8(w: &Interleaved, first: usize, x: &[Q8Row], out: &mut [f32]) {
    // SAFETY: the dot-product variant is only picked where the CPU has it.
    unsafe { groups(w, first, x, out, group_q8::<4>, group_q8::<1>) }
}

/// Weight rows `first..` (a multiple of four) into `out` (`[rows, m]`), f32 activations in
/// nibble order.
pub(crate) fn rows_f32(w: &Interleaved, first: usize, x: &[&[f32]], out: &mut [f32]) {
    // SAFETY: as `rows_q8`.
    unsafe { groups(w, first, x, out, group_f32::<4>, group_f32::<1>) }
}

/// A group of four weight rows (`codes`, `scales`) against `R` activation rows: `[R]` vectors
/// of the four rows' sums.
type Group<X, const R: usize> = unsafe fn(&[[u8; 64]], &[[f32; 4]], [X; R]) -> [float32x4_t; R];

/// Every group of four weight rows in `out`, against the activation rows four at a time, then
/// one at a time.
#[inline(always)]
unsafe fn groups<X: Copy>(
    w: &Interleaved,
    first: usize,
    x: &[X],
    out: &mut [f32],
    four: Group<X, 4>,
    one: Group<X, 1>,
) {
    let (m, per_row) = (x.len(), w.per_row);
    for (g, out) in out.chunks_exact_mut(4 * m).enumerate() {
        let span = (first / 4 + g) * per_row..(first / 4 + g + 1) * per_row;
        let (codes, scales) = (&w.codes[span.clone()], &w.scales[span]);
        let mut put = |i: usize, sums: float32x4_t| {
            let mut lanes = [0f32; 4];
            // SAFETY: a 4-float store into a [f32; 4].
            unsafe { vst1q_f32(lanes.as_mut_ptr(), sums) };
            for (r, v) in lanes.into_iter().enumerate() {
                out[r * m + i] = v;
            }
        };
        let whole = m / 4 * 4;
        for i in (0..whole).step_by(4) {
            // SAFETY: the caller's CPU runs `four`.
            let sums = unsafe { four(codes, scales, std::array::from_fn(|j| x[i + j])) };
            for (j, s) in sums.into_iter().enumerate() {
                put(i + j, s);
            }
        }
        for (i, &x) in x.iter().enumerate().skip(whole) {
            // SAFETY: as above.
            put(i, unsafe { one(codes, scales, [x]) }[0]);
        }
    }
}

#[target_feature(enable = "dotprod")]
unsafe fn group_q8<const R: usize>(
    codes: &[[u8; 64]],
    scales: &[[f32; 4]],
    xs: [Q8Row; R],
) -> [float32x4_t; R] {
    let mut acc = [vdupq_n_f32(0.0); R];
    let mask = vdupq_n_u8(15);
    // Checked once here, so that the loop reads each row's blocks unchecked (bounds checks
    // were a fifth of a decode step's instructions).
    let n = codes.len().min(scales.len());
    assert!(xs
        .iter()
        .all(|x| x.codes.len() >= n && x.scales.len() >= n && x.biases.len() >= n));
    for (b, (c, d)) in codes.iter().zip(scales).enumerate() {
        // SAFETY: 64 bytes from a [u8; 64], 4 floats from a [f32; 4].
        let (c, d) = unsafe { (vld1q_u8_x4(c.as_ptr()), vld1q_f32(d.as_ptr())) };
        let lo = [c.0, c.1, c.2, c.3].map(|v| vandq_u8(v, mask));
        let hi = [c.0, c.1, c.2, c.3].map(|v| vshrq_n_u8::<4>(v));
        for (acc, x) in acc.iter_mut().zip(&xs) {
            // SAFETY: `b < n`, within each row's blocks (asserted above); two 16-byte loads
            // from an [i8; 32].
            let (xlo, xhi, bias, dx) = unsafe {
                let p = x.codes.get_unchecked(b).as_ptr();
                let (bias, dx) = (*x.biases.get_unchecked(b), *x.scales.get_unchecked(b));
                (vld1q_s8(p), vld1q_s8(p.add(16)), bias, dx)
            };
            let mut s = vdupq_n_s32(bias);
            s = sdot::<0>(s, lo[0], xlo);
            s = sdot::<0>(s, hi[0], xhi);
            s = sdot::<1>(s, lo[1], xlo);
            s = sdot::<1>(s, hi[1], xhi);
            s = sdot::<2>(s, lo[2], xlo);
            s = sdot::<2>(s, hi[2], xhi);
            s = sdot::<3>(s, lo[3], xlo);
            s = sdot::<3>(s, hi[3], xhi);
            *acc = vfmaq_f32(*acc, vcvtq_f32_s32(s), vmulq_n_f32(d, dx));
        }
    }
    acc
}

/// f32 activations: each block's four rows taken back out of the interleave (a 4×4
/// transpose of 32-bit lanes), widened, and multiplied as NEON's row kernel does.
#[target_feature(enable = "dotprod")]
unsafe fn group_f32<const R: usize>(
    codes: &[[u8; 64]],
    scales: &[[f32; 4]],
    xs: [&[f32]; R],
) -> [float32x4_t; R] {
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    for (b, (c, d)) in codes.iter().zip(scales).enumerate() {
        // SAFETY: 64 bytes from a [u8; 64].
        let c = unsafe { vld1q_u8_x4(c.as_ptr()) };
        let [c0, c1, c2, c3] = [c.0, c.1, c.2, c.3].map(|v| vreinterpretq_u32_u8(v));
        let (t0, t1) = (vtrn1q_u32(c0, c1), vtrn2q_u32(c0, c1));
        let (t2, t3) = (vtrn1q_u32(c2, c3), vtrn2q_u32(c2, c3));
        let u64s = |v: uint32x4_t| vreinterpretq_u64_u32(v);
        let rows = [
            vtrn1q_u64(u64s(t0), u64s(t2)),
            vtrn1q_u64(u64s(t1), u64s(t3)),
            vtrn2q_u64(u64s(t0), u64s(t2)),
            vtrn2q_u64(u64s(t1), u64s(t3)),
        ]
        .map(|v| widen(vreinterpretq_u8_u64(v)));
        for (acc, x) in acc.iter_mut().zip(xs) {
            let x = &x[b * 32..][..32];
            for (r, row) in rows.iter().enumerate() {
                acc[r] = vfmaq_n_f32(acc[r], block_f32(row, x), d[r]);
            }
        }
    }
    acc.map(|[a, b, c, d]| {
        // The four rows' totals, one lane each.
        vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d))
    })
}
