//! The int8 dot product the photo search scans its embeddings with.

use crate::{Error, Variant};

/// Dot product of two int8 vectors, exact in i32 (a dimension up to 133k cannot overflow).
/// Uses AVX2 where the CPU has it (x86-64's baseline is SSE2), `SDOT` on aarch64 where the
/// CPU has it (NEON, aarch64's baseline, elsewhere).
pub fn dot(a: &[i8], b: &[i8]) -> i32 {
    match dot_with(Variant::widest(variants()), a, b) {
        Ok(sum) => sum,
        Err(_) => dot_lanes(a, b),
    }
}

/// [`dot`] with one of [`variants`].
pub fn dot_with(variant: Variant, a: &[i8], b: &[i8]) -> Result<i32, Error> {
    match variant.check(variants())? {
        // SAFETY: the CPU supports AVX2 (a variant this CPU runs).
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => Ok(unsafe { crate::x86_64::avx2::int8_dot::dot(a, b) }),
        // SAFETY: the CPU has the dot product (a variant this CPU runs).
        #[cfg(target_arch = "aarch64")]
        Variant::NeonDot => Ok(unsafe { crate::aarch64::dotprod::int8_dot::dot(a, b) }),
        _ => Ok(dot_lanes(a, b)),
    }
}

/// The variants this CPU runs: the generic loops (NEON on aarch64), the same compiled for
/// AVX2, and `SDOT`.
pub fn variants() -> &'static [Variant] {
    crate::variants!(
        x86_64: [Avx2 if || is_x86_feature_detected!("avx2")],
        aarch64: [NeonDot if crate::aarch64::dotprod::available],
    )
}

/// [`dot`]'s loops, for the compiler to vectorise.
#[inline(always)]
pub(crate) fn dot_lanes(a: &[i8], b: &[i8]) -> i32 {
    // Sixteen lanes of i32 partial sums: written so LLVM emits packed multiply-adds.
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] as i32 * y[i] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::variant_test!(
        /// Each variant exact against the plain sum, at the extremes and lengths around the
        /// sixteen lanes.
        matches_the_plain_sum,
        variants(),
        |variant| {
            for len in [0, 1, 15, 16, 17, 63, 64, 65, 512, 1000] {
                let a: Vec<i8> = (0..len).map(|i| (i * 37 % 256) as u8 as i8).collect();
                let b: Vec<i8> = (0..len).map(|i| if i % 3 == 0 { -128 } else { 127 }).collect();
                let want: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
                assert_eq!(dot_with(variant, &a, &b), Ok(want), "length {len}");
            }
        }
    );
}
