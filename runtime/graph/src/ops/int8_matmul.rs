//! The int8 product's op: ONNX `MatMulInteger` with a constant weight packed once at load
//! ([`glimpse_kernels::int8_matmul`]), its zero points and optional rescale applied in the
//! kernel.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use glimpse_kernels::int8_matmul::Bytes;
pub(crate) use glimpse_kernels::int8_matmul::Int8Weight;

/// `MatMulInteger`'s `b` (`[k, n]`, `i8` or `u8`) and its zero point (a scalar, one per
/// column, or none), packed.
pub(crate) fn weight(b: &Tensor, zero_point: Option<&Tensor>) -> TractResult<Int8Weight> {
    ensure!(
        b.rank() == 2,
        "int8 weight: shape {:?}, want [k, n]",
        b.shape()
    );
    let (k, n) = (b.shape()[0], b.shape()[1]);
    let b = bytes(b)?;
    let z = zero_point.map(bytes).transpose()?;
    Ok(Int8Weight::new(b, k, n, z)?)
}

/// A tensor's `i8` or `u8` values.
fn bytes(t: &Tensor) -> TractResult<Bytes<'_>> {
    let data = t.try_as_plain_ram()?;
    Ok(match t.datum_type() {
        DatumType::I8 => Bytes::I8(data.as_slice::<i8>()?),
        DatumType::U8 => Bytes::U8(data.as_slice::<u8>()?),
        dt => bail!("int8 weight: {dt:?}, want i8 or u8"),
    })
}

/// The graph operator: `MatMulInteger(a, w, a0, w0)` with `w` and `w0` held by the operator.
/// Inputs: `a` (`[.., k]`, `u8` or `i8`), then its zero point if `zero_point`, then if
/// `scaled` an f32 scale: the output is then f32, `Mul(Cast(product), scale)` in one pass
/// ([`crate::passes::fuse_int8_rescale`]); `i32` otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Int8MatMul {
    pub(crate) weight: Arc<Int8Weight>,
    pub(crate) zero_point: bool,
    pub(crate) scaled: bool,
}

impl PartialEq for Int8MatMul {
    fn eq(&self, other: &Self) -> bool {
        (self.zero_point, self.scaled) == (other.zero_point, other.scaled)
            && (Arc::ptr_eq(&self.weight, &other.weight) || self.weight == other.weight)
    }
}

impl Eq for Int8MatMul {}

impl Op for Int8MatMul {
    fn name(&self) -> StaticName {
        "Int8MatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "weight [{}, {}] int8",
            self.weight.k(),
            self.weight.n()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8MatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (k, n) = (self.weight.k(), self.weight.n());
        let a = &inputs[0];
        let shape = a.shape();
        ensure!(
            shape.last() == Some(&k),
            "Int8MatMul: input {shape:?}, weight takes {k}"
        );
        let one = |t: &TValue, what: &str| {
            ensure!(t.len() == 1, "Int8MatMul: {what} {:?}", t.shape());
            Ok(())
        };
        let a0 = match self.zero_point {
            true => {
                one(&inputs[1], "zero point")?;
                inputs[1].cast_to_scalar::<i32>()?
            }
            false => 0,
        };
        let scale = match self.scaled {
            true => {
                let s = &inputs[1 + self.zero_point as usize];
                one(s, "scale")?;
                Some(s.cast_to_scalar::<f32>()?)
            }
            false => None,
        };
        let signed = a.datum_type() == i8::datum_type();
        let m = a.len() / k;
        let mut y_shape: TVec<usize> = shape.into();
        if let Some(last) = y_shape.last_mut() {
            *last = n;
        }
        // SAFETY: `matmul` writes every element before the tensor is read; f32 and i32 have
        // one size and alignment, so the scaled output's bits are written through `i32`s.
        let mut y = unsafe {
            match self.scaled {
                true => Tensor::uninitialized::<f32>(&y_shape)?,
                false => Tensor::uninitialized::<i32>(&y_shape)?,
            }
        };
        {
            let a = a.try_as_plain_ram()?;
            let a: &[u8] = match signed {
                true => bytemuck_i8(a.as_slice::<i8>()?),
                false => a.as_slice::<u8>()?,
            };
            let mut y = y.try_as_plain_ram_mut()?;
            let y = y.as_bytes_mut();
            // SAFETY: the tensor's buffer is aligned for its 4-byte elements.
            let y = unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr().cast(), y.len() / 4) };
            self.weight.matmul(a, signed, a0, scale, m, y)?;
        }
        Ok(tvec![y.into_tvalue()])
    }
}

/// `i8`s as the bytes they are.
fn bytemuck_i8(a: &[i8]) -> &[u8] {
    // SAFETY: `i8` and `u8` have one size and alignment, and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(a.as_ptr().cast(), a.len()) }
}

impl TypedOp for Int8MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let a = inputs[0];
        ensure!(
            [u8::datum_type(), i8::datum_type()].contains(&a.datum_type),
            "Int8MatMul takes u8 or i8, got {:?}",
            a.datum_type
        );
        let mut shape = a.shape.to_tvec();
        ensure!(
            shape.last() == Some(&self.weight.k().to_dim()),
            "Int8MatMul: input {:?}, weight takes {}",
            a.shape,
            self.weight.k()
        );
        if let Some(last) = shape.last_mut() {
            *last = self.weight.n().to_dim();
        }
        Ok(tvec![match self.scaled {
            true => f32::fact(shape),
            false => i32::fact(shape),
        }])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let rows: TDim = inputs[0].shape.iter().rev().skip(1).product();
        Ok(tvec![(
            Cost::FMA(i32::datum_type()),
            rows * (self.weight.n() * self.weight.k())
        )])
    }

    /// The activations' row axes are the output's; the other inputs are scalars.
    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        let mut axes = AxesMapping::disconnected(inputs, outputs)?;
        for row in 0..outputs[0].rank().saturating_sub(1) {
            axes = axes.linking((InOut::In(0), row), (InOut::Out(0), row))?;
        }
        Ok(axes)
    }

    /// A slice of the output's rows is the product of the same slice of the activations
    /// (declutter moves a vision tower's class-token slice up through the last layer so).
    fn slice(
        &self,
        patch: &mut TypedModelPatch,
        _model: &TypedModel,
        _node: &TypedNode,
        prefix: &str,
        inputs: &[OutletId],
        output_axis: usize,
        _start: &TDim,
        _end: &TDim,
    ) -> TractResult<Option<TVec<OutletId>>> {
        if output_axis + 1 >= patch.outlet_fact(inputs[0])?.rank() {
            return Ok(None);
        }
        patch.wire_node(prefix, self.clone(), inputs).map(Some)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel's own test cannot give it: tensors of another rank or type.
    #[test]
    fn refuses_weights_it_cannot_take() {
        let w = tensor1(&[0i8; 12]).into_shape(&[3, 4]).unwrap();
        assert!(weight(&w, None).is_ok());
        assert!(weight(&tensor1(&[0i8; 12]), None).is_err());
        assert!(weight(&Tensor::zero::<i8>(&[0, 4]).unwrap(), None).is_err());
        assert!(weight(&tensor1(&[0f32; 12]).into_shape(&[3, 4]).unwrap(), None).is_err());
        assert!(weight(&w, Some(&tensor1(&[0i8; 3]))).is_err());
        assert!(weight(&w, Some(&tensor1(&[0u8; 4]))).is_err());
        assert!(weight(&w, Some(&tensor1(&[0i8; 4]))).is_ok());
    }
}
