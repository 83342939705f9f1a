//! ONNX operators Glimpse builds itself where tract's own fall short.
//!
//! `Flatten`: tract-hir 0.23 refuses inputs with more than one symbolic dimension, and
//! HF exports pool CLIP's text tower through a `Flatten` of the `[batch, sequence, width]`
//! hidden states. A flatten is a plain reshape to `[prod(dims[..axis]), prod(dims[axis..])]`,
//! which tract's typed reshape handles with symbolic products, so Glimpse registers that.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

/// tract's ONNX front end with Glimpse's operators registered over its own. Intermediate
/// `value_info` shapes are ignored: quantisers write their own symbol names there
/// (`batch_size`), which then cannot unify with the input facts Glimpse sets.
pub(crate) fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx().with_ignore_value_info(true);
    register(&mut onnx.op_register);
    onnx
}

fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Flatten", flatten);
}

fn flatten(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let axis: i64 = node.get_attr_opt("axis")?.unwrap_or(1);
    Ok((expand(Flatten { axis }), vec![]))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Flatten {
    axis: i64,
}

impl Flatten {
    fn output_shape(&self, shape: &[TDim]) -> TractResult<TVec<TDim>> {
        let rank = shape.len() as i64;
        let axis = if self.axis < 0 {
            self.axis + rank
        } else {
            self.axis
        };
        ensure!(
            (0..=rank).contains(&axis),
            "Flatten axis {} out of range for rank {rank}",
            self.axis
        );
        let (head, tail) = shape.split_at(axis as usize);
        Ok(tvec![
            head.iter().cloned().product(),
            tail.iter().cloned().product()
        ])
    }
}

impl Expansion for Flatten {
    fn name(&self) -> StaticName {
        "Flatten".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given(&inputs[0].shape, move |s, shape| {
            s.equals(
                &outputs[0].shape,
                ShapeFactoid::from(self.output_shape(&shape)?.to_vec()),
            )
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let from = model.outlet_fact(inputs[0])?.shape.to_tvec();
        let to = self.output_shape(&from)?;
        model.wire_node(prefix, AxisOp::Reshape(0, from, to), inputs)
    }
}
