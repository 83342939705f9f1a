//! `glimpse-bench peak`: the multiply-add ceiling of one core, the floor under any image
//! tower's time (BENCHMARKS.md compares it with Glimpse's and ONNX Runtime's).
//!
//! Independent chains of the instructions the products are made of, in registers, nothing
//! loaded: f32 fused multiply-adds (8 lanes each on AVX2), and the int8 byte product
//! (`vpmaddubsw` 32 byte pairs, `vpmaddwd` by ones, `vpaddd`), as ONNX Runtime runs int8 on
//! AVX2 and Glimpse runs files whose weights fit in ±64. Each chain feeds its result back
//! into its next step, so nothing can be hoisted out of the loop. Hand-written because it
//! measures the hardware, not a library; x86-64 with AVX2 and FMA only.

use serde_json::json;
use std::time::Instant;

/// Chains in flight: more than latency × throughput of either sequence (int8: two byte
/// products a step of each chain).
const CHAINS: usize = 12;
const INT8_CHAINS: usize = 10;

/// Prints `{"f32_gmacs": .., "int8_gmacs": ..}`: multiply-adds per second of one core, in
/// billions, the best of `rounds` runs of `steps` steps of every chain.
pub fn peak(steps: usize, rounds: usize) -> glimpse::Result<()> {
    let best = |f: &dyn Fn(usize) -> f32, macs_per_step: f64| {
        (0..rounds.max(1))
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f(steps));
                macs_per_step * steps as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    };
    let (f32_gmacs, int8_gmacs) = match x86::available() {
        true => (
            Some(best(&x86::f32_chains, (CHAINS * 8) as f64)),
            Some(best(&x86::int8_chains, (INT8_CHAINS * 64) as f64)),
        ),
        false => (None, None),
    };
    let out = json!({ "f32_gmacs": f32_gmacs, "int8_gmacs": int8_gmacs });
    println!("{out}");
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CHAINS, INT8_CHAINS};
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// `steps` fused multiply-adds of each of [`CHAINS`] 8-lane accumulators.
    pub fn f32_chains(steps: usize) -> f32 {
        assert!(available());
        // SAFETY: AVX2 and FMA are present (checked above).
        unsafe { f32_inner(steps) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn f32_inner(steps: usize) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..steps {
            for x in &mut acc {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, x| _mm256_add_ps(s, *x));
        _mm_cvtss_f32(_mm256_castps256_ps128(sum))
    }

    /// `steps` steps of each of [`INT8_CHAINS`] accumulators, a step two 32-pair byte
    /// products whose unsigned bytes are the accumulator's.
    pub fn int8_chains(steps: usize) -> f32 {
        assert!(available());
        // SAFETY: AVX2 is present (checked above).
        unsafe { int8_inner(steps) }
    }

    #[target_feature(enable = "avx2")]
    fn int8_inner(steps: usize) -> f32 {
        let (w, v, ones) = (
            _mm256_set1_epi8(3),
            _mm256_set1_epi8(-5),
            _mm256_set1_epi16(1),
        );
        let mut acc: [__m256i; INT8_CHAINS] = std::array::from_fn(|i| _mm256_set1_epi32(i as i32));
        for _ in 0..steps {
            for x in &mut acc {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*x, w), ones);
                let q = _mm256_madd_epi16(_mm256_maddubs_epi16(*x, v), ones);
                *x = _mm256_add_epi32(*x, _mm256_add_epi32(p, q));
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_si256(), |s, x| _mm256_add_epi32(s, *x));
        _mm256_cvtsi256_si32(sum) as f32
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub fn available() -> bool {
        false
    }
    pub fn f32_chains(_: usize) -> f32 {
        0.0
    }
    pub fn int8_chains(_: usize) -> f32 {
        0.0
    }
}
