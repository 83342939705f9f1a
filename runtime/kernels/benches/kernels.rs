//! Each kernel's variants on this CPU against its generic reference, in one run, one thread,
//! at the shapes Glimpse runs them (ViT-B/32's layers, SmolLM2-135M's decode step):
//!
//!     cargo bench -p glimpse-kernels --bench kernels
//!     cargo bench -p glimpse-kernels --bench kernels -- int8_matmul   # one kernel
//!
//! Criterion reports each variant's time; the ratio to `Generic` in the same group is the
//! figure (the machines are shared, so only same-run ratios mean much).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use glimpse_kernels::cached_attention::{self, Stored};
use glimpse_kernels::f32_matmul::{self, F32Weight};
use glimpse_kernels::int8_matmul::{self, Bytes, Int8Weight};
use glimpse_kernels::q4_matmul::{self, Q4Weight};
use glimpse_kernels::vision_attention::{self, Layout};
use glimpse_kernels::{dynamic_quantize, int8_dot, quick_gelu, test_values as values};
use half::f16;

/// ViT-B/32: 50 tokens (49 patches and the class token), width 768, MLP 3072, 12 heads of 64.
const TOKENS: usize = 50;
const WIDTH: usize = 768;
const MLP: usize = 3072;
const HEADS: usize = 12;
/// SmolLM2-135M: width 576, MLP 1536, 9 heads over 3 key/value heads of 64.
const LM_WIDTH: usize = 576;
const LM_MLP: usize = 1536;

fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as u8)
        .collect()
}

fn f32_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("f32_matmul [50, 768] x [768, 3072]");
    let weight = F32Weight::new(&values(WIDTH * MLP, 1), WIDTH, MLP, false).unwrap();
    let a = values(TOKENS * WIDTH, 2);
    let mut y = vec![0f32; TOKENS * MLP];
    for &v in f32_matmul::variants() {
        group.bench_function(BenchmarkId::from_parameter(format!("{v:?}")), |b| {
            b.iter(|| {
                weight
                    .matmul_with(v, black_box(&a), TOKENS, &mut y)
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn int8_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("int8_matmul [50, 768] x [768, 3072]");
    let w: Vec<i8> = bytes(WIDTH * MLP, 3).iter().map(|&b| b as i8).collect();
    let weight = Int8Weight::new(Bytes::I8(&w), WIDTH, MLP, None).unwrap();
    let a = bytes(TOKENS * WIDTH, 4);
    let mut y = vec![0i32; TOKENS * MLP];
    for &v in int8_matmul::variants() {
        group.bench_function(BenchmarkId::from_parameter(format!("{v:?}")), |b| {
            b.iter(|| {
                let a = black_box(&a);
                weight
                    .matmul_with(v, a, false, 3, Some(0.01), TOKENS, &mut y)
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn q4_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("q4_matmul decode [1, 576] x [1536, 576]T");
    let (n, k) = (LM_MLP, LM_WIDTH);
    let scales: Vec<f32> = values(n * k / 32, 5)
        .iter()
        .map(|s| s.abs() / 64.0)
        .collect();
    let weight = Q4Weight::new(n, k, Arc::new((bytes(n * k / 2, 6), scales))).unwrap();
    let x = values(k, 7);
    let mut y = vec![0f32; n];
    for &v in q4_matmul::variants() {
        for q8 in [false, true] {
            let name = format!("{v:?} {}", if q8 { "Q8_0" } else { "f32" });
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| weight.matmul_with(v, black_box(&x), 1, &mut y, q8).unwrap())
            });
        }
    }
    group.finish();
}

fn vision_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("vision_attention 12 heads x [50, 64]");
    let layout = Layout {
        batch: vec![0],
        rows: 1,
        cols: 2,
        rank: 3,
    };
    let layouts = [layout.clone(), layout.clone(), layout.clone(), layout];
    let shape = [HEADS, TOKENS, 64];
    let (q, k, v) = (
        values(HEADS * TOKENS * 64, 8),
        values(HEADS * TOKENS * 64, 9),
        values(HEADS * TOKENS * 64, 10),
    );
    let mut out = vec![0f32; HEADS * TOKENS * 64];
    for &variant in vision_attention::variants() {
        group.bench_function(BenchmarkId::from_parameter(format!("{variant:?}")), |b| {
            b.iter(|| {
                let inputs = [
                    (&q[..], &shape[..]),
                    (&k[..], &shape[..]),
                    (&v[..], &shape[..]),
                ];
                vision_attention::attention_with(variant, &layouts, 0.125, inputs, &mut out)
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// One decode step's attention after 255 cached tokens, stored as `T`.
fn cached_attention_in<T: Stored>(c: &mut Criterion, name: &str, convert: fn(f32) -> T) {
    let mut group = c.benchmark_group(format!("cached_attention step after 255, {name} cache"));
    let (heads, kv_heads, d, total) = (9, 3, 64, 256);
    let cache: Vec<T> = values(kv_heads * total * d, 11)
        .into_iter()
        .map(convert)
        .collect();
    let queries = values(heads * d, 12);
    let mut out = vec![0f32; heads * d];
    for &v in cached_attention::variants() {
        group.bench_function(BenchmarkId::from_parameter(format!("{v:?}")), |b| {
            b.iter(|| {
                let kv = (&cache[..], &cache[..]);
                let shape = (total - 1, 1, d);
                cached_attention::attention_with(
                    v,
                    black_box(&queries),
                    kv,
                    total * d,
                    (heads, kv_heads),
                    0.125,
                    shape,
                    &mut out,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

fn cached_attention(c: &mut Criterion) {
    cached_attention_in::<f32>(c, "f32", |x| x);
    cached_attention_in::<f16>(c, "f16", f16::from_f32);
}

fn elementwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("quick_gelu [50, 3072]");
    let x = values(TOKENS * MLP, 13);
    let mut y = x.clone();
    for &v in quick_gelu::variants() {
        group.bench_function(BenchmarkId::from_parameter(format!("{v:?}")), |b| {
            b.iter(|| {
                y.copy_from_slice(&x);
                quick_gelu::quick_gelu_with(v, 1.702, &mut y).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("dynamic_quantize [50, 3072]");
    let mut q = vec![0u8; x.len()];
    for &v in dynamic_quantize::variants() {
        group.bench_function(BenchmarkId::from_parameter(format!("{v:?}")), |b| {
            b.iter(|| dynamic_quantize::quantize_with(v, black_box(&x), 0.02, 128, &mut q).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("int8_dot 512");
    let (a, b8): (Vec<i8>, Vec<i8>) = (
        bytes(512, 14).iter().map(|&x| x as i8).collect(),
        bytes(512, 15).iter().map(|&x| x as i8).collect(),
    );
    for &v in int8_dot::variants() {
        group.bench_function(BenchmarkId::from_parameter(format!("{v:?}")), |b| {
            b.iter(|| int8_dot::dot_with(v, black_box(&a), black_box(&b8)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(
    kernels,
    f32_products,
    int8_products,
    q4_products,
    vision_attention,
    cached_attention,
    elementwise
);
criterion_main!(kernels);
