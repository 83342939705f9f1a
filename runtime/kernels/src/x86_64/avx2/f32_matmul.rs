//! AVX2 + FMA kernel: tiles of up to six rows by one panel (two vectors of eight columns), 12
//! accumulators; per `k` two panel loads, one broadcast and two FMAs a row.

use crate::f32_matmul::{F32Weight, PANEL};
use std::arch::x86_64::*;
use std::ops::Range;

/// Whether the CPU has the AVX2 parts the kernel uses.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Rows a tile.
const ROWS: usize = 6;

/// [`F32Weight::product`] on this CPU.
///
/// # Safety
/// The CPU has [`available`]'s features; as [`F32Weight::product`]'s.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn product(
    w: &F32Weight,
    a: &[f32],
    rows: usize,
    panels: Range<usize>,
    out: *mut f32,
) {
    assert!(a.len() >= rows * w.k && panels.end * PANEL * w.k <= w.panels.len());
    for p in panels {
        let panel = w.panels[p * w.k * PANEL..].as_ptr();
        // Lanes of the panel's two vectors inside `n`, as `maskstore` masks.
        let valid = (w.n - p * PANEL).min(PANEL) as i32;
        let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let masks = [
            _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), index),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(valid - 8), index),
        ];
        let tile = Tile {
            k: w.k,
            n: w.n,
            panel,
            masks,
            whole: valid == PANEL as i32,
        };
        let mut i = 0;
        while i < rows {
            let r = (rows - i).min(ROWS);
            let (a, out) = (a[i * w.k..].as_ptr(), out.add(i * w.n + p * PANEL));
            // SAFETY: rows `i..i + r` of `a` and `out` exist; the panel holds `k` rows.
            unsafe {
                match r {
                    6 => tile.run::<6>(a, out),
                    5 => tile.run::<5>(a, out),
                    4 => tile.run::<4>(a, out),
                    3 => tile.run::<3>(a, out),
                    2 => tile.run::<2>(a, out),
                    _ => tile.run::<1>(a, out),
                }
            }
            i += r;
        }
    }
}

/// One panel of the weight, and where its columns end.
struct Tile {
    k: usize,
    n: usize,
    panel: *const f32,
    masks: [__m256i; 2],
    /// All sixteen columns inside `n`.
    whole: bool,
}

impl Tile {
    /// `out[r][0..16] = Σ a[r][c] · panel[c]` for `R` rows of `a` (rows of `k`) and of
    /// `out` (rows of `n`), masked to the columns inside `n`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const R: usize>(&self, a: *const f32, out: *mut f32) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for c in 0..self.k {
            let w0 = _mm256_loadu_ps(self.panel.add(c * PANEL));
            let w1 = _mm256_loadu_ps(self.panel.add(c * PANEL + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(r * self.k + c));
                acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let at = out.add(r * self.n);
            if self.whole {
                _mm256_storeu_ps(at, acc[0]);
                _mm256_storeu_ps(at.add(8), acc[1]);
            } else {
                _mm256_maskstore_ps(at, self.masks[0], acc[0]);
                _mm256_maskstore_ps(at.add(8), self.masks[1], acc[1]);
            }
        }
    }
}
