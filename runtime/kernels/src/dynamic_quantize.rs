//! ONNX `DynamicQuantizeLinear`: an f32 tensor to `u8` with one scale and zero point from
//! its range, the activations' half of a `quantize_dynamic` int8 product.
//!
//! Written here because tract 0.23's took a fifth of a ViT-L image (0.95 s): two passes, one
//! for the range, one to round, both in lanes the compiler vectorises. The arithmetic is ONNX
//! Runtime's: the range widened to hold 0, `scale = (max - min) / 255` (1 for an all-zero
//! input), `zero_point = round(-min / scale)` clamped to `0..=255`, and each value
//! `clamp(round(x / scale) + zero_point)`, rounding half to even.

#[cfg(target_arch = "x86_64")]
use crate::x86_64::{avx2, avx512};
use crate::{Error, Variant};

/// Lanes of the range pass: independent minima and maxima the compiler keeps in vectors.
const LANES: usize = 16;

/// `1.5 · 2^23`: adding and subtracting it rounds an f32 below `2^22` in magnitude to an
/// integer, half to even, in the default rounding mode (no libm call, and it vectorises).
const ROUND: f32 = 12_582_912.0;

/// `x`'s scale and zero point.
pub fn parameters(x: &[f32]) -> (f32, u8) {
    match Variant::widest(variants()) {
        // SAFETY: the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { avx512::dynamic_quantize::parameters(x) },
        // SAFETY: the CPU has AVX2.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { avx2::dynamic_quantize::parameters(x) },
        _ => range(x),
    }
}

/// `y = clamp(round(x / scale) + zero_point)`.
pub fn quantize(x: &[f32], scale: f32, zero_point: u8, y: &mut [u8]) {
    // The best variant is always one this CPU runs.
    let _ = quantize_with(Variant::widest(variants()), x, scale, zero_point, y);
}

/// [`parameters`] and [`quantize`] with one of [`variants`]: `x`'s parameters, and `y`.
pub fn quantize_with(
    variant: Variant,
    x: &[f32],
    scale: f32,
    zero_point: u8,
    y: &mut [u8],
) -> Result<(f32, u8), Error> {
    match variant.check(variants())? {
        // SAFETY: the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe {
            avx512::dynamic_quantize::quantize(x, scale, zero_point, y);
            Ok(avx512::dynamic_quantize::parameters(x))
        },
        // SAFETY: the CPU has AVX2.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe {
            avx2::dynamic_quantize::quantize(x, scale, zero_point, y);
            Ok(avx2::dynamic_quantize::parameters(x))
        },
        _ => {
            round(x, scale, zero_point, y);
            Ok(range(x))
        }
    }
}

/// The variants this CPU runs: the generic loops, compiled for AVX2 and for AVX-512 too (the
/// same IEEE operations, so the same results).
pub fn variants() -> &'static [Variant] {
    crate::variants!(x86_64: [
        Avx2 if || is_x86_feature_detected!("avx2"),
        Avx512 if || is_x86_feature_detected!("avx512f"),
    ])
}

/// [`parameters`], in lanes the compiler vectorises.
#[inline(always)]
pub(crate) fn range(x: &[f32]) -> (f32, u8) {
    let mut lo = [0f32; LANES];
    let mut hi = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            lo[l] = if chunk[l] < lo[l] { chunk[l] } else { lo[l] };
            hi[l] = if chunk[l] > hi[l] { chunk[l] } else { hi[l] };
        }
    }
    for (l, &v) in rest.iter().enumerate() {
        lo[l] = lo[l].min(v);
        hi[l] = hi[l].max(v);
    }
    let min = lo.iter().fold(0f32, |a, &v| a.min(v));
    let max = hi.iter().fold(0f32, |a, &v| a.max(v));
    let scale = if max == min { 1.0 } else { (max - min) / 255.0 };
    let zero_point = ((-min / scale).clamp(0.0, 255.0) + ROUND) - ROUND;
    (scale, zero_point as u8)
}

/// [`quantize`], in lanes the compiler vectorises.
#[inline(always)]
pub(crate) fn round(x: &[f32], scale: f32, zero_point: u8, y: &mut [u8]) {
    let zp = zero_point as f32;
    for (y, &x) in y.iter_mut().zip(x) {
        // Below 2^22 in magnitude unless `x` lies outside the range `scale` came from; the
        // clamp holds either way (`max` drops a NaN: 0).
        #[allow(
            clippy::manual_clamp,
            reason = "clamp keeps a NaN, which must become 0"
        )]
        let q = (((x / scale + ROUND) - ROUND) + zp).max(0.0).min(255.0);
        // SAFETY: `q` is finite and within `0..=255`.
        *y = unsafe { q.to_int_unchecked::<i32>() } as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::variant_test!(
    /// Each variant against ONNX's definition, value by value: the range including 0, the
    /// zero point mapping 0 exactly, every value within half a step of its code (inside the
    /// range), ties to even.
    follows_the_onnx_definition, variants(), |variant| {
        let parameters = |x: &[f32]| quantize_with(variant, x, 1.0, 0, &mut vec![0; x.len()]).unwrap();
        let quantize = |x: &[f32], scale, zp, y: &mut [u8]| {
            quantize_with(variant, x, scale, zp, y).unwrap();
        };
        let x: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.61).sin() * 3.0 + 1.0)
            .collect();
        let (scale, zp) = parameters(&x);
        let (min, max) = x
            .iter()
            .fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!(scale, (max - min) / 255.0);
        assert_eq!(zp as f32, (-min / scale).round());
        let mut y = vec![0u8; x.len()];
        quantize(&x, scale, zp, &mut y);
        for (&v, &q) in x.iter().zip(&y) {
            let back = (q as f32 - zp as f32) * scale;
            assert!((v - back).abs() <= scale * 0.5001, "{v} -> {q} ({back})");
        }
        // Ties go to even: 2.5 steps to 2, 3.5 to 4; past the range saturates; NaN is 0.
        let mut y = [0u8; 5];
        quantize(&[2.5, 3.5, -1e9, 1e9, f32::NAN], 1.0, 0, &mut y);
        assert_eq!(y, [2, 4, 0, 255, 0]);
        // All positive: zero point 0; all zero: scale 1.
        assert_eq!(parameters(&[0.5, 2.0]), (2.0 / 255.0, 0));
        assert_eq!(parameters(&[-2.0, -0.5]), (2.0 / 255.0, 255));
        assert_eq!(parameters(&[0.0; 40]), (1.0, 0));
        assert_eq!(parameters(&[]), (1.0, 0));
    });
}
