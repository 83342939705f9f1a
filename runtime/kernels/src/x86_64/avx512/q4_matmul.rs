//! AVX-512 VNNI kernel for Q8_0 activations, picked at run time when the CPU has it.
//!
//! One 64-byte load takes four Q4_0 blocks of a weight row; masking the low and the high
//! nibbles gives each block's first and last sixteen codes, still unsigned (`0..16`).
//! `vpdpbusd` multiplies them by the activations, laid out to match ([`Group`]), and sums
//! each four products into an `i32` lane, on top of a bias that takes off the codes' offset
//! of 8. Four blocks cost about as many instructions as one block in the AVX2 kernel.

use crate::q4_matmul::{prefetch_ahead, Dot, Q8Blocks, BLOCK};
use std::arch::x86_64::*;

/// Whether the CPU has the AVX-512 parts the kernel uses: the kernel is only picked then.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// Four consecutive Q8_0 blocks of an activation row, in the order a weight's four blocks
/// come out of one 64-byte load: `i32` lane `l` multiplies bytes `4l..4l + 4` of `lo` and
/// of `hi`, which belong to block `l / 4`. Blocks past the row's end are zero.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Group {
    /// Each block's even elements (the weight's low nibbles).
    lo: [i8; 64],
    /// Each block's odd elements (the high nibbles).
    hi: [i8; 64],
    /// Minus 8 times the sum of the eight activations lane `l` multiplies: the weight
    /// codes are `w + 8`.
    bias: [i32; 16],
    /// Each block's scale, on its four lanes.
    scale: [f32; 16],
}

/// `m` activation rows of `k` as [`Group`]s.
pub(crate) struct Q8Groups {
    groups: Vec<Group>,
    per_row: usize,
}

impl Q8Groups {
    /// `blocks`' rows of `k / 32` blocks, regrouped.
    pub(crate) fn new(blocks: &Q8Blocks, m: usize, k: usize) -> Self {
        let per_block_row = k / BLOCK;
        let per_row = per_block_row.div_ceil(4);
        let zero = Group {
            lo: [0; 64],
            hi: [0; 64],
            bias: [0; 16],
            scale: [0.0; 16],
        };
        let mut groups = vec![zero; m * per_row];
        for (i, row) in groups.chunks_exact_mut(per_row).enumerate() {
            let span = i * per_block_row..(i + 1) * per_block_row;
            let codes = blocks.codes[span.clone()].chunks(4);
            let scales = blocks.scales[span].chunks(4);
            for ((g, codes), scales) in row.iter_mut().zip(codes).zip(scales) {
                for (j, (c, &d)) in codes.iter().zip(scales).enumerate() {
                    g.lo[16 * j..][..16].copy_from_slice(&c[..16]);
                    g.hi[16 * j..][..16].copy_from_slice(&c[16..]);
                    g.scale[4 * j..][..4].fill(d);
                }
                for l in 0..16 {
                    let lane = g.lo[4 * l..][..4].iter().chain(&g.hi[4 * l..][..4]);
                    g.bias[l] = -8 * lane.map(|&v| v as i32).sum::<i32>();
                }
            }
        }
        Q8Groups { groups, per_row }
    }

    /// Row `i`'s groups.
    pub(crate) fn row(&self, i: usize) -> &[Group] {
        &self.groups[i * self.per_row..][..self.per_row]
    }
}

/// Q8_0 activations, as [`Group`]s.
pub(crate) struct Vnni;

impl Dot for Vnni {
    type Row<'a> = &'a [Group];
    #[inline(always)]
    fn dot<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [&[Group]; R]) -> [f32; R] {
        // SAFETY: `Q4Weight::matmul` picks `Vnni` after `available()`.
        unsafe { dot_rows(codes, scales, xs) }
    }
}

/// One weight row's blocks against `R` rows of groups: four blocks a step, into two sets of
/// accumulators taken in turn (two independent chains of additions); the last one to three
/// blocks by masked loads, which read nothing past the row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_rows<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [&[Group]; R]) -> [f32; R] {
    let mut acc = [[_mm512_setzero_ps(); R]; 2];
    let full = codes.len() / 4;
    for g in 0..full {
        // SAFETY: blocks 4g..4g + 4 lie inside `codes`, and their scales inside `scales`.
        let (q, d) = unsafe {
            (
                _mm512_loadu_si512(codes.as_ptr().add(4 * g).cast()),
                _mm_loadu_ps(scales.as_ptr().add(4 * g)),
            )
        };
        prefetch_ahead(codes, scales, 4 * g);
        group(q, d, g, &xs, &mut acc[g % 2]);
    }
    let rest = codes.len() % 4;
    if rest > 0 {
        // SAFETY: the masks cover the `rest` blocks left in `codes` and their scales.
        let (q, d) = unsafe {
            (
                _mm512_maskz_loadu_epi8(
                    (1u64 << (16 * rest)) - 1,
                    codes.as_ptr().add(4 * full).cast(),
                ),
                _mm_maskz_loadu_ps((1u8 << rest) - 1, scales.as_ptr().add(4 * full)),
            )
        };
        group(q, d, full, &xs, &mut acc[full % 2]);
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(_mm512_add_ps(acc[0][r], acc[1][r])))
}

/// Four weight blocks (codes `q`, scales `d`) against group `g` of each row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn group<const R: usize>(
    q: __m512i,
    d: __m128,
    g: usize,
    xs: &[&[Group]; R],
    acc: &mut [__m512; R],
) {
    let low = _mm512_set1_epi8(0x0f);
    let lo = _mm512_and_si512(q, low);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low);
    // Block j's scale on lanes 4j..4j + 4.
    let lanes = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    let d = _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(d));
    for (acc, x) in acc.iter_mut().zip(xs) {
        let x = &x[g];
        // SAFETY: 64-byte loads from 64-byte fields of a `Group`.
        let (bias, xlo, xhi, dx) = unsafe {
            (
                _mm512_load_si512(x.bias.as_ptr().cast()),
                _mm512_load_si512(x.lo.as_ptr().cast()),
                _mm512_load_si512(x.hi.as_ptr().cast()),
                _mm512_load_ps(x.scale.as_ptr()),
            )
        };
        let sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(bias, lo, xlo), hi, xhi);
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d, dx), *acc);
    }
}
