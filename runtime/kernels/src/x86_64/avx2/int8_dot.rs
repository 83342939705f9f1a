//! [`crate::int8_dot`] compiled for AVX2 (x86-64's baseline is SSE2).

/// [`crate::int8_dot::dot`] here.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot(a: &[i8], b: &[i8]) -> i32 {
    crate::int8_dot::dot_lanes(a, b)
}
