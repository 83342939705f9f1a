//! The Q4_0 product on weights in row layout, in NEON: a block's codes are unpacked once and
//! multiplied into up to four activation rows.

use crate::q4_matmul::{Dot, Q8Row, BLOCK};
use std::arch::aarch64::*;

/// f32 activations.
pub(crate) struct Neon;

impl Dot for Neon {
    type Row<'a> = &'a [f32];
    #[inline(always)]
    fn dot<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [&[f32]; R]) -> [f32; R] {
        // SAFETY: NEON is in every aarch64 CPU.
        unsafe { dot_f32(codes, scales, xs) }
    }
}

#[target_feature(enable = "neon")]
fn dot_f32<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [&[f32]; R]) -> [f32; R] {
    let mut acc = [vdupq_n_f32(0.0); R];
    for (b, (q, &d)) in codes.iter().zip(scales).enumerate() {
        // SAFETY: a 16-byte load from a [u8; 16].
        let q = unsafe { vld1q_u8(q.as_ptr()) };
        let c = widen(q);
        for (acc, x) in acc.iter_mut().zip(xs) {
            *acc = vfmaq_n_f32(*acc, block_f32(&c, &x[b * BLOCK..][..BLOCK]), d);
        }
    }
    acc.map(|v| vaddvq_f32(v))
}

/// A block's 32 codes less 8, as f32 in nibble order (low nibbles, then high): eight vectors.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn widen(q: uint8x16_t) -> [float32x4_t; 8] {
    let [lo, hi] = signed(q);
    let f = |v: int8x16_t| {
        let (a, b) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
        [
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(a))),
            vcvtq_f32_s32(vmovl_high_s16(a)),
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(b))),
            vcvtq_f32_s32(vmovl_high_s16(b)),
        ]
    };
    let (lo, hi) = (f(lo), f(hi));
    [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
}

/// A block's codes less 8 as signed bytes: the low nibbles, the high nibbles.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn signed(q: uint8x16_t) -> [int8x16_t; 2] {
    let eight = vdupq_n_s8(8);
    let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(15)));
    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
    [vsubq_s8(lo, eight), vsubq_s8(hi, eight)]
}

/// `Σ c · x` over a block, lane-wise: `c` from [`widen`], `x` its 32 activations in nibble
/// order.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn block_f32(c: &[float32x4_t; 8], x: &[f32]) -> float32x4_t {
    // SAFETY: eight 4-float loads inside the 32-float slice.
    let x: [float32x4_t; 8] = std::array::from_fn(|i| unsafe { vld1q_f32(x[4 * i..].as_ptr()) });
    let mut even = vmulq_f32(c[0], x[0]);
    let mut odd = vmulq_f32(c[1], x[1]);
    for i in (2..8).step_by(2) {
        even = vfmaq_f32(even, c[i], x[i]);
        odd = vfmaq_f32(odd, c[i + 1], x[i + 1]);
    }
    vaddq_f32(even, odd)
}

/// Q8_0 activations: byte products widened to `i16` (`SMULL`/`SMLAL`, two products a lane
/// at most, within ±2032), summed pairwise into `i32`, then scaled.
pub(crate) struct NeonQ8;

impl Dot for NeonQ8 {
    type Row<'a> = Q8Row<'a>;
    #[inline(always)]
    fn dot<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [Q8Row; R]) -> [f32; R] {
        // SAFETY: NEON is in every aarch64 CPU.
        unsafe { dot_q8(codes, scales, xs) }
    }
}

#[target_feature(enable = "neon")]
fn dot_q8<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [Q8Row; R]) -> [f32; R] {
    let mut acc = [vdupq_n_f32(0.0); R];
    for (b, (q, &d)) in codes.iter().zip(scales).enumerate() {
        // SAFETY: a 16-byte load from a [u8; 16].
        let [lo, hi] = signed(unsafe { vld1q_u8(q.as_ptr()) });
        for (acc, x) in acc.iter_mut().zip(&xs) {
            // SAFETY: two 16-byte loads from an [i8; 32].
            let (xlo, xhi) = unsafe {
                let p = x.codes[b].as_ptr();
                (vld1q_s8(p), vld1q_s8(p.add(16)))
            };
            let low = vmlal_s8(
                vmull_s8(vget_low_s8(lo), vget_low_s8(xlo)),
                vget_low_s8(hi),
                vget_low_s8(xhi),
            );
            let high = vmlal_high_s8(vmull_high_s8(lo, xlo), hi, xhi);
            let sum = vpadalq_s16(vpaddlq_s16(low), high);
            *acc = vfmaq_n_f32(*acc, vcvtq_f32_s32(sum), d * x.scales[b]);
        }
    }
    acc.map(|v| vaddvq_f32(v))
}
