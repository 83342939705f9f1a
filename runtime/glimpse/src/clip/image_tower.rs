//! The image tower: preprocessed pixels in, L2-normalised embeddings out.

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::embedding::{normalize_rows, Embedding};
use crate::error::{Error, Result};
use crate::image::PreprocessConfig;
use glimpse_graph::GraphSpec;
use glimpse_graph::Pool;
use glimpse_graph::{Dim, Graph, GraphFile, NodeTime, ONNX_FLOAT};

/// Images per graph run: bounds the activation memory of large batches.
const MAX_BATCH: usize = 16;

/// A loaded image tower with its preprocessing.
#[derive(Debug, Clone)]
pub struct VisionTower {
    graph: Graph,
    preprocess: PreprocessConfig,
    /// Images per run, and whether the graph demands exactly that many.
    batch: usize,
    fixed_batch: bool,
    /// Threads a large call is split over.
    threads: usize,
}

impl VisionTower {
    pub(crate) fn load(
        spec: &GraphSpec,
        preprocess: PreprocessConfig,
        half: bool,
        threads: usize,
        pool: &Pool,
    ) -> Result<Self> {
        let file = GraphFile::open(spec)?;
        let port = file.input(&spec.input)?.clone();
        file.require_output(&spec.output)?;
        let (w, h) = preprocess.output_size();
        if port.elem_type != ONNX_FLOAT {
            return Err(file.interface_error(format!("input `{}` is not float32", port.name)));
        }
        let wanted = [None, Some(3), Some(h as i64), Some(w as i64)];
        let fits = port.dims.is_empty()
            || (port.dims.len() == 4
                && port
                    .dims
                    .iter()
                    .zip(wanted)
                    .skip(1)
                    .all(|(d, w)| d.is_none() || *d == w));
        if !fits {
            return Err(file.interface_error(format!(
                "input `{}` has shape {:?}; the preprocessing config gives [batch, 3, {h}, {w}]",
                port.name, port.dims
            )));
        }
        // A graph exported with a fixed batch size runs that many images at a time.
        let fixed_batch = port.dims.first().copied().flatten().map(|n| n as usize);
        let batch_dim = fixed_batch.map_or(Dim::Symbol("batch"), Dim::Fixed);
        let dims = vec![
            batch_dim,
            Dim::Fixed(3),
            Dim::Fixed(h as usize),
            Dim::Fixed(w as usize),
        ];
        let graph = file
            .build(
                "image",
                &[(spec.input.clone(), f32::datum_type(), dims)],
                &[&spec.output],
                half,
            )?
            .with_pool(pool.clone());
        Ok(VisionTower {
            graph,
            preprocess,
            batch: fixed_batch.unwrap_or(MAX_BATCH),
            fixed_batch: fixed_batch.is_some(),
            threads,
        })
    }

    /// The preprocessing this tower's inputs need.
    pub fn preprocess_config(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    /// Embeds decoded RGB images.
    pub fn embed(&self, images: &[RgbImage]) -> Result<Vec<Embedding>> {
        let mut out = Vec::with_capacity(images.len());
        let mut pixels = Vec::new();
        for chunk in images.chunks(self.batch) {
            pixels.clear();
            for img in chunk {
                self.preprocess
                    .run(img, &mut pixels)
                    .map_err(|reason| Error::Image {
                        name: "(decoded)".into(),
                        reason,
                    })?;
            }
            out.extend(self.embed_pixels(&pixels)?);
        }
        Ok(out)
    }

    /// Embeds already preprocessed CHW pixels (any number of images, back to back).
    pub fn embed_pixels(&self, pixels: &[f32]) -> Result<Vec<Embedding>> {
        self.embed_pixels_on(pixels, self.threads)
    }

    /// [`Self::embed_pixels`] on the calling thread only: for callers that run their own
    /// workers (the photo indexer).
    pub fn embed_pixels_here(&self, pixels: &[f32]) -> Result<Vec<Embedding>> {
        self.embed_pixels_on(pixels, 1)
    }

    fn embed_pixels_on(&self, pixels: &[f32], threads: usize) -> Result<Vec<Embedding>> {
        let (w, h) = self.preprocess.output_size();
        let per = 3 * w as usize * h as usize;
        if pixels.is_empty() || !pixels.len().is_multiple_of(per) {
            return Err(Error::InvalidArgument(format!(
                "{} pixel values is not a whole number of 3x{h}x{w} images",
                pixels.len()
            )));
        }
        // Split the images over the worker threads (one plan, one state per run), at most
        // `batch` images per run. A run alone splits its matrix products over the pool instead.
        let n = pixels.len() / per;
        let workers = threads.clamp(1, n);
        let per_run = if self.fixed_batch {
            self.batch
        } else {
            n.div_ceil(workers).min(self.batch)
        };
        let chunks: Vec<&[f32]> = pixels.chunks(per * per_run).collect();
        let mut out = Vec::with_capacity(n);
        for group in chunks.chunks(workers) {
            let rows: Vec<Result<Vec<Embedding>>> = if group.len() == 1 {
                let graph = match threads {
                    1 => self.graph.unpooled(),
                    _ => self.graph.clone(),
                };
                vec![self.run_chunk(&graph, group[0], per)]
            } else {
                let graph = self.graph.unpooled();
                std::thread::scope(|s| {
                    let runs: Vec<_> = group
                        .iter()
                        .map(|c| s.spawn(|| self.run_chunk(&graph, c, per)))
                        .collect();
                    runs.into_iter()
                        .map(|r| r.join().expect("embedding thread panicked"))
                        .collect()
                })
            };
            for r in rows {
                out.extend(r?);
            }
        }
        normalize_rows(&mut out);
        Ok(out)
    }

    /// Embeds one preprocessed CHW image on the caller's thread, timing every graph node.
    pub fn profile(&self, pixels: &[f32]) -> Result<Vec<NodeTime>> {
        let (w, h) = self.preprocess.output_size();
        let per = 3 * w as usize * h as usize;
        if pixels.len() != per {
            return Err(Error::InvalidArgument(format!(
                "{} pixel values is not one 3x{h}x{w} image",
                pixels.len()
            )));
        }
        let (pixels, n_run) = self.pad_batch(pixels, 1, per);
        let tensor = Tensor::from_shape(&[n_run, 3, h as usize, w as usize], &pixels)
            .map_err(|e| Error::InvalidArgument(format!("{e:#}")))?;
        Ok(self.graph.profile(tvec!(tensor))?)
    }

    /// Runs the graph on one chunk of images.
    fn run_chunk(&self, graph: &Graph, chunk: &[f32], per: usize) -> Result<Vec<Embedding>> {
        let (w, h) = self.preprocess.output_size();
        let n = chunk.len() / per;
        let (chunk, n_run) = self.pad_batch(chunk, n, per);
        let shape = [n_run, 3, h as usize, w as usize];
        let tensor = Tensor::from_shape(&shape, &chunk)
            .map_err(|e| Error::InvalidArgument(format!("{e:#}")))?;
        let mut rows = graph.run_rows(tvec!(tensor), n_run)?;
        rows.truncate(n);
        Ok(rows)
    }

    /// Pads a short last chunk to a graph's fixed batch size with zero images.
    fn pad_batch<'a>(
        &self,
        chunk: &'a [f32],
        n: usize,
        per: usize,
    ) -> (std::borrow::Cow<'a, [f32]>, usize) {
        if !self.fixed_batch || n == self.batch {
            return (chunk.into(), n);
        }
        let mut padded = chunk.to_vec();
        padded.resize(per * self.batch, 0.0);
        (padded.into(), self.batch)
    }
}
