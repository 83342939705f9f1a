//! The text tower: strings in, L2-normalised embeddings out.
//!
//! Sequences run at their real length (padded only to the longest in the batch):
//! CLIP's causal mask and end-token pooling make the padding irrelevant. Graphs
//! exported with a fixed sequence length (open_clip's 77) are padded to it.

use tract_onnx::prelude::*;

use crate::clip::tokenizer::{ClipTokenizer, TokenizerSource};
use crate::embedding::{normalize_rows, Embedding};
use crate::error::{Error, Result};
use glimpse_graph::GraphSpec;
use glimpse_graph::Pool;
use glimpse_graph::{Dim, Graph, GraphFile, Port, ONNX_INT32, ONNX_INT64};

/// The attention-mask input HF exports may have beside `input_ids`.
const MASK_INPUT: &str = "attention_mask";
/// Texts per graph run.
const MAX_BATCH: usize = 64;

/// A loaded text tower with its tokenizer.
#[derive(Debug, Clone)]
pub struct TextTower {
    graph: Graph,
    tokenizer: ClipTokenizer,
    /// Graph inputs in order: `true` for the attention mask, `false` for the ids.
    inputs: Vec<bool>,
    fixed_len: Option<usize>,
    /// Texts per graph run.
    batch: usize,
}

impl TextTower {
    pub(crate) fn load(
        spec: &GraphSpec,
        tokenizer: &TokenizerSource,
        context_length: usize,
        half: bool,
        max_text_bytes: usize,
        pool: &Pool,
    ) -> Result<Self> {
        let file = GraphFile::open(spec)?;
        let ids = file.input(&spec.input)?.clone();
        file.require_output(&spec.output)?;
        if ids.dims.len() != 2 && !ids.dims.is_empty() {
            return Err(file.interface_error(format!(
                "input `{}` has shape {:?}, not [batch, sequence]",
                ids.name, ids.dims
            )));
        }
        let fixed_len = ids.dims.get(1).copied().flatten().map(|n| n as usize);
        let mut inputs = Vec::new();
        for port in &file.inputs {
            let is_mask = port.name == MASK_INPUT && port.name != spec.input;
            if port.name != spec.input && !is_mask {
                return Err(file.interface_error(format!(
                    "input `{}` is neither the token ids (`{}`) nor `{MASK_INPUT}`",
                    port.name, spec.input
                )));
            }
            let dt = int_type(port).ok_or_else(|| {
                file.interface_error::<Error>(format!("input `{}` is not int32/int64", port.name))
            })?;
            inputs.push((port.name.clone(), is_mask, dt));
        }
        // tract 0.23 mis-sizes transformers 5's attention-mask arithmetic when the sequence
        // length is symbolic: graphs taking a mask run padded to the full context instead.
        let has_mask = inputs.iter().any(|(_, is_mask, _)| *is_mask);
        let fixed_len = fixed_len.or(has_mask.then_some(context_length));
        let seq = fixed_len.map_or(Dim::Symbol("sequence"), Dim::Fixed);
        let facts = |batch: Dim| -> Vec<_> {
            inputs
                .iter()
                .map(|(name, _, dt)| (name.clone(), *dt, vec![batch, seq]))
                .collect()
        };
        // HF's end-token pooling indexes `arange(batch) * sequence`, which tract cannot
        // simplify with both symbolic: such graphs run one text at a time (the file is read
        // again: building takes it).
        let (graph, batch) =
            match file.build("text", &facts(Dim::Symbol("batch")), &[&spec.output], half) {
                Ok(g) => (g, MAX_BATCH),
                Err(_) if fixed_len.is_none() => {
                    let file = GraphFile::open(spec)?;
                    (
                        file.build("text", &facts(Dim::Fixed(1)), &[&spec.output], half)?,
                        1,
                    )
                }
                Err(e) => return Err(e.into()),
            };
        let graph = graph.with_pool(pool.clone());
        let inputs = inputs.into_iter().map(|(_, is_mask, _)| is_mask).collect();
        let mut tokenizer = ClipTokenizer::load(
            tokenizer,
            fixed_len.unwrap_or(context_length).min(context_length),
        )?;
        tokenizer.set_max_text_bytes(max_text_bytes);
        Ok(TextTower {
            graph,
            tokenizer,
            inputs,
            fixed_len,
            batch,
        })
    }

    /// The tokenizer feeding this tower.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Embeds texts; an empty or blank text is an error.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Embedding>> {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        self.embed_ids(&ids)
    }

    /// Embeds token id sequences (each framed by start and end tokens).
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Embedding>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.batch) {
            let vocab = self.tokenizer.vocab_size();
            if let Some(bad) = chunk.iter().flatten().find(|&&id| id as usize >= vocab) {
                return Err(Error::InvalidArgument(format!(
                    "token id {bad} is outside the {vocab}-token vocabulary"
                )));
            }
            let longest = chunk.iter().map(Vec::len).max().unwrap_or(0);
            let len = self.fixed_len.unwrap_or(longest);
            if longest > len || longest == 0 {
                return Err(Error::InvalidArgument(format!(
                    "token sequences must have 1..={len} ids"
                )));
            }
            let n = chunk.len();
            let inputs = self
                .inputs
                .iter()
                .map(|&is_mask| {
                    let mut flat = vec![0i64; n * len];
                    for (row, seq) in chunk.iter().enumerate() {
                        for (col, &id) in seq.iter().enumerate() {
                            flat[row * len + col] = if is_mask { 1 } else { id as i64 };
                        }
                    }
                    Tensor::from_shape(&[n, len], &flat)
                        .map_err(|e| Error::InvalidArgument(format!("{e:#}")))
                })
                .collect::<Result<TVec<_>>>()?;
            out.extend(self.graph.run_rows(inputs, n)?);
        }
        normalize_rows(&mut out);
        Ok(out)
    }
}

fn int_type(port: &Port) -> Option<DatumType> {
    match port.elem_type {
        ONNX_INT64 => Some(i64::datum_type()),
        ONNX_INT32 => Some(i32::datum_type()),
        _ => None,
    }
}
