//! The f32 product's op: `a × w` with a constant weight packed once at load
//! ([`glimpse_kernels::f32_matmul`]); [`crate::passes::pack_f32_products`] puts it in.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

pub(crate) use glimpse_kernels::f32_matmul::F32Weight;

/// A rank-2 f32 weight tensor packed: `[k, n]`, or `[n, k]` with `transposed`.
pub(crate) fn weight(w: &Tensor, transposed: bool) -> TractResult<F32Weight> {
    ensure!(
        w.rank() == 2 && w.datum_type() == f32::datum_type(),
        "F32MatMul: weight {:?} {:?}",
        w.datum_type(),
        w.shape()
    );
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    let w = w.try_as_plain_ram()?;
    Ok(F32Weight::new(
        w.as_slice::<f32>()?,
        rows,
        cols,
        transposed,
    )?)
}

/// The graph operator: `a × w` with `w` held by the operator; `a` is f32 `[.., k]`, its `k`
/// possibly over its last `k_axes` axes (their product), which the output's `n` replaces.
#[derive(Debug, Clone)]
pub(crate) struct F32MatMul {
    pub(crate) weight: Arc<F32Weight>,
    pub(crate) k_axes: usize,
}

impl PartialEq for F32MatMul {
    fn eq(&self, other: &Self) -> bool {
        self.k_axes == other.k_axes
            && (Arc::ptr_eq(&self.weight, &other.weight) || self.weight == other.weight)
    }
}

impl F32MatMul {
    /// The output shape for input `shape`, if its last `k_axes` make the weight's `k`.
    fn output_shape<D: DimLike>(&self, shape: &[D]) -> Option<TVec<D>> {
        let rows = shape.len().checked_sub(self.k_axes)?;
        let k: D = shape[rows..].iter().cloned().product();
        (k == self.weight.k().into()).then(|| {
            let mut out: TVec<D> = shape[..rows].into();
            out.push(self.weight.n().into());
            out
        })
    }
}

impl Eq for F32MatMul {}

impl Op for F32MatMul {
    fn name(&self) -> StaticName {
        "F32MatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "weight [{}, {}]",
            self.weight.k(),
            self.weight.n()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for F32MatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "F32MatMul takes 1 input");
        let a = &inputs[0];
        let k = self.weight.k();
        let Some(y_shape) = self.output_shape(a.shape()) else {
            bail!("F32MatMul: input {:?}, weight takes {k}", a.shape());
        };
        // SAFETY: `matmul` writes every element before the tensor is read.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&y_shape)? };
        {
            let a = a.try_as_plain_ram()?;
            let a = a.as_slice::<f32>()?;
            let mut view = y.try_as_plain_ram_mut()?;
            self.weight
                .matmul(a, a.len() / k.max(1), view.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec![y.into_tvalue()])
    }
}

impl TypedOp for F32MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let a = inputs[0];
        let shape = self
            .output_shape(&a.shape)
            .filter(|_| a.datum_type == f32::datum_type());
        let Some(shape) = shape else {
            bail!(
                "F32MatMul: input {:?} {:?}, weight takes {}",
                a.datum_type,
                a.shape,
                self.weight.k()
            );
        };
        Ok(tvec![f32::fact(shape)])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(product_cost(
            inputs[0],
            self.k_axes,
            self.weight.k(),
            self.weight.n(),
        ))
    }

    as_op!();
}

/// A product's cost for tract: `k · n` f32 multiply-adds for each row of activations `a`
/// (its axes but the last `k_axes`).
pub(crate) fn product_cost(a: &TypedFact, k_axes: usize, k: usize, n: usize) -> TVec<(Cost, TDim)> {
    let rows: TDim = a.shape.iter().rev().skip(k_axes).product();
    tvec![(Cost::FMA(f32::datum_type()), rows * (k * n))]
}
