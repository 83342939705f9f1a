//! Per-channel `DequantizeLinear` on weights, folded to f32 before tract sees the graph.
//!
//! tract 0.23 reads QDQ scales and zero points per tensor only (their first element), so
//! a per-channel QDQ model would run with wrong weights and no error. Constant per-channel
//! dequantisations (the weights) are computed here into f32 initializers, exactly; a
//! per-channel quantisation of activations, which cannot be folded, is refused.

use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::tract_ndarray::Axis;
use tract_onnx::prelude::*;

const ONNX_FLOAT: i32 = 1;

/// Folds the model's constant per-channel dequantisations; returns how many it folded.
pub(crate) fn fold_per_channel(model: &mut ModelProto, dir: Option<&str>) -> Result<usize, String> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(0);
    };
    let provider = tract_onnx::onnx().provider;
    let mut folded = Vec::new();
    let mut kept = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let init = |name: &str| {
            graph
                .initializer
                .iter()
                .find(|t| !name.is_empty() && t.name == name)
        };
        let per_channel = matches!(node.op_type.as_str(), "DequantizeLinear" | "QuantizeLinear")
            && node
                .input
                .get(1)
                .and_then(|s| init(s))
                .is_some_and(|s| s.dims.iter().product::<i64>() > 1);
        if !per_channel {
            kept.push(node);
            continue;
        }
        let x = match (node.op_type.as_str(), init(&node.input[0])) {
            ("DequantizeLinear", Some(x)) => x,
            _ => {
                return Err(format!(
                    "node `{}` quantises activations per channel, which tract cannot run: quantise per tensor",
                    node.name
                ))
            }
        };
        let load = |t: &TensorProto| -> Result<Tensor, String> {
            tract_onnx::tensor::load_tensor(&*provider, t, dir)
                .and_then(|t| Ok(t.cast_to::<f32>()?.into_owned()))
                .map_err(|e| format!("node `{}`: {e:#}", node.name))
        };
        let scale = load(init(&node.input[1]).unwrap())?;
        let zero = node
            .input
            .get(2)
            .and_then(|z| init(z))
            .map(load)
            .transpose()?;
        folded.push(dequantize(&node, load(x)?, &scale, zero.as_ref())?);
    }
    graph.node = kept;
    let n = folded.len();
    graph.initializer.extend(folded);
    Ok(n)
}

/// `(x - zero) * scale` along the node's axis, as an f32 initializer named like its output.
fn dequantize(
    node: &NodeProto,
    x: Tensor,
    scale: &Tensor,
    zero: Option<&Tensor>,
) -> Result<TensorProto, String> {
    let fail = |why: String| format!("node `{}`: {why}", node.name);
    let rank = x.rank() as i64;
    let axis = node
        .attribute
        .iter()
        .find(|a| a.name == "axis")
        .map_or(1, |a| a.i);
    let axis = if axis < 0 { axis + rank } else { axis };
    let mut w = x
        .into_plain_array::<f32>()
        .map_err(|e| fail(format!("{e:#}")))?;
    let values = |t: &Tensor| -> Result<Vec<f32>, String> {
        Ok(t.to_plain_array_view::<f32>()
            .map_err(|e| fail(format!("{e:#}")))?
            .iter()
            .copied()
            .collect())
    };
    let scale = values(scale)?;
    let zero = zero.map(values).transpose()?;
    if !(0..rank).contains(&axis) || w.shape()[axis as usize] != scale.len() {
        return Err(fail(format!(
            "{} scales do not fit axis {axis} of shape {:?}",
            scale.len(),
            w.shape()
        )));
    }
    for (c, mut lane) in w.axis_iter_mut(Axis(axis as usize)).enumerate() {
        let z = zero.as_ref().map_or(0.0, |z| z[c]);
        lane.mapv_inplace(|v| (v - z) * scale[c]);
    }
    Ok(TensorProto {
        name: node.output[0].clone(),
        dims: w.shape().iter().map(|&d| d as i64).collect(),
        data_type: ONNX_FLOAT,
        raw_data: w.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    })
}
