//! The Q4_0 product on interleaved weights ([`Interleaved`]) with `SDOT` by element: one
//! instruction multiplies four weight rows by the same four activations, so a block of four
//! rows is eight `SDOT`s, and the four rows' sums land in one vector, ready to store. The codes
//! stay unsigned (`0..16`); each activation block's bias (`-8 Σ x`) starts its sum instead.
//!
//! Q8_0 activations go four rows at a time, their blocks re-laid so that one block of the four
//! rows (codes, scales, biases) is one run of memory ([`Q8Four`]): three loads a block for the
//! four rows. The sums go straight into the `[m, n]` output, four weight rows a store.

use super::sdot_lane as sdot;
use crate::aarch64::neon::q4_matmul::{block_f32, widen};
use crate::q4_matmul::{Interleaved, Q8Row, BLOCK};
use std::arch::aarch64::*;
use std::ops::Range;

/// Block `b` of four activation rows: their codes (32 a row), scales and biases, together.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub(crate) struct Q8Four {
    codes: [[i8; BLOCK]; 4],
    scales: [f32; 4],
    biases: [i32; 4],
}

/// `x`'s rows in fours ([`Q8Four`]), `per_row` blocks each; the rows past the last four left
/// out (they go one by one).
pub(crate) fn q8_fours(x: &[Q8Row], per_row: usize) -> Vec<Q8Four> {
    x.chunks_exact(4)
        .flat_map(|rows| {
            (0..per_row).map(move |b| Q8Four {
                codes: std::array::from_fn(|r| rows[r].codes[b]),
                scales: std::array::from_fn(|r| rows[r].scales[b]),
                biases: std::array::from_fn(|r| rows[r].biases[b]),
            })
        })
        .collect()
}

/// The weight's row groups `groups` (four rows each) against every activation row `x` (`fours`
/// being [`q8_fours`] of them), into `y`, the `[m, n]` output (row stride `n`).
///
/// # Safety
/// `y` points to `x.len() · n` floats, this call the only one writing columns `4 · groups`;
/// the CPU has the dot product.
#[target_feature(enable = "dotprod")]
pub(crate) unsafe fn rows_q8(
    w: &Interleaved,
    groups: Range<usize>,
    x: &[Q8Row],
    fours: &[Q8Four],
    y: *mut f32,
    n: usize,
) {
    let (m, per_row) = (x.len(), w.per_row);
    let whole = m / 4;
    // Checked once here, so that the loops read each row's blocks unchecked.
    assert!(groups.end * per_row <= w.codes.len().min(w.scales.len()) && 4 * groups.end <= n);
    assert!(fours.len() == whole * per_row);
    assert!(x.iter().all(|x| {
        x.codes.len() >= per_row && x.scales.len() >= per_row && x.biases.len() >= per_row
    }));
    for g in groups {
        let codes = &w.codes[g * per_row..][..per_row];
        let scales = &w.scales[g * per_row..][..per_row];
        for t in 0..whole {
            // SAFETY: `per_row` blocks from `t · per_row` (asserted).
            let sums = unsafe { four_q8(codes, scales, fours.as_ptr().add(t * per_row)) };
            for (j, sums) in sums.into_iter().enumerate() {
                // SAFETY: row `4t + j < m`, columns `4g..4g + 4` (this call's) of `n`.
                unsafe { vst1q_f32(y.add((4 * t + j) * n + 4 * g), sums) };
            }
        }
        for (i, x) in x.iter().enumerate().skip(4 * whole) {
            // SAFETY: as above; `x` has `per_row` blocks (asserted).
            unsafe { vst1q_f32(y.add(i * n + 4 * g), one_q8(codes, scales, x)) };
        }
    }
}

/// Four weight rows' `codes` and `scales` against four activation rows (`per_row` blocks of
/// [`Q8Four`] at `x`): for each activation row, the four weight rows' sums.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn four_q8(codes: &[[u8; 64]], scales: &[[f32; 4]], x: *const Q8Four) -> [float32x4_t; 4] {
    let mut acc = [vdupq_n_f32(0.0); 4];
    for (b, (c, d)) in codes.iter().zip(scales).enumerate() {
        // SAFETY: 64 bytes from a [u8; 64], 4 floats from a [f32; 4]; block `b` of the
        // caller's `per_row` at `x`: 128 bytes of codes, then 4 scales and 4 biases.
        let (c, d, xc, dx, bias) = unsafe {
            let x = x.add(b);
            let p = (*x).codes.as_ptr().cast::<i8>();
            (
                vld1q_u8_x4(c.as_ptr()),
                vld1q_f32(d.as_ptr()),
                [vld1q_s8_x4(p), vld1q_s8_x4(p.add(64))],
                vld1q_f32((*x).scales.as_ptr()),
                vld1q_s32((*x).biases.as_ptr()),
            )
        };
        let w = nibbles(c);
        // Row `r`'s codes: its low 16, its high 16.
        let rows = [
            (xc[0].0, xc[0].1),
            (xc[0].2, xc[0].3),
            (xc[1].0, xc[1].1),
            (xc[1].2, xc[1].3),
        ];
        let sum = |bias, x| vcvtq_f32_s32(block_sum(bias, &w, x));
        // Each sum times (weight scale × activation scale), as `one_q8` and llama.cpp round.
        let (b0, b1) = (vdupq_laneq_s32::<0>(bias), vdupq_laneq_s32::<1>(bias));
        let (b2, b3) = (vdupq_laneq_s32::<2>(bias), vdupq_laneq_s32::<3>(bias));
        acc[0] = vfmaq_f32(acc[0], sum(b0, rows[0]), vmulq_laneq_f32::<0>(d, dx));
        acc[1] = vfmaq_f32(acc[1], sum(b1, rows[1]), vmulq_laneq_f32::<1>(d, dx));
        acc[2] = vfmaq_f32(acc[2], sum(b2, rows[2]), vmulq_laneq_f32::<2>(d, dx));
        acc[3] = vfmaq_f32(acc[3], sum(b3, rows[3]), vmulq_laneq_f32::<3>(d, dx));
    }
    acc
}

/// An interleaved block's four vectors (four rows × four codes each) as their low nibbles, then
/// their high ones: `0..16`, as stored.
#[inline]
#[target_feature(enable = "dotprod")]
fn nibbles(c: uint8x16x4_t) -> [[uint8x16_t; 4]; 2] {
    let mask = vdupq_n_u8(15);
    let c = [c.0, c.1, c.2, c.3];
    [c.map(|v| vandq_u8(v, mask)), c.map(|v| vshrq_n_u8::<4>(v))]
}

/// `bias` plus one block of four weight rows (`w`: [`nibbles`]) times one activation row's
/// block (its 16 low-nibble and 16 high-nibble codes): eight `SDOT`s by element.
#[inline]
#[target_feature(enable = "dotprod")]
fn block_sum(
    bias: int32x4_t,
    [lo, hi]: &[[uint8x16_t; 4]; 2],
    (xlo, xhi): (int8x16_t, int8x16_t),
) -> int32x4_t {
    let mut s = bias;
    s = sdot::<0>(s, lo[0], xlo);
    s = sdot::<0>(s, hi[0], xhi);
    s = sdot::<1>(s, lo[1], xlo);
    s = sdot::<1>(s, hi[1], xhi);
    s = sdot::<2>(s, lo[2], xlo);
    s = sdot::<2>(s, hi[2], xhi);
    s = sdot::<3>(s, lo[3], xlo);
    s = sdot::<3>(s, hi[3], xhi);
    s
}

/// Four weight rows' `codes` and `scales` against one activation row (at least as many
/// blocks): the four rows' sums.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn one_q8(codes: &[[u8; 64]], scales: &[[f32; 4]], x: &Q8Row) -> float32x4_t {
    let mut acc = vdupq_n_f32(0.0);
    for (b, (c, d)) in codes.iter().zip(scales).enumerate() {
        // SAFETY: 64 bytes from a [u8; 64], 4 floats from a [f32; 4]; `b` is within the
        // row's blocks (the caller's promise), two 16-byte loads from an [i8; 32].
        let (c, d, xlo, xhi, bias, dx) = unsafe {
            let p = x.codes.get_unchecked(b).as_ptr();
            (
                vld1q_u8_x4(c.as_ptr()),
                vld1q_f32(d.as_ptr()),
                vld1q_s8(p),
                vld1q_s8(p.add(16)),
                *x.biases.get_unchecked(b),
                *x.scales.get_unchecked(b),
            )
        };
        let s = block_sum(vdupq_n_s32(bias), &nibbles(c), (xlo, xhi));
        acc = vfmaq_f32(acc, vcvtq_f32_s32(s), vmulq_n_f32(d, dx));
    }
    acc
}

/// Weight rows `first..` (a multiple of four) into `out` (`[rows, m]`), f32 activations in
/// nibble order.
pub(crate) fn rows_f32(w: &Interleaved, first: usize, x: &[&[f32]], out: &mut [f32]) {
    // SAFETY: the dot-product variant is only picked where the CPU has it.
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
