//! 4-bit matrix products for language-model decoders: `y = x · dequant(W)ᵀ`, the weight
//! kept in llama.cpp's Q4_0 blocks (32 codes, one scale: `w = (code - 8) · scale`).
//!
//! Hand-written because tract 0.23 computes a 4-bit product by unpacking weight panels to f32
//! for its general matrix kernel on x86. Here each block is widened in registers and
//! multiplied straight into up to four activation rows, so the weights are read once per four
//! rows and never widened in memory. Two arithmetics, as the ONNX node's `accuracy_level`
//! asks: f32 activations, or (level 4) activations rounded to Q8_0 and each block multiplied
//! in integers, as llama.cpp computes Q4_0 — a third of the instructions per block, which is
//! what one token of decode is bound by (BENCHMARKS.md). Kernels are picked at run time:
//! AVX-512 VNNI for Q8_0 activations ([`avx512`]), AVX2+FMA ([`avx2`]), elsewhere
//! lane-by-lane loops for the compiler to vectorise (NEON is aarch64's baseline). Weight
//! rows are split over the run's spinning [`crate::parallel::Crew`].

use std::sync::Arc;

use crate::parallel::par_rows;
#[cfg(target_arch = "x86_64")]
pub(crate) use crate::x86_64::prefetch_ahead;
#[cfg(target_arch = "x86_64")]
use crate::x86_64::{avx2::q4_matmul as avx2, avx512::q4_matmul as avx512};
use crate::{ensure, Error, Variant};

/// Codes in a block.
pub const BLOCK: usize = 32;

/// A `[n, k]` weight in Q4_0 blocks, as ONNX's `MatMulNBits` stores them: block `b` of row
/// `r` is bytes `16 (r k / 32 + b)..` of `packed`, byte `j` holding element `2j` in its low
/// nibble and `2j + 1` in its high one; one f32 scale a block. Both are the graph's own
/// constants ([`Q4Blocks`]), shared rather than copied, so a model's weights are in memory once.
#[derive(Debug)]
pub struct Q4Weight {
    n: usize,
    k: usize,
    blocks: Arc<dyn Q4Blocks>,
}

/// Where a [`Q4Weight`]'s bytes are: codes (`n · k / 2` bytes) and scales (`n · k / 32`).
pub trait Q4Blocks: Send + Sync + std::fmt::Debug {
    fn codes(&self) -> &[u8];
    fn scales(&self) -> &[f32];
}

/// Codes and scales owned.
impl Q4Blocks for (Vec<u8>, Vec<f32>) {
    fn codes(&self) -> &[u8] {
        &self.0
    }

    fn scales(&self) -> &[f32] {
        &self.1
    }
}

impl PartialEq for Q4Weight {
    fn eq(&self, other: &Self) -> bool {
        (self.n, self.k) == (other.n, other.k)
            && self.blocks.codes() == other.blocks.codes()
            && self.blocks.scales() == other.blocks.scales()
    }
}

/// A [`Q4Weight`]'s blocks and scales, `per_row` blocks a row.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    codes: &'a [[u8; 16]],
    scales: &'a [f32],
    per_row: usize,
}

impl Q4Weight {
    /// From `MatMulNBits`' packed `u8` weight (`n · k / 2` bytes) and its `f32` scales
    /// (`n · k / 32`).
    pub fn new(n: usize, k: usize, blocks: Arc<dyn Q4Blocks>) -> Result<Self, Error> {
        ensure!(
            k.is_multiple_of(BLOCK),
            "Q4 weight: k = {k} is not a multiple of {BLOCK}"
        );
        let weight = Q4Weight { n, k, blocks };
        weight.rows()?;
        Ok(weight)
    }

    /// The product's rows (the output's columns).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The product's depth.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The blocks and scales, borrowed from their storage, their lengths checked.
    fn rows(&self) -> Result<Rows<'_>, Error> {
        let (n, k) = (self.n, self.k);
        let (packed, scales) = (self.blocks.codes(), self.blocks.scales());
        ensure!(
            packed.len() == n * k / 2 && scales.len() == n * k / BLOCK,
            "Q4 weight [{n}, {k}]: {} bytes of codes and {} scales",
            packed.len(),
            scales.len()
        );
        Ok(Rows {
            codes: packed.as_chunks().0,
            scales,
            per_row: k / BLOCK,
        })
    }

    /// `y[m][r] = Σ_k x[m][k] · w[r][k]` for `x` of `m` rows of `k`; `y` is `[m, n]`.
    /// With `q8`, each row of `x` is first rounded to llama.cpp's Q8_0 blocks (32 values,
    /// `x ≈ q · d`, `d = max|x| / 127`) and the blocks multiplied in integers: ONNX's
    /// `MatMulNBits accuracy_level = 4`, and what llama.cpp does for Q4_0.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32], q8: bool) -> Result<(), Error> {
        self.matmul_with(Variant::widest(variants()), x, m, y, q8)
    }

    /// [`Self::matmul`] with one of [`variants`] (AVX-512's f32-activation product is
    /// AVX2's: only its Q8_0 product is its own).
    pub fn matmul_with(
        &self,
        variant: Variant,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        q8: bool,
    ) -> Result<(), Error> {
        let variant = variant.check(variants())?;
        ensure!(
            x.len() == m * self.k && y.len() == m * self.n,
            "Q4 product [{m}, {}] × [{}, {}]ᵀ: {} inputs, {} outputs",
            self.k,
            self.n,
            self.k,
            x.len(),
            y.len()
        );
        let w = self.rows()?;
        if q8 {
            let blocks = Q8Blocks::quantize(x);
            #[cfg(target_arch = "x86_64")]
            if variant == Variant::Avx512 {
                let groups = avx512::Q8Groups::new(&blocks, m, self.k);
                let rows: Vec<_> = (0..m).map(|i| groups.row(i)).collect();
                return self.split(m, y, |first, out| {
                    rows_with::<avx512::Vnni>(w, first, &rows, out)
                });
            }
            let rows: Vec<Q8Row> = (0..m).map(|i| blocks.row(i, self.k)).collect();
            self.split(m, y, |first, out| w.rows_q8(variant, first, &rows, out))
        } else {
            let x = nibble_ordered(x);
            let rows: Vec<&[f32]> = x.chunks_exact(self.k).collect();
            self.split(m, y, |first, out| w.rows_f32(variant, first, &rows, out))
        }
    }

    /// Weight rows split over the graph's threads, `rows(first, out)` filling `[rows, m]`.
    fn split(
        &self,
        m: usize,
        y: &mut [f32],
        rows: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Result<(), Error> {
        let cost = self.n * self.k * m;
        if m == 1 {
            par_rows(y, 1, cost, rows);
            return Ok(());
        }
        // Computed as `[n, m]`, then transposed.
        let mut t = vec![0f32; self.n * m];
        par_rows(&mut t, m, cost, rows);
        for (r, col) in t.chunks_exact(m).enumerate() {
            for (i, v) in col.iter().enumerate() {
                y[i * self.n + r] = *v;
            }
        }
        Ok(())
    }
}

impl Rows<'_> {
    fn rows_f32(self, variant: Variant, first: usize, x: &[&[f32]], out: &mut [f32]) {
        match variant {
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 | Variant::Avx512 => rows_with::<avx2::Avx2>(self, first, x, out),
            _ => rows_with::<Portable>(self, first, x, out),
        }
    }

    fn rows_q8(self, variant: Variant, first: usize, x: &[Q8Row], out: &mut [f32]) {
        match variant {
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 | Variant::Avx512 => rows_with::<avx2::Avx2Q8>(self, first, x, out),
            _ => rows_with::<PortableQ8>(self, first, x, out),
        }
    }
}

/// The variants this CPU runs: the generic one, AVX2 + FMA, AVX-512 VNNI (Q8_0 activations).
pub fn variants() -> &'static [Variant] {
    crate::variants!(
        Avx2 if avx2::available,
        Avx512 if avx512::available,
    )
}

/// Where element `j` of a block in the weight's nibble order comes from: the block's even
/// elements (the weight bytes' low nibbles), then its odd ones (the high nibbles).
fn nibble(j: usize) -> usize {
    if j < 16 {
        2 * j
    } else {
        2 * j - 31
    }
}

/// `x`'s blocks of 32 in nibble order ([`nibble`]).
pub(crate) fn nibble_ordered(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(BLOCK)
        .flat_map(|b| (0..BLOCK).map(|j| b[nibble(j)]))
        .collect()
}

/// Activation rows in llama.cpp's Q8_0: blocks of 32 `i8` (in nibble order: [`nibble`]) and
/// one `f32` scale a block.
pub(crate) struct Q8Blocks {
    pub(crate) codes: Vec<[i8; BLOCK]>,
    pub(crate) scales: Vec<f32>,
}

/// One activation row of [`Q8Blocks`].
#[derive(Clone, Copy)]
pub(crate) struct Q8Row<'a> {
    pub(crate) codes: &'a [[i8; BLOCK]],
    pub(crate) scales: &'a [f32],
}

impl Q8Blocks {
    /// llama.cpp's `quantize_row_q8_0` rounding (`round(x / d)`, half away from zero), with
    /// the scale kept in f32.
    pub(crate) fn quantize(x: &[f32]) -> Self {
        let (codes, scales) = x
            .chunks_exact(BLOCK)
            .map(|b| {
                let d = b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
                (
                    std::array::from_fn(|j| (b[nibble(j)] * inv).round() as i8),
                    d,
                )
            })
            .unzip();
        Q8Blocks { codes, scales }
    }

    pub(crate) fn row(&self, i: usize, k: usize) -> Q8Row<'_> {
        let span = i * k / BLOCK..(i + 1) * k / BLOCK;
        Q8Row {
            codes: &self.codes[span.clone()],
            scales: &self.scales[span],
        }
    }
}

/// One weight row (its blocks and scales) against `R` activation rows.
pub(crate) trait Dot {
    type Row<'a>: Copy + Sync;
    fn dot<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [Self::Row<'_>; R]) -> [f32; R];
}

/// Activation rows four at a time (the rest one by one), against every weight row of
/// `out` (`[rows, m]`): the four rows stay in L1 while the weight streams past them.
pub(crate) fn rows_with<'a, D: Dot>(w: Rows, first: usize, x: &[D::Row<'a>], out: &mut [f32]) {
    let m = x.len();
    let per_row = w.per_row;
    let weight_row = |r: usize| {
        let span = (first + r) * per_row..(first + r + 1) * per_row;
        (&w.codes[span.clone()], &w.scales[span])
    };
    let rows = out.len() / m;
    let four = m / 4 * 4;
    for i in (0..four).step_by(4) {
        let xs: [D::Row<'a>; 4] = std::array::from_fn(|j| x[i + j]);
        for r in 0..rows {
            let (codes, scales) = weight_row(r);
            out[r * m + i..][..4].copy_from_slice(&D::dot(codes, scales, xs));
        }
    }
    for i in four..m {
        for r in 0..rows {
            let (codes, scales) = weight_row(r);
            out[r * m + i] = D::dot(codes, scales, [x[i]])[0];
        }
    }
}

/// Portable: sixteen lanes of partial sums a row, each lane its own chain, for the compiler
/// to vectorise.
pub(crate) struct Portable;

impl Dot for Portable {
    type Row<'a> = &'a [f32];
    fn dot<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [&[f32]; R]) -> [f32; R] {
        xs.map(|x| {
            let mut acc = [0f32; 16];
            for ((q, &d), x) in codes.iter().zip(scales).zip(x.chunks_exact(BLOCK)) {
                for j in 0..16 {
                    // (code - 8) · scale is exact in f32: a 4-bit integer times the scale.
                    let lo = ((q[j] & 15) as i32 - 8) as f32 * d;
                    let hi = ((q[j] >> 4) as i32 - 8) as f32 * d;
                    acc[j] = madd(lo, x[j], madd(hi, x[j + 16], acc[j]));
                }
            }
            acc.iter().sum()
        })
    }
}

/// Portable, Q8 activations: a block's integer dot product, then its two scales.
pub(crate) struct PortableQ8;

impl Dot for PortableQ8 {
    type Row<'a> = Q8Row<'a>;
    fn dot<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [Q8Row; R]) -> [f32; R] {
        xs.map(|x| {
            let mut acc = 0f32;
            for (((q, &d), qx), &dx) in codes.iter().zip(scales).zip(x.codes).zip(x.scales) {
                let mut sum = 0i32;
                for j in 0..16 {
                    sum += ((q[j] & 15) as i32 - 8) * qx[j] as i32;
                    sum += ((q[j] >> 4) as i32 - 8) * qx[j + 16] as i32;
                }
                acc = madd(d * dx, sum as f32, acc);
            }
            acc
        })
    }
}

/// `a · b + c`, fused where the target has FMA as a baseline (aarch64); plain elsewhere,
/// where `mul_add` would be a library call.
#[inline(always)]
pub(crate) fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_arch = "aarch64") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::variant_test!(
        /// Each variant against the plain definition, in f64, for shapes that take every path:
        /// one row, four rows and a remainder; rows of whole groups of four blocks and of one
        /// to three blocks more; f32 and Q8_0 activations.
        matches_dequantized_product,
        variants(),
        |variant| {
            let mut seed = 7u64;
            let mut next = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u32
            };
            for (n, k) in [(37, 96), (5, 128), (9, 288), (3, 416)] {
                let codes: Vec<u8> = (0..n * k).map(|_| (next() % 16) as u8).collect();
                let scales: Vec<f32> = (0..n * k / 32)
                    .map(|_| (next() % 1000) as f32 / 4096.0)
                    .collect();
                let w = weight_of(n, k, &codes, &scales);
                let weight = |r: usize, c: usize| {
                    (codes[r * k + c] as f64 - 8.0) * scales[r * k / 32 + c / 32] as f64
                };
                for m in [1, 4, 7] {
                    let x: Vec<f32> = (0..m * k)
                        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                        .collect();
                    let q8 = Q8Blocks::quantize(&x);
                    // What the Q8 product multiplies: each activation as its code times its
                    // scale.
                    let rounded: Vec<f32> = (0..m * k)
                        .map(|i| q8.codes[i / 32][position(i % 32)] as f32 * q8.scales[i / 32])
                        .collect();
                    for (activations, reference) in [(false, &x), (true, &rounded)] {
                        let mut y = vec![0f32; m * n];
                        w.matmul_with(variant, &x, m, &mut y, activations).unwrap();
                        for i in 0..m {
                            for r in 0..n {
                                let want: f64 = (0..k)
                                    .map(|c| weight(r, c) * reference[i * k + c] as f64)
                                    .sum();
                                let got = y[i * n + r];
                                assert!(
                                    (got as f64 - want).abs() < 1e-5,
                                    "q8 {activations}, [{n}, {k}], m {m} [{i}, {r}]: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    );

    /// A weight from codes `0..16`, row-major `[n, k]`, packed as `MatMulNBits` packs them.
    fn weight_of(n: usize, k: usize, codes: &[u8], scales: &[f32]) -> Q4Weight {
        let packed: Vec<u8> = codes.chunks_exact(2).map(|c| c[0] | (c[1] << 4)).collect();
        Q4Weight::new(n, k, Arc::new((packed, scales.to_vec()))).unwrap()
    }

    /// Where element `e` of a block lands in nibble order: the inverse of [`nibble`].
    fn position(e: usize) -> usize {
        e / 2 + e % 2 * 16
    }

    /// Q8_0 rounding: within half a step of the input, the block's largest magnitude at 127,
    /// an all-zero block zero.
    #[test]
    fn q8_blocks_round_to_nearest() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        x[32..].fill(0.0);
        let q = Q8Blocks::quantize(&x);
        assert_eq!(q.scales[1], 0.0);
        assert!(q.codes[1].iter().all(|&c| c == 0));
        let d = q.scales[0];
        assert!(q.codes[0].iter().any(|&c| c.unsigned_abs() == 127));
        for (e, v) in x[..32].iter().enumerate() {
            let c = q.codes[0][position(e)];
            assert!(
                (v - c as f32 * d).abs() <= d / 2.0 * 1.0001,
                "{v} vs {c} · {d}"
            );
        }
    }

    #[test]
    fn refuses_a_ragged_weight() {
        let weight = |k: usize, codes: usize, scales: usize| {
            Q4Weight::new(2, k, Arc::new((vec![0u8; codes], vec![1f32; scales])))
        };
        assert!(weight(32, 32, 2).is_ok());
        assert!(weight(40, 40, 2).is_err());
        assert!(weight(32, 30, 2).is_err());
        assert!(weight(32, 32, 3).is_err());
        // Tensors of other types: the op's own test (glimpse-graph).
    }
}
