//! Attention without a mask, as vision towers write it: `softmax(q · kᵀ) · v` for each head,
//! in one op ([`crate::rewrite::fuse_attention`] finds the product, softmax, product chain).
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

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use crate::crew::par_rows;

/// Where an operand's axes are: its batch axes (heads, images; in the op's order), its rows
/// (queries or keys) and its columns (depth), of `rank` axes; the others are of length 1.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct Layout {
    pub batch: TVec<usize>,
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

/// `softmax(scale · q · kᵀ, over keys) · v` for every batch index: queries `q` `[.., s, d]`,
/// keys `k` `[.., t, d]`, values `v` `[.., t, e]`, output `[.., s, e]`, each in the axis order
/// of its [`Layout`] (`layouts`: query, key, value, output).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct FusedAttention {
    pub layouts: [Layout; 4],
    /// The scores' scale, as f32 bits.
    pub scale: u32,
}

/// One head's sizes: `s` queries, `t` keys, depth `d` of queries and keys, `e` of values.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    s: usize,
    t: usize,
    d: usize,
    e: usize,
}

/// An operand seen as `[heads, rows, cols]` through its strides.
struct Strided<'a> {
    data: &'a [f32],
    /// Each batch axis's length and stride, in the op's batch order.
    batch: TVec<(usize, usize)>,
    rows: usize,
    cols: usize,
}

impl<'a> Strided<'a> {
    fn new(data: &'a [f32], shape: &[usize], layout: &Layout) -> Self {
        let mut strides: TVec<usize> = tvec![1; shape.len()];
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

impl FusedAttention {
    /// `(batch lengths, rows, cols)` of input `i`, checked against its layout.
    fn dims(&self, i: usize, shape: &[usize]) -> TractResult<(TVec<usize>, usize, usize)> {
        let l = &self.layouts[i];
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
}

impl Op for FusedAttention {
    fn name(&self) -> StaticName {
        "FusedAttention".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FusedAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3, "FusedAttention takes 3 inputs");
        let (qb, s, d) = self.dims(0, inputs[0].shape())?;
        let (kb, t, dk) = self.dims(1, inputs[1].shape())?;
        let (vb, tv, e) = self.dims(2, inputs[2].shape())?;
        ensure!(
            qb == kb && kb == vb && t == tv && d == dk,
            "FusedAttention: query {:?}, key {:?} and value {:?} do not fit together",
            inputs[0].shape(),
            inputs[1].shape(),
            inputs[2].shape()
        );
        ensure!(
            t > 0 || s * e == 0,
            "FusedAttention: attention over no keys"
        );
        let heads: usize = qb.iter().product();
        let out_layout = &self.layouts[3];
        let mut shape = tvec![1; out_layout.rank];
        for (&a, &len) in out_layout.batch.iter().zip(&qb) {
            shape[a] = len;
        }
        (shape[out_layout.rows], shape[out_layout.cols]) = (s, e);
        let data: Vec<_> = inputs
            .iter()
            .map(|x| x.try_as_plain_ram())
            .collect::<TractResult<_>>()?;
        let data: Vec<&[f32]> = data
            .iter()
            .map(|x| x.as_slice())
            .collect::<TractResult<_>>()?;
        let [q, k, v] =
            [0, 1, 2].map(|i| Strided::new(data[i], inputs[i].shape(), &self.layouts[i]));
        let n = Sizes { s, t, d, e };
        let scale = f32::from_bits(self.scale);
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
                    head(&mut work, n, out);
                }
            })?;
        }
        // SAFETY: any bit pattern is an f32, and every element is written below.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let o = Strided::new(&[], &shape, out_layout);
            for (h, block) in by_head.chunks_exact((s * e).max(1)).enumerate() {
                let base = o.base(h);
                for (r, row) in block.chunks_exact(e).enumerate() {
                    for (c, &x) in row.iter().enumerate() {
                        out[base + r * o.rows + c * o.cols] = x;
                    }
                }
            }
        }
        Ok(tvec![output.into_tvalue()])
    }
}

/// One worker's buffers: a head's queries, keys and values, and the kernel's own.
#[derive(Default)]
struct Work {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scratch: Vec<f32>,
}

/// One head: `out` (`[s, e]`) `= softmax(q kᵀ) v` of the gathered `[s, d]`, `[t, d]`, `[t, e]`.
fn head(work: &mut Work, n: Sizes, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            // SAFETY: the CPU has the kernel's features; the buffers hold what `n` says.
            return unsafe { avx512::head(work, n, out) };
        }
        if avx2::available() {
            // SAFETY: as above.
            return unsafe { avx2::head(work, n, out) };
        }
    }
    portable_head(work, n, out)
}

/// A head's gathered queries and values, and its keys packed for a kernel: panels of `lanes`
/// keys, `d` vectors each (key `lanes · p + l`, depth `c` at `packed[(p · d + c) · lanes + l]`),
/// zero past the last key.
#[cfg(target_arch = "x86_64")]
struct Keys<'a> {
    q: &'a [f32],
    packed: &'a [f32],
    v: &'a [f32],
    n: Sizes,
    panels: usize,
    /// Score row length: the keys rounded up to a panel.
    width: usize,
}

/// Packs `work`'s keys into panels of `lanes`; beside them (in `work.scratch`), `rows` score
/// rows of [`Keys::width`].
#[cfg(target_arch = "x86_64")]
fn pack_keys(work: &mut Work, n: Sizes, lanes: usize, rows: usize) -> (Keys<'_>, &mut [f32]) {
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

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

/// Whether this CPU runs a kernel rather than [`portable_head`]: the only case where
/// Glimpse fuses attention, the one measured faster than tract's own chain.
pub(crate) fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx512::available() || avx2::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl TypedOp for FusedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3, "FusedAttention takes 3 inputs");
        for (i, x) in inputs.iter().enumerate() {
            ensure!(
                x.datum_type == f32::datum_type() && x.rank() == self.layouts[i].rank,
                "FusedAttention: input {i} is {x:?}"
            );
        }
        let [q, _, v, out] = &self.layouts;
        let mut shape: TVec<TDim> = tvec![1.to_dim(); out.rank];
        for (&o, &a) in out.batch.iter().zip(&q.batch) {
            shape[o] = inputs[0].shape[a].clone();
        }
        shape[out.rows] = inputs[0].shape[q.rows].clone();
        shape[out.cols] = inputs[2].shape[v.cols].clone();
        Ok(tvec![f32::fact(shape)])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let [q, k, v, _] = &self.layouts;
        let heads: TDim = q
            .batch
            .iter()
            .map(|&a| inputs[0].shape[a].clone())
            .product();
        let depth = inputs[0].shape[q.cols].clone() + inputs[2].shape[v.cols].clone();
        let work = heads * inputs[0].shape[q.rows].clone() * inputs[1].shape[k.rows].clone();
        Ok(tvec![(Cost::FMA(f32::datum_type()), work * depth)])
    }

    as_op!();
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

    /// The kernel and the portable path against a direct f64 computation, for query counts
    /// that leave every tile height, key counts and value depths off the 16 lanes, depth
    /// that is not a multiple of 16, and scores large enough that the softmax is peaked.
    #[test]
    fn heads_match_a_direct_computation() {
        for (s, t, d, e) in [
            (1, 1, 1, 1),
            (7, 17, 64, 64),
            (13, 50, 64, 64),
            (6, 33, 24, 40),
            (20, 16, 16, 80),
            (5, 70, 8, 3),
        ] {
            let n = Sizes { s, t, d, e };
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
            let run = |kernel: &str| {
                let mut work = Work {
                    q: q.clone(),
                    k: k.clone(),
                    v: v.clone(),
                    scratch: vec![],
                };
                let mut out = vec![f32::NAN; s * e];
                match kernel {
                    "portable" => portable_head(&mut work, n, &mut out),
                    // SAFETY: the CPU has AVX2 and FMA (checked below).
                    #[cfg(target_arch = "x86_64")]
                    "avx2" => unsafe { avx2::head(&mut work, n, &mut out) },
                    _ => head(&mut work, n, &mut out),
                }
                out
            };
            // This CPU's kernel, the portable path, and (on AVX-512 CPUs too) the AVX2 kernel.
            let mut kernels = vec!["dispatch", "portable"];
            #[cfg(target_arch = "x86_64")]
            if avx2::available() {
                kernels.push("avx2");
            }
            for (kernel, got) in kernels.into_iter().map(|k| (k, run(k))) {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() < 2e-6,
                        "{n:?} kernel {kernel} element {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// The op over operands in different axis orders (`[b, s, h, d]` queries, `[b, h, t, d]`
    /// keys, `[b, h, e, t]` values, `[b, s, h, e]` output) with a scale, head by head against
    /// [`head`] on the same values gathered (and scaled) by hand.
    #[test]
    fn reads_and_writes_any_axis_order() -> TractResult<()> {
        let (b, h, s, t, d, e) = (2, 3, 5, 7, 8, 4);
        let layout = |batch: [usize; 2], rows, cols| Layout {
            batch: batch.into_iter().collect(),
            rows,
            cols,
            rank: 4,
        };
        let op = FusedAttention {
            layouts: [
                layout([0, 2], 1, 3),
                layout([0, 1], 2, 3),
                layout([0, 1], 3, 2),
                layout([0, 2], 1, 3),
            ],
            scale: 0.5f32.to_bits(),
        };
        let q = tensor1(&values(b * s * h * d, 4, 1.0)).into_shape(&[b, s, h, d])?;
        let k = tensor1(&values(b * h * t * d, 5, 1.0)).into_shape(&[b, h, t, d])?;
        let v = tensor1(&values(b * h * e * t, 6, 1.0)).into_shape(&[b, h, e, t])?;
        let facts = [&q, &k, &v].map(|x| f32::fact(x.shape()));
        let fact = op
            .output_facts(&[&facts[0], &facts[1], &facts[2]])?
            .remove(0);
        assert_eq!(fact.shape.as_concrete(), Some(&[b, s, h, e][..]));
        let got = op
            .eval(
                &EvalContext::out_of_plan(),
                tvec![q.clone().into(), k.clone().into(), v.clone().into()],
            )?
            .remove(0);
        let (q, k, v) = (
            q.to_plain_array_view::<f32>()?,
            k.to_plain_array_view::<f32>()?,
            v.to_plain_array_view::<f32>()?,
        );
        let got = got.to_plain_array_view::<f32>()?;
        for (bi, hi) in (0..b).flat_map(|bi| (0..h).map(move |hi| (bi, hi))) {
            let mut work = Work {
                q: (0..s * d)
                    .map(|x| q[[bi, x / d, hi, x % d]] * 0.5)
                    .collect(),
                k: (0..t * d).map(|x| k[[bi, hi, x / d, x % d]]).collect(),
                v: (0..t * e).map(|x| v[[bi, hi, x % e, x / e]]).collect(),
                scratch: vec![],
            };
            let mut want = vec![0f32; s * e];
            head(&mut work, Sizes { s, t, d, e }, &mut want);
            for (x, want) in want.iter().enumerate() {
                assert_eq!(got[[bi, x / e, hi, x % e]], *want, "batch {bi} head {hi}");
            }
        }
        Ok(())
    }

    /// Operands that do not fit together are an error, not a panic; no queries, an empty
    /// output.
    #[test]
    fn refuses_operands_that_do_not_fit() -> TractResult<()> {
        let layout = |rank| Layout {
            batch: tvec![0],
            rows: 1,
            cols: 2,
            rank,
        };
        let op = FusedAttention {
            layouts: [layout(3), layout(3), layout(3), layout(3)],
            scale: 1f32.to_bits(),
        };
        let x = |shape: &[usize]| Tensor::zero::<f32>(shape).map(|t| t.into_tvalue());
        let run = |q, k, v| op.eval(&EvalContext::out_of_plan(), tvec![q, k, v]);
        let fits = run(x(&[2, 3, 4])?, x(&[2, 5, 4])?, x(&[2, 5, 6])?)?;
        assert_eq!(fits[0].shape(), [2, 3, 6]);
        for (q, k, v) in [
            ([2, 3, 4], [2, 5, 8], [2, 5, 6]), // depths differ
            ([2, 3, 4], [2, 5, 4], [2, 7, 6]), // keys and values differ
            ([2, 3, 4], [1, 5, 4], [2, 5, 6]), // batches differ
            ([2, 3, 4], [2, 0, 4], [2, 0, 6]), // no keys
        ] {
            assert!(run(x(&q)?, x(&k)?, x(&v)?).is_err(), "{q:?} {k:?} {v:?}");
        }
        assert!(run(x(&[2, 3])?, x(&[2, 5, 4])?, x(&[2, 5, 6])?).is_err());
        let empty = run(x(&[2, 0, 4])?, x(&[2, 5, 4])?, x(&[2, 5, 6])?)?;
        assert_eq!(empty[0].shape(), [2, 0, 6]);
        Ok(())
    }
}
