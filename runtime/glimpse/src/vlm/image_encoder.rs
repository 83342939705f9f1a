//! The vision encoder of a vision-language model: an image (preprocessed as the bundle's
//! `preprocessor_config.json` says) to the CLIP ViT's penultimate-layer patch tokens, the
//! class token dropped: `onnx/vision_encoder.onnx`, `pixel_values` → `image_features`
//! `[1, patches, width]`.

use std::path::Path;

use tract_onnx::prelude::*;

use crate::bundle::{bundle_graph, LoadOptions};
use crate::error::{Error, Result};
use crate::image::PreprocessConfig;
use crate::image::{decode_file, ImageLimits};
use glimpse_graph::Pool;
use glimpse_graph::{Dim, Graph, GraphFile};

/// A loaded vision encoder.
#[derive(Debug, Clone)]
pub struct VisionEncoder {
    graph: Graph,
    preprocess: PreprocessConfig,
    /// `(patches, width)` of its features.
    output: (usize, usize),
    limits: ImageLimits,
}

impl VisionEncoder {
    /// Loads `onnx/vision_encoder.onnx` and `preprocessor_config.json` from `dir`; its
    /// matrix products use the performance cores.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, LoadOptions::default())
    }

    /// [`Self::load`] with `opts.threads`, `opts.max_model_bytes` and `opts.quantized` (the
    /// int8 `onnx/vision_encoder_quantized.onnx`, where there is one).
    pub fn load_with(dir: impl AsRef<Path>, opts: LoadOptions) -> Result<Self> {
        let pool = Pool::new(opts.threads);
        Self::load_in(dir.as_ref(), opts, &pool)
    }

    pub(crate) fn load_in(dir: &Path, opts: LoadOptions, pool: &Pool) -> Result<Self> {
        let pre_path = dir.join("preprocessor_config.json");
        let pre_text = std::fs::read_to_string(&pre_path).map_err(|e| Error::io(&pre_path, e))?;
        let preprocess =
            PreprocessConfig::from_hf_json(&pre_text).map_err(|r| Error::bundle(&pre_path, r))?;
        let int8 = "vision_encoder_quantized.onnx";
        let name = match opts.quantized && dir.join("onnx").join(int8).is_file() {
            true => int8,
            false => "vision_encoder.onnx",
        };
        let file = GraphFile::open(&bundle_graph(dir, name, opts.max_model_bytes)?)?;
        file.input("pixel_values")?;
        file.require_output("image_features")?;
        let (w, h) = preprocess.output_size();
        let interface_error = file.interface_errors();
        let dims = vec![
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Fixed(h as usize),
            Dim::Fixed(w as usize),
        ];
        let graph = file
            .build(
                "image",
                &[("pixel_values".into(), f32::datum_type(), dims)],
                &["image_features"],
                false,
            )?
            .with_pool(pool.clone());
        let output = match graph.output_shape(0).as_deref() {
            Some(&[1, patches, width]) => (patches, width),
            other => {
                return Err(interface_error(format!(
                    "output `image_features` must be [1, patches, width], it is {other:?}"
                )))
            }
        };
        Ok(VisionEncoder {
            graph,
            preprocess,
            output,
            limits: ImageLimits::default(),
        })
    }

    /// `(patches, width)`: the features it gives.
    pub fn output_shape(&self) -> (usize, usize) {
        self.output
    }

    /// Decodes an image file within the default [`ImageLimits`].
    pub fn open_image(&self, path: impl AsRef<Path>) -> Result<image::RgbImage> {
        decode_file(path.as_ref(), &self.limits)
    }

    /// The features of `image`, row-major `[patches, width]`.
    pub fn encode(&self, image: &image::RgbImage) -> Result<Vec<f32>> {
        self.features(&self.pixels(image)?)
    }

    /// `image` preprocessed: CHW pixels as the encoder takes them.
    pub fn pixels(&self, image: &image::RgbImage) -> Result<Vec<f32>> {
        let mut pixels = Vec::new();
        self.preprocess
            .run(image, &mut pixels)
            .map_err(|reason| Error::Image {
                name: "input".into(),
                reason,
            })?;
        Ok(pixels)
    }

    /// The features of preprocessed CHW `pixels`, row-major `[patches, width]`.
    pub fn features(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        let out = self.graph.run(tvec![self.pixel_tensor(pixels)?])?;
        let view = out
            .to_plain_array_view::<f32>()
            .map_err(|e| Error::Inference {
                tower: "image",
                reason: format!("features are not f32: {e:#}"),
            })?;
        Ok(view.iter().copied().collect())
    }

    /// Times every node of one run on `pixels`, on the caller's thread: tract's per-node
    /// profile.
    pub fn profile(&self, pixels: &[f32]) -> Result<Vec<crate::NodeTime>> {
        Ok(self.graph.profile(tvec![self.pixel_tensor(pixels)?])?)
    }

    fn pixel_tensor(&self, pixels: &[f32]) -> Result<Tensor> {
        let (w, h) = self.preprocess.output_size();
        let shape = [1, 3, h as usize, w as usize];
        if pixels.len() != shape.iter().product::<usize>() {
            return Err(Error::InvalidArgument(format!(
                "{} pixel values, the encoder takes 3 × {h} × {w}",
                pixels.len()
            )));
        }
        Tensor::from_shape(&shape, pixels)
            .map_err(|e| Error::InvalidArgument(format!("pixels: {e:#}")))
    }
}
