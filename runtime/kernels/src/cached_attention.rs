//! A decoder's attention over its key/value cache, one query at a time: causal softmax of the
//! scaled dot products with the cached keys, then the weighted sum of the cached values; and
//! the rotate-half RoPE that turns queries and keys to their positions. The cache is stored in
//! f32 or f16 ([`Stored`]: half the memory and half the reads). `glimpse-graph`'s
//! `CachedAttention` op (ONNX Runtime's `GroupQueryAttention`) and the in-graph cache call
//! these.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::parallel::par_rows;
#[cfg(target_arch = "x86_64")]
use crate::x86_64::avx2;
use crate::{ensure, Error, Variant};

/// The attention of `queries` (`[s, heads × d]`, at positions `past..past + s`) over the
/// whole cache (keys, values: `kv_heads` heads of `past + s` rows of `d`, `head_stride`
/// elements apart; `heads / kv_heads` query heads share each), scores scaled by `scale`, into
/// `out` (`[s, heads × d]`). Heads are split over the run's threads.
pub fn attention<T: Stored>(
    queries: &[f32],
    cache: (&[T], &[T]),
    head_stride: usize,
    heads: (usize, usize),
    scale: f32,
    shape: (usize, usize, usize),
    out: &mut [f32],
) -> Result<(), Error> {
    let variant = Variant::widest(variants());
    attention_with(
        variant,
        queries,
        cache,
        head_stride,
        heads,
        scale,
        shape,
        out,
    )
}

/// [`attention`] with one of [`variants`].
#[allow(clippy::too_many_arguments, reason = "attention's, and the variant")]
pub fn attention_with<T: Stored>(
    variant: Variant,
    queries: &[f32],
    (keys, values): (&[T], &[T]),
    head_stride: usize,
    (heads, kv_heads): (usize, usize),
    scale: f32,
    (past, s, d): (usize, usize, usize),
    out: &mut [f32],
) -> Result<(), Error> {
    let variant = variant.check(variants())?;
    let (width, total) = (heads * d, past + s);
    ensure!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "attention: {heads} heads in {kv_heads} groups"
    );
    ensure!(
        queries.len() == s * width && out.len() == s * width,
        "attention: {} queries and {} outputs, for [{s}, {width}]",
        queries.len(),
        out.len()
    );
    let cache = (kv_heads - 1) * head_stride + total * d;
    ensure!(
        keys.len() >= cache && values.len() >= cache,
        "attention: a cache of {} keys and {} values, for {kv_heads} heads of {total} × {d}",
        keys.len(),
        values.len()
    );
    let group = heads / kv_heads;
    // Per head, then per query: `[heads, s, d]`; for one token, the output's order.
    let mut by_head = vec![0f32; if s == 1 { 0 } else { heads * s * d }];
    let rows = match s {
        1 => &mut *out,
        _ => &mut by_head[..],
    };
    let cost = heads * s * total * d * 2;
    par_rows(rows, s * d, cost, |first, rows| {
        let mut scores = vec![0f32; total];
        let mut scratch = Scratch::default();
        for (j, out) in rows.chunks_exact_mut(s * d).enumerate() {
            let h = first + j;
            let cache = (h / group) * head_stride..(h / group) * head_stride + total * d;
            let head = Head {
                keys: &keys[cache.clone()],
                values: &values[cache],
                scale,
            };
            for (i, out) in out.chunks_exact_mut(d).enumerate() {
                let query = &queries[i * width + h * d..][..d];
                let seen = past + i + 1;
                T::attend(variant, head, query, &mut scores[..seen], out, &mut scratch);
            }
        }
    });
    for (head, rows) in by_head.chunks_exact(s * d).enumerate() {
        for (i, row) in rows.chunks_exact(d).enumerate() {
            out[i * width + head * d..][..d].copy_from_slice(row);
        }
    }
    Ok(())
}

/// Rotate-half RoPE of this step's queries `[s, heads × d]` and keys `[s, kv × d]`, row `i`
/// at position `past + i`, from the `cos` and `sin` tables `[positions, d / 2]`: in each
/// head, elements `j` and `j + d / 2` turn by angle `j` of the position.
pub fn rotate(
    queries: &mut [f32],
    keys: &mut [f32],
    (cos, sin): (&[f32], &[f32]),
    past: usize,
    s: usize,
    d: usize,
) -> Result<(), Error> {
    let half = d / 2;
    ensure!(
        d.is_multiple_of(2) && half > 0 && cos.len() == sin.len() && cos.len().is_multiple_of(half),
        "rotary tables of {} and {} values, for pairs of {half}",
        cos.len(),
        sin.len()
    );
    let positions = cos.len() / half;
    let rows =
        (queries.chunks_exact_mut(queries.len() / s)).zip(keys.chunks_exact_mut(keys.len() / s));
    for (i, (q, k)) in rows.enumerate() {
        let p = past + i;
        ensure!(
            p < positions,
            "position {p} is past the rotary tables' {positions} positions (the context)"
        );
        let (cos, sin) = (&cos[p * half..][..half], &sin[p * half..][..half]);
        for x in q.chunks_exact_mut(d).chain(k.chunks_exact_mut(d)) {
            let (lo, hi) = x.split_at_mut(half);
            for j in 0..half {
                let (a, b) = (lo[j], hi[j]);
                lo[j] = a * cos[j] - b * sin[j];
                hi[j] = b * cos[j] + a * sin[j];
            }
        }
    }
    Ok(())
}

/// One head's keys and values `[positions, d]`, and the scores' scale.
#[derive(Clone, Copy)]
pub struct Head<'a, T = f32> {
    pub keys: &'a [T],
    pub values: &'a [T],
    pub scale: f32,
}

/// The variants this CPU runs: the generic loops, and AVX2 (the same loops compiled for it,
/// twice as wide as the baseline's SSE2; f16 rows widened in registers with F16C).
pub fn variants() -> &'static [Variant] {
    crate::variants!(x86_64: [Avx2 if || {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }])
}

/// One query against the head's first `scores.len()` keys: softmax of the scaled dot
/// products, then the weighted sum of the values into `out`; `variant` is one this CPU runs.
fn attend(variant: Variant, head: Head, query: &[f32], scores: &mut [f32], out: &mut [f32]) {
    match variant {
        // SAFETY: the CPU has AVX2.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { avx2::cached_attention::attend(head, query, scores, out) },
        _ => attend_on(head, query, scores, out),
    }
}

/// [`attend`]'s loops, for the compiler to vectorise.
#[inline(always)]
pub(crate) fn attend_on(head: Head, query: &[f32], scores: &mut [f32], out: &mut [f32]) {
    let Head {
        keys,
        values,
        scale,
    } = head;
    let d = query.len();
    let mut max = f32::NEG_INFINITY;
    for (j, score) in scores.iter_mut().enumerate() {
        let key = &keys[j * d..][..d];
        *score = scale * dot(query, key);
        max = max.max(*score);
    }
    let mut sum = 0f32;
    for score in scores.iter_mut() {
        *score = (*score - max).exp();
        sum += *score;
    }
    out.fill(0.0);
    for (j, &w) in scores.iter().enumerate() {
        let w = w / sum;
        for (o, v) in out.iter_mut().zip(&values[j * d..][..d]) {
            *o += w * v;
        }
    }
}

/// `a · b` in sixteen partial sums: they vectorise, where one running sum is a chain of
/// additions each waiting on the last.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a, b) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a
        .remainder()
        .iter()
        .zip(b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut sums = [0f32; 16];
    for (a, b) in a.zip(b) {
        for l in 0..16 {
            sums[l] += a[l] * b[l];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// A head's keys and values converted to f32, where they are not read as stored: kept for
/// the head's next query.
#[derive(Default)]
pub struct Scratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Address of the stored keys converted (0: none yet).
    of: usize,
}

/// An element type a cache is stored in.
pub trait Stored: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    /// [`attend`] over a head stored as `Self`; `scratch` is the caller's, kept between calls;
    /// `variant` is one this CPU runs.
    fn attend(
        variant: Variant,
        head: Head<Self>,
        query: &[f32],
        scores: &mut [f32],
        out: &mut [f32],
        scratch: &mut Scratch,
    );

    /// Stores `row` into `into`.
    fn write(row: &[f32], into: &mut [Self]);
}

impl Stored for f32 {
    fn attend(
        variant: Variant,
        head: Head,
        query: &[f32],
        scores: &mut [f32],
        out: &mut [f32],
        _: &mut Scratch,
    ) {
        attend(variant, head, query, scores, out)
    }

    fn write(row: &[f32], into: &mut [f32]) {
        into.copy_from_slice(row)
    }
}

impl Stored for f16 {
    /// On x86-64 with AVX2, FMA and F16C, rows are widened in registers as they are read;
    /// elsewhere the head is converted to f32 once for all its queries.
    fn attend(
        variant: Variant,
        head: Head<f16>,
        query: &[f32],
        scores: &mut [f32],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        #[cfg(target_arch = "x86_64")]
        if variant == Variant::Avx2 && query.len().is_multiple_of(8) {
            // SAFETY: the CPU has the features (the variant says); `d` is a multiple of 8.
            return unsafe { avx2::cached_attention::attend_f16(head, query, scores, out) };
        }
        attend_converted(variant, head, query, scores, out, scratch)
    }

    fn write(row: &[f32], into: &mut [f16]) {
        into.convert_from_f32_slice(row)
    }
}

/// [`attend`] over the head converted to f32, converting only when `scratch` does not hold it.
fn attend_converted(
    variant: Variant,
    head: Head<f16>,
    query: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    let of = head.keys.as_ptr() as usize;
    if scratch.of != of || scratch.keys.len() != head.keys.len() {
        for (rows, buf) in [
            (head.keys, &mut scratch.keys),
            (head.values, &mut scratch.values),
        ] {
            buf.resize(rows.len(), 0.0);
            rows.convert_to_f32_slice(buf);
        }
        scratch.of = of;
    }
    let head = Head {
        keys: &scratch.keys,
        values: &scratch.values,
        scale: head.scale,
    };
    attend(variant, head, query, scores, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::variant_test!(
        /// Each variant on f32 rows against the generic loops, and on f16 rows of the same
        /// values: the converting path (ARM's) gives what the f32 rows give, for queries of
        /// one head in a row (converted once) and then another head; the x86 kernel, which
        /// widens f16 in registers, agrees within f32 rounding.
        f16_heads_attend_as_their_f32_values,
        variants(),
        |variant| {
            let d = 16;
            let value = |i: usize| (i * 37 % 101) as f32 / 50.0 - 1.0;
            let stored: Vec<f16> = (0..2 * 10 * d).map(|i| f16::from_f32(value(i))).collect();
            let wide: Vec<f32> = stored.iter().map(|x| x.to_f32()).collect();
            let mut scratch = Scratch::default();
            for (h, seen) in [(0, 4), (0, 10), (1, 7)] {
                let rows = h * 10 * d..(h + 1) * 10 * d;
                let query: Vec<f32> = (0..d).map(|i| value(i + 3 * seen)).collect();
                let (mut reference, mut want, mut got) =
                    (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
                let mut scores = vec![0f32; seen];
                let f32_head = Head {
                    keys: &wide[rows.clone()],
                    values: &wide[rows.clone()],
                    scale: 0.3,
                };
                attend_on(f32_head, &query, &mut scores, &mut reference);
                attend(variant, f32_head, &query, &mut scores, &mut want);
                let worst = want.iter().zip(&reference).map(|(a, b)| (a - b).abs());
                assert!(worst.fold(0f32, f32::max) < 1e-6, "head {h}, {seen} keys");
                let head = Head {
                    keys: &stored[rows.clone()],
                    values: &stored[rows],
                    scale: 0.3,
                };
                attend_converted(variant, head, &query, &mut scores, &mut got, &mut scratch);
                assert_eq!(got, want, "head {h}, {seen} keys");
                let mut fresh = Scratch::default();
                f16::attend(variant, head, &query, &mut scores, &mut got, &mut fresh);
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs());
                assert!(worst.fold(0f32, f32::max) < 1e-5, "head {h}, {seen} keys");
            }
        }
    );
}
