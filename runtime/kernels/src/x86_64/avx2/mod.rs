//! Kernels for AVX2 + FMA (Haswell and Zen on): eight f32 lanes, sixteen vector registers.

pub(crate) mod cached_attention;
pub(crate) mod dynamic_quantize;
pub(crate) mod f32_matmul;
pub(crate) mod int8_dot;
pub(crate) mod int8_matmul;
pub(crate) mod q4_matmul;
pub(crate) mod quick_gelu;
pub(crate) mod vision_attention;
