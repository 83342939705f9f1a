//! CLIP's quick GELU in one op ([`glimpse_kernels::quick_gelu`]), which
//! [`crate::passes::fuse_quick_gelu`] puts in for its three exported ops.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use glimpse_kernels::quick_gelu::quick_gelu;

/// `x · sigmoid(α x)`, f32, any shape.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct QuickGelu {
    /// α, as f32 bits.
    pub alpha: u32,
}

impl Op for QuickGelu {
    fn name(&self) -> StaticName {
        "QuickGelu".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuickGelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "QuickGelu takes 1 input");
        // In place when nothing else holds the input (a copy otherwise).
        let mut x = inputs.remove(0).into_tensor();
        let alpha = f32::from_bits(self.alpha);
        quick_gelu(alpha, x.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec![x.into_tvalue()])
    }
}

impl TypedOp for QuickGelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].datum_type == f32::datum_type(),
            "QuickGelu takes one f32 input"
        );
        Ok(tvec![f32::fact(inputs[0].shape.clone())])
    }

    as_op!();
}
