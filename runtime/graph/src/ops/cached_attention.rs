//! Causal attention over a key/value cache, as ONNX Runtime's `com.microsoft`
//! `GroupQueryAttention` defines it: the decoder's attention in one op.
//!
//! Written out as ONNX's own ops (Concat, MatMul, Softmax), tract packs the whole cache into
//! its matrix kernel's panels for two products per layer and step, after the `Concat` that
//! copied it: a 1.4B decode step read its cache three times, 12.6 ms of 67 on two threads
//! (BENCHMARKS.md). Here the new keys and values are appended to the cache (the one copy the
//! graph's `present` outputs need) and each head reads its keys and values once from there,
//! rows in place. Heads are split over the run's threads. With the rotation inside too
//! (`do_rotary`), a layer's attention is one node where RoPE written out took eighteen.
//!
//! Supported: batch 1; query/key/value `[1, s, heads × d]` / `[1, s, kv_heads × d]`, or the
//! three packed in the query `[1, s, (heads + 2 kv_heads) × d]`; cache `[1, kv_heads, past, d]`
//! (BNSH); rotate-half RoPE from `cos_cache` / `sin_cache` `[positions, d / 2]`, or none;
//! query `i` at position `past + i` (a prompt, a token, or several tokens after a cache).
//! Other attributes and inputs are refused at load, or handed to tract's own
//! `GroupQueryAttention`.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

pub(crate) use glimpse_kernels::cached_attention::Stored;
use glimpse_kernels::cached_attention::{self as kernel, rotate};
use glimpse_kernels::parallel::par_rows;

/// Causal grouped-query attention after a cache: outputs the attention `[1, s, heads × d]`
/// and the cache with this step appended, keys then values `[1, kv_heads, past + s, d]`.
///
/// Inputs: the query, key and value (or the three packed in one), the past key and value,
/// then, with `rotary`, the cos and sin tables.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct CachedAttention {
    pub heads: usize,
    pub kv_heads: usize,
    /// The scores' scale, as f32 bits (1/√d when the node gives none).
    pub scale: u32,
    /// Query, key and value come in one input, in that order along its last axis.
    pub packed: bool,
    /// Queries and keys are rotated here (rotate-half RoPE at position `past + i`).
    pub rotary: bool,
}

impl CachedAttention {
    /// How many inputs the op takes.
    pub fn arity(&self) -> usize {
        (if self.packed { 3 } else { 5 }) + if self.rotary { 2 } else { 0 }
    }

    /// The attention `[1, s, heads × d]` of `queries` (`[s, heads × d]`, at positions
    /// `past..past + s`) over the whole cache (keys, values: `kv_heads` heads of `past + s`
    /// rows of `d`, `head_stride` elements apart).
    pub(crate) fn attention<T: Stored>(
        &self,
        queries: &[f32],
        cache: (&[T], &[T]),
        head_stride: usize,
        past: usize,
        s: usize,
        d: usize,
    ) -> TractResult<Tensor> {
        let mut output = uninitialized(&[1, s, self.heads * d])?;
        kernel::attention(
            queries,
            cache,
            head_stride,
            (self.heads, self.kv_heads),
            f32::from_bits(self.scale),
            (past, s, d),
            output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        )?;
        Ok(output)
    }
}

impl Op for CachedAttention {
    fn name(&self) -> StaticName {
        "CachedAttention".into()
    }

    op_as_typed_op!();
}

/// Row `i` of a step input: `width` values at `offset` in rows of `stride`.
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    offset: usize,
    width: usize,
}

impl Rows<'_> {
    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.stride + self.offset..][..self.width]
    }

    /// The first `s` rows, one after another.
    fn gather(&self, s: usize) -> Vec<f32> {
        (0..s).flat_map(|i| self.row(i)).copied().collect()
    }
}

/// One step's queries, keys and values, gathered into rows (`[s, heads × d]`, `[s, kv × d]`)
/// and, with RoPE, rotated to their positions.
pub(crate) struct Step {
    pub queries: Vec<f32>,
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
    /// Tokens in the step.
    pub s: usize,
}

impl CachedAttention {
    /// How many of the inputs are this step's query, key and value (one when packed).
    pub fn step_inputs(&self) -> usize {
        if self.packed {
            1
        } else {
            3
        }
    }

    /// Reads the step's query, key and value (`inputs`) of heads of `d`, at positions
    /// `past..`; `tables`: the rotary cos and sin, when `rotary`.
    pub(crate) fn read_step(
        &self,
        inputs: &[TValue],
        tables: Option<(&TValue, &TValue)>,
        past: usize,
        d: usize,
    ) -> TractResult<Step> {
        let (width, kv_width) = (self.heads * d, self.kv_heads * d);
        let s = match inputs[0].shape() {
            [1, s, _] if *s > 0 => *s,
            shape => bail!(
                "CachedAttention: query of shape {shape:?}, batch 1 and some tokens are supported"
            ),
        };
        let step: Vec<_> = inputs
            .iter()
            .map(|x| x.try_as_plain_ram())
            .collect::<TractResult<_>>()?;
        let step: Vec<&[f32]> = step
            .iter()
            .map(|x| x.as_slice())
            .collect::<TractResult<_>>()?;
        let expect = |x: &TValue, w: usize, what: &str| {
            ensure!(
                x.shape() == [1, s, w],
                "CachedAttention: {what} of shape {:?}, expected [1, {s}, {w}]",
                x.shape()
            );
            Ok(())
        };
        let [q, k, v] = if self.packed {
            let stride = width + 2 * kv_width;
            expect(&inputs[0], stride, "packed query, key and value")?;
            let rows = |offset, width| Rows {
                data: step[0],
                stride,
                offset,
                width,
            };
            [
                rows(0, width),
                rows(width, kv_width),
                rows(width + kv_width, kv_width),
            ]
        } else {
            expect(&inputs[0], width, "query")?;
            expect(&inputs[1], kv_width, "key")?;
            expect(&inputs[2], kv_width, "value")?;
            let rows = |i: usize, width| Rows {
                data: step[i],
                stride: width,
                offset: 0,
                width,
            };
            [rows(0, width), rows(1, kv_width), rows(2, kv_width)]
        };
        let mut queries = q.gather(s);
        let mut keys = k.gather(s);
        if let Some((cos, sin)) = tables {
            let half = d / 2;
            match cos.shape() {
                [_, h] if *h == half && d.is_multiple_of(2) && sin.shape() == cos.shape() => {}
                shape => bail!(
                    "CachedAttention: rotary tables of shape {shape:?}, expected [positions, {half}]"
                ),
            }
            let (cos, sin) = (cos.try_as_plain_ram()?, sin.try_as_plain_ram()?);
            let tables = (cos.as_slice::<f32>()?, sin.as_slice::<f32>()?);
            rotate(&mut queries, &mut keys, tables, past, s, d)?;
        }
        Ok(Step {
            queries,
            keys,
            values: v.gather(s),
            s,
        })
    }
}

impl EvalOp for CachedAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == self.arity(),
            "CachedAttention takes {} inputs, got {}",
            self.arity(),
            inputs.len()
        );
        let steps = self.step_inputs();
        let (past_k, past_v) = (&inputs[steps], &inputs[steps + 1]);
        let (kvh, past, d) = match past_k.shape() {
            [1, h, p, d] if *h == self.kv_heads && *d > 0 => (*h, *p, *d),
            shape => bail!(
                "CachedAttention: past key of shape {shape:?}, expected [1, {}, past, head dim]",
                self.kv_heads
            ),
        };
        ensure!(
            past_v.shape() == past_k.shape(),
            "past value and key differ in shape"
        );
        let tables = self
            .rotary
            .then(|| (&inputs[steps + 2], &inputs[steps + 3]));
        let step = self.read_step(&inputs[..steps], tables, past, d)?;
        let s = step.s;
        let (past_k, past_v) = (past_k.try_as_plain_ram()?, past_v.try_as_plain_ram()?);
        let (past_k, past_v) = (past_k.as_slice::<f32>()?, past_v.as_slice::<f32>()?);
        let kv_width = kvh * d;
        let present_k = append(past_k, |i| row(&step.keys, i, kv_width), kvh, past, s, d)?;
        let present_v = append(past_v, |i| row(&step.values, i, kv_width), kvh, past, s, d)?;
        let output = {
            let (cached_k, cached_v) =
                (present_k.try_as_plain_ram()?, present_v.try_as_plain_ram()?);
            let cache = (cached_k.as_slice::<f32>()?, cached_v.as_slice::<f32>()?);
            self.attention(&step.queries, cache, (past + s) * d, past, s, d)?
        };
        Ok(tvec![
            output.into_tvalue(),
            present_k.into_tvalue(),
            present_v.into_tvalue()
        ])
    }
}

/// Row `i` of rows of `width`.
pub(crate) fn row(rows: &[f32], i: usize, width: usize) -> &[f32] {
    &rows[i * width..][..width]
}

/// An f32 tensor of `shape` whose every element the caller writes before anything reads it
/// (the outputs are built in place: going through a `Vec` would copy them once more).
fn uninitialized(shape: &[usize]) -> TractResult<Tensor> {
    // SAFETY: any bit pattern is an f32, and the callers overwrite every element.
    unsafe { Tensor::uninitialized::<f32>(shape) }
}

/// The cache `[1, kv, past, d]` with this step's rows appended (`new(i)`: row `i`,
/// `[kv × d]`): `[1, kv, past + s, d]`. Heads are copied over the run's threads: for a long
/// context this copy is a good part of a decode step.
fn append<'a>(
    past: &[f32],
    new: impl Fn(usize) -> &'a [f32] + Sync,
    kv: usize,
    p: usize,
    s: usize,
    d: usize,
) -> TractResult<Tensor> {
    let mut out = uninitialized(&[1, kv, p + s, d])?;
    let head_len = (p + s) * d;
    par_rows(
        out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        head_len,
        kv * head_len,
        |first, heads| {
            for (j, head) in heads.chunks_exact_mut(head_len).enumerate() {
                let h = first + j;
                let (old, step) = head.split_at_mut(p * d);
                old.copy_from_slice(&past[h * p * d..][..p * d]);
                for (i, row) in step.chunks_exact_mut(d).enumerate() {
                    row.copy_from_slice(&new(i)[h * d..][..d]);
                }
            }
        },
    );
    Ok(out)
}

impl TypedOp for CachedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == self.arity(),
            "CachedAttention takes {} inputs",
            self.arity()
        );
        let q = inputs[0];
        let past = inputs[if self.packed { 1 } else { 3 }];
        ensure!(q.rank() == 3 && past.rank() == 4, "CachedAttention: ranks");
        let mut cache = past.shape.to_tvec();
        cache[2] = cache[2].clone() + q.shape[1].clone();
        let width = past.shape[3].clone() * self.heads;
        Ok(tvec![
            f32::fact([q.shape[0].clone(), q.shape[1].clone(), width]),
            f32::fact(cache.clone()),
            f32::fact(cache),
        ])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let q = inputs[0];
        let past = inputs[if self.packed { 1 } else { 3 }];
        let total = past.shape[2].clone() + q.shape[1].clone();
        let queries = q.shape[1].clone() * past.shape[3].clone() * self.heads;
        Ok(tvec!((Cost::FMA(f32::datum_type()), queries * total * 2)))
    }

    as_op!();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `GroupQueryAttention` fixtures (`tools/make_attention.py`, `fixtures/attention`):
    /// each form's name, graph and cases (inputs and ONNX Runtime's outputs).
    pub(crate) fn fixtures() -> TractResult<Vec<(String, std::path::PathBuf, serde_json::Value)>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/attention");
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json"))?)?;
        let forms = reference["cases"].as_object().context("cases")?;
        let graph = |form: &str| dir.join(format!("{form}.onnx"));
        Ok(forms
            .iter()
            .map(|(form, cases)| (form.clone(), graph(form), cases.clone()))
            .collect())
    }

    /// Against a direct f64 computation: queries and new keys rotated at positions past + i
    /// (when `rotary`), scores of every head against its group's keys, causal from `past`,
    /// softmax, weighted values; for prompts, tokens and tokens after a cache, with grouped
    /// heads, inputs apart or packed.
    #[test]
    fn matches_a_direct_computation() -> TractResult<()> {
        let (heads, kvh, d, positions) = (4, 2, 8, 12);
        let values = glimpse_kernels::test_values;
        let angle = |p: usize, j: usize| p as f64 * 0.7f64.powi(j as i32);
        let table = |f: fn(f64) -> f64| -> Vec<f32> {
            let angles = (0..positions).flat_map(|p| (0..d / 2).map(move |j| angle(p, j)));
            angles.map(|a| f(a) as f32).collect()
        };
        let (cos, sin) = (table(f64::cos), table(f64::sin));
        let t = |data: &[f32], shape: &[usize]| -> TractResult<TValue> {
            Ok(Tensor::from_shape(shape, data)?.into_tvalue())
        };
        for (past, s) in [(0, 5), (3, 1), (6, 3)] {
            for (packed, rotary) in [(false, false), (true, false), (false, true), (true, true)] {
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
                    packed,
                    rotary,
                };
                let mut inputs = match packed {
                    false => tvec![
                        t(&q, &[1, s, heads * d])?,
                        t(&k, &[1, s, kvh * d])?,
                        t(&v, &[1, s, kvh * d])?,
                    ],
                    true => {
                        let rows = (0..s).flat_map(|i| {
                            let q = &q[i * heads * d..][..heads * d];
                            let k = &k[i * kvh * d..][..kvh * d];
                            let v = &v[i * kvh * d..][..kvh * d];
                            q.iter().chain(k).chain(v).copied()
                        });
                        let qkv: Vec<f32> = rows.collect();
                        tvec![t(&qkv, &[1, s, (heads + 2 * kvh) * d])?]
                    }
                };
                inputs.push(t(&pk, &[1, kvh, past, d])?);
                inputs.push(t(&pv, &[1, kvh, past, d])?);
                if rotary {
                    inputs.push(t(&cos, &[positions, d / 2])?);
                    inputs.push(t(&sin, &[positions, d / 2])?);
                }
                let out = op.eval(&EvalContext::out_of_plan(), inputs)?;
                // Element `e` of a head's vector `x` at position `p`, rotated when `rotary`.
                let turned = |x: &[f32], p: usize, e: usize| -> f64 {
                    let half = d / 2;
                    let (j, other) = (e % half, if e < half { e + half } else { e - half });
                    let (c, sn) = (cos[p * half + j] as f64, sin[p * half + j] as f64);
                    match (rotary, e < half) {
                        (false, _) => x[e] as f64,
                        (true, true) => x[e] as f64 * c - x[other] as f64 * sn,
                        (true, false) => x[e] as f64 * c + x[other] as f64 * sn,
                    }
                };
                let key = |h: usize, j: usize, e: usize| match j < past {
                    true => pk[(h * past + j) * d + e] as f64,
                    false => turned(&k[((j - past) * kvh + h) * d..][..d], j, e),
                };
                let value = |h: usize, j: usize, e: usize| match j < past {
                    true => pv[(h * past + j) * d + e],
                    false => v[((j - past) * kvh + h) * d + e],
                };
                let got = out[0].try_as_plain_ram()?;
                let got = got.as_slice::<f32>()?;
                let present_k = out[1].try_as_plain_ram()?;
                let present_k = present_k.as_slice::<f32>()?;
                let total = past + s;
                for h in 0..kvh {
                    for j in 0..total {
                        for e in 0..d {
                            let have = present_k[(h * total + j) * d + e] as f64;
                            assert!((have - key(h, j, e)).abs() < 1e-6);
                        }
                    }
                }
                for head in 0..heads {
                    let h = head / (heads / kvh);
                    for i in 0..s {
                        let query = &q[i * heads * d + head * d..][..d];
                        let seen = past + i + 1;
                        let scores: Vec<f64> = (0..seen)
                            .map(|j| {
                                let dot = (0..d).map(|e| turned(query, past + i, e) * key(h, j, e));
                                dot.sum::<f64>() * scale as f64
                            })
                            .collect();
                        let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                        let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                        let sum: f64 = w.iter().sum();
                        for e in 0..d {
                            let want: f64 =
                                (0..seen).map(|j| w[j] / sum * value(h, j, e) as f64).sum();
                            let have = got[i * heads * d + head * d + e] as f64;
                            assert!(
                                (have - want).abs() < 1e-5,
                                "past {past} s {s} packed {packed} rotary {rotary}: {have} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `GroupQueryAttention` graphs in the four forms Glimpse runs as its own op (query, key
    /// and value apart or packed; RoPE before the node or inside it), against ONNX Runtime's
    /// outputs for a prompt, a token after a cache and tokens after a cache
    /// (`tools/make_attention.py`, `fixtures/attention`).
    #[test]
    fn group_query_attention_matches_onnx_runtime() -> TractResult<()> {
        use tract_onnx::prelude::Framework;
        let forms = fixtures()?;
        assert_eq!(forms.len(), 4);
        let mut largest = 0f32;
        for (form, graph, cases) in forms {
            let model = crate::onnx::onnx().model_for_path(graph)?;
            for case in cases.as_array().context("cases")? {
                let mut model = model.clone();
                let mut inputs = tvec![];
                for (i, outlet) in model.input_outlets()?.to_vec().iter().enumerate() {
                    let name = &model.node(outlet.node).name;
                    let data: Vec<f32> = serde_json::from_value(case["inputs"][name].clone())?;
                    let (s, past) = (
                        case["tokens"].as_u64().unwrap() as usize,
                        case["past"].as_u64().unwrap() as usize,
                    );
                    let shape = match name.as_str() {
                        "past_key" | "past_value" => vec![1, 2, past, 16],
                        _ => vec![1, s, data.len() / s],
                    };
                    model.set_input_fact(i, f32::fact(&shape).into())?;
                    inputs.push(Tensor::from_shape(&shape, &data)?.into_tvalue());
                }
                let model = model.into_optimized()?;
                assert!(
                    model.nodes().iter().any(|n| n.op_is::<CachedAttention>()),
                    "{form}: not run as CachedAttention"
                );
                let outputs = model.into_runnable()?.run(inputs)?;
                for (name, got) in ["attention", "present_key", "present_value"]
                    .iter()
                    .zip(&outputs)
                {
                    let want: Vec<f32> = serde_json::from_value(case["outputs"][name].clone())?;
                    let got = got.try_as_plain_ram()?;
                    let got = got.as_slice::<f32>()?;
                    assert_eq!(got.len(), want.len(), "{form} {name}");
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-5,
                        "{form} {case:?} {name}: off by {worst}",
                        case = (&case["past"], &case["tokens"])
                    );
                    largest = largest.max(worst);
                }
            }
        }
        println!("largest difference from ONNX Runtime: {largest:.1e}");
        Ok(())
    }

    /// A position past the rotary tables is an error, not a read out of bounds.
    #[test]
    fn refuses_positions_past_the_tables() -> TractResult<()> {
        let op = CachedAttention {
            heads: 1,
            kv_heads: 1,
            scale: 1f32.to_bits(),
            packed: true,
            rotary: true,
        };
        let zeros = |shape: &[usize]| Tensor::zero::<f32>(shape).map(|t| t.into_tvalue());
        let inputs = tvec![
            zeros(&[1, 1, 12])?,
            zeros(&[1, 1, 3, 4])?,
            zeros(&[1, 1, 3, 4])?,
            zeros(&[3, 2])?,
            zeros(&[3, 2])?,
        ];
        let err = op.eval(&EvalContext::out_of_plan(), inputs).unwrap_err();
        assert!(format!("{err}").contains("position 3"), "{err}");
        Ok(())
    }
}
