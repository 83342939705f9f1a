//! f32 matrix products with a constant weight (`[.., k] × [k, n]`, every linear layer of a
//! CLIP tower), packed once at load.
//!
//! Hand-written because on AVX2 CPUs without AVX-512 tract 0.23's product ran at about half
//! the core's FMA rate (ViT-B/32: ~23 GMAC/s of 45 on Zen 3; BENCHMARKS.md). The weight is
//! stored in panels of sixteen columns, each `k` rows of sixteen contiguous floats, so a tile
//! of up to six activation rows reads one panel row (two vectors) per `k` and broadcasts one
//! element of each row: 12 accumulators, the classic register tile for 16 vector registers.
//! The activations are read in place. `glimpse-graph`'s `pack_f32_products` pass puts its op in graphs.

use std::ops::Range;

use crate::parallel::par_columns;
#[cfg(target_arch = "x86_64")]
use crate::x86_64::avx2::f32_matmul as avx2;
use crate::{ensure, Error, Variant};

/// Columns a panel.
pub(crate) const PANEL: usize = 16;

/// A constant `[k, n]` f32 weight, packed for the product.
#[derive(Debug, PartialEq)]
pub struct F32Weight {
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// Panel `p` is `panels[p · k · 16..][..k · 16]`, row `r` of it columns `16p..16p + 16`;
    /// columns past `n` are zero.
    pub(crate) panels: Vec<f32>,
}

impl F32Weight {
    /// From a `[rows, cols]` weight `w` (row-major): `[k, n]`, or `[n, k]` with `transposed`.
    pub fn new(w: &[f32], rows: usize, cols: usize, transposed: bool) -> Result<Self, Error> {
        ensure!(
            w.len() == rows * cols,
            "f32 weight: {} values for [{rows}, {cols}]",
            w.len()
        );
        let (k, n) = if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let at = |r: usize, c: usize| match transposed {
            true => w[c * k + r],
            false => w[r * n + c],
        };
        let mut panels = vec![0f32; n.div_ceil(PANEL) * k * PANEL];
        for (p, panel) in panels.chunks_exact_mut(k * PANEL).enumerate() {
            for (r, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                for (l, x) in row.iter_mut().enumerate().take(n - p * PANEL) {
                    *x = at(r, p * PANEL + l);
                }
            }
        }
        Ok(F32Weight { k, n, panels })
    }

    /// The product's depth.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The product's columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `y = a × w` for `a` of `m` rows of `k`; `y` is `[m, n]`. Threads take columns.
    pub fn matmul(&self, a: &[f32], m: usize, y: &mut [f32]) -> Result<(), Error> {
        self.matmul_with(Variant::widest(variants()), a, m, y)
    }

    /// [`Self::matmul`] with one of [`variants`].
    pub fn matmul_with(
        &self,
        variant: Variant,
        a: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> Result<(), Error> {
        let variant = variant.check(variants())?;
        ensure!(
            a.len() == m * self.k && y.len() == m * self.n,
            "f32 product [{m}, {}] × [{}, {}]: {} inputs, {} outputs",
            self.k,
            self.k,
            self.n,
            a.len(),
            y.len()
        );
        let panels = self.n.div_ceil(PANEL);
        par_columns(y, panels, m * self.n * self.k, |panels, out| {
            // SAFETY: `y` holds `m` rows of `n`; each task writes only its own columns, and
            // `y` outlives `par_columns`.
            unsafe { self.product(variant, a, m, panels, out) };
        });
        Ok(())
    }

    /// Panels `panels` of `out = a × w` for `rows` rows of `a`.
    ///
    /// # Safety
    /// This CPU runs `variant`; `a` holds `rows` rows of `k`, `out` `rows` rows of `n`, whose
    /// columns in `panels` nothing else reads or writes.
    unsafe fn product(
        &self,
        variant: Variant,
        a: &[f32],
        rows: usize,
        panels: Range<usize>,
        out: *mut f32,
    ) {
        debug_assert!(a.len() >= rows * self.k && panels.end <= self.n.div_ceil(PANEL));
        match variant {
            // SAFETY: the CPU has the kernel's features; shapes as the caller promised.
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => unsafe { avx2::product(self, a, rows, panels, out) },
            // SAFETY: as the caller promised.
            _ => unsafe { portable_product(self, a, rows, panels, out) },
        }
    }
}

/// [`F32Weight::product`] element by element, where no kernel applies (and as the kernel's
/// reference in tests).
///
/// # Safety
/// As [`F32Weight::product`]'s.
unsafe fn portable_product(
    w: &F32Weight,
    a: &[f32],
    rows: usize,
    panels: Range<usize>,
    out: *mut f32,
) {
    for p in panels {
        let panel = &w.panels[p * w.k * PANEL..][..w.k * PANEL];
        for (r, a) in a.chunks_exact(w.k).take(rows).enumerate() {
            let mut sums = [0f32; PANEL];
            for (&x, row) in a.iter().zip(panel.chunks_exact(PANEL)) {
                sums.iter_mut().zip(row).for_each(|(s, &v)| *s += x * v);
            }
            for (l, &s) in sums.iter().enumerate().take(w.n - p * PANEL) {
                // SAFETY: row `r`, column `16p + l < n`: this thread's, as promised.
                unsafe { *out.add(r * w.n + p * PANEL + l) = s };
            }
        }
    }
}

/// The variants this CPU runs: the generic one, and AVX2 + FMA.
pub fn variants() -> &'static [Variant] {
    crate::variants!(x86_64: [Avx2 if avx2::available])
}

/// Whether Glimpse's product replaces tract's on this CPU: AVX2 and FMA without AVX-512
/// (where tract's own AVX-512 kernels run, not measured against this one).
pub fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx2::available() && !is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values as values;

    crate::variant_test!(
        /// Each variant (through the threaded entry point) against an f64 product, for every
        /// tile height, a part-filled last panel, one and several panels, both weight layouts.
        matches_a_direct_product,
        variants(),
        |variant| {
            for (m, k, n) in [
                (1, 1, 1),
                (7, 13, 40),
                (13, 64, 16),
                (50, 96, 33),
                (6, 5, 3),
            ] {
                let a = values(m * k, 1);
                let w = values(k * n, 2);
                let want: Vec<f64> = (0..m * n)
                    .map(|i| {
                        let (r, c) = (i / n, i % n);
                        (0..k)
                            .map(|p| a[r * k + p] as f64 * w[p * n + c] as f64)
                            .sum()
                    })
                    .collect();
                let transposed: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
                for weight in [
                    F32Weight::new(&w, k, n, false).unwrap(),
                    F32Weight::new(&transposed, n, k, true).unwrap(),
                ] {
                    let mut got = vec![f32::NAN; m * n];
                    weight.matmul_with(variant, &a, m, &mut got).unwrap();
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (*g as f64 - w).abs() < 1e-5 * (k as f64).sqrt(),
                            "[{m}, {k}] × [{k}, {n}] element {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    );
}
