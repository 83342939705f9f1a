//! Rewrites of tract's typed model that Glimpse applies between declutter and codegen: an
//! ordered list of named passes ([`BEFORE_DECLUTTER`], [`PASSES`]), each run where its kernel
//! runs on this CPU ([`Pass::wanted`]).
//!
//! Quantised products (`MatMulInteger` from ONNX Runtime's `quantize_dynamic`) reach codegen as
//! `[batch, tokens, k] × [k, n]` einsums. tract (0.23) picks the largest row axis as the
//! product's rows and takes a symbolic batch for the largest, so the token axis becomes an
//! outer loop: one matrix-vector product per token (72 s per ViT-B/32 image on AVX2; 10.8 s
//! folded, BENCHMARKS.md says where the rest goes). tract folds such axes for float products
//! itself, not for quantised ones; [`fold_quantized_rows`] does it for those: the leading row
//! axes of the activations fold into one (`[batch·tokens, k]`) and the result unfolds again.
//! Declutter would push the reshapes back through the product, hence after it.
//!
//! [`fuse_attention`]: `softmax(q · kᵀ) · v` as two einsums around a softmax (how a vision
//! tower's attention reaches here) becomes one [`FusedAttention`].
//!
//! [`fuse_quick_gelu`]: CLIP's `x · sigmoid(1.702 x)`, three ops, becomes one [`QuickGelu`].
//!
//! [`pack_f32_products`]: each f32 einsum of activations `[.., k]` by a constant `[k, n]` (or
//! `[n, k]`) weight, every linear layer of a tower, becomes an [`F32MatMul`] holding the weight
//! packed (on CPUs where `glimpse_kernels::f32_matmul::kernel_available`).
//!
//! [`slice_constant_gathers`]: a `Gather` of one constant index (`x[:, 0]`, a vision tower's
//! class token) becomes a `Slice` and the removal of its axis, before declutter: declutter
//! then moves the slice up the graph (through the last layer's row-wise products, norms and
//! activations, up to the softmax, whose slice [`fuse_attention`] moves to the query), so the
//! rows nothing reads are not computed.
//!
//! [`fuse_int8_rescale`]: the same files follow each product with `Cast` to f32 and a `Mul`
//! by the scale (activations' times weights'); two more passes over every product's output,
//! which [`Int8MatMul`] does as it writes it.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::axes::{AxesMapping, Axis};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Gather, Slice};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use crate::ops::f32_matmul::{self, F32MatMul};
use crate::ops::int8_matmul::Int8MatMul;
use crate::ops::q4_matmul::Q4MatMul;
use crate::ops::quick_gelu::QuickGelu;
use crate::ops::vision_attention::{FusedAttention, Layout};

/// One rewrite of the typed model: it returns how many changes it made.
pub(crate) struct Pass {
    pub name: &'static str,
    /// Whether it runs for this build: where the op it puts in has a kernel on this CPU.
    pub wanted: fn(&Target) -> bool,
    pub run: fn(&mut TypedModel) -> TractResult<usize>,
}

/// What a graph is built for, which the passes are chosen from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target {
    /// Float math in f16 (tract's `f32_to_f16` after declutter).
    pub half: bool,
    /// The graph's products take one row a run (a decoder step), where tract's own f32
    /// products were measured faster than [`pack_f32_products`]' packed one.
    pub one_row_products: bool,
}

/// Before declutter, which then carries the slices it makes up the graph.
pub(crate) const BEFORE_DECLUTTER: [Pass; 1] = [Pass {
    name: "slice_constant_gathers",
    wanted: |_| true,
    run: slice_constant_gathers,
}];

/// After declutter (and the f16 transform), in this order, before tract's optimisation.
pub(crate) const PASSES: [Pass; 5] = [
    Pass {
        name: "fold_quantized_rows",
        wanted: |_| true,
        run: fold_quantized_rows,
    },
    Pass {
        name: "fuse_int8_rescale",
        wanted: |_| true,
        run: fuse_int8_rescale,
    },
    Pass {
        name: "fuse_attention",
        wanted: |_| glimpse_kernels::vision_attention::kernel_available(),
        run: fuse_attention,
    },
    Pass {
        name: "fuse_quick_gelu",
        wanted: |_| glimpse_kernels::quick_gelu::kernel_available(),
        run: fuse_quick_gelu,
    },
    Pass {
        name: "pack_f32_products",
        wanted: |t| glimpse_kernels::f32_matmul::kernel_available() && !t.one_row_products,
        run: pack_f32_products,
    },
];

/// Runs each of `passes` that `target` wants; returns how many changes they made.
pub(crate) fn run(passes: &[Pass], model: &mut TypedModel, target: &Target) -> TractResult<usize> {
    let mut changes = 0;
    for pass in passes
        .iter()
        .filter(|p| (p.wanted)(target) && !skipped(p.name))
    {
        changes += (pass.run)(model).with_context(|| format!("pass {}", pass.name))?;
    }
    Ok(changes)
}

/// Whether the environment's `GLIMPSE_SKIP_PASSES` (pass names, comma-separated; `all`)
/// names this pass, or `GLIMPSE_RAW_TRACT` ([`crate::onnx::raw_tract`]) skips them all:
/// benchmarks measure a pass's effect in one binary. Read once.
fn skipped(name: &str) -> bool {
    if crate::onnx::raw_tract() {
        return true;
    }
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let skip = SKIP.get_or_init(|| {
        let names = std::env::var("GLIMPSE_SKIP_PASSES").unwrap_or_default();
        names.split(',').map(|n| n.trim().to_owned()).collect()
    });
    skip.iter().any(|s| s == name || s == "all")
}

/// Folds the row axes of every quantised product into one; returns how many it rewrote.
pub(crate) fn fold_quantized_rows(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let Some(op) = node.op_as::<EinSum>() else {
            continue;
        };
        let Some(rows) = row_axes(op) else { continue };
        let patch = fold(model, node, op, &rows)?;
        patch.apply(model)?;
        folded += 1;
    }
    Ok(folded)
}

/// Replaces each `Gather` of one constant index (a scalar, in range) from float data by a
/// `Slice` of that index and the removal of the axis; returns how many. To run before
/// declutter.
pub(crate) fn slice_constant_gathers(model: &mut TypedModel) -> TractResult<usize> {
    let mut sliced = 0;
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let Some(op) = node.op_as::<Gather>().filter(|op| op.output_type.is_none()) else {
            continue;
        };
        let (data, indices) = (
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(node.inputs[1])?,
        );
        let Some(index) = indices.konst.as_ref().filter(|i| i.rank() == 0) else {
            continue;
        };
        let (Ok(index), Some(len)) = (index.cast_to_scalar::<i64>(), data.shape[op.axis].as_i64())
        else {
            continue;
        };
        let index = if index < 0 { index + len } else { index };
        if !(0..len).contains(&index) || !data.is_plain() || !data.datum_type.is_float() {
            continue;
        }
        let mut patch = TypedModelPatch::new("slice constant gather");
        let x = patch.tap_model(model, node.inputs[0])?;
        let (start, end) = (index.to_dim(), (index + 1).to_dim());
        let slice = Slice {
            axis: op.axis,
            start,
            end,
        };
        let y = patch.wire_node(format!("{}.slice", node.name), slice, &[x])?;
        let y = patch.wire_node(&node.name, AxisOp::Rm(op.axis), &y)?[0];
        patch.shunt_outside(model, id.into(), y)?;
        patch.apply(model)?;
        sliced += 1;
    }
    Ok(sliced)
}

/// For a decoder whose caller reads only the last row of its first output (the logits of the
/// last token): slices the output product's input `[batch, tokens, k]` to its last token, so a
/// prompt's other rows skip the vocabulary-wide product (llama.cpp asks for the last row's
/// logits alone alike). The output becomes `[batch, 1, vocab]`. Where the output is not a
/// product whose token axis the slice can cross (a [`Q4MatMul`], or an einsum that keeps that
/// axis as its first input's row), nothing changes; returns how many it sliced.
pub fn last_row_of_first_output(model: &mut TypedModel) -> TractResult<usize> {
    let Some(&outlet) = model.outputs.first() else {
        return Ok(0);
    };
    let node = &model.nodes()[outlet.node];
    let Some(&input) = node.inputs.first() else {
        return Ok(0);
    };
    let fact = model.outlet_fact(input)?;
    if fact.rank() != 3 || model.outlet_fact(outlet)?.rank() != 3 {
        return Ok(0);
    }
    let crosses = node.op_is::<Q4MatMul>()
        || node.op_as::<EinSum>().is_some_and(|op| {
            let axis = op.axes.axis((InOut::Out(0), 1));
            axis.is_ok_and(|a| {
                a.inputs.first().is_some_and(|i| i.as_slice() == [1])
                    && a.inputs.iter().skip(1).all(|i| i.is_empty())
            })
        });
    if !crosses {
        return Ok(0);
    }
    let tokens = fact.shape[1].clone();
    let mut patch = TypedModelPatch::new("last row of the first output");
    let mut inputs = patch.taps(model, &node.inputs)?;
    let slice = Slice {
        axis: 1,
        start: tokens.clone() - 1,
        end: tokens,
    };
    inputs[0] = patch.wire_node(format!("{}.last_row", node.name), slice, &inputs[..1])?[0];
    let y = patch.wire_node(&node.name, node.op.clone(), &inputs)?[0];
    patch.shunt_outside(model, outlet, y)?;
    patch.apply(model)?;
    Ok(1)
}

/// Folds `Mul(Cast(product, f32), scale)` after each [`Int8MatMul`] into it, where the
/// product feeds only the cast, the cast only the `Mul`, and the scale is one f32 value;
/// returns how many it rewrote. The arithmetic is the same: one rounding to f32, one product.
pub(crate) fn fuse_int8_rescale(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let Some(op) = node.op_as::<Int8MatMul>().filter(|op| !op.scaled) else {
            continue;
        };
        let Some(cast) = only_successor(model, node)
            .filter(|c| c.op_as::<Cast>().is_some_and(|c| c.to == f32::datum_type()))
        else {
            continue;
        };
        let Some(mul) = only_successor(model, cast)
            .filter(|m| m.op_as::<TypedBinOp>().is_some_and(|b| b.0.name() == "Mul"))
        else {
            continue;
        };
        let cast_out = OutletId::new(cast.id, 0);
        let others: Vec<OutletId> = mul
            .inputs
            .iter()
            .copied()
            .filter(|i| *i != cast_out)
            .collect();
        let [scale] = others[..] else { continue };
        let (scale_fact, mul_fact) = (model.outlet_fact(scale)?, model.outlet_fact(mul.id.into())?);
        if scale_fact.datum_type != f32::datum_type()
            || scale_fact.shape.volume() != 1.to_dim()
            || mul_fact.shape != model.outlet_fact(cast_out)?.shape
        {
            continue;
        }
        let mut patch = TypedModelPatch::new("fuse int8 rescale");
        let mut inputs = patch.taps(model, &node.inputs)?;
        inputs.push(patch.tap_model(model, scale)?);
        let scaled = Int8MatMul {
            scaled: true,
            ..op.clone()
        };
        let y = patch.wire_node(&node.name, scaled, &inputs)?[0];
        patch.shunt_outside(model, mul.id.into(), y)?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

/// Replaces each f32 einsum `[.., k] × [k, n] → [.., n]` whose weight is a constant by an
/// [`F32MatMul`] (the weight `[n, k]`, or `k` several axes of both operands, as declutter
/// leaves an attention's output projection: `[.., heads, depth] × [heads, depth, n]`);
/// returns how many.
pub(crate) fn pack_f32_products(model: &mut TypedModel) -> TractResult<usize> {
    let mut packed = 0;
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let Some(op) = node.op_as::<EinSum>() else {
            continue;
        };
        let [a, w] = node.inputs[..] else { continue };
        let a_fact = model.outlet_fact(a)?;
        let Some(form) = weight_product(op, &a_fact.shape) else {
            continue;
        };
        let Some(w) = (model.outlet_fact(w)?.konst.clone())
            .filter(|_| a_fact.datum_type == f32::datum_type())
        else {
            continue;
        };
        let name = node.name.clone();
        // The `k` axes of an `[k.., n]` weight are contiguous: one `[k, n]` matrix.
        let shape = w.shape().to_vec();
        let Some((n, k)) = shape.split_last() else {
            continue;
        };
        let w = match form.transposed {
            true => w.into_tensor(),
            false => w.into_tensor().into_shape(&[k.iter().product(), *n])?,
        };
        let op = F32MatMul {
            weight: Arc::new(f32_matmul::weight(&w, form.transposed)?),
            k_axes: form.k_axes,
        };
        let mut patch = TypedModelPatch::new("pack f32 product");
        let mut a = patch.tap_model(model, a)?;
        for (i, &axis) in form.dropped.iter().enumerate().rev() {
            a = patch.wire_node(format!("{name}.drop{i}"), AxisOp::Rm(axis), &[a])?[0];
        }
        let mut y = patch.wire_node(&name, op, &[a])?[0];
        for (i, &axis) in form.added.iter().enumerate() {
            y = patch.wire_node(format!("{name}.add{i}"), AxisOp::Add(axis), &[y])?[0];
        }
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        packed += 1;
    }
    Ok(packed)
}

/// How an f32 einsum multiplies by a constant weight: `[rows.., k..] × [k.., n] → [rows.., n]`
/// (the `k` axes summed, in one order in both; each row axis in the activations and the
/// output only, in order), or `[rows.., k] × [n, k]`; besides, axes of length 1 in the
/// activations or the output alone (tract's form of a batch fixed at 1).
struct WeightProduct {
    k_axes: usize,
    transposed: bool,
    /// Positions in the activations of axes to remove first.
    dropped: Vec<usize>,
    /// Positions in the output of axes to add after.
    added: Vec<usize>,
}

/// The [`WeightProduct`] of `op` with activations of shape `a_shape`, if it is one.
fn weight_product(op: &EinSum, a_shape: &[TDim]) -> Option<WeightProduct> {
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() {
        return None;
    }
    let axes = &op.axes;
    let lone = |axis: &Axis| axis.inputs.len() == 2 && axis.inputs[1].is_empty();
    let only_in_a = |axis: &&Axis| lone(axis) && axis.outputs[0].is_empty();
    let only_in_c = |axis: &&Axis| lone(axis) && axis.inputs[0].is_empty();
    let dropped: Vec<usize> = (axes.axes(InOut::In(0)).enumerate())
        .filter(|(_, axis)| only_in_a(axis))
        .map(|(i, _)| i)
        .collect();
    if dropped
        .iter()
        .any(|&i| a_shape.get(i) != Some(&TDim::from(1)))
    {
        return None;
    }
    let added: Vec<usize> = (axes.axes(InOut::Out(0)).enumerate())
        .filter(|(_, axis)| only_in_c(axis))
        .map(|(i, _)| i)
        .collect();
    let a: Vec<&Axis> = axes.axes(InOut::In(0)).filter(|x| !only_in_a(x)).collect();
    let w: Vec<&Axis> = axes.axes(InOut::In(1)).collect();
    let c: Vec<&Axis> = axes.axes(InOut::Out(0)).filter(|x| !only_in_c(x)).collect();
    let once = |axis: &Axis, a: usize, w: usize, c: usize| {
        axis.inputs.len() == 2
            && (
                axis.inputs[0].len(),
                axis.inputs[1].len(),
                axis.outputs[0].len(),
            ) == (a, w, c)
    };
    let (n, c_rows) = c.split_last()?;
    let ks = a.len().checked_sub(c_rows.len()).filter(|&ks| ks >= 1)?;
    let (rows, k) = a.split_at(c_rows.len());
    let fits = once(n, 0, 1, 1)
        && k.iter().all(|k| once(k, 1, 1, 0))
        && rows
            .iter()
            .zip(c_rows)
            .all(|(r, c)| r.repr == c.repr && once(r, 1, 0, 1));
    let same = |x: &[&Axis], y: &[&Axis]| x.iter().map(|a| a.repr).eq(y.iter().map(|a| a.repr));
    let transposed = match w.split_last()? {
        (last, leading) if fits && last.repr == n.repr && same(leading, k) => false,
        (last, [first]) if fits && ks == 1 && first.repr == n.repr && last.repr == k[0].repr => {
            true
        }
        _ => return None,
    };
    Some(WeightProduct {
        k_axes: ks,
        transposed,
        dropped,
        added,
    })
}

/// Fuses each f32 `einsum(q, k) → softmax over the keys → einsum(·, v)` chain whose
/// intermediate results feed nothing else into one [`FusedAttention`]; returns how many.
/// A mask or a scale between the product and the softmax leaves the chain alone.
pub(crate) fn fuse_attention(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let Some(Chain {
            op,
            inputs,
            last,
            slice,
            drop_rows,
        }) = attention_at(model, id)?
        else {
            continue;
        };
        let mut patch = TypedModelPatch::new("fuse attention");
        let mut taps = patch.taps(model, &inputs)?;
        let name = &model.nodes()[last].name;
        if let Some(slice) = slice {
            taps[0] = patch.wire_node(format!("{name}.queries"), slice, &taps[..1])?[0];
        }
        let mut y = patch.wire_node(name, op, &taps)?;
        if let Some(drop) = drop_rows {
            y = patch.wire_node(format!("{name}.drop_rows"), drop, &y)?;
        }
        patch.shunt_outside(model, OutletId::new(last, 0), y[0])?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

/// An attention chain found in a model.
struct Chain {
    op: FusedAttention,
    /// Query, key and value.
    inputs: [OutletId; 3],
    /// The chain's last node, whose output the op's replaces.
    last: usize,
    /// A slice of the query rows, to apply to the query (tract moves the slice of an output's
    /// rows, such as a vision encoder's patches without the class token, up to the softmax).
    slice: Option<Slice>,
    /// The removal of the op's query-rows axis, where the chain's output has none.
    drop_rows: Option<AxisOp>,
}

/// The attention chain starting at node `id`, if there is one.
fn attention_at(model: &TypedModel, id: usize) -> TractResult<Option<Chain>> {
    let f32_product = |node: &TypedNode| {
        node.op_as::<EinSum>()
            .filter(|op| op.q_params.is_none() && op.operating_dt == f32::datum_type())
            .filter(|_| node.inputs.len() == 2)
            .cloned()
    };
    let first = &model.nodes()[id];
    let Some(scores) = f32_product(first) else {
        return Ok(None);
    };
    let Some(softmax) = only_successor(model, first) else {
        return Ok(None);
    };
    let axis = match softmax.op_as::<Softmax>() {
        Some(Softmax {
            axes,
            quant_output_dt: None,
            kind: SoftmaxKind::Softmax,
        }) if axes.len() == 1 => axes[0],
        _ => return Ok(None),
    };
    let Some(mut last) = only_successor(model, softmax) else {
        return Ok(None);
    };
    let mut weights = OutletId::new(softmax.id, 0);
    let mut slice = None;
    if let Some(op) = last.op_as::<Slice>() {
        slice = Some(op.clone());
        weights = OutletId::new(last.id, 0);
        let Some(next) = only_successor(model, last) else {
            return Ok(None);
        };
        last = next;
    }
    let Some(mix) = f32_product(last) else {
        return Ok(None);
    };
    let Some(w) = last.inputs.iter().position(|i| *i == weights) else {
        return Ok(None);
    };
    // An axis of length 1 wherever it is (a batch of one summed away) has no role.
    let unit = |node: &TypedNode, axis: &Axis| -> TractResult<bool> {
        for (i, slots) in axis.inputs.iter().enumerate() {
            let fact = model.outlet_fact(node.inputs[i])?;
            if slots.iter().any(|&at| fact.shape[at] != 1.to_dim()) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let units = |node: &TypedNode, axes: &AxesMapping| -> TractResult<Vec<char>> {
        let mut found = vec![];
        for a in axes.iter_all_axes() {
            if unit(node, a)? {
                found.push(a.repr);
            }
        }
        Ok(found)
    };
    let (first_units, last_units) = (units(first, &scores.axes)?, units(last, &mix.axes)?);
    let chains = (&scores.axes, &first_units[..], axis);
    let Some(parts) = attention_axes(chains, (&mix.axes, &last_units[..]), w) else {
        return Ok(None);
    };
    let mut inputs = [
        first.inputs[parts.query],
        first.inputs[1 - parts.query],
        last.inputs[1 - w],
    ];
    // Query and key scaled by constants (`√(1/√d)` each, as `torch.onnx` writes SDPA) are
    // taken unscaled, the product of the scales applied as the queries are read.
    let mut scale = 1f32;
    for input in &mut inputs[..2] {
        if let Some((x, c)) = scaled(model, *input, first.id)? {
            (*input, scale) = (x, scale * c);
        }
    }
    let facts = inputs
        .iter()
        .map(|i| model.outlet_fact(*i))
        .collect::<TractResult<Vec<_>>>()?;
    let mut layouts = parts.layouts;
    for (layout, fact) in layouts.iter_mut().zip(&facts) {
        layout.rank = fact.rank();
    }
    layouts[3].rank = model.outlet_fact(OutletId::new(last.id, 0))?.rank();
    let drop_rows = parts.rows_dropped.then(|| {
        layouts[3].rows = layouts[3].rank;
        layouts[3].rank += 1;
        AxisOp::Rm(layouts[3].rows)
    });
    let [q, k, v, _] = &layouts;
    let dim = |x: usize, axis: usize| &facts[x].shape[axis];
    let fits = facts.iter().all(|f| f.datum_type == f32::datum_type())
        && (q.batch.iter().zip(&k.batch).zip(&v.batch))
            .all(|((&a, &b), &c)| dim(0, a) == dim(1, b) && dim(1, b) == dim(2, c))
        && dim(1, k.rows) == dim(2, v.rows)
        && dim(0, q.cols) == dim(1, k.cols);
    // Only a slice of the query rows moves to the query.
    let slice = match slice {
        Some(op) if op.axis != parts.query_rows => return Ok(None),
        Some(op) => Some(Slice {
            axis: layouts[0].rows,
            ..op
        }),
        None => None,
    };
    Ok(fits.then_some(Chain {
        op: FusedAttention {
            layouts,
            scale: scale.to_bits(),
        },
        inputs,
        last: last.id,
        slice,
        drop_rows,
    }))
}

/// Fuses `Mul(x, Sigmoid(Mul(x, α)))` (operands in either order, the intermediate results
/// feeding nothing else, α a constant) into one [`QuickGelu`]; returns how many.
pub(crate) fn fuse_quick_gelu(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let Some((x, alpha, last)) = quick_gelu_at(model, id)? else {
            continue;
        };
        let mut patch = TypedModelPatch::new("fuse quick gelu");
        let x = patch.tap_model(model, x)?;
        let op = QuickGelu {
            alpha: alpha.to_bits(),
        };
        let y = patch.wire_node(&model.nodes()[last].name, op, &[x])?[0];
        patch.shunt_outside(model, OutletId::new(last, 0), y)?;
        patch.apply(model)?;
        fused += 1;
    }
    Ok(fused)
}

/// The quick GELU starting at node `id` (its `Mul` by α), if there is one: `x`, α and the
/// last node.
fn quick_gelu_at(model: &TypedModel, id: usize) -> TractResult<Option<(OutletId, f32, usize)>> {
    let Some(sigmoid) = only_successor(model, &model.nodes()[id]) else {
        return Ok(None);
    };
    let is_sigmoid = (sigmoid.op_as::<ElementWiseOp>())
        .is_some_and(|e| e.0.name() == "Sigmoid" && e.1.is_none());
    let Some(last) = only_successor(model, sigmoid).filter(|_| is_sigmoid) else {
        return Ok(None);
    };
    let Some((x, alpha)) = scaled(model, OutletId::new(id, 0), sigmoid.id)? else {
        return Ok(None);
    };
    let is_mul = (last.op_as::<TypedBinOp>()).is_some_and(|b| b.0.name() == "Mul" && b.1.is_none());
    let s = OutletId::new(sigmoid.id, 0);
    let fits = is_mul
        && (last.inputs[..] == [x, s] || last.inputs[..] == [s, x])
        && model.outlet_fact(x)?.datum_type == f32::datum_type()
        && model.outlet_fact(x)?.shape == model.outlet_fact(OutletId::new(last.id, 0))?.shape;
    Ok(fits.then_some((x, alpha, last.id)))
}

/// If `outlet` is a `Mul` of some `x` by a constant f32 scalar `c`, feeding only node
/// `consumer`: `(x, c)`.
fn scaled(
    model: &TypedModel,
    outlet: OutletId,
    consumer: usize,
) -> TractResult<Option<(OutletId, f32)>> {
    let node = &model.nodes()[outlet.node];
    let is_mul = node
        .op_as::<TypedBinOp>()
        .is_some_and(|b| b.0.name() == "Mul" && b.1.is_none());
    if !is_mul || only_successor(model, node).map(|n| n.id) != Some(consumer) {
        return Ok(None);
    }
    let out = model.outlet_fact(outlet)?;
    for (c, x) in [(0, 1), (1, 0)] {
        let (c_fact, x_fact) = (
            model.outlet_fact(node.inputs[c])?,
            model.outlet_fact(node.inputs[x])?,
        );
        let Some(c) = c_fact.konst.as_ref() else {
            continue;
        };
        if c.datum_type() == f32::datum_type() && c.len() == 1 && x_fact.shape == out.shape {
            let c = c.cast_to_scalar::<f32>()?;
            return Ok(Some((node.inputs[x], c)));
        }
    }
    Ok(None)
}

/// The operands' layouts of an attention chain, which input of the first product is the
/// query, and where the query rows are in the scores.
struct AttentionAxes {
    layouts: [Layout; 4],
    query: usize,
    query_rows: usize,
    /// Whether the output has no query-rows axis (one row, summed away).
    rows_dropped: bool,
}

/// Reads the layouts (ranks left to the caller) off the products' axes: `scores` (inputs
/// query and key) with the softmax over its output axis `axis`, `mix` taking the softmax at
/// input `w` and the values at the other; the axes named in each one's list are of length 1
/// and left out. Every other axis of `scores` must be a batch axis (in all three), the
/// query's row axis, the keys' (the softmax axis) or the depth (in both inputs, summed);
/// every axis of `mix` a batch axis, the query rows, the keys (summed) or the value depth.
fn attention_axes(
    (scores, scores_units, axis): (&AxesMapping, &[char], usize),
    (mix, mix_units): (&AxesMapping, &[char]),
    w: usize,
) -> Option<AttentionAxes> {
    // Each role is taken once; an axis in a slot at most once.
    let set = |field: &mut usize, at: usize| (*field == usize::MAX).then(|| *field = at);
    let once = |slots: &TVec<usize>| match slots[..] {
        [] => Some(None),
        [x] => Some(Some(x)),
        _ => None,
    };
    let keys_axis = scores.axis((InOut::Out(0), axis)).ok()?;
    let query = if keys_axis.inputs[0].is_empty() { 0 } else { 1 };
    let (key, v) = (1 - query, 1 - w);
    let mut layouts: [Layout; 4] = std::array::from_fn(|_| Layout {
        batch: vec![],
        rows: usize::MAX,
        cols: usize::MAX,
        rank: 0,
    });
    // Batch axes in the order of the scores' output.
    let mut batch = vec![];
    for a in scores
        .iter_all_axes()
        .filter(|a| !scores_units.contains(&a.repr))
    {
        let (q, k, o) = (
            once(&a.inputs[query])?,
            once(&a.inputs[key])?,
            once(&a.outputs[0])?,
        );
        match (q, k, o) {
            (Some(q), Some(k), Some(o)) => batch.push((o, q, k)),
            (Some(q), None, Some(_)) => set(&mut layouts[0].rows, q)?,
            (None, Some(k), Some(o)) if o == axis => set(&mut layouts[1].rows, k)?,
            (Some(q), Some(k), None) => {
                set(&mut layouts[0].cols, q)?;
                set(&mut layouts[1].cols, k)?;
            }
            _ => return None,
        }
    }
    batch.sort();
    let query_rows = scores.axis((InOut::In(query), layouts[0].rows)).ok()?;
    let query_rows = once(&query_rows.outputs[0])??;
    for a in mix.iter_all_axes().filter(|a| !mix_units.contains(&a.repr)) {
        let (p, x, o) = (
            once(&a.inputs[w])?,
            once(&a.inputs[v])?,
            once(&a.outputs[0])?,
        );
        match (p, x, o) {
            (Some(p), Some(x), Some(o)) => {
                let at = batch.iter().position(|b| b.0 == p)?;
                while layouts[2].batch.len() <= at {
                    layouts[2].batch.push(usize::MAX);
                    layouts[3].batch.push(usize::MAX);
                }
                set(&mut layouts[2].batch[at], x)?;
                set(&mut layouts[3].batch[at], o)?;
            }
            (Some(p), None, Some(o)) if p == query_rows => set(&mut layouts[3].rows, o)?,
            (Some(p), Some(x), None) if p == axis => set(&mut layouts[2].rows, x)?,
            (None, Some(x), Some(o)) => {
                set(&mut layouts[2].cols, x)?;
                set(&mut layouts[3].cols, o)?;
            }
            _ => return None,
        }
    }
    layouts[0].batch = batch.iter().map(|b| b.1).collect();
    layouts[1].batch = batch.iter().map(|b| b.2).collect();
    // One query row (a slice of the class token's) is of length 1, and declutter may have
    // summed it away from the output: there the op writes a trailing axis, removed after it.
    let mut rows_dropped = false;
    if layouts[3].rows == usize::MAX {
        match &mix.axis((InOut::In(w), query_rows)).ok()?.outputs[0][..] {
            [o] => layouts[3].rows = *o,
            [] => rows_dropped = true,
            _ => return None,
        }
    }
    let complete = layouts.iter().all(|l| {
        l.batch.len() == batch.len()
            && !l.batch.contains(&usize::MAX)
            && (l.rows != usize::MAX || rows_dropped)
            && l.cols != usize::MAX
    });
    complete.then_some(AttentionAxes {
        layouts,
        query,
        query_rows,
        rows_dropped,
    })
}

/// The node `node`'s one output feeds, if it feeds exactly one and is not a model output.
fn only_successor<'m>(model: &'m TypedModel, node: &TypedNode) -> Option<&'m TypedNode> {
    let out = node.outputs.first()?;
    let outlet = OutletId::new(node.id, 0);
    match (&out.successors[..], model.outputs.contains(&outlet)) {
        ([next], false) => Some(&model.nodes()[next.node]),
        _ => None,
    }
}

/// The axes leading both the activations and the output, in neither the weights nor the
/// quantisation parameters, when there are two or more of them and only `k` follows in the
/// activations.
fn row_axes(op: &EinSum) -> Option<Vec<char>> {
    op.q_params?;
    let is_row = |axis: &Axis| {
        axis.inputs[0].len() == 1
            && axis.inputs[1..].iter().all(|i| i.is_empty())
            && axis.outputs[0].len() == 1
    };
    let a: Vec<&Axis> = op.axes.axes(InOut::In(0)).collect();
    let (_k, rows) = a.split_last()?;
    let c: Vec<char> = op.axes.axes(InOut::Out(0)).map(|axis| axis.repr).collect();
    let rows: Vec<char> = rows.iter().map(|axis| axis.repr).collect();
    let leading = rows.len() >= 2 && c.starts_with(&rows);
    (leading && a[..rows.len()].iter().all(|axis| is_row(axis))).then_some(rows)
}

fn fold(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
    rows: &[char],
) -> TractResult<TypedModelPatch> {
    let name = &node.name;
    let dims: TVec<TDim> = model.outlet_fact(node.inputs[0])?.shape[..rows.len()].into();
    let folded: TDim = dims.iter().product();
    let mut patch = TypedModelPatch::new("fold quantised rows");
    let mut inputs = patch.taps(model, &node.inputs)?;
    let fold = AxisOp::Reshape(0, dims.clone(), tvec![folded.clone()]);
    inputs[0] = patch.wire_node(format!("{name}.fold_rows"), fold, &[inputs[0]])?[0];
    let mut axes: AxesMapping = op.axes.clone();
    for &axis in &rows[1..] {
        axes = axes.remove_axis(axis)?;
    }
    let product = EinSum { axes, ..op.clone() };
    let c = patch.wire_node(name, product, &inputs)?;
    let unfold = AxisOp::Reshape(0, tvec![folded], dims);
    let c = patch.wire_node(format!("{name}.unfold_rows"), unfold, &c)?[0];
    patch.shunt_outside(model, node.id.into(), c)?;
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pixel values in [-1, 1) of the given shape.
    fn test_pixels(shape: &[usize]) -> TractResult<Tensor> {
        let pixels: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        tensor1(&pixels).into_shape(shape)
    }

    fn fixtures() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
    }

    /// The largest `|got − want| / (|want| + 0.01)` between two f32 tensors.
    fn worst_difference(got: &Tensor, want: &Tensor) -> TractResult<f32> {
        let (got, want) = (got.try_as_plain_ram()?, want.try_as_plain_ram()?);
        let (got, want) = (got.as_slice::<f32>()?, want.as_slice::<f32>()?);
        ensure!(
            got.len() == want.len(),
            "{} values, want {}",
            got.len(),
            want.len()
        );
        Ok((got.iter().zip(want))
            .map(|(g, w)| (g - w).abs() / (w.abs() + 1e-2))
            .fold(0f32, f32::max))
    }

    fn rows(expr: &str, quantized: bool) -> Option<Vec<char>> {
        let q_params = quantized.then_some(i32::datum_type());
        let op = EinSum {
            axes: expr.parse().unwrap(),
            operating_dt: i32::datum_type(),
            q_params,
        };
        row_axes(&op)
    }

    #[test]
    fn folds_the_leading_rows_of_quantised_products_only() {
        // quantize_dynamic's [batch, tokens, k] × [k, n], scalar zero points and scales.
        assert_eq!(rows("amk,kn,,,,,,,->amn", true), Some(vec!['a', 'm']));
        assert_eq!(
            rows("abmk,kn,,,,,,,->abmn", true),
            Some(vec!['a', 'b', 'm'])
        );
        // Float products: tract folds those itself.
        assert_eq!(rows("amk,kn->amn", false), None);
        // One row axis: nothing to fold.
        assert_eq!(rows("mk,kn,,,,,,,->mn", true), None);
        // A batch axis shared with the weights, or rows reordered in the output.
        assert_eq!(rows("amk,akn,,,,,,,->amn", true), None);
        assert_eq!(rows("amk,kn,,,,,,,->man", true), None);
        // A per-row zero point ties the rows to another input.
        assert_eq!(rows("amk,kn,,m,,,,,->amn", true), None);
    }

    /// `Mul(Cast(Int8MatMul), scale)` becomes one scaled `Int8MatMul` with the same output;
    /// a product whose cast also feeds something else is left alone.
    #[test]
    fn folds_the_rescale_into_int8_products() -> TractResult<()> {
        use crate::ops::int8_matmul;
        use tract_onnx::tract_core::ops::math::mul;
        let w = tensor1(&(0..12).map(|i| i as i8 - 6).collect::<Vec<_>>()).into_shape(&[3, 4])?;
        let op = Int8MatMul {
            weight: Arc::new(int8_matmul::weight(&w, None)?),
            zero_point: true,
            scaled: false,
        };
        let a = tensor1(&[1u8, 200, 3, 4, 5, 255]).into_shape(&[2, 3])?;
        for shared in [false, true] {
            let mut model = TypedModel::default();
            let x = model.add_source("a", u8::fact([2, 3]))?;
            let a0 = model.add_const("a0", tensor0(7u8))?;
            let scale = model.add_source("scale", f32::fact([1, 1]))?;
            let y = model.wire_node("mm", op.clone(), &[x, a0])?;
            let c = model.wire_node(
                "cast",
                Cast {
                    to: f32::datum_type(),
                },
                &y,
            )?;
            let z = model.wire_node("rescale", mul(), &[c[0], scale])?;
            let mut outputs = vec![z[0]];
            if shared {
                outputs.push(c[0]);
            }
            model.select_output_outlets(&outputs)?;
            let inputs = tvec![a.clone().into_tvalue(), tensor2(&[[0.25f32]]).into_tvalue()];
            let want = model
                .clone()
                .into_runnable()?
                .run(inputs.clone())?
                .remove(0);
            assert_eq!(fuse_int8_rescale(&mut model)?, !shared as usize);
            let got = model.into_runnable()?.run(inputs)?.remove(0);
            assert_eq!(got, want, "shared cast: {shared}");
        }
        Ok(())
    }

    /// Real vision towers have each attention fused (their query and key scales taken in) and
    /// each quick GELU, with the same output as tract's ops up to rounding: the tiny CLIP fixture (two layers) with a batch of two, and the
    /// tiny VLM's encoder (two layers, batch fixed at 1, which tract sums away as a product
    /// axis of length 1), in f32 and int8. The CLIP text tower, whose causal mask sits between
    /// product and softmax, keeps its chains.
    #[test]
    fn fuses_the_attention_and_activation_of_vision_towers() -> TractResult<()> {
        use tract_onnx::prelude::InferenceModelExt;
        let fixtures = fixtures();
        let load = |file: &str, fact: InferenceFact| -> TractResult<TypedModel> {
            let mut model = crate::onnx::onnx().model_for_path(fixtures.join(file))?;
            model.set_input_fact(0, fact)?;
            model.into_typed()?.into_decluttered()
        };
        for (file, shape, compare) in [
            ("clip-vit-tiny/onnx/vision_model.onnx", [2, 3, 64, 64], true),
            ("vlm-tiny/onnx/vision_encoder.onnx", [1, 3, 48, 48], true),
            // Fused too; its int8 quantiser after the attention may round a value the other
            // way, so its output is compared with ONNX Runtime's in tests/vlm.rs instead.
            (
                "vlm-tiny/onnx/vision_encoder_quantized.onnx",
                [1, 3, 48, 48],
                false,
            ),
        ] {
            let pixels = test_pixels(&shape)?;
            let mut vision = load(file, f32::fact(shape).into())?;
            let run = |model: &TypedModel| -> TractResult<TVec<TValue>> {
                let input = tvec![pixels.clone().into_tvalue()];
                model.clone().into_runnable()?.run(input)
            };
            let want = run(&vision)?;
            assert_eq!(fuse_attention(&mut vision)?, 2, "{file}");
            assert_eq!(fuse_quick_gelu(&mut vision)?, 2, "{file}");
            // The exports scale queries and keys by √(1/√16) each: taken into the op.
            for node in vision.nodes() {
                if let Some(op) = node.op_as::<FusedAttention>() {
                    assert_eq!(f32::from_bits(op.scale), 0.25, "{file}");
                }
            }
            let got = run(&vision)?;
            for (got, want) in got.iter().zip(&want).filter(|_| compare) {
                let worst = worst_difference(got, want)?;
                assert!(worst < 1e-4, "{file}: relative difference {worst}");
            }
        }
        let text = "clip-vit-tiny/onnx/text_model.onnx";
        let mut text = load(text, i64::fact([1, 7]).into())?;
        assert_eq!(fuse_attention(&mut text)?, 0);
        Ok(())
    }

    /// Every product of a real tower by a constant weight becomes an [`F32MatMul`] (the
    /// attention's output projection, which declutter leaves with `[heads, depth, n]`
    /// weights, too), with the same output as tract's products up to rounding: the tiny CLIP
    /// fixture's towers, two layers of six products and a projection each.
    #[test]
    fn packs_the_weight_products_of_real_towers() -> TractResult<()> {
        use tract_onnx::prelude::InferenceModelExt;
        let (fixtures, pixels) = (fixtures(), test_pixels(&[2, 3, 64, 64])?);
        let ids: Vec<i64> = vec![49406, 320, 1125, 539, 320, 2368, 49407];
        for (file, fact, input) in [
            (
                "vision_model.onnx",
                f32::fact([2, 3, 64, 64]),
                pixels.clone(),
            ),
            (
                "text_model.onnx",
                i64::fact([1, 7]),
                tensor1(&ids).into_shape(&[1, 7])?,
            ),
        ] {
            let path = fixtures.join("clip-vit-tiny/onnx").join(file);
            let mut model = crate::onnx::onnx().model_for_path(path)?;
            model.set_input_fact(0, fact.into())?;
            let mut model = model.into_typed()?.into_decluttered()?;
            let run = |model: &TypedModel| -> TractResult<TVec<TValue>> {
                model
                    .clone()
                    .into_runnable()?
                    .run(tvec![input.clone().into_tvalue()])
            };
            let want = run(&model)?;
            assert_eq!(pack_f32_products(&mut model)?, 13, "{file}");
            let weight_products = model.nodes().iter().filter(|node| {
                node.op_is::<EinSum>()
                    && node
                        .inputs
                        .iter()
                        .any(|&i| model.outlet_fact(i).is_ok_and(|f| f.konst.is_some()))
            });
            assert_eq!(weight_products.count(), 0, "{file}");
            for (got, want) in run(&model)?.iter().zip(&want) {
                let worst = worst_difference(got, want)?;
                assert!(worst < 1e-4, "{file}: relative difference {worst}");
            }
        }
        Ok(())
    }

    /// A tower whose output reads only the class token computes the rest of its last layer
    /// for that row alone, with the same output: the tiny CLIP fixture's vision tower (two
    /// layers, batch of two), f32 with its attentions fused (the last one on one query row)
    /// and its products packed, and ONNX Runtime's dynamic int8 form, whose last product
    /// reads one row of activations quantised over all of them.
    #[test]
    fn computes_only_the_rows_the_class_token_reads() -> TractResult<()> {
        use crate::ops::f32_matmul::F32MatMul;
        let (fixtures, pixels) = (fixtures(), test_pixels(&[2, 3, 64, 64])?);
        for file in ["vision_model.onnx", "vision_model_dynamic.onnx"] {
            let build = |slice: bool| -> TractResult<TypedModel> {
                let path = fixtures.join("clip-vit-tiny/onnx").join(file);
                let mut model = crate::onnx::onnx().model_for_path(path)?;
                model.set_input_fact(0, f32::fact([2, 3, 64, 64]).into())?;
                model.select_outputs_by_name(["image_embeds"])?;
                let mut model = model.into_typed()?;
                if slice {
                    assert_eq!(slice_constant_gathers(&mut model)?, 1, "{file}");
                }
                model.declutter()?;
                assert_eq!(fuse_attention(&mut model)?, 2, "{file}");
                pack_f32_products(&mut model)?;
                Ok(model)
            };
            let run = |model: TypedModel| -> TractResult<Tensor> {
                let input = tvec![pixels.clone().into_tvalue()];
                Ok(model.into_runnable()?.run(input)?.remove(0).into_tensor())
            };
            let (full, sliced) = (build(false)?, build(true)?);
            // Rows each product of the last layer's MLP computes (per image: batch of two).
            let mlp_rows = |model: &TypedModel| -> TractResult<Vec<TDim>> {
                // Int8MatMul on x86-64; tract's quantised einsum on ARM.
                let products = model.nodes().iter().filter(|n| {
                    n.name.contains("layers.1/mlp")
                        && (n.op_is::<F32MatMul>()
                            || n.op_is::<Int8MatMul>()
                            || n.op_is::<EinSum>())
                });
                products
                    .map(|n| {
                        Ok(model
                            .outlet_fact(n.inputs[0])?
                            .shape
                            .iter()
                            .rev()
                            .skip(1)
                            .product())
                    })
                    .collect()
            };
            let fp32 = file == "vision_model.onnx";
            // f32: both MLP products on the class token; int8: the second (the first's
            // input is quantised over every row).
            let want: Vec<TDim> = match fp32 {
                true => vec![2.into(), 2.into()],
                false => vec![34.into(), 2.into()],
            };
            assert_eq!(mlp_rows(&full)?, vec![TDim::from(34); 2], "{file}");
            assert_eq!(mlp_rows(&sliced)?, want, "{file}");
            let worst = worst_difference(&run(sliced)?, &run(full)?)?;
            assert!(worst < 1e-5, "{file}: relative difference {worst}");
        }
        Ok(())
    }
}
