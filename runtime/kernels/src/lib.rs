//! Glimpse's kernels: the arithmetic its models spend their time in, on plain slices, with no
//! graph library underneath.
//!
//! Each kernel is one module with one portable API and a generic reference implementation
//! (the lane-by-lane loops every CPU can run, and the tests' reference); variants for an
//! instruction set live under that architecture's folder (`x86_64/avx2/`, `x86_64/avx512/`,
//! file names matching the kernel's) and are picked at run time from the CPU's features
//! ([`cpu`]). [`parallel`] splits a product's rows or columns over the current run's workers.
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

#[cfg(target_arch = "x86_64")]
mod x86_64;

/// A kernel's operands do not fit it (shapes, lengths or types).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

/// Returns a [`ShapeError`] with the formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::ShapeError(format!($($msg)+)));
        }
    };
    ($cond:expr) => {
        if !$cond {
            return Err($crate::ShapeError(concat!("failed: ", stringify!($cond)).to_owned()));
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
