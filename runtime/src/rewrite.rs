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

use tract_onnx::prelude::*;
use tract_onnx::tract_core::axes::{AxesMapping, Axis};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

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
}
