//! Kernels for NEON with the int8 dot product (FEAT_DotProd): `SDOT` sums four byte products
//! into each `i32` lane. Its intrinsics are not stable Rust yet, so [`sdot`] is one `asm!`
//! instruction; everything around it is NEON intrinsics.

pub(crate) mod int8_dot;
pub(crate) mod int8_matmul;
pub(crate) mod q4_matmul;

use std::arch::aarch64::{int32x4_t, int8x16_t, uint8x16_t};

/// Whether the CPU has the dot product: the kernels below are only picked then.
pub(crate) fn available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// `acc[r] += Σ_j a[4r + j] · b[4L + j]` for the four `i32` lanes `r`: `SDOT` by element, the
/// bytes of `a` read as signed.
#[inline]
#[target_feature(enable = "dotprod")]
pub(crate) fn sdot_lane<const L: i32>(acc: int32x4_t, a: uint8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: one register-to-register instruction of FEAT_DotProd, which the caller's CPU has
    // (this function's target feature); no memory, stack or flags touched.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            lane = const L,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `acc[r] += Σ_j a[4r + j] · b[4r + j]` for the four `i32` lanes `r`: `SDOT`.
#[inline]
#[target_feature(enable = "dotprod")]
pub(crate) fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: as `sdot_lane`'s.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}
