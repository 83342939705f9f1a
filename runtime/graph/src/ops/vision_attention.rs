//! A vision tower's attention in one op ([`glimpse_kernels::vision_attention`]):
//! `softmax(scale · q · kᵀ) · v` per head, which [`crate::passes::fuse_attention`] puts in
//! for the product, softmax, product chain.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use glimpse_kernels::vision_attention;
pub(crate) use glimpse_kernels::vision_attention::Layout;

/// `softmax(scale · q · kᵀ, over keys) · v` for every batch index: queries `q` `[.., s, d]`,
/// keys `k` `[.., t, d]`, values `v` `[.., t, e]`, output `[.., s, e]`, each in the axis order
/// of its [`Layout`] (`layouts`: query, key, value, output).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct FusedAttention {
    pub layouts: [Layout; 4],
    /// The scores' scale, as f32 bits.
    pub scale: u32,
}

impl Op for FusedAttention {
    fn name(&self) -> StaticName {
        "FusedAttention".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FusedAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3, "FusedAttention takes 3 inputs");
        let shapes = [0, 1, 2].map(|i| inputs[i].shape());
        let shape = vision_attention::output_shape(&self.layouts, shapes)?;
        let data: Vec<_> = inputs
            .iter()
            .map(|x| x.try_as_plain_ram())
            .collect::<TractResult<_>>()?;
        let data: Vec<&[f32]> = data
            .iter()
            .map(|x| x.as_slice())
            .collect::<TractResult<_>>()?;
        // SAFETY: any bit pattern is an f32, and `attention` writes every element.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let scale = f32::from_bits(self.scale);
            let operands = [0, 1, 2].map(|i| (data[i], shapes[i]));
            vision_attention::attention(&self.layouts, scale, operands, view.as_slice_mut()?)?;
        }
        Ok(tvec![output.into_tvalue()])
    }
}

impl TypedOp for FusedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3, "FusedAttention takes 3 inputs");
        for (i, x) in inputs.iter().enumerate() {
            ensure!(
                x.datum_type == f32::datum_type() && x.rank() == self.layouts[i].rank,
                "FusedAttention: input {i} is {x:?}"
            );
        }
        let [q, _, v, out] = &self.layouts;
        let mut shape: TVec<TDim> = tvec![1.to_dim(); out.rank];
        for (&o, &a) in out.batch.iter().zip(&q.batch) {
            shape[o] = inputs[0].shape[a].clone();
        }
        shape[out.rows] = inputs[0].shape[q.rows].clone();
        shape[out.cols] = inputs[2].shape[v.cols].clone();
        Ok(tvec![f32::fact(shape)])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let [q, k, v, _] = &self.layouts;
        let heads: TDim = q
            .batch
            .iter()
            .map(|&a| inputs[0].shape[a].clone())
            .product();
        let depth = inputs[0].shape[q.cols].clone() + inputs[2].shape[v.cols].clone();
        let work = heads * inputs[0].shape[q.rows].clone() * inputs[1].shape[k.rows].clone();
        Ok(tvec![(Cost::FMA(f32::datum_type()), work * depth)])
    }

    as_op!();
}
