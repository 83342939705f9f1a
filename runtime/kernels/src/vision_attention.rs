//! Attention without a mask, as vision towers write it: `softmax(q · kᵀ) · v` for each head,
//! one head at a time (`glimpse-graph`'s `fuse_attention` pass finds the product, softmax,
//! product chain and puts in the op that calls [`attention`]).
//!
//! tract runs the chain as two batched products, each packing its operands into panels, and a
//! softmax over the whole `[heads, s, t]` score tensor in between: on ViT-L/14@336 (577
//! tokens, 16 heads) about 1.1 s of a 1.9 s int8 image on one thread, more than the int8
//! products themselves. Here each head's keys are packed once and a tile of six queries goes
//! through its scores, their softmax and the weighted values while the scores are in L1: one
//! pass, no score tensor. The scores' exponential is a polynomial over 16 lanes.
//!
//! Operands may come in any axis order (the products' einsum axes say which is which): the
//! op reads them through strides, one head at a time, and writes the output's order.

#[cfg(target_arch = "aarch64")]
use crate::aarch64::neon::vision_attention as neon;
use crate::parallel::par_rows;
#[cfg(target_arch = "x86_64")]
use crate::x86_64::{avx2::vision_attention as avx2, avx512::vision_attention as avx512};
use crate::{ensure, Error, Variant};

/// Where an operand's axes are: its batch axes (heads, images; in the op's order), its rows
/// (queries or keys) and its columns (depth), of `rank` axes; the others are of length 1.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Layout {
    pub batch: Vec<usize>,
    pub rows: usize,
    pub cols: usize,
    pub rank: usize,
}

impl Layout {
    /// Whether axis `a` has a role (the others are of length 1).
    fn has(&self, a: usize) -> bool {
        a == self.rows || a == self.cols || self.batch.contains(&a)
    }
}

/// One head's sizes: `s` queries, `t` keys, depth `d` of queries and keys, `e` of values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub(crate) s: usize,
    pub(crate) t: usize,
    pub(crate) d: usize,
    pub(crate) e: usize,
}

/// An operand seen as `[heads, rows, cols]` through its strides.
struct Strided<'a> {
    data: &'a [f32],
    /// Each batch axis's length and stride, in the op's batch order.
    batch: Vec<(usize, usize)>,
    rows: usize,
    cols: usize,
}

impl<'a> Strided<'a> {
    fn new(data: &'a [f32], shape: &[usize], layout: &Layout) -> Self {
        let mut strides = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        Strided {
            data,
            batch: layout
                .batch
                .iter()
                .map(|&a| (shape[a], strides[a]))
                .collect(),
            rows: strides[layout.rows],
            cols: strides[layout.cols],
        }
    }

    /// Where head `h` (batch indices in row-major order) starts.
    fn base(&self, mut h: usize) -> usize {
        let mut at = 0;
        for &(len, stride) in self.batch.iter().rev() {
            at += (h % len) * stride;
            h /= len;
        }
        at
    }

    /// Head `h`'s `rows × cols` block into `out`, rows after rows, times `scale`.
    fn gather(&self, h: usize, rows: usize, cols: usize, scale: f32, out: &mut Vec<f32>) {
        out.clear();
        let base = self.base(h);
        for r in 0..rows {
            let at = base + r * self.rows;
            if self.cols == 1 {
                out.extend(self.data[at..][..cols].iter().map(|x| x * scale));
            } else {
                out.extend((0..cols).map(|c| self.data[at + c * self.cols] * scale));
            }
        }
    }
}

/// Input `i`'s `(batch lengths, rows, cols)`, checked against its layout.
fn dims(
    layouts: &[Layout; 4],
    i: usize,
    shape: &[usize],
) -> Result<(Vec<usize>, usize, usize), Error> {
    let l = &layouts[i];
    let fits = (0..l.rank).all(|a| l.has(a) || shape.get(a) == Some(&1));
    ensure!(
        shape.len() == l.rank && fits,
        "FusedAttention: input {i} of shape {shape:?} does not fit its layout {l:?}"
    );
    Ok((
        l.batch.iter().map(|&a| shape[a]).collect(),
        shape[l.rows],
        shape[l.cols],
    ))
}

/// The output's shape for queries, keys and values of `shapes` in `layouts` (query, key,
/// value, output), and the heads' sizes; an error if they do not fit together.
fn sizes(
    layouts: &[Layout; 4],
    shapes: [&[usize]; 3],
) -> Result<(Vec<usize>, usize, Sizes), Error> {
    let (qb, s, d) = dims(layouts, 0, shapes[0])?;
    let (kb, t, dk) = dims(layouts, 1, shapes[1])?;
    let (vb, tv, e) = dims(layouts, 2, shapes[2])?;
    ensure!(
        qb == kb && kb == vb && t == tv && d == dk,
        "FusedAttention: query {:?}, key {:?} and value {:?} do not fit together",
        shapes[0],
        shapes[1],
        shapes[2]
    );
    ensure!(
        t > 0 || s * e == 0,
        "FusedAttention: attention over no keys"
    );
    let heads: usize = qb.iter().product();
    let out_layout = &layouts[3];
    let mut shape = vec![1; out_layout.rank];
    for (&a, &len) in out_layout.batch.iter().zip(&qb) {
        shape[a] = len;
    }
    (shape[out_layout.rows], shape[out_layout.cols]) = (s, e);
    Ok((shape, heads, Sizes { s, t, d, e }))
}

/// The output's shape for queries, keys and values of `shapes` ([`attention`]'s).
pub fn output_shape(layouts: &[Layout; 4], shapes: [&[usize]; 3]) -> Result<Vec<usize>, Error> {
    Ok(sizes(layouts, shapes)?.0)
}

/// `softmax(scale · q · kᵀ, over keys) · v` for every batch index: queries `q` `[.., s, d]`,
/// keys `k` `[.., t, d]`, values `v` `[.., t, e]` (`inputs`: each one's data and shape) into
/// `out` `[.., s, e]` ([`output_shape`]), each in the axis order of its layout (`layouts`:
/// query, key, value, output). Heads are split over the run's threads.
pub fn attention(
    layouts: &[Layout; 4],
    scale: f32,
    inputs: [(&[f32], &[usize]); 3],
    out: &mut [f32],
) -> Result<(), Error> {
    attention_with(Variant::widest(variants()), layouts, scale, inputs, out)
}

/// [`attention`] with one of [`variants`].
pub fn attention_with(
    variant: Variant,
    layouts: &[Layout; 4],
    scale: f32,
    inputs: [(&[f32], &[usize]); 3],
    out: &mut [f32],
) -> Result<(), Error> {
    let variant = variant.check(variants())?;
    let (shape, heads, n) = sizes(layouts, inputs.map(|(_, shape)| shape))?;
    for (i, (data, shape)) in inputs.iter().enumerate() {
        ensure!(
            data.len() == shape.iter().product::<usize>(),
            "FusedAttention: input {i} has {} values for {shape:?}",
            data.len()
        );
    }
    ensure!(
        out.len() == shape.iter().product::<usize>(),
        "FusedAttention: {} outputs for {shape:?}",
        out.len()
    );
    let Sizes { s, t, d, e } = n;
    let [q, k, v] = [0, 1, 2].map(|i| Strided::new(inputs[i].0, inputs[i].1, &layouts[i]));
    let mut by_head = vec![0f32; heads * s * e];
    if !by_head.is_empty() {
        let cost = heads * s * t * (d + e);
        par_rows(&mut by_head, s * e, cost, |first, rows| {
            let mut work = Work::default();
            for (j, out) in rows.chunks_exact_mut(s * e).enumerate() {
                let h = first + j;
                q.gather(h, s, d, scale, &mut work.q);
                k.gather(h, t, d, 1.0, &mut work.k);
                v.gather(h, t, e, 1.0, &mut work.v);
                head(variant, &mut work, n, out);
            }
        });
    }
    let o = Strided::new(&[], &shape, &layouts[3]);
    for (h, block) in by_head.chunks_exact((s * e).max(1)).enumerate() {
        let base = o.base(h);
        for (r, row) in block.chunks_exact(e).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                out[base + r * o.rows + c * o.cols] = x;
            }
        }
    }
    Ok(())
}

/// One worker's buffers: a head's queries, keys and values, and the kernel's own.
#[derive(Default)]
pub(crate) struct Work {
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) scratch: Vec<f32>,
}

/// One head: `out` (`[s, e]`) `= softmax(q kᵀ) v` of the gathered `[s, d]`, `[t, d]`, `[t, e]`.
/// `variant` is one this CPU runs.
fn head(variant: Variant, work: &mut Work, n: Sizes, out: &mut [f32]) {
    match variant {
        // SAFETY: the CPU has the kernel's features; the buffers hold what `n` says.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { avx512::head(work, n, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { avx2::head(work, n, out) },
        #[cfg(target_arch = "aarch64")]
        Variant::Neon => neon::head(work, n, out),
        _ => portable_head(work, n, out),
    }
}

/// The variants this CPU runs: the generic one, AVX2 + FMA, AVX-512; NEON.
pub fn variants() -> &'static [Variant] {
    crate::variants!(
        x86_64: [
            Avx2 if avx2::available,
            Avx512 if avx512::available,
        ],
        aarch64: [Neon if || true],
    )
}

/// A head's gathered queries and values, and its keys packed for a kernel: panels of `lanes`
/// keys, `d` vectors each (key `lanes · p + l`, depth `c` at `packed[(p · d + c) · lanes + l]`),
/// zero past the last key.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Keys<'a> {
    pub(crate) q: &'a [f32],
    pub(crate) packed: &'a [f32],
    pub(crate) v: &'a [f32],
    pub(crate) n: Sizes,
    pub(crate) panels: usize,
    /// Score row length: the keys rounded up to a panel.
    pub(crate) width: usize,
}

/// Packs `work`'s keys into panels of `lanes`; beside them (in `work.scratch`), `rows` score
/// rows of [`Keys::width`].
#[cfg(target_arch = "x86_64")]
pub(crate) fn pack_keys(
    work: &mut Work,
    n: Sizes,
    lanes: usize,
    rows: usize,
) -> (Keys<'_>, &mut [f32]) {
    assert!(work.q.len() >= n.s * n.d && work.k.len() >= n.t * n.d && work.v.len() >= n.t * n.e);
    let panels = n.t.div_ceil(lanes);
    let width = panels * lanes;
    work.scratch.clear();
    work.scratch
        .resize(panels * n.d * lanes + rows * width, 0.0);
    let (packed, scores) = work.scratch.split_at_mut(panels * n.d * lanes);
    for (j, key) in work.k.chunks_exact(n.d).take(n.t).enumerate() {
        let (p, l) = (j / lanes, j % lanes);
        for (c, &x) in key.iter().enumerate() {
            packed[(p * n.d + c) * lanes + l] = x;
        }
    }
    let keys = Keys {
        q: &work.q,
        packed,
        v: &work.v,
        n,
        panels,
        width,
    };
    (keys, scores)
}

/// [`head`] one query at a time, where no kernel applies (and as its reference in tests).
fn portable_head(work: &mut Work, n: Sizes, out: &mut [f32]) {
    let Work { q, k, v, scratch } = work;
    scratch.resize(n.t, 0.0);
    for (query, out) in q.chunks_exact(n.d).zip(out.chunks_exact_mut(n.e)).take(n.s) {
        let mut max = f32::NEG_INFINITY;
        for (score, key) in scratch.iter_mut().zip(k.chunks_exact(n.d)) {
            *score = query.iter().zip(key).map(|(a, b)| a * b).sum();
            max = max.max(*score);
        }
        let mut sum = 0.0;
        for score in scratch.iter_mut() {
            *score = (*score - max).exp();
            sum += *score;
        }
        out.fill(0.0);
        for (&w, value) in scratch.iter().zip(v.chunks_exact(n.e)) {
            for (o, x) in out.iter_mut().zip(value) {
                *o += w * x;
            }
        }
        out.iter_mut().for_each(|o| *o /= sum);
    }
}

/// Whether this CPU runs a kernel rather than [`portable_head`]: the only case where
/// Glimpse fuses attention, the one measured faster than tract's own chain.
pub fn kernel_available() -> bool {
    variants().len() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-scale, scale).
    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        let mut values = crate::test_values(n, seed);
        values.iter_mut().for_each(|v| *v *= scale);
        values
    }

    /// `head(variant)` on seeded values of sizes `n` against a direct f64 computation, within
    /// `tolerance`.
    fn check_head(variant: Variant, n: Sizes, tolerance: f64) {
        let Sizes { s, t, d, e } = n;
        let (q, k, v) = (
            values(s * d, 1, 1.5),
            values(t * d, 2, 1.5),
            values(t * e, 3, 1.0),
        );
        let mut want = vec![0f64; s * e];
        for i in 0..s {
            let scores: Vec<f64> = (0..t)
                .map(|j| {
                    (0..d)
                        .map(|c| q[i * d + c] as f64 * k[j * d + c] as f64)
                        .sum()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = w.iter().sum();
            for c in 0..e {
                want[i * e + c] = (0..t).map(|j| w[j] * v[j * e + c] as f64).sum::<f64>() / sum;
            }
        }
        let mut work = Work {
            q,
            k,
            v,
            scratch: vec![],
        };
        let mut got = vec![f32::NAN; s * e];
        head(variant, &mut work, n, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - w).abs() < tolerance,
                "{variant:?} {n:?} element {i}: {g} vs {w}"
            );
        }
    }

    crate::variant_test!(
        /// Each variant against a direct f64 computation, for query counts that leave every
        /// tile height, key counts and value depths off the 16 lanes, depth that is not a
        /// multiple of 16, and scores large enough that the softmax is peaked.
        heads_match_a_direct_computation,
        variants(),
        |variant| {
            for (s, t, d, e) in [
                (1, 1, 1, 1),
                (7, 17, 64, 64),
                (13, 50, 64, 64),
                (6, 33, 24, 40),
                (20, 16, 16, 80),
                (5, 70, 8, 3),
            ] {
                check_head(variant, Sizes { s, t, d, e }, 2e-6);
            }
        }
    );

    crate::variant_test!(
        /// Each variant on 40 shapes drawn at random (a seeded generator), every size from 1
        /// to 40: tails of every lane count and tile height, one query, one key, one column.
        /// Within f32's rounding of scores of up to `d · 2.25` (the reference loops too).
        heads_of_random_shapes_match,
        variants(),
        |variant| {
            let mut next = crate::test_numbers(12345);
            let mut size = || 1 + next() as usize % 40;
            for _ in 0..40 {
                let n = Sizes {
                    s: size(),
                    t: size(),
                    d: size(),
                    e: size(),
                };
                check_head(variant, n, 1e-6 + 2e-7 * n.d as f64);
            }
        }
    );

    /// Operands in different axis orders (`[b, s, h, d]` queries, `[b, h, t, d]` keys,
    /// `[b, h, e, t]` values, `[b, s, h, e]` output) with a scale, head by head against
    /// [`head`] on the same values gathered (and scaled) by hand.
    #[test]
    fn reads_and_writes_any_axis_order() -> Result<(), Error> {
        let (b, h, s, t, d, e) = (2, 3, 5, 7, 8, 4);
        let layout = |batch: [usize; 2], rows, cols| Layout {
            batch: batch.into_iter().collect(),
            rows,
            cols,
            rank: 4,
        };
        let layouts = [
            layout([0, 2], 1, 3),
            layout([0, 1], 2, 3),
            layout([0, 1], 3, 2),
            layout([0, 2], 1, 3),
        ];
        let (q, k, v) = (
            values(b * s * h * d, 4, 1.0),
            values(b * h * t * d, 5, 1.0),
            values(b * h * e * t, 6, 1.0),
        );
        let (qs, ks, vs) = ([b, s, h, d], [b, h, t, d], [b, h, e, t]);
        let shape = output_shape(&layouts, [&qs, &ks, &vs])?;
        assert_eq!(shape, [b, s, h, e]);
        let mut got = vec![f32::NAN; b * s * h * e];
        attention(&layouts, 0.5, [(&q, &qs), (&k, &ks), (&v, &vs)], &mut got)?;
        // Row-major index of `ix` in `shape`.
        let at = |shape: [usize; 4], ix: [usize; 4]| {
            ix.iter().zip(shape).fold(0, |acc, (&i, len)| acc * len + i)
        };
        for (bi, hi) in (0..b).flat_map(|bi| (0..h).map(move |hi| (bi, hi))) {
            let mut work = Work {
                q: (0..s * d)
                    .map(|x| q[at(qs, [bi, x / d, hi, x % d])] * 0.5)
                    .collect(),
                k: (0..t * d)
                    .map(|x| k[at(ks, [bi, hi, x / d, x % d])])
                    .collect(),
                v: (0..t * e)
                    .map(|x| v[at(vs, [bi, hi, x % e, x / e])])
                    .collect(),
                scratch: vec![],
            };
            let mut want = vec![0f32; s * e];
            head(
                Variant::widest(variants()),
                &mut work,
                Sizes { s, t, d, e },
                &mut want,
            );
            for (x, want) in want.iter().enumerate() {
                let got = got[at([b, s, h, e], [bi, x / e, hi, x % e])];
                assert_eq!(got, *want, "batch {bi} head {hi}");
            }
        }
        Ok(())
    }

    /// Operands that do not fit together are an error, not a panic; no queries, an empty
    /// output.
    #[test]
    fn refuses_operands_that_do_not_fit() -> Result<(), Error> {
        let layout = |rank| Layout {
            batch: vec![0],
            rows: 1,
            cols: 2,
            rank,
        };
        let layouts = [layout(3), layout(3), layout(3), layout(3)];
        let run = |q: &[usize], k: &[usize], v: &[usize]| -> Result<Vec<usize>, Error> {
            let zeros = |shape: &[usize]| vec![0f32; shape.iter().product()];
            let shape = output_shape(&layouts, [q, k, v])?;
            let mut out = vec![0f32; shape.iter().product()];
            let (zq, zk, zv) = (zeros(q), zeros(k), zeros(v));
            attention(&layouts, 1.0, [(&zq, q), (&zk, k), (&zv, v)], &mut out)?;
            Ok(shape)
        };
        assert_eq!(run(&[2, 3, 4], &[2, 5, 4], &[2, 5, 6])?, [2, 3, 6]);
        for (q, k, v) in [
            ([2, 3, 4], [2, 5, 8], [2, 5, 6]), // depths differ
            ([2, 3, 4], [2, 5, 4], [2, 7, 6]), // keys and values differ
            ([2, 3, 4], [1, 5, 4], [2, 5, 6]), // batches differ
            ([2, 3, 4], [2, 0, 4], [2, 0, 6]), // no keys
        ] {
            assert!(run(&q, &k, &v).is_err(), "{q:?} {k:?} {v:?}");
        }
        assert!(run(&[2, 3], &[2, 5, 4], &[2, 5, 6]).is_err());
        assert_eq!(run(&[2, 0, 4], &[2, 5, 4], &[2, 5, 6])?, [2, 0, 6]);
        Ok(())
    }
}
