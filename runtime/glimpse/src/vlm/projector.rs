//! The projector of a vision-language model: CLIP patch features in, language-model input
//! embeddings out (MobileVLM's LDP / LDPv2, LLaVA's `mlp2x_gelu`, or any graph of that
//! interface).
//!
//! Interface: input `image_features` `[1, patches, vision_width]` (the vision tower's
//! penultimate layer, class token dropped), output `image_embeds` `[1, tokens, hidden]`.

use std::path::Path;

use tract_onnx::prelude::*;

use crate::bundle::{GraphSpec, LoadOptions};
use crate::error::{Error, Result};
use glimpse_graph::Pool;
use glimpse_graph::{Dim, Graph, GraphFile, ONNX_FLOAT};

const INPUT: &str = "image_features";
const OUTPUT: &str = "image_embeds";
/// Patches of ViT-L/14 at 336 px (24 × 24), for graphs that leave the count symbolic.
const DEFAULT_PATCHES: usize = 576;

/// A loaded projector.
#[derive(Debug, Clone)]
pub struct Projector {
    graph: Graph,
    /// `(patches, vision_width)` it takes.
    input: (usize, usize),
    /// `(tokens, hidden)` it gives.
    output: (usize, usize),
}

impl Projector {
    /// Loads the projector graph at `path`; its matrix products use the performance cores.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, LoadOptions::default())
    }

    /// [`Self::load`] with `opts.threads` and `opts.max_model_bytes`.
    pub fn load_with(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Self> {
        let spec = GraphSpec {
            path: path.as_ref().to_owned(),
            input: INPUT.into(),
            output: OUTPUT.into(),
            sha256: None,
            data_sha256: Default::default(),
            max_bytes: opts.max_model_bytes,
        };
        Self::load_spec(&spec, &Pool::new(opts.threads))
    }

    pub(crate) fn load_spec(spec: &GraphSpec, pool: &Pool) -> Result<Self> {
        let file = GraphFile::open(spec)?;
        let port = file.input(INPUT)?;
        file.require_output(OUTPUT)?;
        let (patches, width) = match (port.elem_type, port.dims.as_slice()) {
            (ONNX_FLOAT, [_, patches, Some(width)]) => (
                patches.map_or(DEFAULT_PATCHES, |p| p as usize),
                *width as usize,
            ),
            _ => {
                return Err(file.interface_error(format!(
                    "input `{INPUT}` must be float [1, patches, width] with a fixed width, \
                     it is {:?} of element type {}",
                    port.dims, port.elem_type
                )))
            }
        };
        let dims = vec![Dim::Fixed(1), Dim::Fixed(patches), Dim::Fixed(width)];
        let interface_error = file.interface_errors();
        let graph = file
            .build(
                "projector",
                &[(INPUT.into(), f32::datum_type(), dims)],
                &[OUTPUT],
                false,
            )?
            .with_pool(pool.clone());
        let output = match graph.output_shape(0).as_deref() {
            Some(&[1, tokens, hidden]) => (tokens, hidden),
            other => {
                return Err(interface_error(format!(
                    "output `{OUTPUT}` must be [1, tokens, hidden], it is {other:?}"
                )))
            }
        };
        Ok(Projector {
            graph,
            input: (patches, width),
            output,
        })
    }

    /// `(patches, vision_width)`: the features it takes.
    pub fn input_shape(&self) -> (usize, usize) {
        self.input
    }

    /// `(tokens, hidden)`: the embeddings it gives.
    pub fn output_shape(&self) -> (usize, usize) {
        self.output
    }

    /// Projects `features` (`patches × vision_width` values, row-major) to a
    /// `[1, tokens, hidden]` tensor of embeddings.
    pub fn project(&self, features: &[f32]) -> Result<Tensor> {
        let (patches, width) = self.input;
        if features.len() != patches * width {
            return Err(Error::InvalidArgument(format!(
                "{} feature values, the projector takes {patches} patches × {width}",
                features.len()
            )));
        }
        let input = tract_ndarray::Array3::from_shape_vec((1, patches, width), features.to_vec())
            .map_err(|e| Error::InvalidArgument(format!("features: {e}")))?;
        Ok(self.graph.run(tvec![input.into_tensor()])?)
    }
}
