//! Image in, text out (MobileVLM / LLaVA style): the vision encoder's patch features go
//! through the [`Projector`] and are spliced, as embeddings, into the chat prompt where its
//! `<image>` slot is; the [`LanguageModel`] answers from there.
//!
//! Bundle: a language model bundle ([`crate::llm`]) whose `llm.json` has an
//! `image_chat_template` (with `<image>` and `{prompt}` once each), plus the
//! [`VisionEncoder`]'s files and `onnx/projector.onnx`.

mod image_encoder;
mod projector;

pub use image_encoder::VisionEncoder;
pub use projector::Projector;

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use tract_onnx::prelude::*;

use crate::bundle::{bundle_graph, LoadOptions};
use crate::error::{Error, Result};
use crate::llm::{GenerateOptions, Generation, LanguageModel, LLM_MANIFEST, PROMPT_SLOT};

/// Where the image goes in `image_chat_template`.
pub const IMAGE_SLOT: &str = "<image>";
/// The question `describe` asks.
pub const DESCRIBE_PROMPT: &str = "Describe this image.";

/// A vision-language model. `Send + Sync`; each call has its own state.
#[derive(Debug, Clone)]
pub struct VisionLanguageModel {
    llm: LanguageModel,
    encoder: VisionEncoder,
    projector: Projector,
    /// The image template around its two slots, in order: text, slot, text, slot, text.
    template: [String; 3],
    /// Whether the image slot comes before the prompt slot.
    image_first: bool,
}

impl VisionLanguageModel {
    /// Loads the bundle in `dir` with default options.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, LoadOptions::default())
    }

    /// Loads the bundle in `dir` (the options as [`LanguageModel::load_with`] reads them).
    pub fn load_with(dir: impl AsRef<Path>, opts: LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let llm = LanguageModel::load_with(dir, opts)?;
        let manifest = dir.join(LLM_MANIFEST);
        let text = llm.image_chat_template.clone().ok_or_else(|| {
            Error::bundle(
                &manifest,
                "no image_chat_template: not a vision-language bundle",
            )
        })?;
        let (template, image_first) =
            split_template(&text).map_err(|r| Error::bundle(&manifest, r))?;

        let pool = glimpse_graph::Pool::new(opts.threads);
        let encoder = VisionEncoder::load_in(dir, opts, &pool)?;
        let projector = Projector::load_spec(
            &bundle_graph(dir, "projector.onnx", opts.max_model_bytes)?,
            &pool,
        )?;
        let (patches, width) = encoder.output_shape();
        if projector.input_shape() != (patches, width) {
            return Err(Error::bundle(
                dir,
                format!(
                    "the encoder gives {patches} × {width} features, the projector takes {:?}",
                    projector.input_shape()
                ),
            ));
        }
        let hidden = llm.decoder().hidden();
        if projector.output_shape().1 != hidden {
            return Err(Error::bundle(
                dir,
                format!(
                    "the projector gives embeddings {} wide, the language model takes {hidden}",
                    projector.output_shape().1
                ),
            ));
        }
        Ok(VisionLanguageModel {
            llm,
            encoder,
            projector,
            template,
            image_first,
        })
    }

    /// The language model alone (text-only prompts).
    pub fn language_model(&self) -> &LanguageModel {
        &self.llm
    }

    /// The vision encoder.
    pub fn encoder(&self) -> &VisionEncoder {
        &self.encoder
    }

    /// The image's embeddings for the language model: `[1, tokens, hidden]`.
    pub fn image_embeddings(&self, image: &image::RgbImage) -> Result<Tensor> {
        self.projector.project(&self.encoder.encode(image)?)
    }

    /// Answers `question` about `image`, streaming the text to `on_text` (`Break` stops).
    pub fn ask(
        &self,
        image: &image::RgbImage,
        question: &str,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let question = self.llm.text_tokens(question)?;
        let started = Instant::now();
        let image = self.image_embeddings(image)?;
        let image_seconds = started.elapsed().as_secs_f64();
        let [head, middle, tail] = &self.template;
        let ids = |t: &str| self.llm.template_tokens(t);
        // The prompt in order; `None` is the image.
        let segments = match self.image_first {
            true => [
                Some(ids(head)?),
                None,
                Some(ids(middle)?),
                Some(question),
                Some(ids(tail)?),
            ],
            false => [
                Some(ids(head)?),
                Some(question),
                Some(ids(middle)?),
                None,
                Some(ids(tail)?),
            ],
        };
        let decoder = self.llm.decoder();
        let mut image = Some(image);
        let mut parts = Vec::new();
        for segment in segments {
            match segment {
                Some(ids) if ids.is_empty() => {}
                Some(ids) => {
                    self.llm.check_tokens(&ids)?;
                    parts.push(decoder.embed(&ids)?);
                }
                None => parts.extend(image.take()),
            }
        }
        let prompt = Tensor::stack_tensors(1, &parts).map_err(|e| Error::Inference {
            tower: "decoder",
            reason: format!("joining the prompt embeddings: {e:#}"),
        })?;
        let mut out = self.llm.generate_embedded(prompt, opts, on_text)?;
        out.image_seconds = image_seconds;
        Ok(out)
    }

    /// Describes `image` (asks [`DESCRIBE_PROMPT`]).
    pub fn describe(
        &self,
        image: &image::RgbImage,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        self.ask(image, DESCRIBE_PROMPT, opts, on_text)
    }

    /// Decodes an image file within the default image limits.
    pub fn open_image(&self, path: impl AsRef<Path>) -> Result<image::RgbImage> {
        self.encoder.open_image(path)
    }
}

/// Splits a template holding `<image>` and `{prompt}` once each into the three texts around
/// them; also says whether the image comes first.
fn split_template(text: &str) -> std::result::Result<([String; 3], bool), String> {
    for slot in [IMAGE_SLOT, PROMPT_SLOT] {
        let n = text.matches(slot).count();
        if n != 1 {
            return Err(format!(
                "image_chat_template must hold `{slot}` exactly once, it holds it {n} times"
            ));
        }
    }
    let (i, p) = (
        text.find(IMAGE_SLOT).unwrap_or(0),
        text.find(PROMPT_SLOT).unwrap_or(0),
    );
    let (first, second) = match i < p {
        true => ((i, IMAGE_SLOT), (p, PROMPT_SLOT)),
        false => ((p, PROMPT_SLOT), (i, IMAGE_SLOT)),
    };
    let head = &text[..first.0];
    let middle = &text[first.0 + first.1.len()..second.0];
    let tail = &text[second.0 + second.1.len()..];
    Ok(([head.into(), middle.into(), tail.into()], i < p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_around_their_slots() {
        let (parts, image_first) = split_template("<u>\n<image>\n{prompt}<e>").unwrap();
        assert_eq!(parts, ["<u>\n".to_string(), "\n".into(), "<e>".into()]);
        assert!(image_first);
        let (parts, image_first) = split_template("{prompt} see <image>.").unwrap();
        assert_eq!(parts, ["".to_string(), " see ".into(), ".".into()]);
        assert!(!image_first);
        assert!(split_template("{prompt}").unwrap_err().contains("0 times"));
        assert!(split_template("<image><image>{prompt}")
            .unwrap_err()
            .contains("2 times"));
    }
}
