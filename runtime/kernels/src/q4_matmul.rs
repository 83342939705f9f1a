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

#[cfg(target_arch = "aarch64")]
use crate::aarch64::{dotprod, dotprod::q4_matmul as dot4, neon::q4_matmul as neon};
#[cfg(target_arch = "aarch64")]
use crate::parallel::par_columns;
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
/// nibble and `2j + 1` in its high one; one f32 scale a block. Kept where the graph keeps them
/// ([`Q4Blocks`]), shared rather than copied, so a model's weights are in memory once; or,
/// where this CPU's kernel wants it (the int8 dot product on aarch64), re-laid once at load
/// into four interleaved rows ([`Layout::Interleaved`]) and the graph's copy let go.
#[derive(Debug)]
pub struct Q4Weight {
    n: usize,
    k: usize,
    storage: Storage,
}

/// How a [`Q4Weight`]'s blocks lie in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Row after row, as `MatMulNBits` stores them.
    Rows,
    /// Rows in groups of four, each block's four rows in 64 bytes (see [`Interleaved`]): one
    /// `SDOT` by element multiplies four rows by four activations (llama.cpp's `Q4_0_4x4`
    /// repacking for ARM works alike).
    Interleaved,
}

#[derive(Debug)]
enum Storage {
    Rows(Arc<dyn Q4Blocks>),
    Interleaved(Interleaved),
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

/// Four rows' blocks interleaved: entry `g · per_row + b` of `codes` holds block `b` of rows
/// `4g..4g + 4`, its byte `16t + 4r + j` being byte `4t + j` of row `4g + r`'s block; `scales`
/// the same four rows' scales.
#[derive(Debug, PartialEq)]
pub(crate) struct Interleaved {
    pub(crate) codes: Vec<[u8; 64]>,
    pub(crate) scales: Vec<[f32; 4]>,
    pub(crate) per_row: usize,
}

impl Interleaved {
    fn new(w: Rows<'_>, n: usize) -> Self {
        let per_row = w.per_row;
        let mut codes = vec![[0u8; 64]; n / 4 * per_row];
        let mut scales = vec![[0f32; 4]; n / 4 * per_row];
        for (i, (c, s)) in codes.iter_mut().zip(&mut scales).enumerate() {
            let (g, b) = (i / per_row, i % per_row);
            for r in 0..4 {
                let block = (4 * g + r) * per_row + b;
                for t in 0..4 {
                    c[16 * t + 4 * r..][..4].copy_from_slice(&w.codes[block][4 * t..][..4]);
                }
                s[r] = w.scales[block];
            }
        }
        Interleaved {
            codes,
            scales,
            per_row,
        }
    }

    /// Rows `first..first + rows` in row layout (the generic kernels' input).
    fn rows(&self, first: usize, rows: usize) -> (Vec<[u8; 16]>, Vec<f32>) {
        let per_row = self.per_row;
        let mut codes = vec![[0u8; 16]; rows * per_row];
        let mut scales = vec![0f32; rows * per_row];
        for (i, (c, s)) in codes.iter_mut().zip(&mut scales).enumerate() {
            let (r, b) = (first + i / per_row, i % per_row);
            let entry = (r / 4) * per_row + b;
            for t in 0..4 {
                c[4 * t..][..4].copy_from_slice(&self.codes[entry][16 * t + 4 * (r % 4)..][..4]);
            }
            *s = self.scales[entry][r % 4];
        }
        (codes, scales)
    }
}

impl PartialEq for Q4Weight {
    fn eq(&self, other: &Self) -> bool {
        (self.n, self.k) == (other.n, other.k)
            && match (&self.storage, &other.storage) {
                (Storage::Rows(a), Storage::Rows(b)) => {
                    a.codes() == b.codes() && a.scales() == b.scales()
                }
                (Storage::Interleaved(a), Storage::Interleaved(b)) => a == b,
                _ => false,
            }
    }
}

/// A [`Q4Weight`]'s blocks and scales in row layout, `per_row` blocks a row.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    codes: &'a [[u8; 16]],
    scales: &'a [f32],
    per_row: usize,
}

impl Q4Weight {
    /// From `MatMulNBits`' packed `u8` weight (`n · k / 2` bytes) and its `f32` scales
    /// (`n · k / 32`), in the layout this CPU's kernel wants.
    pub fn new(n: usize, k: usize, blocks: Arc<dyn Q4Blocks>) -> Result<Self, Error> {
        let layout = match Variant::widest(variants()) == Variant::NeonDot && n.is_multiple_of(4) {
            true => Layout::Interleaved,
            false => Layout::Rows,
        };
        Self::with_layout(n, k, blocks, layout)
    }

    /// [`Self::new`] in a given layout ([`Layout::Interleaved`] needs `n` a multiple of 4).
    pub fn with_layout(
        n: usize,
        k: usize,
        blocks: Arc<dyn Q4Blocks>,
        layout: Layout,
    ) -> Result<Self, Error> {
        ensure!(
            k.is_multiple_of(BLOCK),
            "Q4 weight: k = {k} is not a multiple of {BLOCK}"
        );
        let rows = rows_of(n, k, &*blocks)?;
        let storage = match layout {
            Layout::Rows => Storage::Rows(blocks.clone()),
            Layout::Interleaved => {
                ensure!(
                    n.is_multiple_of(4),
                    "Q4 weight: {n} rows do not interleave in fours"
                );
                Storage::Interleaved(Interleaved::new(rows, n))
            }
        };
        Ok(Q4Weight { n, k, storage })
    }

    /// The product's rows (the output's columns).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The product's depth.
    pub fn k(&self) -> usize {
        self.k
    }

    /// How the blocks lie.
    pub fn layout(&self) -> Layout {
        match self.storage {
            Storage::Rows(_) => Layout::Rows,
            Storage::Interleaved(_) => Layout::Interleaved,
        }
    }

    /// `y[m][r] = Σ_k x[m][k] · w[r][k]` for `x` of `m` rows of `k`; `y` is `[m, n]`.
    /// With `q8`, each row of `x` is first rounded to llama.cpp's Q8_0 blocks (32 values,
    /// `x ≈ q · d`, `d = max|x| / 127`) and the blocks multiplied in integers: ONNX's
    /// `MatMulNBits accuracy_level = 4`, and what llama.cpp does for Q4_0.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32], q8: bool) -> Result<(), Error> {
        let variant = match self.layout() {
            Layout::Interleaved => Variant::NeonDot,
            Layout::Rows => *variants()
                .iter()
                .rfind(|&&v| v != Variant::NeonDot)
                .unwrap_or(&Variant::Generic),
        };
        self.matmul_with(variant, x, m, y, q8)
    }

    /// [`Self::matmul`] with one of [`variants`] (AVX-512's f32-activation product is
    /// AVX2's: only its Q8_0 product is its own). The generic variant takes either layout;
    /// `NeonDot` takes [`Layout::Interleaved`], the others [`Layout::Rows`].
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
        let interleaved = match &self.storage {
            Storage::Interleaved(w) => Some(w),
            Storage::Rows(_) => None,
        };
        ensure!(
            variant == Variant::Generic || (variant == Variant::NeonDot) == interleaved.is_some(),
            "the {variant:?} Q4 product does not take a weight laid out as {:?}",
            self.layout()
        );
        let q8_blocks = q8.then(|| Q8Blocks::quantize(x));
        #[cfg(target_arch = "aarch64")]
        if let (Variant::NeonDot, Some(w)) = (variant, interleaved) {
            return Ok(match &q8_blocks {
                Some(blocks) => {
                    let rows: Vec<Q8Row> = (0..m).map(|i| blocks.row(i, self.k)).collect();
                    let fours = dot4::q8_fours(&rows, w.per_row);
                    let (n, cost) = (self.n, self.n * self.k * m);
                    par_columns(y, n / 4, cost, |groups, y| {
                        // SAFETY: `y` is `[m, n]` (checked above), each task writes its own
                        // groups' columns; the variant runs only where the CPU has SDOT.
                        unsafe { dot4::rows_q8(w, groups, &rows, &fours, y, n) }
                    })
                }
                None => {
                    let x = nibble_ordered(x);
                    let rows: Vec<&[f32]> = x.chunks_exact(self.k).collect();
                    self.split(m, 4, y, |first, out| dot4::rows_f32(w, first, &rows, out))
                }
            });
        }
        // Row layout from here (the generic variant reads an interleaved weight's rows back).
        let with_rows =
            |first: usize, out: &mut [f32], run: &dyn Fn(Rows, usize, &mut [f32])| match (
                &self.storage,
                interleaved,
            ) {
                (_, Some(w)) => {
                    let (codes, scales) = w.rows(first, out.len() / m);
                    let per_row = w.per_row;
                    run(
                        Rows {
                            codes: &codes,
                            scales: &scales,
                            per_row,
                        },
                        0,
                        out,
                    )
                }
                (Storage::Rows(blocks), None) => {
                    let w = rows_of(self.n, self.k, &**blocks).expect("checked at load");
                    run(w, first, out)
                }
                (Storage::Interleaved(_), None) => unreachable!("an interleaved weight"),
            };
        match q8_blocks {
            Some(blocks) => {
                #[cfg(target_arch = "x86_64")]
                if let (Variant::Avx512, Storage::Rows(b)) = (variant, &self.storage) {
                    let w = rows_of(self.n, self.k, &**b)?;
                    let groups = avx512::Q8Groups::new(&blocks, m, self.k);
                    let rows: Vec<_> = (0..m).map(|i| groups.row(i)).collect();
                    self.split(m, 1, y, |first, out| {
                        rows_with::<avx512::Vnni>(w, first, &rows, out)
                    });
                    return Ok(());
                }
                let rows: Vec<Q8Row> = (0..m).map(|i| blocks.row(i, self.k)).collect();
                self.split(m, 1, y, |first, out| {
                    with_rows(first, out, &|w, first, out| {
                        w.rows_q8(variant, first, &rows, out)
                    })
                })
            }
            None => {
                let x = nibble_ordered(x);
                let rows: Vec<&[f32]> = x.chunks_exact(self.k).collect();
                self.split(m, 1, y, |first, out| {
                    with_rows(first, out, &|w, first, out| {
                        w.rows_f32(variant, first, &rows, out)
                    })
                })
            }
        }
        Ok(())
    }

    /// Weight rows split over the graph's threads in groups of `group` rows, `rows(first,
    /// out)` filling `out` (`[rows, m]`) from weight row `first` on.
    fn split(
        &self,
        m: usize,
        group: usize,
        y: &mut [f32],
        rows: impl Fn(usize, &mut [f32]) + Sync,
    ) {
        let cost = self.n * self.k * m;
        if m == 1 {
            par_rows(y, group, cost, |g, out| rows(g * group, out));
            return;
        }
        // Computed as `[n, m]`, then transposed.
        let mut t = vec![0f32; self.n * m];
        par_rows(&mut t, group * m, cost, |g, out| rows(g * group, out));
        for (r, col) in t.chunks_exact(m).enumerate() {
            for (i, v) in col.iter().enumerate() {
                y[i * self.n + r] = *v;
            }
        }
    }
}

/// `blocks` as rows of a `[n, k]` weight, their lengths checked.
fn rows_of(n: usize, k: usize, blocks: &dyn Q4Blocks) -> Result<Rows<'_>, Error> {
    let (packed, scales) = (blocks.codes(), blocks.scales());
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

impl Rows<'_> {
    fn rows_f32(self, variant: Variant, first: usize, x: &[&[f32]], out: &mut [f32]) {
        match variant {
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 | Variant::Avx512 => rows_with::<avx2::Avx2>(self, first, x, out),
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => rows_with::<neon::Neon>(self, first, x, out),
            _ => rows_with::<Portable>(self, first, x, out),
        }
    }

    fn rows_q8(self, variant: Variant, first: usize, x: &[Q8Row], out: &mut [f32]) {
        match variant {
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 | Variant::Avx512 => rows_with::<avx2::Avx2Q8>(self, first, x, out),
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => rows_with::<neon::NeonQ8>(self, first, x, out),
            _ => rows_with::<PortableQ8>(self, first, x, out),
        }
    }
}

/// The variants this CPU runs: the generic one, AVX2 + FMA, AVX-512 VNNI (Q8_0
/// activations); NEON, NEON with the int8 dot product (on interleaved weights).
pub fn variants() -> &'static [Variant] {
    crate::variants!(
        x86_64: [
            Avx2 if avx2::available,
            Avx512 if avx512::available,
        ],
        aarch64: [
            Neon if || true,
            NeonDot if dotprod::available,
        ],
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
    /// Minus 8 times each block's sum of codes: what a product with the weight's codes
    /// as stored (`0..16`, not less 8) is off by (the SDOT kernel starts from it).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(crate) biases: Vec<i32>,
}

/// One activation row of [`Q8Blocks`].
#[derive(Clone, Copy)]
pub(crate) struct Q8Row<'a> {
    pub(crate) codes: &'a [[i8; BLOCK]],
    pub(crate) scales: &'a [f32],
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(crate) biases: &'a [i32],
}

impl Q8Blocks {
    /// llama.cpp's `quantize_row_q8_0` rounding (`round(x / d)`, half away from zero), with
    /// the scale kept in f32.
    pub(crate) fn quantize(x: &[f32]) -> Self {
        let (codes, scales): (Vec<[i8; BLOCK]>, Vec<f32>) = x
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
        let biases = codes
            .iter()
            .map(|c| -8 * c.iter().map(|&v| v as i32).sum::<i32>())
            .collect();
        Q8Blocks {
            codes,
            scales,
            biases,
        }
    }

    pub(crate) fn row(&self, i: usize, k: usize) -> Q8Row<'_> {
        let span = i * k / BLOCK..(i + 1) * k / BLOCK;
        Q8Row {
            codes: &self.codes[span.clone()],
            scales: &self.scales[span.clone()],
            biases: &self.biases[span],
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
        /// one row, two, four, four and a remainder, two fours and one; rows of whole groups of four blocks and of one
        /// to three blocks more, and shapes drawn at random; f32 and Q8_0 activations.
        matches_dequantized_product,
        variants(),
        |variant| {
            let mut next = crate::test_numbers(7);
            // Chosen shapes, then eight drawn at random: n of 1 to 40, k of 1 to 12 blocks.
            let mut shapes = vec![(37, 96), (5, 128), (36, 288), (8, 416), (4, 32)];
            for _ in 0..8 {
                let (a, b) = (next(), next());
                shapes.push((1 + a as usize % 40, 32 * (1 + b as usize % 12)));
            }
            for (n, k) in shapes {
                let codes: Vec<u8> = (0..n * k).map(|_| (next() % 16) as u8).collect();
                let scales: Vec<f32> = (0..n * k / 32)
                    .map(|_| (next() % 1000) as f32 / 4096.0)
                    .collect();
                let layouts = match n % 4 {
                    0 => vec![Layout::Rows, Layout::Interleaved],
                    _ => vec![Layout::Rows],
                };
                let takes = |layout| match variant {
                    Variant::Generic => true,
                    Variant::NeonDot => layout == Layout::Interleaved,
                    _ => layout == Layout::Rows,
                };
                let weight = |r: usize, c: usize| {
                    (codes[r * k + c] as f64 - 8.0) * scales[r * k / 32 + c / 32] as f64
                };
                for m in [1, 2, 4, 7, 9] {
                    let x: Vec<f32> = (0..m * k)
                        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                        .collect();
                    let q8 = Q8Blocks::quantize(&x);
                    // What the Q8 product multiplies: each activation as its code times its
                    // scale.
                    let rounded: Vec<f32> = (0..m * k)
                        .map(|i| q8.codes[i / 32][position(i % 32)] as f32 * q8.scales[i / 32])
                        .collect();
                    for (layout, (activations, reference)) in layouts
                        .iter()
                        .flat_map(|&l| [(l, (false, &x)), (l, (true, &rounded))])
                    {
                        let w = weight_of(n, k, &codes, &scales, layout);
                        let mut y = vec![0f32; m * n];
                        let run = w.matmul_with(variant, &x, m, &mut y, activations);
                        if !takes(layout) {
                            assert!(run.is_err(), "{variant:?} on {layout:?}");
                            continue;
                        }
                        run.unwrap();
                        for i in 0..m {
                            for r in 0..n {
                                let want: f64 = (0..k)
                                    .map(|c| weight(r, c) * reference[i * k + c] as f64)
                                    .sum();
                                let got = y[i * n + r];
                                assert!(
                                    (got as f64 - want).abs() < 1e-5,
                                    "q8 {activations} {layout:?}, [{n}, {k}], m {m} [{i}, {r}]: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    );

    /// A weight from codes `0..16`, row-major `[n, k]`, packed as `MatMulNBits` packs them.
    fn weight_of(n: usize, k: usize, codes: &[u8], scales: &[f32], layout: Layout) -> Q4Weight {
        let packed: Vec<u8> = codes.chunks_exact(2).map(|c| c[0] | (c[1] << 4)).collect();
        Q4Weight::with_layout(n, k, Arc::new((packed, scales.to_vec())), layout).unwrap()
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
