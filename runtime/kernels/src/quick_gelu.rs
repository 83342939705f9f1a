//! CLIP's activation, quick GELU: `x · sigmoid(α x)` (α = 1.702), in one pass.
//!
//! Exported, it is `Mul(x, α)`, `Sigmoid`, `Mul(x, ·)`: three passes over the MLP's widest
//! tensor, and tract (0.23) ran the first, a multiplication by a constant, at ~0.4 G
//! elements/s (6 ms of ViT-L/14@336's `[577, 4096]`; 137 ms an image, more than its
//! attention's softmax had been). `glimpse-graph`'s `fuse_quick_gelu` pass finds the three.

#[cfg(target_arch = "aarch64")]
use crate::aarch64::neon;
use crate::parallel::par_rows;
#[cfg(target_arch = "x86_64")]
use crate::x86_64::{avx2, avx512};
use crate::{Error, Variant};

/// Elements a thread takes at a time.
const CHUNK: usize = 1 << 14;

/// `x ← x · sigmoid(α x)` over `xs`, whole chunks split over the run's threads.
pub fn quick_gelu(alpha: f32, xs: &mut [f32]) {
    // The best variant is always one this CPU runs.
    let _ = quick_gelu_with(Variant::widest(variants()), alpha, xs);
}

/// [`quick_gelu`] with one of [`variants`].
pub fn quick_gelu_with(variant: Variant, alpha: f32, xs: &mut [f32]) -> Result<(), Error> {
    let variant = variant.check(variants())?;
    let len = xs.len();
    // Whole chunks over the threads, then the rest.
    let (body, tail) = xs.split_at_mut(len - len % CHUNK);
    if !body.is_empty() {
        par_rows(body, CHUNK, len, |_, xs| apply(variant, alpha, xs));
    }
    apply(variant, alpha, tail);
    Ok(())
}

/// The variants this CPU runs: the generic one, AVX2 + FMA, AVX-512; NEON.
pub fn variants() -> &'static [Variant] {
    crate::variants!(
        x86_64: [
            Avx2 if avx2::vision_attention::available,
            Avx512 if avx512::vision_attention::available,
        ],
        aarch64: [Neon if || true],
    )
}

/// `x ← x · sigmoid(α x)` over `xs`; `variant` is one this CPU runs.
fn apply(variant: Variant, alpha: f32, xs: &mut [f32]) {
    match variant {
        // SAFETY: the CPU has the kernel's features.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { avx512::quick_gelu::apply(alpha, xs) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { avx2::quick_gelu::apply(alpha, xs) },
        // SAFETY: NEON is in every aarch64 CPU.
        #[cfg(target_arch = "aarch64")]
        Variant::Neon => unsafe { neon::quick_gelu::apply(alpha, xs) },
        _ => portable(alpha, xs),
    }
}

/// [`apply`] element by element, where no kernel applies (and as its reference in tests).
pub(crate) fn portable(alpha: f32, xs: &mut [f32]) {
    for x in xs {
        *x /= 1.0 + (-alpha * *x).exp();
    }
}

/// Whether this CPU runs the kernel: the only case where Glimpse fuses the activation.
pub fn kernel_available() -> bool {
    crate::vision_attention::kernel_available()
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::variant_test!(
        /// Each variant against an f64 computation, over large and small values of both signs
        /// and a length that leaves a partial vector, within what f32's rounding of the
        /// exponent allows.
        matches_the_definition,
        variants(),
        |variant| {
            let alpha = 1.702f32;
            let xs: Vec<f32> = (0..1000)
                .map(|i| (i as f32 - 500.0) / 25.0)
                .chain([0.0, -0.0, 1e-8, -1e-8, 80.0, -80.0, 200.0, -200.0])
                .collect();
            let want: Vec<f64> = (xs.iter())
                .map(|&x| x as f64 / (1.0 + (-(alpha as f64) * x as f64).exp()))
                .collect();
            let mut got = xs.clone();
            quick_gelu_with(variant, alpha, &mut got).unwrap();
            for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
                // f32 rounds α x by up to 6e-8 of itself: e^(α x) moves by as much, times α x.
                let err = (*g as f64 - w).abs();
                let bound = 3e-7 * (1.0 + (alpha * x).abs() as f64);
                assert!(err <= bound * w.abs() + 1e-30, "x {x}: {g} vs {w}");
            }
        }
    );
}
