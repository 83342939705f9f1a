//! AVX-512 VNNI kernel, picked at run time when the CPU has it.
//!
//! A tile is up to ten activation rows by up to two panels (32 columns): 20 accumulators,
//! each four `k` a step one broadcast of a row's four bytes and one `vpdpbusd` per panel (ten
//! rows rather than six by four panels: half the weight bytes read a product, ~5% on ViT-B/32).
//! The panels of a tile stay in L1 or L2 while the row tiles pass them, and the tiles
//! prefetch the next panels into L2 meanwhile (7% on ViT-B/32's 50-row products, whose
//! weights come from memory). A tile's sums are finished (zero points, scale) in registers as
//! they are stored.

use crate::int8_matmul::{Finish, Int8Weight, PANEL};
use std::arch::x86_64::*;
use std::ops::Range;

/// Whether the CPU has the AVX-512 parts the kernel uses.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Rows a tile: ViT-B/32's 50 rows an image are five tiles.
const ROWS: usize = 10;
/// Panels a tile.
const PANELS: usize = 2;

/// Panels `panels` of `out` (`[rows, n]`) `= finish(a · w)` in the stored weights, `a` rows
/// of `w.kp` bytes.
///
/// # Safety
/// The CPU has [`available`]'s features; `a` holds `rows` rows of `w.kp`, `out` `rows · w.n`,
/// the columns of `panels` this thread's alone; `finish`'s columns cover whole panels, its
/// row sums (if any) `rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn product(
    w: &Int8Weight,
    a: &[u8],
    rows: usize,
    panels: Range<usize>,
    finish: &Finish,
    out: *mut i32,
) {
    if rows == 0 {
        return;
    }
    let quads = w.kp / 4;
    let tiles = rows.div_ceil(ROWS);
    let (mut p, panels) = (panels.start, panels.end);
    while p < panels {
        let step = if panels - p >= PANELS { PANELS } else { 1 };
        // The next panels' lines, spread over this group's tiles, fetched into L2 while
        // the tiles run.
        let next = (panels - p - step).min(PANELS) * quads;
        let per = next.div_ceil(tiles * quads);
        let mut i = 0;
        while i < rows {
            let r = (rows - i).min(ROWS);
            let first = (i / ROWS) * per * quads;
            let at = Tile {
                w,
                a,
                finish,
                out,
                p,
                i,
                ahead: w.quads.as_ptr().add((p + step) * quads + first.min(next)),
                ahead_lines: next.saturating_sub(first).min(per * quads),
                per,
            };
            // SAFETY: as the caller promised; the tile lies inside `a`, `w` and `out`.
            unsafe {
                match step {
                    PANELS => at.rows::<PANELS>(r),
                    _ => at.rows::<1>(r),
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
    finish: &'a Finish<'a>,
    out: *mut i32,
    p: usize,
    i: usize,
    /// Lines to prefetch, `per` a step.
    ahead: *const crate::int8_matmul::Quad,
    ahead_lines: usize,
    per: usize,
}

impl Tile<'_> {
    /// The tile of `r` rows (at most [`ROWS`]) by `P` panels.
    ///
    /// # Safety
    /// As [`Tile::run`]'s.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn rows<const P: usize>(&self, r: usize) {
        match r {
            1 => self.run::<1, P>(),
            2 => self.run::<2, P>(),
            3 => self.run::<3, P>(),
            4 => self.run::<4, P>(),
            5 => self.run::<5, P>(),
            6 => self.run::<6, P>(),
            7 => self.run::<7, P>(),
            8 => self.run::<8, P>(),
            9 => self.run::<9, P>(),
            _ => self.run::<10, P>(),
        }
    }

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
            for e in 0..self.per {
                let l = q * self.per + e;
                if l < self.ahead_lines {
                    _mm_prefetch::<_MM_HINT_T1>(self.ahead.add(l).cast());
                }
            }
            let b: [__m512i; P] =
                std::array::from_fn(|j| _mm512_load_si512(panels.add(j * quads + q).cast()));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(rows.add(r * kp + 4 * q).cast::<i32>().read_unaligned());
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    *acc = _mm512_dpbusd_epi32(*acc, x, b);
                }
            }
        }
        let out = self.out;
        let finish = self.finish;
        for (j, acc) in (0..P).map(|j| acc.map(|row| row[j])).enumerate() {
            let col = (self.p + j) * PANEL;
            let mask = ((1u32 << PANEL.min(w.n - col)) - 1) as __mmask16;
            let column = _mm512_loadu_si512(finish.column.as_ptr().add(col).cast());
            let zero = finish
                .zero
                .map(|(z, sums)| (_mm512_loadu_si512(z.as_ptr().add(col).cast()), sums));
            for (r, &acc) in acc.iter().enumerate() {
                let mut v = _mm512_add_epi32(acc, column);
                if let Some((z, sums)) = zero {
                    let row_sum = _mm512_set1_epi32(sums[self.i + r]);
                    v = _mm512_sub_epi32(v, _mm512_mullo_epi32(z, row_sum));
                }
                if let Some(scale) = finish.scale {
                    let f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(scale));
                    v = _mm512_castps_si512(f);
                }
                _mm512_mask_storeu_epi32(out.add((self.i + r) * w.n + col), mask, v);
            }
        }
    }
}
