//! Kernels for plain NEON (Advanced SIMD): every ARMv8-A core, the Cortex-A53 of a
//! Raspberry Pi 3 or a phone's little cores included. Four f32 lanes, 32 vector registers.

pub(crate) mod q4_matmul;
pub(crate) mod quick_gelu;
pub(crate) mod vision_attention;
