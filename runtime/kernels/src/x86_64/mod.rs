//! x86-64 variants of the kernels: one folder per instruction-set level, each file named after
//! the kernel it implements (`crate::<kernel>` picks among them at run time).

pub(crate) mod avx2;
pub(crate) mod avx512;

/// How far ahead of the block being multiplied the x86-64 kernels prefetch: 4 KB of codes.
/// A decode step streams every weight once from memory, which the hardware prefetchers alone
/// do not keep up with: 1.4B decode ran 1.3-1.6x faster with it (BENCHMARKS.md).
const PREFETCH_BLOCKS: usize = 256;

/// Prefetches the codes and scales [`PREFETCH_BLOCKS`] past block `b`; called every four
/// blocks (one cache line of codes; sixteen blocks make a line of scales).
#[inline(always)]
pub(crate) fn prefetch_ahead(codes: &[[u8; 16]], scales: &[f32], b: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let (codes, scales) = (
        codes.as_ptr().wrapping_add(b + PREFETCH_BLOCKS),
        scales.as_ptr().wrapping_add(b + PREFETCH_BLOCKS),
    );
    // SAFETY: SSE is in every x86-64 CPU; a prefetch only hints an address, reads nothing
    // and never faults, even past the end of the weight.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(codes.cast());
        if b.is_multiple_of(16) {
            _mm_prefetch::<_MM_HINT_T0>(scales.cast());
        }
    }
}
