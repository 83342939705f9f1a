//! f32 matrix products with a constant weight (`[.., k] × [k, n]`, every linear layer of a
//! CLIP tower), packed once at load.
//!
//! Hand-written because on AVX2 CPUs without AVX-512 tract 0.23's product ran at about half
//! the core's FMA rate (ViT-B/32: ~23 GMAC/s of 45 on Zen 3; BENCHMARKS.md). The weight is
//! stored in panels of sixteen columns, each `k` rows of sixteen contiguous floats, so a tile
//! of up to six activation rows reads one panel row (two vectors) per `k` and broadcasts one
//! element of each row: 12 accumulators, the classic register tile for 16 vector registers.
//! The activations are read in place. [`crate::rewrite::pack_f32_products`] puts this op in.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use std::ops::Range;

use crate::crew::par_columns;

/// Columns a panel.
const PANEL: usize = 16;

/// A constant `[k, n]` f32 weight, packed for the product.
#[derive(Debug, PartialEq)]
pub(crate) struct F32Weight {
    k: usize,
    n: usize,
    /// Panel `p` is `panels[p · k · 16..][..k · 16]`, row `r` of it columns `16p..16p + 16`;
    /// columns past `n` are zero.
    panels: Vec<f32>,
}

impl F32Weight {
    /// From a rank-2 f32 weight: `[k, n]`, or `[n, k]` with `transposed`.
    pub(crate) fn new(w: &Tensor, transposed: bool) -> TractResult<Self> {
        ensure!(
            w.rank() == 2 && w.datum_type() == f32::datum_type(),
            "F32MatMul: weight {:?} {:?}",
            w.datum_type(),
            w.shape()
        );
        let (rows, cols) = (w.shape()[0], w.shape()[1]);
        let (k, n) = if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let w = w.try_as_plain_ram()?;
        let w = w.as_slice::<f32>()?;
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

    /// `y = a × w` for `a` of `m` rows of `k`; `y` is `[m, n]`. Threads take columns.
    pub(crate) fn matmul(&self, a: &[f32], m: usize, y: &mut [f32]) -> TractResult<()> {
        ensure!(a.len() == m * self.k && y.len() == m * self.n);
        let panels = self.n.div_ceil(PANEL);
        par_columns(y, panels, m * self.n * self.k, |panels, out| {
            // SAFETY: `y` holds `m` rows of `n`; each task writes only its own columns, and
            // `y` outlives `par_columns`.
            unsafe { self.product(a, m, panels, out) };
        })
    }

    /// Panels `panels` of `out = a × w` for `rows` rows of `a`.
    ///
    /// # Safety
    /// `a` holds `rows` rows of `k`, `out` `rows` rows of `n`, whose columns in `panels`
    /// nothing else reads or writes.
    unsafe fn product(&self, a: &[f32], rows: usize, panels: Range<usize>, out: *mut f32) {
        debug_assert!(a.len() >= rows * self.k && panels.end <= self.n.div_ceil(PANEL));
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            // SAFETY: the CPU has the kernel's features; shapes as the caller promised.
            return unsafe { avx2::product(self, a, rows, panels, out) };
        }
        // SAFETY: as the caller promised.
        unsafe { portable_product(self, a, rows, panels, out) }
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

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Whether Glimpse's product replaces tract's on this CPU: AVX2 and FMA without AVX-512
/// (where tract's own AVX-512 kernels run, not measured against this one).
pub(crate) fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx2::available() && !is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The graph operator: `a × w` with `w` held by the operator; `a` is f32 `[.., k]`, its `k`
/// possibly over its last `k_axes` axes (their product), which the output's `n` replaces.
#[derive(Debug, Clone)]
pub(crate) struct F32MatMul {
    pub(crate) weight: Arc<F32Weight>,
    pub(crate) k_axes: usize,
}

impl PartialEq for F32MatMul {
    fn eq(&self, other: &Self) -> bool {
        self.k_axes == other.k_axes
            && (Arc::ptr_eq(&self.weight, &other.weight) || self.weight == other.weight)
    }
}

impl F32MatMul {
    /// The output shape for input `shape`, if its last `k_axes` make the weight's `k`.
    fn output_shape<D: DimLike>(&self, shape: &[D]) -> Option<TVec<D>> {
        let rows = shape.len().checked_sub(self.k_axes)?;
        let k: D = shape[rows..].iter().cloned().product();
        (k == self.weight.k.into()).then(|| {
            let mut out: TVec<D> = shape[..rows].into();
            out.push(self.weight.n.into());
            out
        })
    }
}

impl Eq for F32MatMul {}

impl Op for F32MatMul {
    fn name(&self) -> StaticName {
        "F32MatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "weight [{}, {}]",
            self.weight.k, self.weight.n
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for F32MatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "F32MatMul takes 1 input");
        let a = &inputs[0];
        let k = self.weight.k;
        let Some(y_shape) = self.output_shape(a.shape()) else {
            bail!("F32MatMul: input {:?}, weight takes {k}", a.shape());
        };
        // SAFETY: `matmul` writes every element before the tensor is read.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&y_shape)? };
        {
            let a = a.try_as_plain_ram()?;
            let a = a.as_slice::<f32>()?;
            let mut view = y.try_as_plain_ram_mut()?;
            self.weight
                .matmul(a, a.len() / k.max(1), view.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec![y.into_tvalue()])
    }
}

impl TypedOp for F32MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let a = inputs[0];
        let shape = self
            .output_shape(&a.shape)
            .filter(|_| a.datum_type == f32::datum_type());
        let Some(shape) = shape else {
            bail!(
                "F32MatMul: input {:?} {:?}, weight takes {}",
                a.datum_type,
                a.shape,
                self.weight.k
            );
        };
        Ok(tvec![f32::fact(shape)])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(product_cost(
            inputs[0],
            self.k_axes,
            self.weight.k,
            self.weight.n,
        ))
    }

    as_op!();
}

/// A product's cost for tract: `k · n` f32 multiply-adds for each row of activations `a`
/// (its axes but the last `k_axes`).
pub(crate) fn product_cost(a: &TypedFact, k_axes: usize, k: usize, n: usize) -> TVec<(Cost, TDim)> {
    let rows: TDim = a.shape.iter().rev().skip(k_axes).product();
    tvec![(Cost::FMA(f32::datum_type()), rows * (k * n))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values as values;

    /// The kernel, the portable path and the op against an f64 product, for every tile
    /// height, a part-filled last panel, one and several panels, both weight layouts.
    #[test]
    fn matches_a_direct_product() -> TractResult<()> {
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
            let direct = tensor1(&w).into_shape(&[k, n])?;
            let transposed = direct.clone().permute_axes(&[1, 0])?;
            for weight in [
                F32Weight::new(&direct, false)?,
                F32Weight::new(&transposed, true)?,
            ] {
                let mut kernels = vec!["op", "portable"];
                #[cfg(target_arch = "x86_64")]
                if avx2::available() {
                    kernels.push("avx2");
                }
                for kernel in kernels {
                    let mut got = vec![f32::NAN; m * n];
                    let panels = 0..n.div_ceil(PANEL);
                    let out = got.as_mut_ptr();
                    match kernel {
                        "portable" => unsafe { portable_product(&weight, &a, m, panels, out) },
                        // SAFETY: the CPU has AVX2 and FMA; shapes as made above.
                        #[cfg(target_arch = "x86_64")]
                        "avx2" => unsafe { avx2::product(&weight, &a, m, panels, out) },
                        _ => weight.matmul(&a, m, &mut got)?,
                    }
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (*g as f64 - w).abs() < 1e-5 * (k as f64).sqrt(),
                            "{kernel} [{m}, {k}] × [{k}, {n}] element {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
