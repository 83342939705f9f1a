//! The photo search's int8 dot product with `SDOT`: sixteen byte products a instruction.

use super::sdot;
use crate::int8_dot::dot_lanes;
use std::arch::aarch64::*;

/// `Σ a · b` over the shorter length, 64 bytes a step in four chains, the tail lane by lane.
#[target_feature(enable = "dotprod")]
pub(crate) fn dot(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (a[..n].chunks_exact(64), b[..n].chunks_exact(64));
    let tail = dot_lanes(a.remainder(), b.remainder());
    let mut acc = [vdupq_n_s32(0); 4];
    for (x, y) in a.zip(b) {
        // SAFETY: 64 bytes from each 64-byte chunk.
        let (x, y) = unsafe { (vld1q_s8_x4(x.as_ptr()), vld1q_s8_x4(y.as_ptr())) };
        acc[0] = sdot(acc[0], x.0, y.0);
        acc[1] = sdot(acc[1], x.1, y.1);
        acc[2] = sdot(acc[2], x.2, y.2);
        acc[3] = sdot(acc[3], x.3, y.3);
    }
    let sum = vaddq_s32(vaddq_s32(acc[0], acc[1]), vaddq_s32(acc[2], acc[3]));
    vaddvq_s32(sum) + tail
}
