//! CLIP's activation, quick GELU: `x · sigmoid(α x)` (α = 1.702), in one pass.
//!
//! Exported, it is `Mul(x, α)`, `Sigmoid`, `Mul(x, ·)`: three passes over the MLP's widest
//! tensor, and tract (0.23) ran the first, a multiplication by a constant, at ~0.4 G
//! elements/s (6 ms of ViT-L/14@336's `[577, 4096]`; 137 ms an image, more than its
//! attention's softmax had been). [`crate::rewrite::fuse_quick_gelu`] finds the three.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use crate::crew::par_rows;

/// `x · sigmoid(α x)`, f32, any shape.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct QuickGelu {
    /// α, as f32 bits.
    pub alpha: u32,
}

/// Elements a thread takes at a time.
const CHUNK: usize = 1 << 14;

impl Op for QuickGelu {
    fn name(&self) -> StaticName {
        "QuickGelu".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuickGelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "QuickGelu takes 1 input");
        // In place when nothing else holds the input (a copy otherwise).
        let mut x = inputs.remove(0).into_tensor();
        let alpha = f32::from_bits(self.alpha);
        {
            let mut view = x.try_as_plain_ram_mut()?;
            let xs = view.as_slice_mut::<f32>()?;
            let len = xs.len();
            // Whole chunks over the threads, then the rest.
            let (body, tail) = xs.split_at_mut(len - len % CHUNK);
            if !body.is_empty() {
                par_rows(body, CHUNK, len, |_, xs| apply(alpha, xs))?;
            }
            apply(alpha, tail);
        }
        Ok(tvec![x.into_tvalue()])
    }
}

/// `x ← x · sigmoid(α x)` over `xs`.
fn apply(alpha: f32, xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::fused_attention::{avx2, avx512};
        if avx512::available() {
            // SAFETY: the CPU has the kernel's features.
            return unsafe { x86::apply512(alpha, xs) };
        }
        if avx2::available() {
            // SAFETY: as above.
            return unsafe { x86::apply256(alpha, xs) };
        }
    }
    portable(alpha, xs)
}

/// [`apply`] element by element, where no kernel applies (and as its reference in tests).
fn portable(alpha: f32, xs: &mut [f32]) {
    for x in xs {
        *x /= 1.0 + (-alpha * *x).exp();
    }
}

/// Whether this CPU runs the kernel: the only case where Glimpse fuses the activation.
pub(crate) fn kernel_available() -> bool {
    crate::fused_attention::kernel_available()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::fused_attention::{avx2, avx512};

    /// `x · sigmoid(α x)` sixteen lanes at a time: `e = exp(-|α x|)` (never overflows),
    /// `sigmoid = 1 / (1 + e)` for `α x ≥ 0`, `e / (1 + e)` below.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn apply512(alpha: f32, xs: &mut [f32]) {
        let (a, one) = (_mm512_set1_ps(alpha), _mm512_set1_ps(1.0));
        let sign = _mm512_set1_epi32(i32::MIN);
        for chunk in xs.chunks_mut(16) {
            let mask = ((1u32 << chunk.len()) - 1) as __mmask16;
            let at = chunk.as_mut_ptr();
            let x = _mm512_maskz_loadu_ps(mask, at);
            let z = _mm512_mul_ps(a, x);
            // -|z|: the sign bit set.
            let negative = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(z), sign));
            let e = avx512::exp(negative);
            let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z, _mm512_setzero_ps());
            let numerator = _mm512_mask_blend_ps(below, one, e);
            let sigmoid = _mm512_div_ps(numerator, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(at, mask, _mm512_mul_ps(x, sigmoid));
        }
    }

    /// [`apply512`] eight lanes at a time; the last part-vector through a copy.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn apply256(alpha: f32, xs: &mut [f32]) {
        let (a, one) = (_mm256_set1_ps(alpha), _mm256_set1_ps(1.0));
        let sign = _mm256_set1_ps(-0.0);
        let eight = |x: __m256| {
            let z = _mm256_mul_ps(a, x);
            let e = avx2::exp(_mm256_or_ps(z, sign));
            let below = _mm256_cmp_ps::<_CMP_LT_OQ>(z, _mm256_setzero_ps());
            let numerator = _mm256_blendv_ps(one, e, below);
            _mm256_mul_ps(x, _mm256_div_ps(numerator, _mm256_add_ps(one, e)))
        };
        let mut chunks = xs.chunks_exact_mut(8);
        for chunk in &mut chunks {
            let at = chunk.as_mut_ptr();
            _mm256_storeu_ps(at, eight(_mm256_loadu_ps(at)));
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut buf = [0f32; 8];
            buf[..tail.len()].copy_from_slice(tail);
            _mm256_storeu_ps(buf.as_mut_ptr(), eight(_mm256_loadu_ps(buf.as_ptr())));
            tail.copy_from_slice(&buf[..tail.len()]);
        }
    }
}

impl TypedOp for QuickGelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].datum_type == f32::datum_type(),
            "QuickGelu takes one f32 input"
        );
        Ok(tvec![f32::fact(inputs[0].shape.clone())])
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel and the portable path against an f64 computation, over large and small
    /// values of both signs and a length that leaves a partial vector, within what f32's
    /// rounding of the exponent allows.
    #[test]
    fn matches_the_definition() {
        let alpha = 1.702f32;
        let xs: Vec<f32> = (0..1000)
            .map(|i| (i as f32 - 500.0) / 25.0)
            .chain([0.0, -0.0, 1e-8, -1e-8, 80.0, -80.0, 200.0, -200.0])
            .collect();
        let want: Vec<f64> = (xs.iter())
            .map(|&x| x as f64 / (1.0 + (-(alpha as f64) * x as f64).exp()))
            .collect();
        // This CPU's kernel, the portable path, and (on AVX-512 CPUs too) the AVX2 kernel.
        let mut kernels = vec!["dispatch", "portable"];
        #[cfg(target_arch = "x86_64")]
        if crate::fused_attention::avx2::available() {
            kernels.push("avx2");
        }
        for kernel in kernels {
            let mut got = xs.clone();
            match kernel {
                "portable" => portable(alpha, &mut got),
                // SAFETY: the CPU has AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                "avx2" => unsafe { x86::apply256(alpha, &mut got) },
                _ => apply(alpha, &mut got),
            }
            for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
                // f32 rounds α x by up to 6e-8 of itself: e^(α x) moves by as much, times α x.
                let err = (*g as f64 - w).abs();
                let bound = 3e-7 * (1.0 + (alpha * x).abs() as f64);
                assert!(
                    err <= bound * w.abs() + 1e-30,
                    "kernel {kernel}: x {x}: {g} vs {w}"
                );
            }
        }
    }
}
