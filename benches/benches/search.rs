//! Photo search latency: top-10 over N stored 512-d embeddings on one core, Glimpse's int8
//! scan against a plain f32 scan of the same vectors (the peer, measured in the same run).
//!
//!     cargo bench -p glimpse-benches --bench search            # 100k
//!     GLIMPSE_BENCH_ROWS=1000000 cargo bench -p glimpse-benches --bench search

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use glimpse_photos::search::{quantize, Matrix};

const DIM: usize = 512;

/// Deterministic pseudo-random unit vectors (xorshift), no dependency.
fn vectors(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n * DIM);
    for _ in 0..n {
        let start = out.len();
        for _ in 0..DIM {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5);
        }
        glimpse::normalize(&mut out[start..]);
    }
    out
}

/// f32 dot product in 16 independent lanes, so LLVM vectorises it.
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

/// The peer: exact f32 cosine scan (vectorised) keeping the best `k`.
fn f32_top_k(rows: &[f32], q: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, r) in rows.chunks_exact(DIM).enumerate() {
        let s = dot_f32(r, q);
        if best.len() < k || s > best[best.len() - 1].1 {
            let at = best.partition_point(|b| b.1 >= s);
            best.insert(at, (i, s));
            best.truncate(k);
        }
    }
    best
}

fn search(c: &mut Criterion) {
    let n: usize = std::env::var("GLIMPSE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rows = vectors(n, 7);
    let mut m = Matrix::new(DIM);
    for r in rows.chunks_exact(DIM) {
        let (s, q) = quantize(r);
        m.push(s, &q);
    }
    let query = vectors(1, 99);
    let mut g = c.benchmark_group("top10");
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("glimpse_int8", n), |b| {
        b.iter(|| m.top_k(&query, 10, |_| true))
    });
    g.bench_function(BenchmarkId::new("f32_scan", n), |b| {
        b.iter(|| f32_top_k(&rows, &query, 10))
    });
    g.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
