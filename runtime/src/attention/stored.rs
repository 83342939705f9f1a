//! How a cache stores its keys and values: f32, or f16 (half the memory and half the reads).

use tract_onnx::prelude::f16;
use tract_onnx::tract_core::tract_data::half::slice::HalfFloatSliceExt;

use super::{attend, Head};

/// A head's keys and values converted to f32, where they are not read as stored: kept for
/// the head's next query.
#[derive(Default)]
pub(crate) struct Scratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Address of the stored keys converted (0: none yet).
    of: usize,
}

/// An element type a cache is stored in.
pub(crate) trait Stored: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    /// [`attend`] over a head stored as `Self`; `scratch` is the caller's, kept between calls.
    fn attend(
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
    fn attend(head: Head, query: &[f32], scores: &mut [f32], out: &mut [f32], _: &mut Scratch) {
        attend(head, query, scores, out)
    }

    fn write(row: &[f32], into: &mut [f32]) {
        into.copy_from_slice(row)
    }
}

impl Stored for f16 {
    /// On x86-64 with AVX2, FMA and F16C, rows are widened in registers as they are read;
    /// elsewhere the head is converted to f32 once for all its queries.
    fn attend(
        head: Head<f16>,
        query: &[f32],
        scores: &mut [f32],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        #[cfg(target_arch = "x86_64")]
        if query.len().is_multiple_of(8)
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            // SAFETY: the CPU has the features; `d` is a multiple of 8.
            return unsafe { x86::attend(head, query, scores, out) };
        }
        attend_converted(head, query, scores, out, scratch)
    }

    fn write(row: &[f32], into: &mut [f16]) {
        into.convert_from_f32_slice(row)
    }
}

/// [`attend`] over the head converted to f32, converting only when `scratch` does not hold it.
fn attend_converted(
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
    attend(head, query, scores, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{f16, Head};

    /// [`super::attend`] on f16 rows, eight lanes at a time (`query.len()` a multiple of 8).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn attend(
        head: Head<f16>,
        query: &[f32],
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let d = query.len();
        let (keys, values) = (head.keys.as_ptr(), head.values.as_ptr());
        assert!(head.keys.len() >= scores.len() * d && head.values.len() >= scores.len() * d);
        let q = query.as_ptr();
        let mut max = f32::NEG_INFINITY;
        for (j, score) in scores.iter_mut().enumerate() {
            // SAFETY: row `j` of `d` is within the keys (asserted), lanes `c..c + 8` within it.
            let dot = unsafe {
                let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let row = keys.add(j * d);
                let mut c = 0;
                while c + 16 <= d {
                    let k0 = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c).cast()));
                    let k1 = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c + 8).cast()));
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c)), k0, a);
                    b = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c + 8)), k1, b);
                    c += 16;
                }
                if c < d {
                    let k = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c).cast()));
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c)), k, a);
                }
                sum(_mm256_add_ps(a, b))
            };
            *score = head.scale * dot;
            max = max.max(*score);
        }
        let mut total = 0f32;
        for score in scores.iter_mut() {
            *score = (*score - max).exp();
            total += *score;
        }
        out.fill(0.0);
        let o = out.as_mut_ptr();
        for (j, &w) in scores.iter().enumerate() {
            // SAFETY: row `j` of `d` is within the values (asserted); `out` holds `d`.
            unsafe {
                let (w, row) = (_mm256_set1_ps(w / total), values.add(j * d));
                for c in (0..d).step_by(8) {
                    let v = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c).cast()));
                    let acc = _mm256_fmadd_ps(w, v, _mm256_loadu_ps(o.add(c)));
                    _mm256_storeu_ps(o.add(c), acc);
                }
            }
        }
    }

    /// The sum of the eight lanes.
    #[target_feature(enable = "avx2")]
    fn sum(x: __m256) -> f32 {
        let x = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps(x, x, 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converting path (ARM's) gives what f32 rows of the same values give, for queries
    /// of one head in a row (converted once) and then another head; the x86 kernel, where the
    /// CPU has it, agrees within f32 rounding.
    #[test]
    fn f16_heads_attend_as_their_f32_values() {
        let d = 16;
        let value = |i: usize| (i * 37 % 101) as f32 / 50.0 - 1.0;
        let stored: Vec<f16> = (0..2 * 10 * d).map(|i| f16::from_f32(value(i))).collect();
        let wide: Vec<f32> = stored.iter().map(|x| x.to_f32()).collect();
        let mut scratch = Scratch::default();
        for (h, seen) in [(0, 4), (0, 10), (1, 7)] {
            let rows = h * 10 * d..(h + 1) * 10 * d;
            let query: Vec<f32> = (0..d).map(|i| value(i + 3 * seen)).collect();
            let (mut want, mut got) = (vec![0f32; d], vec![0f32; d]);
            let mut scores = vec![0f32; seen];
            let f32_head = Head {
                keys: &wide[rows.clone()],
                values: &wide[rows.clone()],
                scale: 0.3,
            };
            attend(f32_head, &query, &mut scores, &mut want);
            let head = Head {
                keys: &stored[rows.clone()],
                values: &stored[rows],
                scale: 0.3,
            };
            attend_converted(head, &query, &mut scores, &mut got, &mut scratch);
            assert_eq!(got, want, "head {h}, {seen} keys");
            f16::attend(head, &query, &mut scores, &mut got, &mut Scratch::default());
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs());
            assert!(worst.fold(0f32, f32::max) < 1e-5, "head {h}, {seen} keys");
        }
    }
}
