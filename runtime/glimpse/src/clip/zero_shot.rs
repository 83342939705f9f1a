//! Zero-shot classification: labels become text embeddings (averaged over prompt
//! templates, as CLIP's prompt ensembling does) and an image is scored against them.

use crate::clip::text_tower::TextTower;
use crate::embedding::{normalize, softmax, Embedding};
use crate::error::{Error, Result};

/// The seven templates OpenAI's CLIP notebook selected for its ImageNet prompt ensemble.
pub const DEFAULT_TEMPLATES: &[&str] = &[
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
];

/// One label's score for an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    /// Softmax probability over the label set, at the model's logit scale.
    pub probability: f32,
    /// Cosine similarity between the image and the label's ensembled text embedding.
    pub similarity: f32,
}

/// A label set ready to score images against; build once, reuse for many images.
#[derive(Debug, Clone)]
pub struct ZeroShot {
    labels: Vec<String>,
    embeddings: Vec<Embedding>,
    logit_scale: f32,
}

impl ZeroShot {
    pub(crate) fn new<S: AsRef<str>, T: AsRef<str>>(
        text: &TextTower,
        labels: &[S],
        templates: &[T],
        logit_scale: f32,
    ) -> Result<Self> {
        if labels.is_empty() {
            return Err(Error::InvalidArgument(
                "no labels to classify against".into(),
            ));
        }
        if templates.is_empty() || templates.iter().any(|t| !t.as_ref().contains("{}")) {
            return Err(Error::InvalidArgument(
                "every prompt template needs a {} where the label goes".into(),
            ));
        }
        if labels.iter().any(|l| l.as_ref().trim().is_empty()) {
            return Err(Error::InvalidArgument("a label is empty".into()));
        }
        // Every label × template prompt in one call, so batch-capable towers batch them.
        let prompts: Vec<String> = labels
            .iter()
            .flat_map(|l| {
                templates
                    .iter()
                    .map(move |t| t.as_ref().replace("{}", l.as_ref().trim()))
            })
            .collect();
        let rows = text.embed(&prompts)?;
        let embeddings = rows
            .chunks(templates.len())
            .map(|group| {
                let mut mean = vec![0.0; group[0].len()];
                for r in group {
                    mean.iter_mut().zip(r).for_each(|(m, x)| *m += x);
                }
                normalize(&mut mean);
                mean
            })
            .collect();
        let labels = labels
            .iter()
            .map(|l| l.as_ref().trim().to_owned())
            .collect();
        Ok(ZeroShot {
            labels,
            embeddings,
            logit_scale,
        })
    }

    /// A label set from embeddings computed earlier (the photo index caches them).
    pub fn from_parts(labels: Vec<String>, embeddings: Vec<Embedding>, logit_scale: f32) -> Self {
        ZeroShot {
            labels,
            embeddings,
            logit_scale,
        }
    }

    /// Each label's ensembled text embedding, in label order.
    pub fn embeddings(&self) -> &[Embedding] {
        &self.embeddings
    }

    /// The labels, in the order they were given.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Scores one image embedding; predictions come most probable first.
    pub fn classify(&self, image: &[f32]) -> Vec<Prediction> {
        let sims: Vec<f32> = self
            .embeddings
            .iter()
            .map(|e| crate::embedding::similarity(image, e))
            .collect();
        let logits: Vec<f32> = sims.iter().map(|s| s * self.logit_scale).collect();
        let mut out: Vec<Prediction> = softmax(&logits)
            .into_iter()
            .zip(sims)
            .zip(&self.labels)
            .map(|((probability, similarity), label)| Prediction {
                label: label.clone(),
                probability,
                similarity,
            })
            .collect();
        out.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        out
    }
}
