//! Glimpse: CLIP, language and vision-language models on the device, through tract.
//!
//! ```no_run
//! let model = glimpse::ClipModel::load("fixtures/clip-vit-tiny")?;
//! let cat = model.embed_image_files(&["cat.jpg"])?;
//! let text = model.embed_texts(&["a photo of a cat"])?;
//! println!("{}", glimpse::similarity(&cat[0], &text[0]));
//! # Ok::<(), glimpse::Error>(())
//! ```
//!
//! One folder per model family, each behind its cargo feature: `clip/` (bundle → image and
//! text towers, tokenizer → zero-shot), `llm/` (decoder graphs and cache → sampling →
//! generation), `vlm/` (image encoder → projector → the language model). Shared by all:
//! [`image`] (decode → pixels → preprocess), `bundle` (load options, checksums), `error`,
//! `embedding`. Below them, `glimpse-graph` builds and runs the graphs and `glimpse-kernels`
//! does their arithmetic; `glimpse-photos` indexes a photo library with a CLIP model.

#[cfg(not(any(feature = "clip", feature = "llm")))]
compile_error!(
    "glimpse needs at least one model family: enable the `clip`, `llm` or `vlm` feature"
);

mod bundle;
mod embedding;
mod error;
pub mod image;

#[cfg(feature = "clip")]
mod clip;
#[cfg(feature = "llm")]
mod llm;
#[cfg(feature = "vlm")]
mod vlm;

pub use ::image::RgbImage;
pub use bundle::{
    KvCache, LoadOptions, Precision, CHECKSUMS, DEFAULT_MAX_MODEL_BYTES, DEFAULT_MAX_TEXT_BYTES,
};
pub use embedding::{normalize, similarity, Embedding};
pub use error::{Error, Result};
pub use glimpse_graph::NodeTime;
/// What the CPU offers (f16 arithmetic, the int8 dot product) and the default thread count.
pub use glimpse_kernels::cpu;
pub use image::{ImageLimits, PixelFormat};

#[cfg(feature = "clip")]
pub use clip::{
    ClipModel, ClipTokenizer, Prediction, TextTower, TokenizerSource, VisionTower, ZeroShot,
    DEFAULT_LOGIT_SCALE, DEFAULT_TEMPLATES, MANIFEST,
};
#[cfg(feature = "llm")]
pub use llm::{
    argmax, GenerateOptions, Generation, LanguageModel, Sampling, StopReason, LLM_MANIFEST,
};
#[cfg(feature = "vlm")]
pub use vlm::{Projector, VisionEncoder, VisionLanguageModel, DESCRIBE_PROMPT, IMAGE_SLOT};
