//! int8 matrix products: ONNX `MatMulInteger` with a constant weight, the form ONNX Runtime's
//! `quantize_dynamic` writes (`u8` activations quantised at run time, `i8` weights).
//!
//! Hand-written because tract 0.23 wires `MatMulInteger` as a product plus the zero-point
//! corrections computed on every run (`Reduce<Sum>` over the activations and the weights,
//! casts), which on ViT-L took as long as the product itself. Here the weight is packed once,
//! at load, for AVX-512 VNNI's `vpdpbusd` (`u8 × i8`, four products summed into each `i32`
//! lane): panels of sixteen columns, four `k` a lane. Its column sums are kept too, so the
//! zero points (and the rescale to f32) are applied to the sums as the kernel stores them:
//!
//! `Σ (a - a0)(w - w0) = Σ a·w - a0 Σ w - w0 Σ a + k a0 w0`,
//!
//! with `Σ a` taken only when a weight zero point is not 0. `i8` activations and `u8` weights
//! are shifted by 128 into that form, their zero points with them. Integer sums are exact.
//! Without VNNI, an AVX2 kernel reads the same packing (`avx2.rs` says how).

use std::ops::Range;

#[cfg(target_arch = "aarch64")]
use crate::aarch64::dotprod::{self, int8_matmul as dot4};
use crate::parallel::par_columns;
#[cfg(target_arch = "x86_64")]
use crate::x86_64::{avx2::int8_matmul as avx2, avx512::int8_matmul as avx512};
use crate::{ensure, Error, Variant};

/// Columns a panel: one `i32` vector of sixteen lanes.
pub(crate) const PANEL: usize = 16;

/// Four `k` of a panel's sixteen columns: byte `4l + t` is row `4q + t` of column `16p + l`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub(crate) struct Quad(pub(crate) [i8; 64]);

/// A constant `[k, n]` int8 weight, packed for the product.
#[derive(Debug, PartialEq, Eq)]
pub struct Int8Weight {
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// `k` rounded up to four; rows past `k` are zero.
    pub(crate) kp: usize,
    /// Panel `p`'s quads are `quads[p · kp / 4..][..kp / 4]`; columns past `n` are zero.
    pub(crate) quads: Vec<Quad>,
    /// Each column's sum of the stored (signed) weights; zero past `n`, to whole panels.
    pub(crate) sums: Vec<i32>,
    /// Each column's zero point, shifted as the weights are; zero past `n`, to whole panels.
    pub(crate) zero: Vec<i32>,
    /// Every stored weight within ±64 (`quantize_dynamic`'s `reduce_range`): two `u8 × i8`
    /// products then sum within an `i16`, which the AVX2 kernel's byte path relies on.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) narrow: bool,
}

/// What a product does to its raw sums before storing them (the zero-point formula in the
/// module's comment, then the optional scale), per column to whole panels.
pub(crate) struct Finish<'a> {
    /// `k·a0·w0[c] − a0·Σw[c]`, added to every row.
    pub(crate) column: &'a [i32],
    /// With weight zero points: `w0[c]` and each row's `Σa`, their product subtracted.
    pub(crate) zero: Option<(&'a [i32], &'a [i32])>,
    /// Each sum becomes the bits of `sum as f32 · scale`.
    pub(crate) scale: Option<f32>,
}

/// A weight's or zero point's bytes, as `MatMulInteger` takes them: signed or unsigned.
#[derive(Debug, Clone, Copy)]
pub enum Bytes<'a> {
    I8(&'a [i8]),
    U8(&'a [u8]),
}

impl Bytes<'_> {
    fn len(self) -> usize {
        match self {
            Bytes::I8(b) => b.len(),
            Bytes::U8(b) => b.len(),
        }
    }

    fn signed(self) -> bool {
        matches!(self, Bytes::I8(_))
    }

    /// Value `i`, shifted into `i8`'s range as the packing stores it (`u8` less 128).
    fn stored(self, i: usize) -> i32 {
        match self {
            Bytes::I8(b) => b[i] as i32,
            Bytes::U8(b) => b[i] as i32 - 128,
        }
    }
}

impl Int8Weight {
    /// From `MatMulInteger`'s `b` (`[k, n]` row-major, `i8` or `u8`) and its zero point (of
    /// the same type: one, one per column, or none).
    pub fn new(b: Bytes, k: usize, n: usize, zero_point: Option<Bytes>) -> Result<Self, Error> {
        ensure!(k > 0 && n > 0, "int8 weight: empty, [{k}, {n}]");
        ensure!(
            b.len() == k * n,
            "int8 weight: {} values for [{k}, {n}]",
            b.len()
        );
        let shift = if b.signed() { 0 } else { 128 };
        // In one pass each, row after row (a large weight's load was ~60 instructions a value
        // on aarch64 through per-value matches and column-strided sums).
        let stored: Vec<i8> = match b {
            Bytes::I8(b) => b.to_vec(),
            Bytes::U8(b) => b.iter().map(|&v| (v ^ 0x80) as i8).collect(),
        };
        let padded = n.next_multiple_of(PANEL);
        let mut zero: Vec<i32> = match zero_point {
            None => vec![-shift; n],
            Some(z) => {
                ensure!(
                    z.signed() == b.signed() && (z.len() == 1 || z.len() == n),
                    "int8 weight [{k}, {n}]: zero point {z:?}"
                );
                (0..n).map(|c| z.stored(c % z.len())).collect()
            }
        };
        zero.resize(padded, 0);
        let kp = k.next_multiple_of(4);
        let panels = n.div_ceil(PANEL);
        let mut quads = vec![Quad([0; 64]); panels * kp / 4];
        let mut sums = vec![0i32; padded];
        for (r, row) in stored.chunks_exact(n).enumerate() {
            for (s, &w) in sums.iter_mut().zip(row) {
                *s += w as i32;
            }
            // Row `r` is byte `r % 4` of each column's four in quad `r / 4` of every panel.
            for (p, cols) in row.chunks(PANEL).enumerate() {
                let quad = &mut quads[p * kp / 4 + r / 4].0;
                for (l, &w) in cols.iter().enumerate() {
                    quad[4 * l + r % 4] = w;
                }
            }
        }
        let narrow = stored.iter().all(|w| (-64..=64).contains(w));
        Ok(Int8Weight {
            k,
            n,
            kp,
            quads,
            sums,
            zero,
            narrow,
        })
    }

    /// `y[m][c] = Σ_r (a[m][r] - a0)(w[r][c] - w0[c])` for `a` of `m` rows of `k` (`u8`, or
    /// `i8` with `signed`); `y` is `[m, n]`. With a `scale`, each sum becomes the bits of the
    /// f32 `sum as f32 · scale` (what `Mul(Cast(y), scale)` computes). Rows are split over
    /// the graph's threads.
    pub fn matmul(
        &self,
        a: &[u8],
        signed: bool,
        a0: i32,
        scale: Option<f32>,
        m: usize,
        y: &mut [i32],
    ) -> Result<(), Error> {
        self.matmul_with(Variant::widest(variants()), a, signed, a0, scale, m, y)
    }

    /// [`Self::matmul`] with one of [`variants`].
    #[allow(clippy::too_many_arguments, reason = "matmul's, and the variant")]
    pub fn matmul_with(
        &self,
        variant: Variant,
        a: &[u8],
        signed: bool,
        a0: i32,
        scale: Option<f32>,
        m: usize,
        y: &mut [i32],
    ) -> Result<(), Error> {
        let variant = variant.check(variants())?;
        ensure!(
            a.len() == m * self.k && y.len() == m * self.n,
            "int8 product [{m}, {}] × [{}, {}]: {} inputs, {} outputs",
            self.k,
            self.k,
            self.n,
            a.len(),
            y.len()
        );
        // Rows padded to `kp` and shifted to what the kernel multiplies (`u8`; `i8` for
        // `SDOT`), the zero point with them: a copy only when either is needed.
        let want_signed = variant == Variant::NeonDot;
        let (a, a0) = if signed != want_signed || self.kp != self.k {
            let flip = if signed != want_signed { 0x80 } else { 0 };
            let mut padded = vec![0u8; m * self.kp];
            for (to, from) in padded.chunks_exact_mut(self.kp).zip(a.chunks_exact(self.k)) {
                to.iter_mut().zip(from).for_each(|(t, f)| *t = f ^ flip);
            }
            let shift = match (signed, want_signed) {
                (true, false) => 128,
                (false, true) => -128,
                _ => 0,
            };
            (std::borrow::Cow::Owned(padded), a0 + shift)
        } else {
            (std::borrow::Cow::Borrowed(a), a0)
        };
        let k = self.k as i32;
        let column: Vec<i32> = (self.sums.iter().zip(&self.zero))
            .map(|(&s, &z)| {
                k.wrapping_mul(a0)
                    .wrapping_mul(z)
                    .wrapping_sub(a0.wrapping_mul(s))
            })
            .collect();
        let weight_zero = self.zero.iter().any(|&z| z != 0);
        let value = |v: u8| {
            if want_signed {
                v as i8 as i32
            } else {
                v as i32
            }
        };
        let row_sums: Vec<i32> = match weight_zero {
            true => (a.chunks_exact(self.kp))
                .map(|row| row.iter().map(|&v| value(v)).sum())
                .collect(),
            false => Vec::new(),
        };
        let finish = Finish {
            column: &column,
            zero: weight_zero.then_some((&self.zero[..], &row_sums[..])),
            scale,
        };
        // Threads take columns, every row: each reads only its share of the weight (an
        // image's 50 rows use each weight byte only 50 times; splitting rows, each thread read
        // all of it).
        let panels = self.n.div_ceil(PANEL);
        let cost = m * self.n * self.k;
        par_columns(y, panels.div_ceil(TASK_PANELS), cost, |tasks, out| {
            let from = tasks.start * TASK_PANELS;
            let to = (tasks.end * TASK_PANELS).min(panels);
            // SAFETY: `y` holds `m` rows of `n`; each task writes only its own columns, and
            // `y` outlives `par_columns`.
            unsafe { self.product(variant, &a, m, from..to, &finish, out) };
        });
        Ok(())
    }

    /// The product's depth.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The product's columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Panels `panels` of `out = finish(Σ a·w)` (the stored weights) for `rows` padded rows
    /// of `a`.
    ///
    /// # Safety
    /// This CPU runs `variant`; `out` holds `rows` rows of `n`, whose columns in `panels`
    /// nothing else reads or writes.
    unsafe fn product(
        &self,
        variant: Variant,
        a: &[u8],
        rows: usize,
        panels: Range<usize>,
        finish: &Finish,
        out: *mut i32,
    ) {
        let whole = self.n.div_ceil(PANEL) * PANEL;
        debug_assert!(a.len() >= rows * self.kp && panels.end * PANEL <= whole);
        debug_assert!(finish.column.len() >= whole);
        debug_assert!(finish
            .zero
            .is_none_or(|(z, s)| z.len() >= whole && s.len() >= rows));
        match variant {
            // SAFETY: the CPU has the kernel's features; shapes as `matmul` checked them.
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => {
                return unsafe { avx512::product(self, a, rows, panels, finish, out) }
            }
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => return unsafe { avx2::product(self, a, rows, panels, finish, out) },
            _ => {}
        }
        let columns = panels.start * PANEL..(panels.end * PANEL).min(self.n);
        // SAFETY: as the caller promised.
        unsafe {
            match variant {
                #[cfg(target_arch = "aarch64")]
                Variant::NeonDot => dot4::product(self, a, rows, panels, out),
                _ => portable_product(self, a, rows, panels, out),
            }
            finish.apply(self.n, rows, columns, out);
        }
    }
}

/// Panels a thread's task: the AVX-512 kernel's widest tile.
const TASK_PANELS: usize = 2;

impl Finish<'_> {
    /// Finishes the raw sums in `columns` of `rows` rows of `n` at `out`, lane by lane (the
    /// kernels do it in registers).
    ///
    /// # Safety
    /// `out` holds `rows` rows of `n`, its `columns` this thread's alone.
    pub(crate) unsafe fn apply(&self, n: usize, rows: usize, columns: Range<usize>, out: *mut i32) {
        for r in 0..rows {
            // SAFETY: as the caller promised.
            let y = unsafe {
                std::slice::from_raw_parts_mut(out.add(r * n + columns.start), columns.len())
            };
            let row_sum = self.zero.map(|(_, sums)| sums[r]);
            for (c, y) in columns.clone().zip(y) {
                let mut sum = y.wrapping_add(self.column[c]);
                if let (Some((zero, _)), Some(row_sum)) = (self.zero, row_sum) {
                    sum = sum.wrapping_sub(zero[c].wrapping_mul(row_sum));
                }
                *y = match self.scale {
                    Some(scale) => (sum as f32 * scale).to_bits() as i32,
                    None => sum,
                };
            }
        }
    }
}

/// [`Int8Weight::product`]'s raw sums lane by lane, where no kernel applies (and as the
/// kernels' reference in tests).
///
/// # Safety
/// As [`Int8Weight::product`]'s.
unsafe fn portable_product(
    w: &Int8Weight,
    a: &[u8],
    rows: usize,
    panels: Range<usize>,
    out: *mut i32,
) {
    let per_panel = w.kp / 4;
    for (r, row) in a.chunks_exact(w.kp).take(rows).enumerate() {
        for p in panels.clone() {
            let mut acc = [0i32; PANEL];
            for (quad, x) in w.quads[p * per_panel..][..per_panel]
                .iter()
                .zip(row.chunks_exact(4))
            {
                for (l, acc) in acc.iter_mut().enumerate() {
                    let w = &quad.0[4 * l..][..4];
                    *acc += x
                        .iter()
                        .zip(w)
                        .map(|(&a, &w)| a as i32 * w as i32)
                        .sum::<i32>();
                }
            }
            let cols = PANEL.min(w.n - p * PANEL);
            // SAFETY: as the caller promised.
            unsafe { std::slice::from_raw_parts_mut(out.add(r * w.n + p * PANEL), cols) }
                .copy_from_slice(&acc[..cols]);
        }
    }
}

/// The variants this CPU runs: the generic one, AVX2, AVX-512 VNNI; `SDOT` on aarch64.
pub fn variants() -> &'static [Variant] {
    crate::variants!(
        x86_64: [
            Avx2 if avx2::available,
            Avx512 if avx512::available,
        ],
        aarch64: [NeonDot if dotprod::available],
    )
}

/// Whether this CPU runs a kernel rather than [`portable_product`].
pub fn kernel_available() -> bool {
    variants().len() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::variant_test!(
    /// Each variant against the plain integer definition, for every combination of activation
    /// and weight types, zero points (none, scalar, per column), `k` not a multiple of four,
    /// columns not a multiple of sixteen, and row counts that take every tile height.
    matches_the_integer_product, variants(), |variant| {
        let mut numbers = crate::test_numbers(11);
        let mut next = || numbers() as u8;
        for (k, n) in [(7, 5), (64, 16), (37, 70), (130, 33), (64, 200)] {
            for (signed_a, signed_w) in [(false, true), (true, true), (false, false), (true, false)]
            {
                let raw_w: Vec<u8> = (0..k * n).map(|_| next()).collect();
                let raw_w_signed = as_i8(&raw_w);
                let w = match signed_w {
                    true => Bytes::I8(&raw_w_signed),
                    false => Bytes::U8(&raw_w),
                };
                let value = |v: u8, signed: bool| if signed { v as i8 as i32 } else { v as i32 };
                let per_column: Vec<u8> = (0..n).map(|_| next()).collect();
                let zero_points: [Option<Vec<u8>>; 3] =
                    [None, Some(vec![next()]), Some(per_column)];
                for w0 in zero_points {
                    let w0_signed = w0.as_deref().map(as_i8);
                    let w0_bytes = match signed_w {
                        true => w0_signed.as_deref().map(Bytes::I8),
                        false => w0.as_deref().map(Bytes::U8),
                    };
                    let weight = Int8Weight::new(w, k, n, w0_bytes).unwrap();
                    for m in [0, 1, 6, 13] {
                        let a: Vec<u8> = (0..m * k).map(|_| next()).collect();
                        let a0 = value(next(), signed_a);
                        let want: Vec<i32> = (0..m * n)
                            .map(|j| {
                                let (i, c) = (j / n, j % n);
                                let z = w0.as_ref().map_or(0, |z| value(z[c % z.len()], signed_w));
                                (0..k)
                                    .map(|r| {
                                        (value(a[i * k + r], signed_a) - a0)
                                            * (value(raw_w[r * n + c], signed_w) - z)
                                    })
                                    .sum()
                            })
                            .collect();
                        let mut y = vec![0i32; m * n];
                        weight.matmul_with(variant, &a, signed_a, a0, None, m, &mut y).unwrap();
                        assert_eq!(y, want, "k {k} n {n} m {m} signed {signed_a}/{signed_w}");
                        weight
                            .matmul_with(variant, &a, signed_a, a0, Some(0.37), m, &mut y)
                            .unwrap();
                        for (got, want) in y.iter().zip(&want) {
                            assert_eq!(f32::from_bits(*got as u32), *want as f32 * 0.37);
                        }
                    }
                }
            }
        }
    });

    /// Split over a crew's threads (tasks of a few panels each, every row), the product is the
    /// one computed in one piece: with zero points on both sides and the rescale.
    #[test]
    fn threads_take_columns() {
        let (k, n, m) = (130, 200, 13);
        let w: Vec<u8> = (0..k * n).map(|i| (i * 37 % 256) as u8).collect();
        let w0: Vec<u8> = (0..n).map(|c| (c * 11 % 256) as u8).collect();
        let weight = Int8Weight::new(Bytes::U8(&w), k, n, Some(Bytes::U8(&w0))).unwrap();
        let a: Vec<u8> = (0..m * k).map(|i| (i * 101 % 256) as u8).collect();
        let run = |y: &mut Vec<i32>| weight.matmul(&a, false, 7, Some(0.01), m, y).unwrap();
        let mut alone = vec![0; m * n];
        run(&mut alone);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let split = pool.install(|| {
            crate::parallel::Crew::serve(1, || {
                let mut y = vec![0; m * n];
                run(&mut y);
                y
            })
        });
        assert!(split == alone, "split over threads differs");
        // And against the portable product taken as a whole (rows padded to `kp`).
        let mut padded = vec![0u8; m * weight.kp];
        for (to, from) in padded.chunks_exact_mut(weight.kp).zip(a.chunks(k)) {
            to[..k].copy_from_slice(from);
        }
        let a = padded;
        let mut whole = vec![0; m * n];
        let panels = 0..n.div_ceil(PANEL);
        // SAFETY: `whole` holds `m` rows of `n`.
        unsafe { portable_product(&weight, &a, m, panels, whole.as_mut_ptr()) };
        let (column, row_sums) = finish_parts(&weight, &a, 7);
        let finish = Finish {
            column: &column,
            zero: Some((&weight.zero, &row_sums)),
            scale: Some(0.01),
        };
        // SAFETY: as above.
        unsafe { finish.apply(n, m, 0..n, whole.as_mut_ptr()) };
        assert!(split == whole, "differs from the portable product");
        // The portable path by task, as CPUs without the kernel split it: the last panel
        // part-filled (200 columns).
        let mut pieces = vec![0; m * n];
        let panels = n.div_ceil(PANEL);
        for from in (0..panels).step_by(TASK_PANELS) {
            let to = (from + TASK_PANELS).min(panels);
            let columns = from * PANEL..(to * PANEL).min(n);
            // SAFETY: as above; the pieces' columns are disjoint.
            unsafe {
                portable_product(&weight, &a, m, from..to, pieces.as_mut_ptr());
                finish.apply(n, m, columns, pieces.as_mut_ptr());
            }
        }
        assert!(pieces == whole, "the portable product by task differs");
    }

    /// The AVX2 kernel, which a CPU with AVX-512 VNNI would not run through `matmul`, against
    /// the portable product: every tile height of both paths, a part-filled last panel, the
    /// finish terms; wide weights (`u8` with zero points) on the pair path, narrow ones
    /// (`reduce_range`'s ±64) on the byte path, at their extremes against all-255 activations
    /// too, where a pair sum reaches 32640 of `i16`'s 32767.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_the_portable_product() {
        if !avx2::available() {
            return;
        }
        for (k, n) in [(4, 16), (130, 200), (768, 40)] {
            let wide: Vec<u8> = (0..k * n).map(|i| (i * 37 % 256) as u8).collect();
            let w0: Vec<u8> = (0..n).map(|c| (c * 11 % 256) as u8).collect();
            let wide = Int8Weight::new(Bytes::U8(&wide), k, n, Some(Bytes::U8(&w0)));
            let narrow: Vec<i8> = (0..k * n)
                .map(|i| ((i * 37 % 129) as i32 - 64) as i8)
                .collect();
            let z0: Vec<i8> = (0..n).map(|c| ((c * 11 % 129) as i32 - 64) as i8).collect();
            let narrow = Int8Weight::new(Bytes::I8(&narrow), k, n, Some(Bytes::I8(&z0)));
            let extreme: Vec<i8> = (0..k * n)
                .map(|i| if i % 3 == 0 { -64 } else { 64 })
                .collect();
            let extreme = Int8Weight::new(Bytes::I8(&extreme), k, n, None);
            for (weight, narrow) in [(wide, false), (narrow, true), (extreme, true)] {
                let weight = weight.unwrap();
                assert_eq!(weight.narrow, narrow, "k {k} n {n}");
                for m in [1, 2, 3, 4, 5, 6, 7, 13] {
                    let mut a: Vec<u8> =
                        (0..m * weight.kp).map(|i| (i * 101 % 256) as u8).collect();
                    if m == 7 {
                        a.fill(255);
                    }
                    let (column, row_sums) = finish_parts(&weight, &a, 7);
                    for scale in [None, Some(0.01)] {
                        let finish = Finish {
                            column: &column,
                            zero: Some((&weight.zero, &row_sums)),
                            scale,
                        };
                        let panels = 0..n.div_ceil(PANEL);
                        let (mut want, mut got) = (vec![0; m * n], vec![0; m * n]);
                        // SAFETY: both hold `m` rows of `n`; the CPU has AVX2.
                        unsafe {
                            portable_product(&weight, &a, m, panels.clone(), want.as_mut_ptr());
                            finish.apply(n, m, 0..n, want.as_mut_ptr());
                            avx2::product(&weight, &a, m, panels, &finish, got.as_mut_ptr());
                        }
                        assert!(
                            got == want,
                            "k {k} n {n} m {m} narrow {narrow} scale {scale:?}"
                        );
                    }
                }
            }
        }
        // One weight past ±64 keeps a matrix on the pair path.
        let w = Bytes::I8(&[64, -64, 65, 0]);
        assert!(!Int8Weight::new(w, 2, 2, None).unwrap().narrow);
    }

    /// Bytes as the `i8`s of the same bits.
    fn as_i8(v: &[u8]) -> Vec<i8> {
        v.iter().map(|&v| v as i8).collect()
    }

    /// [`Finish`]'s per-column terms and row sums for padded rows `a` with zero point `a0`,
    /// in plain arithmetic.
    fn finish_parts(w: &Int8Weight, a: &[u8], a0: i32) -> (Vec<i32>, Vec<i32>) {
        let column = (w.sums.iter().zip(&w.zero))
            .map(|(&s, &z)| (w.k as i32) * a0 * z - a0 * s)
            .collect();
        let row_sums = (a.chunks_exact(w.kp))
            .map(|row| row.iter().map(|&v| v as i32).sum())
            .collect();
        (column, row_sums)
    }

    #[test]
    fn refuses_weights_it_cannot_take() {
        let w = Bytes::I8(&[0; 12]);
        assert!(Int8Weight::new(w, 3, 4, None).is_ok());
        assert!(Int8Weight::new(w, 4, 4, None).is_err());
        assert!(Int8Weight::new(Bytes::I8(&[]), 0, 4, None).is_err());
        assert!(Int8Weight::new(w, 3, 4, Some(Bytes::I8(&[0; 3]))).is_err());
        assert!(Int8Weight::new(w, 3, 4, Some(Bytes::U8(&[0; 4]))).is_err());
        assert!(Int8Weight::new(w, 3, 4, Some(Bytes::I8(&[0; 4]))).is_ok());
        // Tensors of another rank or type: the op's own test (glimpse-graph).
    }
}
