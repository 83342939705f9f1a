//! Glimpse's kernels: the arithmetic its models spend their time in, on plain slices, with no
//! graph library underneath.
//!
//! Each kernel is one module with one portable API and a generic reference implementation
//! (the lane-by-lane loops every CPU can run, and the tests' reference); variants for an
//! instruction set live under that architecture's folder (`x86_64/avx2/`, `x86_64/avx512/`,
//! file names matching the kernel's) and are picked at run time from the CPU's features. Each
//! kernel module lists the [`Variant`]s this CPU can run (`variants()`), uses the best of them,
//! and takes one by name (`*_with`) for the tests, which run every variant against the
//! reference ([`variant_test!`]), and the benches. [`parallel`] splits a product's rows or
//! columns over the current run's workers.
//!
//! - [`f32_matmul`], [`int8_matmul`], [`q4_matmul`]: products with a constant weight packed
//!   once (f32; `u8 × i8` with zero points; llama.cpp's Q4_0 blocks).
//! - [`vision_attention`]: a vision tower's attention, one head at a time.
//! - [`cached_attention`]: a decoder's attention over its key/value cache (f32 or f16), RoPE.
//! - [`quick_gelu`], [`dynamic_quantize`]: CLIP's activation; ONNX's `DynamicQuantizeLinear`.
//! - [`int8_dot`]: the photo search's int8 dot product.

pub mod cached_attention;
pub mod cpu;
pub mod dynamic_quantize;
pub mod f32_matmul;
pub mod int8_dot;
pub mod int8_matmul;
pub mod parallel;
pub mod q4_matmul;
pub mod quick_gelu;
pub mod vision_attention;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// A kernel's operands do not fit it (shapes, lengths or types), or a variant was asked for
/// that this CPU cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

/// Whether this CPU has what a variant needs.
pub(crate) type CpuHas = fn() -> bool;

/// One implementation of a kernel: the generic reference, or one written for an instruction
/// set. Which a kernel has, and which this CPU runs, its `variants()` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Plain Rust loops (written for the compiler to vectorise): every CPU, and the reference.
    Generic,
    /// x86-64 AVX2 (with FMA, and F16C where the kernel reads f16).
    Avx2,
    /// x86-64 AVX-512 (F, and BW / VNNI where the kernel says).
    Avx512,
    /// aarch64 NEON (Advanced SIMD, in every ARMv8-A core: Cortex-A53 on).
    Neon,
    /// aarch64 NEON with the int8 dot product (FEAT_DotProd, `SDOT`: Cortex-A55/A76 on,
    /// Apple A13 on).
    NeonDot,
}

impl Variant {
    /// The variants in `candidates` whose test says this CPU runs them, the generic one first.
    pub(crate) fn available(candidates: &[(Variant, CpuHas)]) -> Vec<Variant> {
        let mut out = vec![Variant::Generic];
        out.extend(candidates.iter().filter(|(_, has)| has()).map(|(v, _)| *v));
        out
    }

    /// The last of `variants` (the widest this CPU runs, as `variants()` lists them).
    pub(crate) fn widest(variants: &[Variant]) -> Variant {
        variants.last().copied().unwrap_or(Variant::Generic)
    }

    /// An error unless `self` is one of `variants` (what this CPU runs).
    pub(crate) fn check(self, variants: &[Variant]) -> Result<Variant, Error> {
        match variants.contains(&self) {
            true => Ok(self),
            false => Err(Error(format!("this CPU cannot run the {self:?} variant"))),
        }
    }
}

/// The body of a kernel's `variants()`: the generic variant, then each variant of this
/// architecture (`x86_64: [Avx2 if test, …]`, `aarch64: [Neon if test, …]`, narrowest first)
/// whose test passes on this CPU. Found once, then read: kernels ask on every call (a decode
/// step makes ~170 products).
macro_rules! variants {
    ($(x86_64: [$($x:ident if $x_has:expr),* $(,)?])? $(,)? $(aarch64: [$($a:ident if $a_has:expr),* $(,)?])? $(,)?) => {{
        static VARIANTS: std::sync::OnceLock<Vec<$crate::Variant>> = std::sync::OnceLock::new();
        VARIANTS.get_or_init(|| {
            let candidates: &[(_, $crate::CpuHas)] = &[
                $($(#[cfg(target_arch = "x86_64")] ($crate::Variant::$x, $x_has),)*)?
                $($(#[cfg(target_arch = "aarch64")] ($crate::Variant::$a, $a_has),)*)?
            ];
            $crate::Variant::available(candidates)
        })
    }};
}
pub(crate) use variants;

/// A test that runs `$check(variant)` for every variant of a kernel this CPU runs
/// (`$variants`, the kernel's `variants()`), the generic reference included, and says which
/// variant failed: each kernel's variants against its reference, as the CPU allows.
#[cfg(test)]
macro_rules! variant_test {
    ($(#[$doc:meta])* $name:ident, $variants:expr, $check:expr) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            let variants: &[$crate::Variant] = $variants;
            assert_eq!(variants.first(), Some(&$crate::Variant::Generic));
            for &variant in variants {
                let run = std::panic::AssertUnwindSafe(|| ($check)(variant));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    eprintln!("variant {variant:?} failed");
                    std::panic::resume_unwind(panic);
                }
            }
        }
    };
}
#[cfg(test)]
pub(crate) use variant_test;

/// Returns a [`Error`] with the formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::Error(format!($($msg)+)));
        }
    };
    ($cond:expr) => {
        if !$cond {
            return Err($crate::Error(concat!("failed: ", stringify!($cond)).to_owned()));
        }
    };
}
pub(crate) use ensure;

/// Deterministic test values in [-1, 1), different for each `seed`: the kernels' tests' inputs
/// (and the graph layer's).
#[doc(hidden)]
pub fn test_values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) % 1000)
        .map(|x| x as f32 / 500.0 - 1.0)
        .collect()
}

/// A seeded generator of test numbers (a 64-bit LCG's high bits): shapes and codes drawn
/// at random, the same every run.
#[cfg(test)]
pub(crate) fn test_numbers(seed: u64) -> impl FnMut() -> u32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operands that do not fit, and variants this CPU lacks, are errors rather than panics
    /// or reads out of bounds.
    #[test]
    fn refuses_what_does_not_fit() {
        let w = f32_matmul::F32Weight::new(&[0.0; 6], 2, 3, false).unwrap();
        assert!(f32_matmul::F32Weight::new(&[0.0; 5], 2, 3, false).is_err());
        assert!(w.matmul(&[0.0; 3], 1, &mut [0.0; 3]).is_err());
        assert!(w.matmul(&[0.0; 2], 1, &mut [0.0; 2]).is_err());
        assert!(w.matmul(&[0.0; 4], 2, &mut [0.0; 6]).is_ok());
        let q4 = q4_matmul::Q4Weight::new(1, 32, std::sync::Arc::new((vec![0u8; 16], vec![1.0])));
        assert!(q4
            .unwrap()
            .matmul(&[0.0; 31], 1, &mut [0.0; 1], true)
            .is_err());
        let mut out = vec![0.0; 8];
        let attention = cached_attention::attention::<f32>(
            &[0.0; 8],
            (&[0.0; 4], &[0.0; 4]),
            4,
            (1, 1),
            1.0,
            (0, 1, 8),
            &mut out,
        );
        assert!(attention.is_err(), "a cache shorter than one row");
        for v in [
            Variant::Generic,
            Variant::Avx2,
            Variant::Avx512,
            Variant::Neon,
            Variant::NeonDot,
        ] {
            let runs = f32_matmul::variants().contains(&v);
            let got = w.matmul_with(v, &[0.0; 2], 1, &mut [0.0; 3]);
            assert_eq!(got.is_ok(), runs, "{v:?}");
            assert_eq!(
                int8_dot::dot_with(v, &[1], &[2]).is_ok(),
                int8_dot::variants().contains(&v)
            );
        }
    }
}
