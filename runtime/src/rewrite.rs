//! Rewrites of tract's typed model that Glimpse applies between declutter and codegen.
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
//! [`fuse_int8_rescale`]: the same files follow each product with `Cast` to f32 and a `Mul`
//! by the scale (activations' times weights'); two more passes over every product's output,
//! which [`Int8MatMul`] does as it writes it.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::axes::{AxesMapping, Axis};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::einsum::EinSum;

use crate::int8_matmul::Int8MatMul;

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

/// The node `node`'s one output feeds, if it feeds exactly one and is not a model output.
fn only_successor<'m>(model: &'m TypedModel, node: &TypedNode) -> Option<&'m TypedNode> {
    let out = &node.outputs[0];
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
        use crate::int8_matmul::Int8Weight;
        use tract_onnx::tract_core::ops::math::mul;
        let w = tensor1(&(0..12).map(|i| i as i8 - 6).collect::<Vec<_>>()).into_shape(&[3, 4])?;
        let op = Int8MatMul {
            weight: Arc::new(Int8Weight::new(&w, None)?),
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
}
