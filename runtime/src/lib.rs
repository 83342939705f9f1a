//! Glimpse: CLIP and vision-language models on the device, through tract.
//!
//! ```no_run
//! let model = glimpse::ClipModel::load("fixtures/clip-vit-tiny")?;
//! let cat = model.embed_image_files(&["cat.jpg"])?;
//! let text = model.embed_texts(&["a photo of a cat"])?;
//! println!("{}", glimpse::similarity(&cat[0], &text[0]));
//! # Ok::<(), glimpse::Error>(())
//! ```
//!
//! Pipeline stages, one per module: [`bundle`] (find files) → [`decode`] (image bytes to
//! RGB; [`pixels`] for raw buffers) → [`preprocess`] (resize, crop, normalise) → [`vision`] /
//! [`tokenize`] → [`text`] (graphs) → [`classify`] (zero-shot); [`photos`] indexes and
//! searches a photo library. Language models: [`decoder`] (graphs, KV cache) → [`sampling`]
//! → [`llm`] (generation); with images, [`vlm`]: [`vision_encoder`] → [`projector`] → [`llm`].

mod attention;
pub mod bundle;
pub mod classify;
mod clip;
pub mod cpu;
mod crew;
pub mod decode;
pub mod decoder;
mod dynamic_quantize;
mod embedding;
pub mod error;
mod f32_matmul;
mod fused_attention;
mod graph;
mod int8_matmul;
mod kv_cache;
pub mod llm;
mod onnx_ops;
pub mod photos;
pub mod pixels;
pub mod preprocess;
pub mod projector;
mod q4_matmul;
mod qdq;
mod quick_gelu;
mod rewrite;
pub mod sampling;
pub mod text;
pub mod tokenize;
pub mod vision;
pub mod vision_encoder;
pub mod vlm;

pub use bundle::{LoadOptions, Precision};
pub use classify::{Prediction, ZeroShot, DEFAULT_TEMPLATES};
pub use clip::ClipModel;
pub use decode::ImageLimits;
pub use decoder::KvCache;
pub use embedding::{normalize, similarity, Embedding};
pub use error::{Error, Result};
pub use graph::NodeTime;
pub use image::RgbImage;
pub use llm::{GenerateOptions, Generation, LanguageModel, StopReason};
pub use pixels::PixelFormat;
pub use projector::Projector;
pub use sampling::Sampling;
pub use vision_encoder::VisionEncoder;
pub use vlm::VisionLanguageModel;

/// Deterministic test values in [-1, 1), different for each `seed`: the kernels' tests' inputs.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) % 1000)
        .map(|x| x as f32 / 500.0 - 1.0)
        .collect()
}
