//! The decoder's key/value cache kept inside the graph, in the state of each layer's
//! attention: a step appends its keys and values in place.
//!
//! Passed as the ONNX graph declares it (`past_key_values.*` in, `present.*` out), each step
//! copies the whole cache into a new `present` ([`super::cached_attention`]): for a 1.4B model at 256
//! positions, 100 MB a token. Here each layer's [`LayerCache`] holds its keys and values with
//! room to grow (by half, never past the model's context), and a step writes only its own
//! rows (BENCHMARKS.md compares the two). The cache then lives in a tract state (a
//! `glimpse`'s decoder cache): one per sequence.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::plan::LaneId;
use tract_onnx::tract_core::{as_op, not_out_of_plan, op_as_typed_op};

use super::cached_attention::{row, CachedAttention, Stored};

/// [`CachedAttention`] with its cache in the op's state: inputs are the step's query, key and
/// value (or the three packed) and, with RoPE, the cos and sin tables; the one output is the
/// attention `[1, s, heads × d]`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct StatefulAttention {
    pub attention: CachedAttention,
    pub head_dim: usize,
    /// Most positions the cache holds.
    pub context: usize,
    /// Keys and values stored in f16.
    pub half: bool,
}

/// One layer's keys and values, stored as `T`: `kv_heads` heads of `capacity` rows of `d`,
/// the first `len` of each written.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerCache<T> {
    keys: Vec<T>,
    values: Vec<T>,
    capacity: usize,
    len: usize,
}

/// Bytes an op state holds if it is a layer's cache (0 otherwise).
pub fn layer_bytes(state: &dyn OpState) -> usize {
    let f32 = state.downcast_ref::<LayerCache<f32>>().map(|l| l.bytes());
    let f16 = state.downcast_ref::<LayerCache<f16>>().map(|l| l.bytes());
    f32.or(f16).unwrap_or(0)
}

/// Forgets every position from `len` on in an op state that is a layer's cache (a step that
/// failed half way).
pub fn truncate_layer(state: &mut dyn OpState, len: usize) {
    if let Some(layer) = state.downcast_mut::<LayerCache<f32>>() {
        layer.len = layer.len.min(len);
    }
    if let Some(layer) = state.downcast_mut::<LayerCache<f16>>() {
        layer.len = layer.len.min(len);
    }
}

/// Rows a cache starts with: a short prompt and its answer fit without growing.
const FIRST_CAPACITY: usize = 64;

impl<T: Stored> LayerCache<T> {
    fn bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * std::mem::size_of::<T>()
    }

    /// Makes room for `need` positions of `heads` heads of `d`: half as much again as the old
    /// room (so a long answer copies its cache a few times, not at every step), at least
    /// [`FIRST_CAPACITY`], at most `bound`.
    fn reserve(&mut self, heads: usize, d: usize, need: usize, bound: usize) {
        if need <= self.capacity {
            return;
        }
        let grown = self.capacity + self.capacity / 2;
        let capacity = grown.max(FIRST_CAPACITY).min(bound).max(need);
        let (old, len) = (self.capacity * d, self.len * d);
        for rows in [&mut self.keys, &mut self.values] {
            let mut grown = vec![T::default(); heads * capacity * d];
            for h in 0..heads {
                grown[h * capacity * d..][..len].copy_from_slice(&rows[h * old..][..len]);
            }
            *rows = grown;
        }
        self.capacity = capacity;
    }
}

impl StatefulAttention {
    fn arity(&self) -> usize {
        self.attention.step_inputs() + if self.attention.rotary { 2 } else { 0 }
    }

    /// Runs one step after what `cache` holds and appends the step to it.
    fn step<T: Stored>(
        &self,
        cache: &mut LayerCache<T>,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let a = &self.attention;
        ensure!(
            inputs.len() == self.arity(),
            "StatefulAttention takes {} inputs, got {}",
            self.arity(),
            inputs.len()
        );
        let steps = a.step_inputs();
        let tables = a.rotary.then(|| (&inputs[steps], &inputs[steps + 1]));
        let (past, d, heads) = (cache.len, self.head_dim, a.kv_heads);
        let s = inputs[0].shape().get(1).copied().unwrap_or(0);
        ensure!(
            past + s <= self.context,
            "the key/value cache holds {past} of the context's {} positions: {s} more do not fit",
            self.context,
        );
        let step = a.read_step(&inputs[..steps], tables, past, d)?;
        let total = past + step.s;
        cache.reserve(heads, d, total, self.context);
        let stride = cache.capacity * d;
        for (rows, new) in [
            (&mut cache.keys, &step.keys),
            (&mut cache.values, &step.values),
        ] {
            for i in 0..step.s {
                let new = row(new, i, heads * d);
                for h in 0..heads {
                    T::write(
                        &new[h * d..][..d],
                        &mut rows[h * stride + (past + i) * d..][..d],
                    );
                }
            }
        }
        cache.len = total;
        let cached = (&cache.keys[..], &cache.values[..]);
        let output = a.attention(&step.queries, cached, stride, past, step.s, d)?;
        Ok(tvec![output.into_tvalue()])
    }
}

impl Op for StatefulAttention {
    fn name(&self) -> StaticName {
        "StatefulAttention".into()
    }

    op_as_typed_op!();
}

impl EvalOp for StatefulAttention {
    not_out_of_plan!();

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(match self.half {
            true => Box::<LayerCache<f16>>::default(),
            false => Box::<LayerCache<f32>>::default(),
        }))
    }
}

impl<T: Stored> OpState for LayerCache<T> {
    fn eval(
        &mut self,
        _ctx: &EvalContext,
        op: &dyn Op,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let op = op
            .downcast_ref::<StatefulAttention>()
            .context("a LayerCache runs a StatefulAttention")?;
        op.step(self, inputs)
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        bail!("a LayerCache holds one sequence: each has its own state")
    }
}

impl TypedOp for StatefulAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == self.arity(), "StatefulAttention: arity");
        let q = inputs[0];
        ensure!(q.rank() == 3, "StatefulAttention: the query's rank");
        let width = self.attention.heads * self.head_dim;
        Ok(tvec![f32::fact([
            q.shape[0].clone(),
            q.shape[1].clone(),
            width.into()
        ])])
    }

    as_op!();
}

/// Moves every [`CachedAttention`]'s cache into the graph: each becomes a
/// [`StatefulAttention`], its past key and value inputs and present outputs leave the graph.
/// Only when every output but the first is a present of an attention whose pasts are graph
/// inputs read by nothing else; otherwise the graph is left as it is (it keeps passing its
/// cache). Returns the attentions moved.
pub fn keep_in_graph(model: &mut TypedModel, context: usize, half: bool) -> TractResult<usize> {
    let (inputs, outputs) = (
        model.input_outlets()?.to_vec(),
        model.output_outlets()?.to_vec(),
    );
    let mut moved = vec![];
    for node in model.nodes() {
        let Some(op) = node.op_as::<CachedAttention>() else {
            continue;
        };
        let steps = op.step_inputs();
        let pasts = [node.inputs[steps], node.inputs[steps + 1]];
        let presents = [OutletId::new(node.id, 1), OutletId::new(node.id, 2)];
        let alone = pasts
            .iter()
            .all(|o| inputs.contains(o) && model.outlet_successors(*o).len() == 1)
            && presents
                .iter()
                .all(|o| outputs.contains(o) && model.outlet_successors(*o).is_empty());
        let Some(head_dim) = model.outlet_fact(pasts[0])?.shape[3].as_i64() else {
            return Ok(0);
        };
        if !alone {
            return Ok(0);
        }
        let stateful = StatefulAttention {
            attention: op.clone(),
            head_dim: head_dim as usize,
            context,
            half,
        };
        moved.push((node.id, pasts, stateful));
    }
    if moved.is_empty() || outputs.len() != 1 + 2 * moved.len() {
        return Ok(0);
    }
    model.select_output_outlets(&outputs[..1])?;
    let mut gone = vec![];
    for (id, pasts, op) in &moved {
        let node = model.node(*id);
        let name = node.name.clone();
        let kept: TVec<OutletId> = node
            .inputs
            .iter()
            .filter(|o| !pasts.contains(o))
            .copied()
            .collect();
        let mut patch = TypedModelPatch::default();
        let taps = kept
            .iter()
            .map(|o| patch.tap_model(model, *o))
            .collect::<TractResult<TVec<_>>>()?;
        let wire = patch.wire_node(format!("{name}.stateful"), op.clone(), &taps)?[0];
        patch.shunt_outside(model, OutletId::new(*id, 0), wire)?;
        patch.apply(model)?;
        gone.extend_from_slice(pasts);
    }
    model.inputs.retain(|o| !gone.contains(o));
    model.compact()?;
    Ok(moved.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values as values;

    /// Steps of 5, 1, 60, 1 and 3 tokens (past the first room of 64, and to the context's
    /// 70) give exactly what the op passing its cache gives, or within f16's rounding with the
    /// cache in f16; one more token is refused and loses nothing; the room never passes the
    /// context.
    #[test]
    fn steps_match_the_op_that_passes_its_cache() -> TractResult<()> {
        for half in [false, true] {
            steps_match(half)?;
        }
        Ok(())
    }

    fn steps_match(half: bool) -> TractResult<()> {
        let (heads, kv, d, context): (usize, usize, usize, usize) = (4, 2, 8, 70);
        let angles =
            (0..context).flat_map(|p| (0..d / 2).map(move |j| p as f32 * 0.9f32.powi(j as i32)));
        let cos: Vec<f32> = angles.clone().map(f32::cos).collect();
        let sin: Vec<f32> = angles.map(f32::sin).collect();
        let table = |t: &[f32]| Tensor::from_shape(&[context, d / 2], t).map(|t| t.into_tvalue());
        let (cos, sin) = (table(&cos)?, table(&sin)?);
        let attention = CachedAttention {
            heads,
            kv_heads: kv,
            scale: 0.35f32.to_bits(),
            packed: true,
            rotary: true,
        };
        let stateful = StatefulAttention {
            attention: attention.clone(),
            head_dim: d,
            context,
            half,
        };
        let mut state = stateful
            .state(&EvalContext::out_of_plan())?
            .context("a state")?;
        let op: &dyn Op = &stateful;
        let ctx = EvalContext::out_of_plan();
        let empty = Tensor::zero::<f32>(&[1, kv, 0, d])?.into_tvalue();
        let (mut past_k, mut past_v) = (empty.clone(), empty);
        let width = (heads + 2 * kv) * d;
        for (n, s) in [5, 1, 60, 1, 3].into_iter().enumerate() {
            let qkv = Tensor::from_shape(&[1, s, width], &values(s * width, n as u32))?;
            let qkv = qkv.into_tvalue();
            let passed = attention.eval(
                &EvalContext::out_of_plan(),
                tvec![qkv.clone(), past_k, past_v, cos.clone(), sin.clone()],
            )?;
            let kept = state.eval(&ctx, op, tvec![qkv, cos.clone(), sin.clone()])?;
            match half {
                false => assert_eq!(kept[0], passed[0], "step {n}: {s} tokens"),
                true => {
                    let (kept, passed) =
                        (kept[0].try_as_plain_ram()?, passed[0].try_as_plain_ram()?);
                    let (kept, passed) = (kept.as_slice::<f32>()?, passed.as_slice::<f32>()?);
                    let worst = kept.iter().zip(passed).map(|(a, b)| (a - b).abs());
                    let worst = worst.fold(0f32, f32::max);
                    assert!(worst < 2e-3, "step {n}: f16 off by {worst}");
                }
            }
            (past_k, past_v) = (passed[1].clone(), passed[2].clone());
        }
        let one = Tensor::from_shape(&[1, 1, width], &values(width, 9))?.into_tvalue();
        let err = state.eval(&ctx, op, tvec![one, cos, sin]).unwrap_err();
        assert!(format!("{err}").contains("70 of the context's 70"), "{err}");
        let element = if half { 2 } else { 4 };
        assert_eq!(layer_bytes(&*state), 2 * kv * context * d * element);
        Ok(())
    }

    /// A `GroupQueryAttention` graph (`fixtures/attention`): its cache moves into the op, the
    /// graph keeps the step's inputs and the attention output, and a prompt then a token
    /// after it give ONNX Runtime's attention (`tools/make_attention.py`).
    #[test]
    fn moves_the_cache_of_an_attention_graph_into_the_op() -> TractResult<()> {
        use tract_onnx::prelude::Framework;
        for (form, graph, cases) in crate::ops::cached_attention::tests::fixtures()? {
            let mut model = crate::onnx::onnx().model_for_path(graph)?;
            let s = model.symbols.sym("s");
            let past = model.symbols.sym("past");
            let names: Vec<String> = model
                .input_outlets()?
                .iter()
                .map(|o| model.node(o.node).name.clone())
                .collect();
            for (i, name) in names.iter().enumerate() {
                let width = match name.as_str() {
                    "past_key" | "past_value" => {
                        let fact = f32::fact::<[TDim; 4]>([
                            1.into(),
                            2.into(),
                            past.clone().into(),
                            16.into(),
                        ]);
                        model.set_input_fact(i, fact.into())?;
                        continue;
                    }
                    _ => {
                        cases[0]["inputs"][name].as_array().context("input")?.len()
                            / cases[0]["tokens"].as_u64().context("tokens")? as usize
                    }
                };
                let fact = f32::fact::<[TDim; 3]>([1.into(), s.clone().into(), width.into()]);
                model.set_input_fact(i, fact.into())?;
            }
            let mut typed = model.into_typed()?.into_decluttered()?;
            assert_eq!(keep_in_graph(&mut typed, 32, false)?, 1, "{form}");
            assert!(typed.nodes().iter().all(|n| !n.op_is::<CachedAttention>()));
            assert_eq!(typed.output_outlets()?.len(), 1);
            let kept: Vec<String> = typed
                .input_outlets()?
                .iter()
                .map(|o| typed.node(o.node).name.clone())
                .collect();
            assert!(
                kept.iter().all(|name| !name.starts_with("past")),
                "{kept:?}"
            );
            let plan = typed.into_optimized()?.into_runnable()?;
            let mut state = TypedSimpleState::new(&plan)?;
            // The prompt, then the first case after a cache of the prompt's length.
            let prompt = cases
                .as_array()
                .context("cases")?
                .iter()
                .find(|c| c["past"] == 0);
            let prompt = prompt.context("a prompt case")?;
            let inputs = kept
                .iter()
                .map(|name| {
                    let data: Vec<f32> = serde_json::from_value(prompt["inputs"][name].clone())?;
                    let s = prompt["tokens"].as_u64().context("tokens")? as usize;
                    Ok(Tensor::from_shape(&[1, s, data.len() / s], &data)?.into_tvalue())
                })
                .collect::<TractResult<TVec<_>>>()?;
            let got = state.run(inputs)?;
            let want: Vec<f32> = serde_json::from_value(prompt["outputs"]["attention"].clone())?;
            let got = got[0].try_as_plain_ram()?;
            let worst = got
                .as_slice::<f32>()?
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{form}: off by {worst}");
        }
        Ok(())
    }
}
