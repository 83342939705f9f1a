//! AVX2 + FMA kernels, picked at run time when the CPU has both.

use crate::q4_matmul::{prefetch_ahead, Dot, Q8Row, BLOCK};
use std::arch::x86_64::*;

/// Whether the CPU has AVX2 and FMA: the kernels below are only picked then.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// f32 activations.
pub(crate) struct Avx2;

impl Dot for Avx2 {
    type Row<'a> = &'a [f32];
    #[inline(always)]
    fn dot<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [&[f32]; R]) -> [f32; R] {
        // SAFETY: `Q4Weight::rows_f32` picks `Avx2` after `available()`.
        unsafe { dot_rows(codes, scales, xs) }
    }
}

/// [`crate::q4_matmul::Portable`] in AVX2: a block's codes, less 8, are widened to f32 once,
/// multiplied into each activation row, and the row's sum scaled by the block's scale.
#[target_feature(enable = "avx2,fma")]
fn dot_rows<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [&[f32]; R]) -> [f32; R] {
    let zero = [[_mm256_setzero_ps(); R]; 2];
    row_sums(even_odd(
        (codes, scales),
        zero,
        #[inline(always)]
        |b, acc| block(&codes[b], scales[b], b, xs, acc),
    ))
}

/// Runs `block(b, acc)` over blocks `0..n`, even blocks into one set of accumulators and
/// odd blocks into the other: two independent chains of additions. Prefetches the weight
/// ahead of them.
#[inline(always)]
fn even_odd<const R: usize>(
    (codes, scales): (&[[u8; 16]], &[f32]),
    mut acc: [[__m256; R]; 2],
    mut block: impl FnMut(usize, &mut [__m256; R]),
) -> [[__m256; R]; 2] {
    let n = codes.len();
    for b in (0..n / 2 * 2).step_by(2) {
        if b.is_multiple_of(4) {
            prefetch_ahead(codes, scales, b);
        }
        block(b, &mut acc[0]);
        block(b + 1, &mut acc[1]);
    }
    if n % 2 == 1 {
        block(n - 1, &mut acc[0]);
    }
    acc
}

/// Each row's total from [`even_odd`]'s two sets of accumulators.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn row_sums<const R: usize>([even, odd]: [[__m256; R]; 2]) -> [f32; R] {
    std::array::from_fn(|r| hsum(_mm256_add_ps(even[r], odd[r])))
}

/// Block `b` (codes `q`, scale `d`) into each row's accumulator.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn block<const R: usize>(q: &[u8; 16], d: f32, b: usize, xs: [&[f32]; R], acc: &mut [__m256; R]) {
    let low = _mm_set1_epi8(0x0f);
    let eight = _mm_set1_epi8(8);
    // SAFETY: a 16-byte unaligned load from a [u8; 16].
    let q = unsafe { _mm_loadu_si128(q.as_ptr().cast()) };
    let lo = _mm_sub_epi8(_mm_and_si128(q, low), eight);
    let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16::<4>(q), low), eight);
    let c = [
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(lo))),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(hi))),
    ];
    let d = _mm256_set1_ps(d);
    for (acc, x) in acc.iter_mut().zip(xs) {
        let x = &x[b * BLOCK..b * BLOCK + BLOCK];
        // SAFETY: four 8-float unaligned loads inside a 32-float slice.
        let x = unsafe { [0, 8, 16, 24].map(|o| _mm256_loadu_ps(x.as_ptr().add(o))) };
        let s01 = _mm256_fmadd_ps(c[1], x[1], _mm256_mul_ps(c[0], x[0]));
        let s23 = _mm256_fmadd_ps(c[3], x[3], _mm256_mul_ps(c[2], x[2]));
        *acc = _mm256_fmadd_ps(d, _mm256_add_ps(s01, s23), *acc);
    }
}

/// Q8_0 activations.
pub(crate) struct Avx2Q8;

impl Dot for Avx2Q8 {
    type Row<'a> = Q8Row<'a>;
    #[inline(always)]
    fn dot<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [Q8Row; R]) -> [f32; R] {
        // SAFETY: `Q4Weight::rows_q8` picks `Avx2Q8` after `available()`.
        unsafe { dot_rows_q8(codes, scales, xs) }
    }
}

/// A block's 32 codes less 8, as bytes in nibble order (low nibbles, then high).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn unpack(q: &[u8; 16]) -> __m256i {
    let low = _mm_set1_epi8(0x0f);
    // SAFETY: a 16-byte unaligned load from a [u8; 16].
    let q = unsafe { _mm_loadu_si128(q.as_ptr().cast()) };
    let lo = _mm_and_si128(q, low);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), low);
    _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8))
}

/// [`crate::q4_matmul::PortableQ8`] in AVX2: a block's codes, less 8, are unpacked to 32 bytes once;
/// for each row, byte products summed in pairs (`maddubs`, which takes one unsigned side:
/// the codes' magnitudes, the activations carrying both signs), then in fours, widened to
/// f32 and scaled by the two blocks' scales.
#[target_feature(enable = "avx2,fma")]
fn dot_rows_q8<const R: usize>(codes: &[[u8; 16]], scales: &[f32], xs: [Q8Row; R]) -> [f32; R] {
    let zero = [[_mm256_setzero_ps(); R]; 2];
    row_sums(even_odd(
        (codes, scales),
        zero,
        #[inline(always)]
        |b, acc| block_q8(&codes[b], scales[b], b, &xs, acc),
    ))
}

/// Block `b` (codes `q`, scale `d`) into each row's accumulator.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn block_q8<const R: usize>(
    q: &[u8; 16],
    d: f32,
    b: usize,
    xs: &[Q8Row; R],
    acc: &mut [__m256; R],
) {
    let w = unpack(q);
    let magnitude = _mm256_sign_epi8(w, w);
    for (acc, x) in acc.iter_mut().zip(xs) {
        // SAFETY: a 32-byte unaligned load from an [i8; 32].
        let qx = unsafe { _mm256_loadu_si256(x.codes[b].as_ptr().cast()) };
        let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(qx, w));
        let sum = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x.scales[b]), sum, *acc);
    }
}

/// The sum of the eight lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
}
