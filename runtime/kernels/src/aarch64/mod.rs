//! aarch64 variants of the kernels: one folder per instruction-set level, each file named after
//! the kernel it implements (`crate::<kernel>` picks among them at run time). NEON is in every
//! ARMv8-A core; the int8 dot product (`SDOT`) from ARMv8.2 (Cortex-A55/A76, Apple A13).

pub(crate) mod dotprod;
pub(crate) mod neon;
