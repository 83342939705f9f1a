//! Nearest-neighbour search over int8 embeddings: an exhaustive scan, top-k, and
//! near-duplicate pairs.
//!
//! Hand-written because the need is small and exact: a brute-force scan of unit vectors
//! stored as int8 with one scale per row (4× smaller than f32, and an int8 dot product
//! vectorises well), no approximate-index crate to build, tune or persist. 100k × 512 is
//! 51 MB scanned per query (figures in BENCHMARKS.md).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use glimpse_kernels::int8_dot::dot;

/// A vector's direction quantised to int8 (largest component ±127) with the scale that
/// makes `q × scale` a unit vector: products of two rows are then cosines of the quantised
/// vectors, within [-1, 1], and a row's similarity to itself is exactly 1.
pub fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (0.0, vec![0; v.len()]);
    }
    let q: Vec<i8> = v.iter().map(|x| (x / max * 127.0).round() as i8).collect();
    let norm = (q.iter().map(|&x| x as i64 * x as i64).sum::<i64>() as f64).sqrt();
    ((1.0 / norm) as f32, q)
}

/// The unit vector a quantised row stands for.
pub fn dequantize(scale: f32, q: &[i8]) -> Vec<f32> {
    q.iter().map(|&x| x as f32 * scale).collect()
}

/// Rows of int8 embeddings, each with its scale.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    dim: usize,
    values: Vec<i8>,
    scales: Vec<f32>,
}

/// A row index with its cosine score, ordered so a max-heap pops the worst first.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(f32, usize);

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl Matrix {
    /// An empty matrix of `dim`-wide rows.
    pub fn new(dim: usize) -> Self {
        Matrix {
            dim,
            ..Self::default()
        }
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Appends a row made by [`quantize`].
    pub fn push(&mut self, scale: f32, row: &[i8]) {
        debug_assert_eq!(row.len(), self.dim);
        self.values.extend_from_slice(row);
        self.scales.push(scale);
    }

    /// Removes row `i`, moving the last row into its place.
    pub fn swap_remove(&mut self, i: usize) {
        let last = self.len() - 1;
        if i != last {
            let (head, tail) = self.values.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(tail);
        }
        self.values.truncate(last * self.dim);
        self.scales.swap_remove(i);
    }

    /// Row `i` and its scale.
    pub fn row(&self, i: usize) -> (f32, &[i8]) {
        (
            self.scales[i],
            &self.values[i * self.dim..(i + 1) * self.dim],
        )
    }

    /// Replaces row `i`.
    pub fn set(&mut self, i: usize, scale: f32, row: &[i8]) {
        self.values[i * self.dim..(i + 1) * self.dim].copy_from_slice(row);
        self.scales[i] = scale;
    }

    /// The `k` rows most similar to `query` among those `keep` accepts, best first, as
    /// (row, cosine).
    pub fn top_k(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let (qs, q) = quantize(query);
        let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
        for (i, (row, &s)) in self
            .values
            .chunks_exact(self.dim)
            .zip(&self.scales)
            .enumerate()
        {
            let score = dot(&q, row) as f32 * qs * s;
            if heap.len() == k && score <= heap.peek().map_or(f32::MIN, |w| w.0) {
                continue;
            }
            if !keep(i) {
                continue;
            }
            heap.push(Scored(score, i));
            if heap.len() > k {
                heap.pop();
            }
        }
        heap.into_sorted_vec()
            .into_iter()
            .map(|s| (s.1, s.0))
            .collect()
    }

    /// Groups of rows whose cosine to another row of the group is at least `threshold`
    /// (single linkage), largest first; rows in no pair are left out.
    pub fn groups_above(&self, threshold: f32) -> Vec<Vec<usize>> {
        let n = self.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn root(p: &mut [usize], mut i: usize) -> usize {
            while p[i] != i {
                p[i] = p[p[i]];
                i = p[i];
            }
            i
        }
        let mut paired = vec![false; n];
        for i in 0..n {
            let (si, ri) = self.row(i);
            for j in i + 1..n {
                let (sj, rj) = self.row(j);
                if dot(ri, rj) as f32 * si * sj >= threshold {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                    paired[i] = true;
                    paired[j] = true;
                }
            }
        }
        let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for i in (0..n).filter(|&i| paired[i]) {
            let r = root(&mut parent, i);
            groups.entry(r).or_default().push(i);
        }
        let mut out: Vec<Vec<usize>> = groups.into_values().collect();
        out.sort_by_key(|g| std::cmp::Reverse(g.len()));
        out
    }
}

/// The cosine of two stored rows.
pub fn cosine(a: (f32, &[i8]), b: (f32, &[i8])) -> f32 {
    dot(a.1, b.1) as f32 * a.0 * b.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        // A small LCG: deterministic vectors without a dependency.
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        glimpse::normalize(&mut v);
        v
    }

    #[test]
    fn top_k_matches_an_exact_f32_ranking() {
        let dim = 64;
        let rows: Vec<Vec<f32>> = (0..500).map(|i| unit(i, dim)).collect();
        let mut m = Matrix::new(dim);
        for r in &rows {
            let (s, q) = quantize(r);
            m.push(s, &q);
        }
        let query = unit(9999, dim);
        let mut exact: Vec<(usize, f32)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (i, glimpse::similarity(&query, r)))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let got = m.top_k(&query, 10, |_| true);
        assert_eq!(got.len(), 10);
        // Scores at each rank agree within the int8 error.
        for ((_, gs), (_, es)) in got.iter().zip(&exact) {
            assert!((gs - es).abs() < 0.01, "{gs} vs {es}");
        }
        let got_set: Vec<usize> = got.iter().map(|g| g.0).collect();
        let hits = exact[..10]
            .iter()
            .filter(|e| got_set.contains(&e.0))
            .count();
        assert!(hits >= 9, "{hits}/10 of the exact top 10");
        // Filtering keeps only accepted rows.
        assert!(m
            .top_k(&query, 10, |i| i % 2 == 0)
            .iter()
            .all(|(i, _)| i % 2 == 0));
    }

    #[test]
    fn swap_remove_and_groups() {
        let dim = 32;
        let a = unit(1, dim);
        let mut a2 = a.clone();
        a2[0] += 0.01;
        glimpse::normalize(&mut a2);
        let mut m = Matrix::new(dim);
        for v in [&a, &unit(2, dim), &a2, &unit(3, dim)] {
            let (s, q) = quantize(v);
            m.push(s, &q);
        }
        assert_eq!(m.groups_above(0.99), vec![vec![0, 2]]);
        m.swap_remove(0);
        assert_eq!(m.len(), 3);
        // Row 0 is now the former last row.
        let (s, q) = quantize(&unit(3, dim));
        assert_eq!(m.row(0), (s, q.as_slice()));
        assert!(m.groups_above(0.99).is_empty());
    }
}
