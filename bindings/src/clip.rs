//! The CLIP model: load a bundle, embed images and texts, classify.

use std::sync::Arc;

use crate::{guard, GlimpseError};

/// Which parts of a bundle to load.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ModelOptions {
    /// Load the image tower.
    #[uniffi(default = true)]
    pub vision: bool,
    /// Load the text tower and tokenizer.
    #[uniffi(default = true)]
    pub text: bool,
    /// Prefer the int8 graphs beside the fp32 ones, where the bundle has them.
    #[uniffi(default = false)]
    pub quantized: bool,
    /// Run float math in f16 where the CPU has f16 arithmetic (most phone cores since 2017,
    /// Apple A11 on): about twice as fast there, embeddings within cosine 0.9999 of f32.
    #[uniffi(default = false)]
    pub allow_f16: bool,
    /// Threads an image batch is split over; 0 for the performance cores.
    #[uniffi(default = 0)]
    pub threads: u32,
}

/// How the bytes of a raw pixel buffer are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PixelFormat {
    /// R, G, B, A bytes (Android `ARGB_8888`).
    Rgba8888,
    /// B, G, R, A bytes (iOS `kCVPixelFormatType_32BGRA`).
    Bgra8888,
    /// R, G, B bytes.
    Rgb888,
    /// Little-endian 5-6-5 words (Android `RGB_565`).
    Rgb565,
}

impl From<PixelFormat> for glimpse::PixelFormat {
    fn from(f: PixelFormat) -> Self {
        match f {
            PixelFormat::Rgba8888 => glimpse::PixelFormat::Rgba8888,
            PixelFormat::Bgra8888 => glimpse::PixelFormat::Bgra8888,
            PixelFormat::Rgb888 => glimpse::PixelFormat::Rgb888,
            PixelFormat::Rgb565 => glimpse::PixelFormat::Rgb565,
        }
    }
}

/// One label's score for an image.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Prediction {
    pub label: String,
    /// Softmax probability over the label set.
    pub probability: f32,
    /// Cosine similarity between the image and the label's text embedding.
    pub similarity: f32,
}

impl From<glimpse::Prediction> for Prediction {
    fn from(p: glimpse::Prediction) -> Self {
        Prediction {
            label: p.label,
            probability: p.probability,
            similarity: p.similarity,
        }
    }
}

/// A loaded CLIP bundle. Share one between threads; calls block while the graphs run.
#[derive(uniffi::Object)]
pub struct ClipModel {
    pub(crate) inner: glimpse::ClipModel,
}

#[uniffi::export]
impl ClipModel {
    /// Loads both towers of the bundle in the directory `dir`.
    #[uniffi::constructor]
    pub fn load(dir: String) -> Result<Arc<Self>, GlimpseError> {
        guard(|| {
            Ok(Arc::new(ClipModel {
                inner: glimpse::ClipModel::load(&dir)?,
            }))
        })
    }

    /// Loads the parts of the bundle `options` asks for.
    #[uniffi::constructor]
    pub fn load_with(dir: String, options: ModelOptions) -> Result<Arc<Self>, GlimpseError> {
        guard(|| {
            let defaults = glimpse::LoadOptions::default();
            let opts = glimpse::LoadOptions {
                vision: options.vision,
                text: options.text,
                quantized: options.quantized,
                precision: if options.allow_f16 {
                    glimpse::Precision::Auto
                } else {
                    glimpse::Precision::F32
                },
                threads: match options.threads {
                    0 => defaults.threads,
                    n => n as usize,
                },
                ..defaults
            };
            let inner = glimpse::ClipModel::load_with(&dir, opts)?;
            Ok(Arc::new(ClipModel { inner }))
        })
    }

    /// Whether the graphs run in f16 (asked for with `allow_f16`, and the CPU has it).
    pub fn runs_in_f16(&self) -> bool {
        self.inner.precision() == glimpse::Precision::F16
    }

    /// The bundle's name.
    pub fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// Identifies the embedding space: indexes built with one model refuse another.
    pub fn id(&self) -> String {
        self.inner.id().to_owned()
    }

    /// Embeds an encoded image (JPEG, PNG or WebP).
    pub fn embed_image(&self, encoded: Vec<u8>) -> Result<Vec<f32>, GlimpseError> {
        guard(|| {
            let image = self.inner.decode_image(&encoded, "image")?;
            Ok(self.inner.embed_images(&[image])?.remove(0))
        })
    }

    /// Reads and embeds an image file.
    pub fn embed_image_file(&self, path: String) -> Result<Vec<f32>, GlimpseError> {
        guard(|| Ok(self.inner.embed_image_files(&[path])?.remove(0)))
    }

    /// Embeds raw pixels in place (zero-copy: a direct `ByteBuffer` in Kotlin). Rows start
    /// `row_stride` bytes apart.
    pub fn embed_pixels(
        &self,
        pixels: &[u8],
        width: u32,
        height: u32,
        row_stride: u32,
        format: PixelFormat,
    ) -> Result<Vec<f32>, GlimpseError> {
        guard(|| {
            self.inner
                .embed_pixel_buffer(pixels, width, height, row_stride as usize, format.into())
        })
    }

    /// Embeds a text.
    pub fn embed_text(&self, text: String) -> Result<Vec<f32>, GlimpseError> {
        guard(|| Ok(self.inner.embed_texts(&[text])?.remove(0)))
    }

    /// Embeds texts, one embedding each.
    pub fn embed_texts(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, GlimpseError> {
        guard(|| self.inner.embed_texts(&texts))
    }

    /// Scores an encoded image against `labels` with CLIP's prompt ensemble, best first.
    pub fn classify(
        &self,
        encoded: Vec<u8>,
        labels: Vec<String>,
    ) -> Result<Vec<Prediction>, GlimpseError> {
        guard(|| {
            let image = self.inner.decode_image(&encoded, "image")?;
            let predictions = self.inner.classify(&image, &labels)?;
            Ok(predictions.into_iter().map(Prediction::from).collect())
        })
    }

    /// Prepares `labels` once for scoring many image embeddings.
    pub fn classifier(&self, labels: Vec<String>) -> Result<Arc<Classifier>, GlimpseError> {
        guard(|| {
            let inner = self.inner.zero_shot(&labels, glimpse::DEFAULT_TEMPLATES)?;
            Ok(Arc::new(Classifier { inner }))
        })
    }
}

/// A label set ready to score image embeddings against.
#[derive(uniffi::Object)]
pub struct Classifier {
    inner: glimpse::ZeroShot,
}

#[uniffi::export]
impl Classifier {
    /// The labels, in the order given.
    pub fn labels(&self) -> Vec<String> {
        self.inner.labels().to_vec()
    }

    /// Scores an image embedding, best first.
    pub fn classify(&self, embedding: Vec<f32>) -> Result<Vec<Prediction>, GlimpseError> {
        guard(|| {
            let dim = self.inner.embeddings().first().map_or(0, Vec::len);
            if embedding.len() != dim {
                return Err(glimpse::Error::InvalidArgument(format!(
                    "embedding has {} values, the labels {dim}",
                    embedding.len()
                )));
            }
            let predictions = self.inner.classify(&embedding);
            Ok(predictions.into_iter().map(Prediction::from).collect())
        })
    }
}
