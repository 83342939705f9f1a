//! tract custom ops: each holds what a node needs (a packed weight, a layout) and hands its
//! tensors' data to a `glimpse-kernels` kernel.

pub(crate) mod cached_attention;
pub(crate) mod dynamic_quantize;
pub(crate) mod f32_matmul;
pub(crate) mod int8_matmul;
pub(crate) mod kv_cache;
pub(crate) mod q4_matmul;
pub(crate) mod quick_gelu;
pub(crate) mod vision_attention;
