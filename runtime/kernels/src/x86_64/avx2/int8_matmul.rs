//! AVX2 kernel, for x86-64 CPUs without AVX-512 VNNI (AMD Zen 2–3, Intel before Ice Lake).
//!
//! AVX2 has no `u8 × i8` dot product that cannot saturate: `vpmaddubsw` sums two products
//! into an `i16`, which `255 · 127 · 2` overflows (ONNX Runtime's AVX2 kernel takes that
//! risk; its `reduce_range` option exists for it). Here both sides widen to `i16` and
//! `vpmaddwd` sums pairs into `i32` lanes, exact. It reads the AVX-512 kernel's packing: a
//! quad's sixteen bytes for four columns sign-extend to one vector whose lanes hold a
//! column's `k` pairs, `(0, 1)` and `(2, 3)`, against the row's four bytes repeated; the two
//! lanes of a column are added as the tile is stored. Weights stay `i8` in memory (a quarter
//! of f32's traffic); on Zen 3 `vpmaddwd` + `vpaddd` run ~1.2× the f32 FMA rate.
//!
//! Weights within ±64 (ONNX Runtime's `reduce_range`, meant for CPUs like these) cannot
//! saturate `vpmaddubsw`: for them a byte path multiplies the packed bytes as they are.

use crate::int8_matmul::{Finish, Int8Weight, PANEL};
use std::arch::x86_64::*;
use std::ops::Range;

/// Whether the CPU has the AVX2 the kernel uses.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Rows a tile of the pair path: three rows by one panel's four vectors are twelve
/// accumulators, with the three rows' bytes and a weight vector the sixteen registers.
const PAIR_ROWS: usize = 3;
/// Rows a tile of the byte path: six rows by two vectors, the panel's two and a constant.
const BYTE_ROWS: usize = 6;

/// Panels `panels` of `out` (`[rows, n]`) `= finish(a · w)` in the stored weights, `a` rows
/// of `w.kp` bytes.
///
/// # Safety
/// The CPU has AVX2; `a` holds `rows` rows of `w.kp`, `out` `rows · w.n`, the columns of
/// `panels` this thread's alone; `finish`'s columns cover whole panels, its row sums (if any)
/// `rows`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn product(
    w: &Int8Weight,
    a: &[u8],
    rows: usize,
    panels: Range<usize>,
    finish: &Finish,
    out: *mut i32,
) {
    let tile_rows = if w.narrow { BYTE_ROWS } else { PAIR_ROWS };
    for p in panels {
        let mut i = 0;
        while i < rows {
            let r = (rows - i).min(tile_rows);
            let at = Tile {
                w,
                a,
                finish,
                out,
                p,
                i,
            };
            // SAFETY: as the caller promised; the tile lies inside `a`, `w` and `out`.
            unsafe {
                match r {
                    1 => at.run::<1>(),
                    2 => at.run::<2>(),
                    3 => at.run::<3>(),
                    4 => at.run::<4>(),
                    5 => at.run::<5>(),
                    _ => at.run::<6>(),
                }
            }
            i += r;
        }
    }
}

/// Where a tile starts: panel `p`, row `i`.
struct Tile<'a> {
    w: &'a Int8Weight,
    a: &'a [u8],
    finish: &'a Finish<'a>,
    out: *mut i32,
    p: usize,
    i: usize,
}

/// A tile's raw sums: per row, the panel's columns 0–7 and 8–15.
type Sums<const R: usize> = [[__m256i; 2]; R];

impl Tile<'_> {
    /// `R` rows by one panel, over the whole of `k`; stores only the columns below `n`.
    ///
    /// # Safety
    /// As [`product`]'s, and rows `i..i + R` and panel `p` exist; `R` at most [`PAIR_ROWS`]
    /// unless the weight is narrow.
    #[target_feature(enable = "avx2")]
    unsafe fn run<const R: usize>(&self) {
        let sums = match self.w.narrow {
            true => self.bytes::<R>(),
            false => self.pairs::<R>(),
        };
        self.store(&sums);
    }

    /// The pair path, exact for any weight.
    #[target_feature(enable = "avx2")]
    unsafe fn pairs<const R: usize>(&self) -> Sums<R> {
        let (w, kp) = (self.w, self.w.kp);
        let quads = kp / 4;
        // Per row, four vectors of four columns each (two lanes a column).
        let mut acc = [[_mm256_setzero_si256(); 4]; R];
        let panel = w.quads.as_ptr().add(self.p * quads).cast::<u8>();
        let rows = self.a.as_ptr().add(self.i * kp);
        for q in 0..quads {
            let x: [__m256i; R] = std::array::from_fn(|r| {
                let bytes = rows.add(r * kp + 4 * q).cast::<i32>().read_unaligned();
                _mm256_cvtepu8_epi16(_mm_set1_epi32(bytes))
            });
            let quad = panel.add(64 * q);
            for j in 0..4 {
                let b = _mm256_cvtepi8_epi16(_mm_load_si128(quad.add(16 * j).cast()));
                for (acc, &x) in acc.iter_mut().zip(&x) {
                    acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(x, b));
                }
            }
        }
        // Lanes `[c0 c1 c4 c5 | c2 c3 c6 c7]` of each half, into column order.
        acc.map(|acc| {
            [0, 1].map(|half| {
                let pairs = _mm256_hadd_epi32(acc[2 * half], acc[2 * half + 1]);
                _mm256_permute4x64_epi64::<0b11_01_10_00>(pairs)
            })
        })
    }

    /// The byte path, for narrow weights: `vpmaddubsw` sums a column's two `u8 × i8`
    /// products into an `i16` (at most `255 · 64 · 2` = 32640, no saturation), `vpmaddwd`
    /// by ones the two `i16` of a lane into its `i32`: a quad's four `k` a lane, the
    /// packing's own layout, at twice the pair path's multiply-adds per instruction.
    #[target_feature(enable = "avx2")]
    unsafe fn bytes<const R: usize>(&self) -> Sums<R> {
        let (w, kp) = (self.w, self.w.kp);
        let quads = kp / 4;
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let ones = _mm256_set1_epi16(1);
        let panel = w.quads.as_ptr().add(self.p * quads).cast::<u8>();
        let rows = self.a.as_ptr().add(self.i * kp);
        for q in 0..quads {
            let quad = panel.add(64 * q);
            let b = [0, 1].map(|j| _mm256_load_si256(quad.add(32 * j).cast()));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi32(rows.add(r * kp + 4 * q).cast::<i32>().read_unaligned());
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    let pairs = _mm256_maddubs_epi16(x, b);
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        acc
    }

    /// Finishes a tile's sums (zero points, scale) and stores the columns below `n`.
    #[target_feature(enable = "avx2")]
    unsafe fn store<const R: usize>(&self, sums: &Sums<R>) {
        let (w, finish) = (self.w, self.finish);
        for half in 0..2 {
            let col = self.p * PANEL + 8 * half;
            let valid = w.n.saturating_sub(col).min(8) as i32;
            if valid == 0 {
                continue;
            }
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(valid),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            let column = _mm256_loadu_si256(finish.column.as_ptr().add(col).cast());
            let zero = finish
                .zero
                .map(|(z, sums)| (_mm256_loadu_si256(z.as_ptr().add(col).cast()), sums));
            for (r, sums) in sums.iter().enumerate() {
                let mut v = _mm256_add_epi32(sums[half], column);
                if let Some((z, row_sums)) = zero {
                    let row_sum = _mm256_set1_epi32(row_sums[self.i + r]);
                    v = _mm256_sub_epi32(v, _mm256_mullo_epi32(z, row_sum));
                }
                if let Some(scale) = finish.scale {
                    let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(scale));
                    v = _mm256_castps_si256(f);
                }
                _mm256_maskstore_epi32(self.out.add((self.i + r) * w.n + col), mask, v);
            }
        }
    }
}
