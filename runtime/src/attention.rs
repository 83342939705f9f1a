//! Causal attention over a key/value cache, as ONNX Runtime's `com.microsoft`
//! `GroupQueryAttention` defines it: the decoder's attention in one op.
//!
//! Written out as ONNX's own ops (Concat, MatMul, Softmax), tract packs the whole cache into
//! its matrix kernel's panels for two products per layer and step, after the `Concat` that
//! copied it: a 1.4B decode step read its cache three times, 12.6 ms of 67 on two threads
//! (BENCHMARKS.md). Here the new keys and values are appended to the cache (the one copy the
//! graph's `present` outputs need) and each head reads its keys and values once from there,
//! rows in place. Heads are split over the run's threads.
//!
//! Supported: batch 1, query/key/value `[1, s, heads × d]`, cache `[1, kv_heads, past, d]`
//! (BNSH), no rotary inside the op (`do_rotary = 0`; the graph rotates), query `i` at position
//! `past + i` (a prompt, a token, or several tokens after a cache). Other attributes and inputs
//! are refused at load, or handed to tract's own `GroupQueryAttention`.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use crate::crew::par_rows;

/// Causal grouped-query attention after a cache: outputs the attention `[1, s, heads × d]`
/// and the cache with this step appended, keys then values `[1, kv_heads, past + s, d]`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct CachedAttention {
    pub heads: usize,
    pub kv_heads: usize,
    /// The scores' scale, as f32 bits (1/√d when the node gives none).
    pub scale: u32,
}

impl Op for CachedAttention {
    fn name(&self) -> StaticName {
        "CachedAttention".into()
    }

    op_as_typed_op!();
}

impl EvalOp for CachedAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [q, k, v, past_k, past_v] = &*inputs else {
            bail!("CachedAttention takes query, key, value, past key, past value");
        };
        let (s, width) = match q.shape() {
            [1, s, w] => (*s, *w),
            shape => bail!("CachedAttention: query of shape {shape:?}, batch 1 is supported"),
        };
        ensure!(
            width.is_multiple_of(self.heads),
            "query width {width} over {} heads",
            self.heads
        );
        let d = width / self.heads;
        let (kvh, past) = match past_k.shape() {
            [1, h, p, dd] if *h == self.kv_heads && *dd == d => (*h, *p),
            shape => bail!(
                "CachedAttention: past key of shape {shape:?}, expected [1, {}, past, {d}]",
                self.kv_heads
            ),
        };
        ensure!(
            past_v.shape() == past_k.shape(),
            "past value and key differ in shape"
        );
        for (x, what) in [(k, "key"), (v, "value")] {
            ensure!(
                x.shape() == [1, s, kvh * d],
                "CachedAttention: {what} of shape {:?}, expected [1, {s}, {}]",
                x.shape(),
                kvh * d
            );
        }
        let total = past + s;
        let (q, k, v) = (
            q.try_as_plain_ram()?,
            k.try_as_plain_ram()?,
            v.try_as_plain_ram()?,
        );
        let (past_k, past_v) = (past_k.try_as_plain_ram()?, past_v.try_as_plain_ram()?);
        let present_k = append(past_k.as_slice()?, k.as_slice()?, kvh, past, s, d);
        let present_v = append(past_v.as_slice()?, v.as_slice()?, kvh, past, s, d);

        // Per head, then per query: `[heads, s, d]`.
        let q = q.as_slice::<f32>()?;
        let scale = f32::from_bits(self.scale);
        let group = self.heads / kvh;
        let mut by_head = vec![0f32; self.heads * s * d];
        let cost = self.heads * s * total * d * 2;
        par_rows(&mut by_head, s * d, cost, |first, rows| {
            let mut scores = vec![0f32; total];
            for (j, out) in rows.chunks_exact_mut(s * d).enumerate() {
                let head = first + j;
                let cache = (head / group) * total * d;
                let keys = &present_k[cache..cache + total * d];
                let values = &present_v[cache..cache + total * d];
                for (i, out) in out.chunks_exact_mut(d).enumerate() {
                    let query = &q[i * width + head * d..][..d];
                    let seen = past + i + 1;
                    attend(query, keys, values, scale, &mut scores[..seen], out);
                }
            }
        })?;
        // `[s, heads × d]`; for one token that is the order it already has.
        let output = match s {
            1 => by_head,
            _ => {
                let mut output = vec![0f32; s * width];
                for (head, rows) in by_head.chunks_exact(s * d).enumerate() {
                    for (i, row) in rows.chunks_exact(d).enumerate() {
                        output[i * width + head * d..][..d].copy_from_slice(row);
                    }
                }
                output
            }
        };
        let tensor = |shape: &[usize], data: Vec<f32>| -> TractResult<TValue> {
            Ok(tract_ndarray::ArrayD::from_shape_vec(shape, data)?
                .into_tensor()
                .into_tvalue())
        };
        Ok(tvec![
            tensor(&[1, s, width], output)?,
            tensor(&[1, kvh, total, d], present_k)?,
            tensor(&[1, kvh, total, d], present_v)?,
        ])
    }
}

/// The cache `[kv, past, d]` with this step's `[s, kv × d]` rows appended: `[kv, past + s, d]`.
fn append(past: &[f32], new: &[f32], kv: usize, p: usize, s: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(kv * (p + s) * d);
    for h in 0..kv {
        out.extend_from_slice(&past[h * p * d..(h + 1) * p * d]);
        for i in 0..s {
            out.extend_from_slice(&new[(i * kv + h) * d..][..d]);
        }
    }
    out
}

/// One query against the first `scores.len()` keys: softmax of the scaled dot products,
/// then the weighted sum of the values into `out`.
fn attend(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = query.len();
    let mut max = f32::NEG_INFINITY;
    for (j, score) in scores.iter_mut().enumerate() {
        let key = &keys[j * d..][..d];
        *score = scale * query.iter().zip(key).map(|(a, b)| a * b).sum::<f32>();
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

impl TypedOp for CachedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 5, "CachedAttention takes five inputs");
        let q = inputs[0];
        let past = inputs[3];
        ensure!(q.rank() == 3 && past.rank() == 4, "CachedAttention: ranks");
        let mut cache = past.shape.to_tvec();
        cache[2] = cache[2].clone() + q.shape[1].clone();
        Ok(tvec![
            f32::fact(q.shape.to_tvec()),
            f32::fact(cache.clone()),
            f32::fact(cache),
        ])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let q = inputs[0];
        let past = inputs[3];
        let total = past.shape[2].clone() + q.shape[1].clone();
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            q.shape.volume() * total * 2
        )))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a direct f64 computation: scores of every head against its group's keys,
    /// causal from `past`, softmax, weighted values; for prompts, tokens and tokens after a
    /// cache, with grouped heads.
    #[test]
    fn matches_a_direct_computation() -> TractResult<()> {
        let (heads, kvh, d) = (4, 2, 8);
        let values = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) % 1000)
                .map(|x| x as f32 / 500.0 - 1.0)
                .collect()
        };
        for (past, s) in [(0, 5), (3, 1), (6, 3)] {
            let q = values(s * heads * d, 1);
            let k = values(s * kvh * d, 2);
            let v = values(s * kvh * d, 3);
            let pk = values(kvh * past * d, 4);
            let pv = values(kvh * past * d, 5);
            let scale = 0.3f32;
            let op = CachedAttention {
                heads,
                kv_heads: kvh,
                scale: scale.to_bits(),
            };
            let t = |data: &[f32], shape: &[usize]| -> TractResult<TValue> {
                Ok(Tensor::from_shape(shape, data)?.into_tvalue())
            };
            let out = op.eval(
                &EvalContext::out_of_plan(),
                tvec![
                    t(&q, &[1, s, heads * d])?,
                    t(&k, &[1, s, kvh * d])?,
                    t(&v, &[1, s, kvh * d])?,
                    t(&pk, &[1, kvh, past, d])?,
                    t(&pv, &[1, kvh, past, d])?,
                ],
            )?;
            let total = past + s;
            let key = |h: usize, j: usize, e: usize| match j < past {
                true => pk[(h * past + j) * d + e],
                false => k[((j - past) * kvh + h) * d + e],
            };
            let value = |h: usize, j: usize, e: usize| match j < past {
                true => pv[(h * past + j) * d + e],
                false => v[((j - past) * kvh + h) * d + e],
            };
            let got = out[0].try_as_plain_ram()?;
            let got = got.as_slice::<f32>()?;
            let present_k = out[1].try_as_plain_ram()?;
            let present_k = present_k.as_slice::<f32>()?;
            for h in 0..kvh {
                for j in 0..total {
                    for e in 0..d {
                        assert_eq!(present_k[(h * total + j) * d + e], key(h, j, e));
                    }
                }
            }
            for head in 0..heads {
                let h = head / (heads / kvh);
                for i in 0..s {
                    let seen = past + i + 1;
                    let scores: Vec<f64> = (0..seen)
                        .map(|j| {
                            (0..d)
                                .map(|e| {
                                    q[i * heads * d + head * d + e] as f64 * key(h, j, e) as f64
                                })
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    for e in 0..d {
                        let want: f64 = (0..seen).map(|j| w[j] / sum * value(h, j, e) as f64).sum();
                        let have = got[i * heads * d + head * d + e] as f64;
                        assert!(
                            (have - want).abs() < 1e-5,
                            "past {past} s {s}: {have} vs {want}"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
