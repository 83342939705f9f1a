//! ONNX `DynamicQuantizeLinear` as one op ([`glimpse_kernels::dynamic_quantize`]).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use glimpse_kernels::dynamic_quantize::{parameters, quantize};

/// The graph operator: one f32 input; `y` (`u8`, its shape), `y_scale` and
/// `y_zero_point` (scalars) out. An f16 input (a graph in f16 precision) is computed in f32,
/// its scale given back in f16.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct DynamicQuantize;

impl Op for DynamicQuantize {
    fn name(&self) -> StaticName {
        "DynamicQuantize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for DynamicQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let dt = x.datum_type();
        // SAFETY: `quantize` writes every element before the tensor is read.
        let mut y = unsafe { Tensor::uninitialized::<u8>(x.shape())? };
        let x = x.cast_to::<f32>()?;
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let (scale, zero_point) = parameters(x);
        quantize(
            x,
            scale,
            zero_point,
            y.try_as_plain_ram_mut()?.as_slice_mut()?,
        );
        Ok(tvec![
            y.into_tvalue(),
            tensor0(scale).cast_to_dt(dt)?.into_owned().into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ])
    }
}

impl TypedOp for DynamicQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(
            [f32::datum_type(), f16::datum_type()].contains(&x.datum_type),
            "DynamicQuantizeLinear takes f32 (or f16, after tract's f32-to-f16 pass), got {:?}",
            x.datum_type
        );
        Ok(tvec![
            u8::fact(x.shape.clone()),
            x.datum_type.scalar_fact(),
            u8::scalar_fact()
        ])
    }

    as_op!();
}
