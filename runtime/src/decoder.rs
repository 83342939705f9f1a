//! The language model's graphs: token embeddings, and the decoder that turns embeddings into
//! next-token logits while growing a key/value cache.
//!
//! The layout is transformers.js's: `embed_tokens.onnx` (`input_ids` → `inputs_embeds`) and
//! `decoder_model_merged.onnx` (`inputs_embeds`, `position_ids`, `past_key_values.{i}.key` /
//! `.value` → `logits`, `present.{i}.key` / `.value`). The cache is passed in and out of each
//! run as tract values: the presents of one step are the pasts of the next, without copies.

use tract_onnx::prelude::*;

use crate::bundle::GraphSpec;
use crate::cpu::Pool;
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, GraphFile, ONNX_FLOAT, ONNX_INT64};

const IDS: &str = "input_ids";
const EMBEDS: &str = "inputs_embeds";
const POSITIONS: &str = "position_ids";
const LOGITS: &str = "logits";

/// The cache shapes a decoder must have (from the bundle's `llm.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Width of a token embedding.
    pub hidden: usize,
}

/// The embedding table and decoder graphs of a causal language model.
#[derive(Debug, Clone)]
pub struct Decoder {
    embed: Graph,
    decoder: Graph,
    /// For each decoder input, its index in (embeddings, positions, cache values...).
    order: Vec<usize>,
    shape: CacheShape,
    /// One-token steps run with the pool's workers spinning between products: the 4-bit
    /// products split over them ([`crate::crew`]); tract's own would not.
    spin: bool,
}

/// The key/value cache of one sequence: what the decoder has seen so far.
#[derive(Debug, Clone)]
pub struct Cache {
    /// `past_key_values.{i}.key`, `.value` for every layer, in the decoder's input order.
    values: TVec<TValue>,
    /// Tokens the cache holds.
    len: usize,
}

impl Cache {
    /// Tokens (positions) the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the cache's tensors hold.
    pub fn bytes(&self) -> usize {
        self.values
            .iter()
            .map(|t| t.len() * t.datum_type().size_of())
            .sum()
    }
}

impl Decoder {
    /// Loads and checks both graphs against `shape`.
    pub(crate) fn load(
        embed: &GraphSpec,
        decoder: &GraphSpec,
        shape: CacheShape,
        pool: &Pool,
    ) -> Result<Self> {
        let file = GraphFile::open(embed)?;
        expect_input(&file, IDS, ONNX_INT64, &[Some(1), None])?;
        file.require_output(EMBEDS)?;
        let seq = Dim::Symbol("sequence");
        let embed_graph = file
            .build(
                "embedding",
                &[(IDS.into(), i64::datum_type(), vec![Dim::Fixed(1), seq])],
                &[EMBEDS],
                false,
            )?
            .with_pool(pool.clone());

        let file = GraphFile::open(decoder)?;
        let hidden = shape.hidden as i64;
        expect_input(&file, EMBEDS, ONNX_FLOAT, &[Some(1), None, Some(hidden)])?;
        expect_input(&file, POSITIONS, ONNX_INT64, &[Some(1), None])?;
        let kv = [
            Some(1),
            Some(shape.kv_heads as i64),
            None,
            Some(shape.head_dim as i64),
        ];
        let mut facts = vec![
            (
                EMBEDS.to_string(),
                f32::datum_type(),
                vec![Dim::Fixed(1), seq, Dim::Fixed(shape.hidden)],
            ),
            (
                POSITIONS.to_string(),
                i64::datum_type(),
                vec![Dim::Fixed(1), seq],
            ),
        ];
        let mut outputs = vec![LOGITS.to_string()];
        let past = Dim::MaybeEmpty("past");
        for layer in 0..shape.layers {
            for part in ["key", "value"] {
                let name = format!("past_key_values.{layer}.{part}");
                expect_input(&file, &name, ONNX_FLOAT, &kv)?;
                let dims = vec![
                    Dim::Fixed(1),
                    Dim::Fixed(shape.kv_heads),
                    past,
                    Dim::Fixed(shape.head_dim),
                ];
                facts.push((name, f32::datum_type(), dims));
                outputs.push(format!("present.{layer}.{part}"));
            }
        }
        let expected = 2 + 2 * shape.layers;
        if file.inputs.len() != expected {
            let names: Vec<&str> = file.inputs.iter().map(|p| p.name.as_str()).collect();
            return Err(file.interface_error(format!(
                "the decoder has {} inputs, the manifest's {} layers make {expected} \
                 (inputs_embeds, position_ids, a key and a value per layer): {}",
                file.inputs.len(),
                shape.layers,
                names.join(", ")
            )));
        }
        for name in &outputs {
            file.require_output(name)?;
        }
        let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        // Where each graph input comes from: the facts are embeddings, positions, then the
        // cache in layer order, which is the order of the presents.
        let order = file
            .inputs
            .iter()
            .map(|p| facts.iter().position(|(name, _, _)| *name == p.name))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                file.interface_error("the decoder has inputs Glimpse does not feed".into())
            })?;
        let decoder_graph = file
            .build("decoder", &facts, &outputs, false)?
            .with_pool(pool.clone());
        Ok(Decoder {
            embed: embed_graph,
            spin: decoder_graph.has_op::<crate::q4_matmul::Q4MatMul>(),
            decoder: decoder_graph,
            order,
            shape,
        })
    }

    /// Width of a token embedding.
    pub fn hidden(&self) -> usize {
        self.shape.hidden
    }

    /// An empty cache.
    pub fn cache(&self) -> Cache {
        let CacheShape {
            layers,
            kv_heads,
            head_dim,
            ..
        } = self.shape;
        let empty = Tensor::zero::<f32>(&[1, kv_heads, 0, head_dim])
            .expect("an empty tensor")
            .into_tvalue();
        Cache {
            values: (0..2 * layers).map(|_| empty.clone()).collect(),
            len: 0,
        }
    }

    /// The embeddings of `ids`: `[1, ids.len(), hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let ids = tensor1(&ids)
            .into_shape(&[1, ids.len()])
            .map_err(|e| Error::InvalidArgument(format!("token ids: {e:#}")))?;
        self.embed.run(tvec![ids])
    }

    /// Runs `embeds` (`[1, n, hidden]`) after what `cache` holds, appends them to it, and
    /// returns the logits of the last of them.
    pub fn forward(&self, cache: &mut Cache, embeds: Tensor) -> Result<Vec<f32>> {
        let n = match embeds.shape() {
            [1, n, h] if *h == self.shape.hidden && *n > 0 => *n,
            s => {
                return Err(Error::InvalidArgument(format!(
                    "embeddings of shape {s:?}, the decoder takes [1, n > 0, {}]",
                    self.shape.hidden
                )))
            }
        };
        let inputs = self.inputs(cache, embeds)?;
        // One token's step is ~170 small 4-bit products back to back: the workers spin
        // between them.
        let mut outputs = match n == 1 && self.spin {
            true => self.decoder.run_values_spinning(inputs)?,
            false => self.decoder.run_values(inputs)?,
        };
        let logits = outputs.remove(0);
        cache.values = outputs;
        cache.len += n;
        let view = logits
            .to_plain_array_view::<f32>()
            .map_err(|e| self.bad_output(format!("logits are not f32: {e:#}")))?;
        match view.shape() {
            [1, rows, _] if *rows == n => Ok(view
                .index_axis(tract_ndarray::Axis(1), n - 1)
                .iter()
                .copied()
                .collect()),
            s => Err(self.bad_output(format!("logits of shape {s:?} for {n} tokens"))),
        }
    }

    /// Times every node of one decoder run of `embeds` after `cache` (the cache is left
    /// as it was): tract's per-node profile.
    pub fn profile(&self, cache: &Cache, embeds: Tensor) -> Result<Vec<crate::NodeTime>> {
        let spinning = self.spin && embeds.shape().get(1) == Some(&1);
        let inputs = self.inputs(cache, embeds)?;
        self.decoder.profile(
            inputs.into_iter().map(|v| v.into_tensor()).collect(),
            spinning,
        )
    }

    /// The decoder's inputs, in its order, to run `embeds` after what `cache` holds.
    fn inputs(&self, cache: &Cache, embeds: Tensor) -> Result<TVec<TValue>> {
        let n = embeds.shape().get(1).copied().unwrap_or(0);
        let positions: Vec<i64> = (cache.len..cache.len + n).map(|p| p as i64).collect();
        let positions = tensor1(&positions)
            .into_shape(&[1, n])
            .map_err(|e| Error::InvalidArgument(format!("positions: {e:#}")))?;
        let fed: TVec<TValue> = [embeds.into_tvalue(), positions.into_tvalue()]
            .into_iter()
            .chain(cache.values.iter().cloned())
            .collect();
        Ok(self.order.iter().map(|&i| fed[i].clone()).collect())
    }

    fn bad_output(&self, reason: String) -> Error {
        Error::Inference {
            tower: "decoder",
            reason,
        }
    }
}

/// Checks the graph declares input `name` with element type `elem` and dimensions matching
/// `dims` (`None`: any).
fn expect_input(file: &GraphFile, name: &str, elem: i32, dims: &[Option<i64>]) -> Result<()> {
    let port = file.input(name)?;
    let fits = port.elem_type == elem
        && port.dims.len() == dims.len()
        && port
            .dims
            .iter()
            .zip(dims)
            .all(|(have, want)| want.is_none() || have.is_none() || have == want);
    if fits {
        return Ok(());
    }
    Err(file.interface_error(format!(
        "input `{name}` is {:?} of element type {}, expected {dims:?} of element type {elem} \
         (None: any size)",
        port.dims, port.elem_type
    )))
}
