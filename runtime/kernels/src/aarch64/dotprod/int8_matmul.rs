//! The int8 product with `SDOT` by element, on [`Int8Weight`]'s packing as it is: a quad's
//! 64 bytes are four vectors, each four columns × four `k` (one column a lane), so one `SDOT`
//! multiplies four columns by a row's four activations. A tile is up to four rows by one
//! panel (sixteen columns): sixteen accumulators, a row's sixteen activations (four quads)
//! in one register each, and a quad's four weight vectors, 24 of the 32 registers. `SDOT` is
//! signed × signed: the activations come in as `i8` ([`crate::int8_matmul`] shifts `u8` ones
//! and their zero point by 128).

use super::sdot_lane;
use crate::int8_matmul::{Int8Weight, Quad, PANEL};
use std::arch::aarch64::*;
use std::ops::Range;

/// Raw sums `Σ a·w` (stored weights, `i8` activations) of panels `panels`, into `out`
/// (`[rows, n]`).
///
/// # Safety
/// The CPU has the dot product; `a` holds `rows` rows of `w.kp` bytes; `out` holds `rows · w.n`
/// values, the columns of `panels` this thread's alone.
#[target_feature(enable = "dotprod")]
pub(crate) unsafe fn product(
    w: &Int8Weight,
    a: &[u8],
    rows: usize,
    panels: Range<usize>,
    out: *mut i32,
) {
    for p in panels {
        let mut i = 0;
        while i < rows {
            let r = (rows - i).min(4);
            // SAFETY: as the caller promised; rows `i..i + r` are within `a` and `out`.
            unsafe {
                match r {
                    1 => tile::<1>(w, a, p, i, out),
                    2 => tile::<2>(w, a, p, i, out),
                    3 => tile::<3>(w, a, p, i, out),
                    _ => tile::<4>(w, a, p, i, out),
                }
            }
            i += r;
        }
    }
}

/// Rows `i..i + R` by panel `p`. Raw pointers in the loop: bounds checks cost a fifth of the
/// instructions here, and `product`'s caller vouches for the bounds (debug builds assert them).
#[target_feature(enable = "dotprod")]
unsafe fn tile<const R: usize>(w: &Int8Weight, a: &[u8], p: usize, i: usize, out: *mut i32) {
    let per_panel = w.kp / 4;
    debug_assert!(a.len() >= (i + R) * w.kp && w.quads.len() >= (p + 1) * per_panel);
    // SAFETY (all pointers below): rows `i..i + R` of `kp` bytes are within `a`, quads
    // `p · per_panel..` within `w.quads`, as the caller promised.
    let quads = unsafe { w.quads.as_ptr().add(p * per_panel) };
    let rows: [*const i8; R] =
        std::array::from_fn(|j| unsafe { a.as_ptr().add((i + j) * w.kp).cast() });
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    let whole = per_panel / 4 * 4;
    for q in (0..whole).step_by(4) {
        // Sixteen bytes at `4q` of each row (`kp ≥ 4q + 16`), and four quads.
        unsafe {
            let x: [int8x16_t; R] = std::array::from_fn(|j| vld1q_s8(rows[j].add(4 * q)));
            quad::<R, 0>(&mut acc, &*quads.add(q), x);
            quad::<R, 1>(&mut acc, &*quads.add(q + 1), x);
            quad::<R, 2>(&mut acc, &*quads.add(q + 2), x);
            quad::<R, 3>(&mut acc, &*quads.add(q + 3), x);
        }
    }
    for q in whole..per_panel {
        // Four bytes at `4q` of each row (`kp ≥ 4q + 4`), into lane 0.
        unsafe {
            let x: [int8x16_t; R] = std::array::from_fn(|j| {
                vreinterpretq_s8_s32(vld1q_dup_s32(rows[j].add(4 * q).cast()))
            });
            quad::<R, 0>(&mut acc, &*quads.add(q), x);
        }
    }
    let cols = PANEL.min(w.n - p * PANEL);
    for (j, acc) in acc.iter().enumerate() {
        let mut sums = [0i32; PANEL];
        for (c, v) in acc.iter().enumerate() {
            // SAFETY: four lanes into a [i32; 16] at 4c ≤ 12.
            unsafe { vst1q_s32(sums[4 * c..].as_mut_ptr(), *v) };
        }
        // SAFETY: row `i + j` of `out` has `n` values, this panel's `cols` of them ours.
        unsafe { std::slice::from_raw_parts_mut(out.add((i + j) * w.n + p * PANEL), cols) }
            .copy_from_slice(&sums[..cols]);
    }
}

/// One quad of the panel into the tile's accumulators: each row's four activations in lane
/// `L` of its register.
#[inline]
#[target_feature(enable = "dotprod")]
fn quad<const R: usize, const L: i32>(acc: &mut [[int32x4_t; 4]; R], w: &Quad, x: [int8x16_t; R]) {
    // SAFETY: 64 bytes from a 64-byte quad.
    let w = unsafe { vld1q_s8_x4(w.0.as_ptr()) };
    let w = [w.0, w.1, w.2, w.3].map(|v| vreinterpretq_u8_s8(v));
    for (acc, x) in acc.iter_mut().zip(x) {
        for (acc, w) in acc.iter_mut().zip(w) {
            *acc = sdot_lane::<L>(*acc, w, x);
        }
    }
}
