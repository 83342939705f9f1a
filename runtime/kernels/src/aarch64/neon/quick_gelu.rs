//! Quick GELU on four lanes ([`crate::quick_gelu`]), every aarch64 CPU.

use crate::aarch64::neon::vision_attention::exp;
use std::arch::aarch64::*;

/// `x · sigmoid(α x)` four lanes at a time, as the x86 kernels compute it: `e = exp(-|α x|)`
/// (never overflows), `sigmoid = 1 / (1 + e)` for `α x ≥ 0`, `e / (1 + e)` below; the last
/// part-vector through a copy.
#[target_feature(enable = "neon")]
pub(crate) fn apply(alpha: f32, xs: &mut [f32]) {
    let one = vdupq_n_f32(1.0);
    let four = |x: float32x4_t| {
        let z = vmulq_n_f32(x, alpha);
        let e = exp(vnegq_f32(vabsq_f32(z)));
        let numerator = vbslq_f32(vcltzq_f32(z), e, one);
        vmulq_f32(x, vdivq_f32(numerator, vaddq_f32(one, e)))
    };
    let mut chunks = xs.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let at = chunk.as_mut_ptr();
        // SAFETY: four floats of the chunk.
        unsafe { vst1q_f32(at, four(vld1q_f32(at))) };
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut buf = [0f32; 4];
        buf[..tail.len()].copy_from_slice(tail);
        // SAFETY: four floats of `buf`.
        unsafe { vst1q_f32(buf.as_mut_ptr(), four(vld1q_f32(buf.as_ptr()))) };
        tail.copy_from_slice(&buf[..tail.len()]);
    }
}
