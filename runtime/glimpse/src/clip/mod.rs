//! A CLIP model: image and text towers that embed into one space.

mod bundle;
mod image_tower;
mod text_tower;
mod tokenizer;
mod zero_shot;

pub use bundle::{DEFAULT_LOGIT_SCALE, MANIFEST};
pub use image_tower::VisionTower;
pub use text_tower::TextTower;
pub use tokenizer::{ClipTokenizer, TokenizerSource};
pub use zero_shot::{Prediction, ZeroShot, DEFAULT_TEMPLATES};

use std::path::Path;

use image::RgbImage;

use crate::bundle::{LoadOptions, Precision};
use crate::embedding::{similarity, Embedding};
use crate::error::{Error, Result};
use crate::image::{decode, decode_file, ImageLimits};
use crate::image::{rgb_from_pixels, PixelFormat};
use bundle::BundleSpec;

/// A loaded CLIP bundle. `Send + Sync`: share one between threads.
#[derive(Debug, Clone)]
pub struct ClipModel {
    name: String,
    id: String,
    vision: Option<VisionTower>,
    text: Option<TextTower>,
    logit_scale: f32,
    limits: ImageLimits,
    precision: Precision,
}

impl ClipModel {
    /// Loads both towers of the bundle in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, LoadOptions::default())
    }

    /// Loads the towers `opts` asks for.
    pub fn load_with(dir: impl AsRef<Path>, opts: LoadOptions) -> Result<Self> {
        let spec = BundleSpec::open(dir.as_ref(), opts)?;
        // The id covers both towers even when one is loaded, so an index built with the
        // image tower accepts queries from a text-only load of the same bundle.
        let both = LoadOptions {
            vision: true,
            text: true,
            ..opts
        };
        let id = BundleSpec::open(dir.as_ref(), both)
            .unwrap_or_else(|_| spec.clone())
            .model_id()?;
        let precision = if opts.precision.is_f16_here() {
            Precision::F16
        } else {
            Precision::F32
        };
        let half = precision == Precision::F16;
        // One pool for both towers: a single image or query uses every thread.
        let pool = glimpse_graph::Pool::new(opts.threads);
        let vision = match &spec.vision {
            Some(g) => Some(VisionTower::load(
                g,
                spec.preprocess.clone(),
                half,
                opts.threads,
                &pool,
            )?),
            None => None,
        };
        let text = match (&spec.text, &spec.tokenizer) {
            (Some(g), Some(src)) => Some(TextTower::load(
                g,
                src,
                spec.context_length,
                half,
                opts.max_text_bytes,
                &pool,
            )?),
            _ => None,
        };
        Ok(ClipModel {
            name: spec.name,
            id,
            vision,
            text,
            logit_scale: spec.logit_scale,
            limits: ImageLimits::default(),
            precision,
        })
    }

    /// The precision the graphs run in: `F32` or `F16` ([`Precision::Auto`] resolved).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The bundle's name (manifest `name`, or its directory name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Identifies the embedding space (see [`BundleSpec::model_id`]): indexes built with
    /// one model refuse another.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The factor applied to cosine similarities before a softmax.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// Limits applied when this model decodes images.
    pub fn image_limits(&self) -> ImageLimits {
        self.limits
    }

    /// Sets the limits applied when this model decodes images.
    pub fn set_image_limits(&mut self, limits: ImageLimits) {
        self.limits = limits;
    }

    /// The image tower, if loaded.
    pub fn vision(&self) -> Result<&VisionTower> {
        self.vision.as_ref().ok_or(Error::TowerNotLoaded("image"))
    }

    /// The text tower, if loaded.
    pub fn text(&self) -> Result<&TextTower> {
        self.text.as_ref().ok_or(Error::TowerNotLoaded("text"))
    }

    /// Decodes an encoded image (JPEG, PNG, WebP) within this model's limits.
    pub fn decode_image(&self, data: &[u8], name: &str) -> Result<RgbImage> {
        decode(data, name, &self.limits)
    }

    /// Embeds one image held as raw pixels (see [`rgb_from_pixels`]), within this model's
    /// limits.
    pub fn embed_pixel_buffer(
        &self,
        data: &[u8],
        width: u32,
        height: u32,
        row_stride: usize,
        format: PixelFormat,
    ) -> Result<Embedding> {
        let vision = self.vision()?;
        let image = rgb_from_pixels(data, width, height, row_stride, format, &self.limits)?;
        Ok(vision.embed(std::slice::from_ref(&image))?.remove(0))
    }

    /// Embeds decoded images.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Embedding>> {
        self.vision()?.embed(images)
    }

    /// Reads, decodes and embeds image files.
    pub fn embed_image_files<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Vec<Embedding>> {
        let vision = self.vision()?;
        let images = paths
            .iter()
            .map(|p| decode_file(p.as_ref(), &self.limits))
            .collect::<Result<Vec<_>>>()?;
        vision.embed(&images)
    }

    /// Embeds already preprocessed CHW pixels, images back to back.
    pub fn embed_pixels(&self, pixels: &[f32]) -> Result<Vec<Embedding>> {
        self.vision()?.embed_pixels(pixels)
    }

    /// Embeds texts.
    pub fn embed_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Embedding>> {
        self.text()?.embed(texts)
    }

    /// CLIP's image-text logit: cosine similarity times the logit scale.
    pub fn match_score(&self, image: &[f32], text: &[f32]) -> f32 {
        similarity(image, text) * self.logit_scale
    }

    /// Prepares `labels` for zero-shot classification with the given prompt templates.
    pub fn zero_shot<S: AsRef<str>, T: AsRef<str>>(
        &self,
        labels: &[S],
        templates: &[T],
    ) -> Result<ZeroShot> {
        ZeroShot::new(self.text()?, labels, templates, self.logit_scale)
    }

    /// Classifies one image among `labels` with CLIP's default prompt ensemble.
    pub fn classify<S: AsRef<str>>(
        &self,
        image: &RgbImage,
        labels: &[S],
    ) -> Result<Vec<Prediction>> {
        let zs = self.zero_shot(labels, DEFAULT_TEMPLATES)?;
        let emb = self.embed_images(std::slice::from_ref(image))?;
        Ok(zs.classify(&emb[0]))
    }
}
