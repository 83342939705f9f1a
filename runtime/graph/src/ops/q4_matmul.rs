//! The 4-bit product's op: ONNX `MatMulNBits` in llama.cpp's Q4_0 layout
//! ([`glimpse_kernels::q4_matmul`]), the weight read where the graph keeps it.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use glimpse_kernels::q4_matmul::Q4Blocks;
pub(crate) use glimpse_kernels::q4_matmul::{Q4Weight, BLOCK};

/// `MatMulNBits`' packed `u8` weight (`n · k / 2` bytes, any shape) and its `f32` scales
/// (`n · k / 32`), shared with the graph rather than copied.
pub(crate) fn weight(
    n: usize,
    k: usize,
    packed: Arc<Tensor>,
    scales: Arc<Tensor>,
) -> TractResult<Q4Weight> {
    ensure!(
        packed.datum_type() == u8::datum_type() && scales.datum_type() == f32::datum_type(),
        "Q4 weight: {:?} codes and {:?} scales, want u8 and f32",
        packed.datum_type(),
        scales.datum_type()
    );
    // Plain memory, so that the slices below are the tensors' own.
    packed.try_as_plain_ram()?;
    scales.try_as_plain_ram()?;
    Ok(Q4Weight::new(
        n,
        k,
        Arc::new(TensorBlocks { packed, scales }),
    )?)
}

/// A graph's two constants as a [`Q4Weight`]'s storage.
#[derive(Debug)]
struct TensorBlocks {
    packed: Arc<Tensor>,
    scales: Arc<Tensor>,
}

impl Q4Blocks for TensorBlocks {
    fn codes(&self) -> &[u8] {
        (self.packed.try_as_plain_ram().and_then(|v| v.as_slice())).unwrap_or_default()
    }

    fn scales(&self) -> &[f32] {
        (self.scales.try_as_plain_ram().and_then(|v| v.as_slice())).unwrap_or_default()
    }
}

/// The graph operator: `[.., k]` f32 in, `[.., n]` out, the weight held by the operator.
#[derive(Debug, Clone)]
pub(crate) struct Q4MatMul {
    pub(crate) weight: Arc<Q4Weight>,
    /// Round activations to Q8_0 and multiply in integers (`accuracy_level = 4`).
    pub(crate) q8: bool,
}

impl PartialEq for Q4MatMul {
    fn eq(&self, other: &Self) -> bool {
        self.q8 == other.q8
            && (Arc::ptr_eq(&self.weight, &other.weight) || self.weight == other.weight)
    }
}

impl Eq for Q4MatMul {}

impl Op for Q4MatMul {
    fn name(&self) -> StaticName {
        "Q4MatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "weight [{}, {}] Q4_0, activations {}",
            self.weight.n(),
            self.weight.k(),
            if self.q8 { "Q8_0" } else { "f32" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Q4MatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let (n, k) = (self.weight.n(), self.weight.k());
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&k),
            "Q4MatMul: input {shape:?}, weight takes {k}"
        );
        let m = x.len() / k;
        let mut y_shape: TVec<usize> = shape.into();
        if let Some(last) = y_shape.last_mut() {
            *last = n;
        }
        let mut y = Tensor::zero::<f32>(&y_shape)?;
        {
            let x = x.try_as_plain_ram()?;
            let mut y = y.try_as_plain_ram_mut()?;
            self.weight
                .matmul(x.as_slice::<f32>()?, m, y.as_slice_mut::<f32>()?, self.q8)?;
        }
        Ok(tvec![y.into_tvalue()])
    }
}

impl TypedOp for Q4MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(
            x.datum_type == f32::datum_type(),
            "Q4MatMul takes f32, got {:?}",
            x.datum_type
        );
        let mut shape = x.shape.to_tvec();
        ensure!(
            shape.last() == Some(&self.weight.k().to_dim()),
            "Q4MatMul: input {:?}, weight takes {}",
            x.shape,
            self.weight.k()
        );
        if let Some(last) = shape.last_mut() {
            *last = self.weight.n().to_dim();
        }
        Ok(tvec![f32::fact(shape)])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (k, n) = (self.weight.k(), self.weight.n());
        Ok(crate::ops::f32_matmul::product_cost(inputs[0], 1, k, n))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel checks lengths; here, the tensors' types.
    #[test]
    fn refuses_a_ragged_weight() {
        let ok = weight(
            2,
            32,
            Arc::new(tensor1(&[0u8; 32])),
            Arc::new(tensor1(&[1f32; 2])),
        );
        assert!(ok.is_ok());
        let f64_scales = Arc::new(tensor1(&[1f64; 2]));
        assert!(weight(2, 32, Arc::new(tensor1(&[0u8; 32])), f64_scales).is_err());
        let short = weight(
            2,
            32,
            Arc::new(tensor1(&[0u8; 30])),
            Arc::new(tensor1(&[1f32; 2])),
        );
        assert!(short.is_err());
    }
}
