//! ONNX operators Glimpse builds itself where tract's own fall short.
//!
//! `Flatten`: tract-hir 0.23 refuses inputs with more than one symbolic dimension, and
//! HF exports pool CLIP's text tower through a `Flatten` of the `[batch, sequence, width]`
//! hidden states. A flatten is a plain reshape to `[prod(dims[..axis]), prod(dims[axis..])]`,
//! which tract's typed reshape handles with symbolic products, so Glimpse registers that.
//!
//! `MatMulInteger`, where tract's int8 matrix product is slower than its f32 one
//! ([`crate::pool::int8_products_in_f32`]): the same product of zero-point-centred integers,
//! computed in f32. Constant weights are centred and converted once, while the graph is built;
//! the activations per run. Integer sums are exact in f32 up to 2^24 and within
//! a few units in 10^7 past that, far below the quantisation error itself. Where Glimpse's
//! kernels run (AVX-512 VNNI or AVX2: [`crate::pool::int8_products_packed`]), a constant weight
//! goes to [`crate::ops::int8_matmul`]'s packed int8 product instead.
//!
//! `ConvInteger` as `quantize_dynamic`'s default operator types write a ViT's patch embedding
//! (kernel = stride, no padding, one group, a constant weight): the image cut into patches by
//! reshapes and moves, then the same packed product, where Glimpse's kernels run. tract's own
//! im2col + int8 product took 68% of a ViT-B/32 image on AVX2 (BENCHMARKS.md). Other
//! convolutions go to tract's own.
//!
//! `DynamicQuantizeLinear`: [`crate::ops::dynamic_quantize`]'s, in vectorised passes.
//!
//! `MatMulNBits` (com.microsoft) with 4-bit symmetric blocks of 32, the form llama.cpp's
//! Q4_0 takes: [`crate::ops::q4_matmul`]'s product, which keeps the codes packed. Other forms
//! (zero points, bias, other widths) go to tract's own.
//!
//! `GroupQueryAttention` (com.microsoft) over a cache it appends to, rotary in the op or not:
//! [`crate::ops::cached_attention`]'s op, which reads the cache in place. Other forms go to tract's own.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::{cast::cast, math::sub};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::binary::wire_rank_broadcast;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};
use tract_onnx::tract_hir::ops::matmul::{compute_shapes, MatMulInference};

use crate::ops::cached_attention::CachedAttention;
use crate::ops::dynamic_quantize::DynamicQuantize;
use crate::ops::int8_matmul::{self, Int8MatMul};
use crate::ops::q4_matmul::{self, Q4MatMul, BLOCK};

/// tract's ONNX front end with Glimpse's operators registered over its own. Intermediate
/// `value_info` shapes are ignored: quantisers write their own symbol names there
/// (`batch_size`), which then cannot unify with the input facts Glimpse sets.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx().with_ignore_value_info(true);
    register(&mut onnx.op_register);
    onnx
}

/// Whether `GLIMPSE_RAW_TRACT=1` is set: graphs are then read with tract's own operators
/// (but `Flatten`, without which tract cannot read HF's text towers) and none of Glimpse's
/// passes run, so that benchmarks measure plain tract on the same file, through the same
/// code around the graph ("raw tract" in BENCHMARKS.md). Read once.
pub(crate) fn raw_tract() -> bool {
    static RAW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RAW.get_or_init(|| std::env::var("GLIMPSE_RAW_TRACT").is_ok_and(|v| v == "1"))
}

fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Flatten", flatten);
    if raw_tract() {
        return;
    }
    reg.insert("MatMulNBits", mat_mul_nbits);
    reg.insert("GroupQueryAttention", group_query_attention);
    reg.insert("DynamicQuantizeLinear", |_, _| {
        Ok((expand(DynamicQuantizeLinear), vec![]))
    });
    if crate::pool::int8_products_in_f32() {
        reg.insert("MatMulInteger", mat_mul_integer_in_f32);
    } else if crate::pool::int8_products_packed() {
        reg.insert("MatMulInteger", mat_mul_integer_packed);
        reg.insert("ConvInteger", conv_integer_packed);
    }
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

/// `DynamicQuantizeLinear` as [`DynamicQuantize`].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct DynamicQuantizeLinear;

impl Expansion for DynamicQuantizeLinear {
    fn name(&self) -> StaticName {
        "DynamicQuantizeLinear".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(3)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 3)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        s.equals(&outputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[1].rank, 0)?;
        s.equals(&outputs[2].datum_type, u8::datum_type())?;
        s.equals(&outputs[2].rank, 0)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, DynamicQuantize, inputs)
    }
}

fn mat_mul_integer_in_f32(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(IntegerProduct::of(node, false)), vec![]))
}

fn mat_mul_integer_packed(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(IntegerProduct::of(node, true)), vec![]))
}

fn conv_integer_packed(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    match PatchConvInteger::of(ctx, node)? {
        Some(op) => Ok((expand(op), vec![])),
        None => tract_own("ConvInteger", ctx, node),
    }
}

/// ONNX `ConvInteger` (`i32` out) that cuts its input into patches: a `[ph, pw]` kernel moved
/// by its own size, no padding or dilation, one group, the weight (and its zero point) the
/// graph's initializers. `[n, c, h, w] ⊛ [m, c, ph, pw]` is the product of the patches
/// `[n, (h / ph)(w / pw), c·ph·pw]` by the weight as `[c·ph·pw, m]`, moved back to
/// `[n, m, h / ph, w / pw]`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct PatchConvInteger {
    patch: [usize; 2],
    /// Input index of the input's zero point (one value), if present.
    x_zero_point: Option<usize>,
    /// Input index of the weight's zero point (one, or one per output channel), if present.
    w_zero_point: Option<usize>,
}

impl PatchConvInteger {
    /// The op, if `node` is such a convolution.
    fn of(ctx: &ParsingContext, node: &NodeProto) -> TractResult<Option<Self>> {
        let kernel: Option<TVec<usize>> = node.get_attr_opt_tvec("kernel_shape")?;
        let Some(kernel) = kernel.filter(|k| k.len() == 2) else {
            return Ok(None);
        };
        let ones =
            |v: Option<TVec<usize>>, one: usize| v.is_none_or(|v| v.iter().all(|&d| d == one));
        let strides: Option<TVec<usize>> = node.get_attr_opt_tvec("strides")?;
        let auto_pad: Option<&str> = node.get_attr_opt("auto_pad")?;
        let fits = strides.as_deref() == Some(&kernel[..])
            && ones(node.get_attr_opt_tvec("dilations")?, 1)
            && ones(node.get_attr_opt_tvec("pads")?, 0)
            && node.get_attr_opt::<i64>("group")?.is_none_or(|g| g == 1)
            && auto_pad.is_none_or(|a| a == "NOTSET" || a == "VALID");
        let mut options = tract_onnx::model::optional_inputs(node).skip(2);
        let (x_zero_point, w_zero_point) = (options.next().flatten(), options.next().flatten());
        let initializer = |i: usize| {
            let graph = ctx.model.graph.as_ref();
            graph.is_some_and(|g| g.initializer.iter().any(|t| t.name == node.input[i]))
        };
        let constant = initializer(1) && w_zero_point.is_none_or(initializer);
        Ok((fits && constant).then_some(PatchConvInteger {
            patch: [kernel[0], kernel[1]],
            x_zero_point,
            w_zero_point,
        }))
    }
}

impl Expansion for PatchConvInteger {
    fn name(&self) -> StaticName {
        "ConvInteger".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let arity = 2 + self.x_zero_point.is_some() as usize + self.w_zero_point.is_some() as usize;
        check_input_arity(inputs, arity)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, i32::datum_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        let [ph, pw] = self.patch.map(|p| p as u64);
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, w| {
            let y: TVec<TDim> = tvec![
                x[0].clone(),
                w[0].clone(),
                x[2].clone() / ph,
                x[3].clone() / pw
            ];
            s.equals(&outputs[0].shape, y)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize| -> TractResult<Arc<Tensor>> {
            (model.outlet_fact(inputs[i])?.konst.clone())
                .with_context(|| format!("{prefix}: ConvInteger input {i} is not a constant"))
        };
        let w = konst(1)?;
        let w_zero = self.w_zero_point.map(konst).transpose()?;
        let x = model.outlet_fact(inputs[0])?.shape.to_tvec();
        let [ph, pw] = self.patch;
        let (c, h, wd) = (x[1].to_usize()?, x[2].to_usize()?, x[3].to_usize()?);
        let m = w.shape()[0];
        ensure!(
            w.shape() == [m, c, ph, pw] && h.is_multiple_of(ph) && wd.is_multiple_of(pw),
            "{prefix}: ConvInteger of a {:?} weight over a [{c}, {h}, {wd}] input",
            w.shape()
        );
        let (ho, wo, k) = (h / ph, wd / pw, c * ph * pw);
        // The weight as the product's [k, m].
        let wt = w
            .as_ref()
            .clone()
            .into_shape(&[m, k])?
            .permute_axes(&[1, 0])?;
        let weight = int8_matmul::weight(&wt, w_zero.as_deref())?;
        let d = |v: &[usize]| v.iter().map(|&v| v.to_dim()).collect::<TVec<_>>();
        // [n, c, h, w] → [n, c, ho, ph, wo, pw] → [n, ho, wo, c, ph, pw] → [n, ho·wo, k].
        let mut y = inputs[0];
        for (name, op) in [
            ("rows", AxisOp::Reshape(2, d(&[h]), d(&[ho, ph]))),
            ("columns", AxisOp::Reshape(4, d(&[wd]), d(&[wo, pw]))),
            ("rows_first", AxisOp::Move(2, 1)),
            ("columns_next", AxisOp::Move(4, 2)),
            (
                "patches",
                AxisOp::Reshape(1, d(&[ho, wo, c, ph, pw]), d(&[ho * wo, k])),
            ),
        ] {
            y = model.wire_node(format!("{prefix}.{name}"), op, &[y])?[0];
        }
        let mut wired = tvec![y];
        if let Some(i) = self.x_zero_point {
            ensure!(
                model.outlet_fact(inputs[i])?.shape.volume() == 1.to_dim(),
                "{prefix}: ConvInteger's input zero point is not one value"
            );
            wired.push(inputs[i]);
        }
        let op = Int8MatMul {
            weight: Arc::new(weight),
            zero_point: wired.len() == 2,
            scaled: false,
        };
        // [n, ho·wo, m] → [n, ho, wo, m] → [n, m, ho, wo].
        let y = model.wire_node(format!("{prefix}.product"), op, &wired)?;
        let y = model.wire_node(
            format!("{prefix}.grid"),
            AxisOp::Reshape(1, d(&[ho * wo]), d(&[ho, wo])),
            &y,
        )?;
        model.wire_node(prefix, AxisOp::Move(3, 1), &y)
    }
}

/// ONNX `MatMulInteger` (`i32` out): with `packed`, [`Int8MatMul`] where the weight is a
/// constant and `a`'s zero point one value; otherwise `(a - a0) × (b - b0)` in f32.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct IntegerProduct {
    /// Input index of the zero point of `a` (a scalar or one per row), if present.
    a_zero_point: Option<usize>,
    /// Input index of the zero point of `b` (a scalar or one per column), if present.
    b_zero_point: Option<usize>,
    packed: bool,
}

impl IntegerProduct {
    fn of(node: &NodeProto, packed: bool) -> Self {
        let mut zero_points = tract_onnx::model::optional_inputs(node).skip(2);
        IntegerProduct {
            a_zero_point: zero_points.next().flatten(),
            b_zero_point: zero_points.next().flatten(),
            packed,
        }
    }

    /// The [`Int8MatMul`] and its inputs, if `packed` and it takes these.
    fn packed(
        &self,
        model: &TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<Option<(Int8MatMul, TVec<OutletId>)>> {
        let konst = |i: usize| -> TractResult<Option<Arc<Tensor>>> {
            Ok(model.outlet_fact(inputs[i])?.konst.clone())
        };
        let b_zero = match self.b_zero_point {
            Some(i) => match konst(i)? {
                Some(z) => Some(z),
                None => return Ok(None),
            },
            None => None,
        };
        let Some(b) = konst(1)?.filter(|_| self.packed) else {
            return Ok(None);
        };
        let mut wired = tvec![inputs[0]];
        if let Some(a0) = self.a_zero_point.map(|i| inputs[i]) {
            if model.outlet_fact(a0)?.shape.volume() != 1.to_dim() {
                return Ok(None);
            }
            wired.push(a0);
        }
        let weight = int8_matmul::weight(&b, b_zero.as_deref())?;
        let op = Int8MatMul {
            weight: Arc::new(weight),
            zero_point: wired.len() == 2,
            scaled: false,
        };
        Ok(Some((op, wired)))
    }
}

/// `x - zero_point` in f32; a per-row zero point of `a` (`[m]`) becomes `[m, 1]`. Constant
/// operands (the weights) are converted here, once: tract does not fold a constant that
/// grows, and would otherwise convert and repack the weights on every run.
fn centred(
    name: &str,
    model: &mut TypedModel,
    x: OutletId,
    zero_point: Option<OutletId>,
    per_row: bool,
) -> TractResult<OutletId> {
    let mut z = zero_point;
    if let Some(zp) = z.filter(|_| per_row) {
        if model.outlet_fact(zp)?.rank() == 1 {
            z = Some(
                model.wire_node(format!("{name}.zero_point_per_row"), AxisOp::Add(1), &[zp])?[0],
            );
        }
    }
    let konst = |o: Option<OutletId>| -> TractResult<Option<Arc<Tensor>>> {
        Ok(match o {
            Some(o) => model.outlet_fact(o)?.konst.clone(),
            None => Some(rctensor0(0f32)),
        })
    };
    if let (Some(x), Some(z)) = (konst(Some(x))?, konst(z)?) {
        let mut x = x.cast_to::<f32>()?.into_owned().into_plain_array::<f32>()?;
        let z = z.cast_to::<f32>()?;
        let z = z.to_plain_array_view::<f32>()?;
        let z = z.broadcast(x.shape()).with_context(|| {
            format!(
                "{name}: zero point {:?} for a {:?} operand",
                z.shape(),
                x.shape()
            )
        })?;
        x -= &z;
        return model.add_const(format!("{name}.centred"), x.into_tensor());
    }
    let x = model.wire_node(format!("{name}.to_f32"), cast(f32::datum_type()), &[x])?[0];
    let Some(z) = z else {
        return Ok(x);
    };
    let z = model.wire_node(
        format!("{name}.zero_point_to_f32"),
        cast(f32::datum_type()),
        &[z],
    )?[0];
    let xz = wire_rank_broadcast(name, model, &[x, z])?;
    Ok(model.wire_node(format!("{name}.centred"), sub(), &xz)?[0])
}

impl Expansion for IntegerProduct {
    fn name(&self) -> StaticName {
        "MatMulInteger".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let arity = 2 + self.a_zero_point.is_some() as usize + self.b_zero_point.is_some() as usize;
        check_input_arity(inputs, arity)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, i32::datum_type())?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
            let (_, _, c, _) = compute_shapes(a, b, false, false, false)?;
            s.equals(&outputs[0].shape, c)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        if let Some((op, inputs)) = self.packed(model, inputs)? {
            return model.wire_node(prefix, op, &inputs);
        }
        let a_zero = self.a_zero_point.map(|i| inputs[i]);
        let b_zero = self.b_zero_point.map(|i| inputs[i]);
        let a = centred(&format!("{prefix}.a"), model, inputs[0], a_zero, true)?;
        let b = centred(&format!("{prefix}.b"), model, inputs[1], b_zero, false)?;
        let c = MatMulInference::default().wire(&format!("{prefix}.f32"), model, &[a, b])?;
        model.wire_node(prefix, cast(i32::datum_type()), &c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(a - a0) × (b - b0)` in integers, `a: [batch, m, k]` with one zero point per row,
    /// `b: [k, n]` with one per column.
    fn integer_product(
        a: &[u8],
        a0: &[u8],
        b: &[i8],
        b0: &[i8],
        (m, k, n): (usize, usize, usize),
    ) -> Vec<i32> {
        let batch = a.len() / (m * k);
        let mut c = vec![0i32; batch * m * n];
        for (bi, i, j) in
            (0..batch).flat_map(|bi| (0..m).flat_map(move |i| (0..n).map(move |j| (bi, i, j))))
        {
            c[(bi * m + i) * n + j] = (0..k)
                .map(|p| {
                    (a[(bi * m + i) * k + p] as i32 - a0[i] as i32)
                        * (b[p * n + j] as i32 - b0[j] as i32)
                })
                .sum();
        }
        c
    }

    #[test]
    fn matmul_integer_in_f32_is_the_integer_product() -> TractResult<()> {
        let (batch, m, k, n) = (2, 3, 7, 5);
        let a: Vec<u8> = (0..batch * m * k).map(|i| (i * 37 % 256) as u8).collect();
        let b: Vec<i8> = (0..k * n)
            .map(|i| (i as i32 * 53 % 255 - 127) as i8)
            .collect();
        let (a0, b0): (Vec<u8>, Vec<i8>) = (vec![0, 128, 255], vec![-128, -1, 0, 1, 127]);
        let want = integer_product(&a, &a0, &b, &b0, (m, k, n));
        let a = tensor1(&a).into_shape(&[batch, m, k])?;
        let b = tensor1(&b).into_shape(&[k, n])?;
        // Constant weights (converted at load) and weights fed at run time.
        for b_is_const in [true, false] {
            let mut model = TypedModel::default();
            let a_in = model.add_source("a", u8::fact([batch, m, k]))?;
            let b_in = if b_is_const {
                model.add_const("b", b.clone())?
            } else {
                model.add_source("b", i8::fact([k, n]))?
            };
            let a0 = model.add_const("a0", tensor1(&a0))?;
            let b0 = model.add_const("b0", tensor1(&b0))?;
            let op = IntegerProduct {
                a_zero_point: Some(2),
                b_zero_point: Some(3),
                packed: false,
            };
            let c = op.wire("mm", &mut model, &[a_in, b_in, a0, b0])?;
            model.select_output_outlets(&c)?;
            let mut inputs = tvec![a.clone().into_tvalue()];
            if !b_is_const {
                inputs.push(b.clone().into_tvalue());
            }
            let got = model.into_runnable()?.run(inputs)?.remove(0);
            assert_eq!(got.shape(), &[batch, m, n]);
            assert_eq!(
                got.to_plain_array_view::<i32>()?.as_slice().unwrap(),
                &want[..],
                "weights const: {b_is_const}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_weight_zero_point_that_does_not_fit_is_an_error() -> TractResult<()> {
        let mut model = TypedModel::default();
        let a = model.add_source("a", u8::fact([1, 2, 3]))?;
        let b = model.add_const("b", Tensor::zero::<i8>(&[3, 4])?)?;
        let a0 = model.add_const("a0", tensor0(0u8))?;
        let b0 = model.add_const("b0", tensor1(&[0i8; 3]))?;
        let op = IntegerProduct {
            a_zero_point: Some(2),
            b_zero_point: Some(3),
            packed: false,
        };
        let err = op.wire("mm", &mut model, &[a, b, a0, b0]).unwrap_err();
        assert!(format!("{err:#}").contains("zero point [3]"), "{err:#}");
        Ok(())
    }
}

fn mat_mul_nbits(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let k: usize = node.get_attr("K")?;
    let n: usize = node.get_attr("N")?;
    let bits: usize = node.get_attr_opt("bits")?.unwrap_or(4);
    let block_size: usize = node.get_attr("block_size")?;
    // zero_points, g_idx and bias follow the weight and scales (the iterator is endless).
    let plain = tract_onnx::model::optional_inputs(node)
        .skip(3)
        .take(3)
        .all(|input| input.is_none());
    // `GLIMPSE_Q4=tract` keeps tract's own, for side-by-side benchmarks.
    let ours = std::env::var("GLIMPSE_Q4").map_or(true, |v| v != "tract");
    if ours && bits == 4 && block_size == BLOCK && k.is_multiple_of(BLOCK) && plain {
        // ONNX's accuracy level 4: int8 arithmetic, activations rounded to 8 bits.
        let q8 = node.get_attr_opt::<i64>("accuracy_level")? == Some(4);
        return Ok((expand(MatMulQ4 { k, n, q8 }), vec![]));
    }
    tract_own("MatMulNBits", ctx, node)
}

/// `MatMulNBits` in Q4_0's form: `A [.., K] × dequant(B [N, K/32, 16])ᵀ`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct MatMulQ4 {
    k: usize,
    n: usize,
    q8: bool,
}

impl Expansion for MatMulQ4 {
    fn name(&self) -> StaticName {
        "MatMulNBits".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        s.given(&inputs[0].rank, move |s, rank| {
            let last = rank as usize - 1;
            for axis in 0..last {
                s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
            }
            s.equals(&outputs[0].shape[last], self.n.to_dim())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize, what: &str| {
            model
                .outlet_fact(inputs[i])?
                .konst
                .clone()
                .with_context(|| format!("{prefix}: MatMulNBits {what} must be a constant"))
        };
        let scales = konst(2, "scales")?;
        let scales = match scales.datum_type() == f32::datum_type() {
            true => scales,
            false => Arc::new(scales.cast_to::<f32>()?.into_owned()),
        };
        let weight = q4_matmul::weight(self.n, self.k, konst(1, "weight")?, scales)
            .with_context(|| format!("{prefix}: MatMulNBits"))?;
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        let x = model.wire_node(
            format!("{prefix}.to_f32"),
            cast(f32::datum_type()),
            &[inputs[0]],
        )?;
        let op = Q4MatMul {
            weight: Arc::new(weight),
            q8: self.q8,
        };
        let y = model.wire_node(prefix, op, &x)?;
        model.wire_node(format!("{prefix}.from_f32"), cast(dt), &y)
    }
}

/// tract's own parser for the ONNX operator `name`.
fn tract_own(
    name: &str,
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let parse = tract_onnx::onnx()
        .op_register
        .0
        .get(name)
        .copied()
        .with_context(|| format!("tract has no {name}"))?;
    parse(ctx, node)
}

fn group_query_attention(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let heads: usize = node.get_attr("num_heads")?;
    let kv_heads: usize = node.get_attr("kv_num_heads")?;
    let int = |name: &str| node.get_attr_opt::<i64>(name).map(|v| v.unwrap_or(0));
    let rotary = int("do_rotary")? != 0;
    let plain = int("rotary_interleaved")? == 0
        && int("local_window_size")? <= 0
        && int("smooth_softmax")? == 0
        && int("qk_output")? == 0
        && node.get_attr_opt::<f32>("softcap")?.unwrap_or(0.0) == 0.0
        && node.get_attr_opt::<i64>("causal")?.unwrap_or(1) != 0;
    // query, key, value (or none: packed in the query), past key, past value, seqlens_k,
    // total_sequence_length, then cos and sin caches with `do_rotary`; nothing after.
    let given: Vec<bool> = tract_onnx::model::optional_inputs(node)
        .take(node.input.len().max(9))
        .map(|i| i.is_some())
        .collect();
    let packed = !given[1] && !given[2];
    let expected = |i: usize| match i {
        0 | 3..=6 => true,
        1 | 2 => !packed,
        7 | 8 => rotary,
        _ => false,
    };
    let cached = given.iter().enumerate().all(|(i, &g)| g == expected(i));
    if plain && cached && heads > 0 && kv_heads > 0 && heads.is_multiple_of(kv_heads) {
        let scale = node.get_attr_opt::<f32>("scale")?.filter(|s| *s != 0.0);
        return Ok((
            expand(GroupQueryAttention {
                heads,
                kv_heads,
                scale,
                packed,
                rotary,
            }),
            vec![],
        ));
    }
    tract_own("GroupQueryAttention", ctx, node)
}

/// `GroupQueryAttention` in the form [`CachedAttention`] runs. Its inputs (those given):
/// query, key and value unless `packed`, past key, past value, the two lengths, then the
/// cos and sin caches if `rotary`.
#[derive(Debug, Clone)]
struct GroupQueryAttention {
    heads: usize,
    kv_heads: usize,
    scale: Option<f32>,
    packed: bool,
    rotary: bool,
}

impl GroupQueryAttention {
    /// Index of the past key among the given inputs.
    fn past(&self) -> usize {
        if self.packed {
            1
        } else {
            3
        }
    }
}

impl Expansion for GroupQueryAttention {
    fn name(&self) -> StaticName {
        "GroupQueryAttention".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(3)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let past = self.past();
        check_input_arity(inputs, past + 4 + if self.rotary { 2 } else { 0 })?;
        check_output_arity(outputs, 3)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].rank, 3)?;
        s.equals(&inputs[0].rank, 3)?;
        for axis in [0, 1] {
            s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
        }
        let heads = self.heads as i64;
        s.given(&inputs[past].shape[3], move |s, d| {
            s.equals(&outputs[0].shape[2], d * heads)
        })?;
        for (out, past) in [
            (&outputs[1], &inputs[past]),
            (&outputs[2], &inputs[past + 1]),
        ] {
            s.equals(&out.datum_type, &past.datum_type)?;
            s.equals(&out.rank, 4)?;
            s.equals(&past.rank, 4)?;
            for axis in [0, 1, 3] {
                s.equals(&out.shape[axis], &past.shape[axis])?;
            }
            s.given_2(&past.shape[2], &inputs[0].shape[1], move |s, past, new| {
                s.equals(&out.shape[2], past + new)
            })?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let past = self.past();
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        let d = model.outlet_fact(inputs[past])?.shape[3]
            .to_usize()
            .with_context(|| format!("{prefix}: the cache's head size must be known"))?;
        let scale = self.scale.unwrap_or(1.0 / (d as f32).sqrt());
        // Everything but the two lengths (the cache's and the step's shapes say them).
        let tables = past + 4..inputs.len();
        let mut f32_inputs = tvec![];
        for (i, &input) in inputs[..past + 2].iter().chain(&inputs[tables]).enumerate() {
            f32_inputs.push(
                model.wire_node(
                    format!("{prefix}.to_f32_{i}"),
                    cast(f32::datum_type()),
                    &[input],
                )?[0],
            );
        }
        let op = CachedAttention {
            heads: self.heads,
            kv_heads: self.kv_heads,
            scale: scale.to_bits(),
            packed: self.packed,
            rotary: self.rotary,
        };
        let outs = model.wire_node(prefix, op, &f32_inputs)?;
        let mut wired = tvec![];
        for (i, out) in outs.into_iter().enumerate() {
            wired.push(model.wire_node(format!("{prefix}.from_f32_{i}"), cast(dt), &[out])?[0]);
        }
        Ok(wired)
    }
}
