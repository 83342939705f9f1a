//! Kernels for AVX-512 (F, BW, VNNI where a kernel says): sixteen f32 lanes, 32 registers.

pub(crate) mod dynamic_quantize;
pub(crate) mod int8_matmul;
pub(crate) mod q4_matmul;
pub(crate) mod quick_gelu;
pub(crate) mod vision_attention;
