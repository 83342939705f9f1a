//! AVX-512 VNNI kernel, picked at run time when the CPU has it.
//!
//! A tile is up to six activation rows by up to four panels (64 columns): 24 accumulators,
//! each four `k` a step one broadcast of a row's four bytes and one `vpdpbusd` per panel.
//! The panels of a tile stay in L2 while the row tiles pass them.

use super::{Int8Weight, PANEL};
use std::arch::x86_64::*;

/// Whether the CPU has the AVX-512 parts the kernel uses.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Rows a tile.
const ROWS: usize = 6;
/// Panels a tile.
const PANELS: usize = 4;

/// `out` (`[rows, n]`) `= a · w` in the stored weights, `a` rows of `w.kp` bytes.
///
/// # Safety
/// The CPU has [`available`]'s features; `a` holds `rows` rows of `w.kp`, `out` `rows · w.n`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn product(w: &Int8Weight, a: &[u8], rows: usize, out: &mut [i32]) {
    debug_assert!(a.len() >= rows * w.kp && out.len() >= rows * w.n);
    let panels = w.n.div_ceil(PANEL);
    let out: *mut [i32] = out;
    let mut p = 0;
    while p < panels {
        let step = if panels - p >= PANELS { PANELS } else { 1 };
        let mut i = 0;
        while i < rows {
            let r = (rows - i).min(ROWS);
            let at = Tile { w, a, out, p, i };
            // SAFETY: as the caller promised; the tile lies inside `a`, `w` and `out`.
            unsafe {
                match (r, step) {
                    (6, 4) => at.run::<6, 4>(),
                    (5, 4) => at.run::<5, 4>(),
                    (4, 4) => at.run::<4, 4>(),
                    (3, 4) => at.run::<3, 4>(),
                    (2, 4) => at.run::<2, 4>(),
                    (1, 4) => at.run::<1, 4>(),
                    (6, _) => at.run::<6, 1>(),
                    (5, _) => at.run::<5, 1>(),
                    (4, _) => at.run::<4, 1>(),
                    (3, _) => at.run::<3, 1>(),
                    (2, _) => at.run::<2, 1>(),
                    _ => at.run::<1, 1>(),
                }
            }
            i += r;
        }
        p += step;
    }
}

/// Where a tile starts: panel `p`, row `i`.
struct Tile<'a> {
    w: &'a Int8Weight,
    a: &'a [u8],
    out: *mut [i32],
    p: usize,
    i: usize,
}

impl Tile<'_> {
    /// `R` rows by `P` panels, over the whole of `k`; stores only the columns below `n`.
    ///
    /// # Safety
    /// As [`product`]'s, and rows `i..i + R`, panels `p..p + P` exist.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn run<const R: usize, const P: usize>(&self) {
        let (w, kp) = (self.w, self.w.kp);
        let quads = kp / 4;
        let mut acc = [[_mm512_setzero_si512(); P]; R];
        let panels = w.quads.as_ptr().add(self.p * quads);
        let rows = self.a.as_ptr().add(self.i * kp);
        for q in 0..quads {
            let b: [__m512i; P] =
                std::array::from_fn(|j| _mm512_load_si512(panels.add(j * quads + q).cast()));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(rows.add(r * kp + 4 * q).cast::<i32>().read_unaligned());
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    *acc = _mm512_dpbusd_epi32(*acc, x, b);
                }
            }
        }
        let out = self.out.cast::<i32>();
        for (r, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                let col = (self.p + j) * PANEL;
                let mask = (1u32 << PANEL.min(w.n - col)) - 1;
                _mm512_mask_storeu_epi32(
                    out.add((self.i + r) * w.n + col),
                    mask as __mmask16,
                    *acc,
                );
            }
        }
    }
}
