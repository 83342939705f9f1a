//! Tagging: a label vocabulary scored against each photo's embedding.
//!
//! A photo's tag scores are CLIP zero-shot probabilities over the vocabulary (softmax of
//! cosine × logit scale), so they sum to 1 across labels and depend on the vocabulary:
//! recalibrate [`TagOptions::threshold`] for a very different one (see BENCHMARKS.md,
//! "Tag threshold").

use glimpse::ZeroShot;

/// Everyday photo concepts: the vocabulary a new index starts with.
pub const DEFAULT_VOCABULARY: &[&str] = &[
    "person",
    "group of people",
    "selfie",
    "baby",
    "child",
    "wedding",
    "party",
    "concert",
    "sport",
    "dog",
    "cat",
    "bird",
    "horse",
    "fish",
    "insect",
    "flower",
    "tree",
    "plant",
    "forest",
    "mountain",
    "beach",
    "sea",
    "lake",
    "river",
    "waterfall",
    "sky",
    "sunset",
    "snow",
    "desert",
    "field",
    "garden",
    "park",
    "city",
    "street",
    "building",
    "house",
    "church",
    "bridge",
    "road",
    "car",
    "bicycle",
    "motorcycle",
    "bus",
    "train",
    "boat",
    "airplane",
    "food",
    "drink",
    "coffee",
    "cake",
    "fruit",
    "vegetables",
    "restaurant",
    "kitchen",
    "bedroom",
    "living room",
    "office",
    "computer",
    "phone",
    "book",
    "document",
    "screenshot",
    "text",
    "drawing",
    "painting",
    "toy",
    "clothes",
    "shoes",
    "bag",
    "watch",
    "jewelry",
    "glasses",
    "hat",
    "furniture",
    "art",
    "sculpture",
    "museum",
    "night",
    "fireworks",
    "christmas",
    "birthday",
    "pet",
    "animal",
    "rocket",
    "space",
    "astronaut",
    "tools",
    "instrument",
    "guitar",
    "piano",
    "ball",
    "game",
    "map",
    "sign",
    "flag",
    "receipt",
    "whiteboard",
    "cup",
    "bottle",
    "chair",
];

/// The prompt tags are embedded with. One template keeps the vocabulary's one-off text
/// cost at one text-tower run per label.
pub const TAG_TEMPLATES: &[&str] = &["a photo of a {}."];

/// How photos are tagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TagOptions {
    /// A tag is kept when its probability over the vocabulary is at least this.
    pub threshold: f32,
    /// At most this many tags per photo.
    pub max_tags: usize,
}

impl Default for TagOptions {
    /// Threshold 0.65, at most 5 tags: the lowest threshold with 90% tag precision on the
    /// demo model (`glimpse-bench calibrate-tags`, BENCHMARKS.md).
    fn default() -> Self {
        TagOptions {
            threshold: 0.65,
            max_tags: 5,
        }
    }
}

/// A tag and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub label: String,
    pub score: f32,
}

/// The top `max` labels for `embedding` as (label position, probability), best first.
/// Stored regardless of the threshold, which applies when tags are read.
pub(crate) fn top_labels(vocab: &ZeroShot, embedding: &[f32], max: usize) -> Vec<(usize, f32)> {
    let scores = vocab.classify(embedding);
    scores
        .into_iter()
        .take(max)
        .filter_map(|p| {
            vocab
                .labels()
                .iter()
                .position(|l| *l == p.label)
                .map(|i| (i, p.probability))
        })
        .collect()
}
