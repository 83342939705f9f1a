//! Embedding vectors and the arithmetic on them.

/// An L2-normalised embedding.
pub type Embedding = Vec<f32>;

/// Cosine similarity of two vectors (normalised or not); 0 when either is all zeros.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Scales a vector to unit length (an all-zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

#[cfg(feature = "clip")]
pub(crate) fn normalize_rows(rows: &mut [Embedding]) {
    rows.iter_mut().for_each(|r| normalize(r));
}

/// Softmax of `logits`, computed stably.
#[cfg(feature = "clip")]
pub(crate) fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}
