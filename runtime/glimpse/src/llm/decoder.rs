//! The language model's graphs: token embeddings, and the decoder that turns embeddings into
//! next-token logits while growing a key/value cache.
//!
//! The layout is transformers.js's: `embed_tokens.onnx` (`input_ids` → `inputs_embeds`) and
//! `decoder_model_merged.onnx` (`inputs_embeds`, `position_ids`, `past_key_values.{i}.key` /
//! `.value` → `logits`, `present.{i}.key` / `.value`). Where every layer's attention is
//! Glimpse's own (`glimpse-graph`'s `CachedAttention`), the cache moves into the graph
//! ([`glimpse_graph::keep_in_graph`]):
//! each step appends to it in place. Otherwise (or with [`KvCache::Passed`]) it is passed in
//! and out of each run as the graph declares: the presents of one step are the pasts of the
//! next, each a copy of the whole cache.

use tract_onnx::prelude::*;

use crate::bundle::KvCache;
use crate::error::{Error, Result};
use glimpse_graph::GraphSpec;
use glimpse_graph::Pool;
use glimpse_graph::{keep_in_graph, last_row_of_first_output, layer_bytes, truncate_layer};
use glimpse_graph::{Dim, Graph, GraphFile, Target, ONNX_FLOAT, ONNX_INT64};

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
    /// Most positions a sequence holds (prompt and answer).
    pub context: usize,
}

/// The embedding table and decoder graphs of a causal language model.
#[derive(Debug, Clone)]
pub struct Decoder {
    embed: Graph,
    decoder: Graph,
    /// For each decoder input, its index in (embeddings, positions, cache values...).
    order: Vec<usize>,
    shape: CacheShape,
    /// The cache lives in the graph's state ([`KvCache::InGraph`] took).
    in_graph: bool,
}

/// The key/value cache of one sequence: what the decoder has seen so far.
#[derive(Clone)]
pub struct Cache {
    /// `past_key_values.{i}.key`, `.value` for every layer, in layer order (passed caches).
    values: TVec<TValue>,
    /// The decoder's run state, whose attention ops hold the cache (in-graph caches; made by
    /// the first step).
    state: Option<TypedSimpleState>,
    /// Tokens the cache holds.
    len: usize,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.len)
            .field("bytes", &self.bytes())
            .field("in_graph", &self.state.is_some())
            .finish()
    }
}

impl Cache {
    /// Tokens (positions) the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the cache's tensors hold (in the graph: what its layers have allocated, at most
    /// the context's worth).
    pub fn bytes(&self) -> usize {
        let passed: usize = self
            .values
            .iter()
            .map(|t| t.len() * t.datum_type().size_of())
            .sum();
        let states = self.state.iter().flat_map(|s| s.op_states.iter().flatten());
        passed + states.map(|s| layer_bytes(&**s)).sum::<usize>()
    }

    /// Forgets what a failed step left in an in-graph cache: the rows it appended to its
    /// layers, and the sizes its run had resolved (the next run's may differ).
    fn roll_back(&mut self) {
        let Some(state) = &mut self.state else { return };
        // Resets what tract keeps of a run (values, symbols), never the ops' states.
        let _ = state.reset_turn();
        for layer in state.op_states.iter_mut().flatten() {
            truncate_layer(&mut **layer, self.len);
        }
    }
}

impl Decoder {
    /// Loads and checks both graphs against `shape`; the cache lives where `kv_cache` says,
    /// stored in f16 when `half` (in the graph only).
    pub(crate) fn load(
        embed: &GraphSpec,
        decoder: &GraphSpec,
        shape: CacheShape,
        (kv_cache, half): (KvCache, bool),
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
        let unfed: Error =
            file.interface_error("the decoder has inputs Glimpse does not feed".into());
        // f32 math (the cache alone may be f16); its products take one row a step, where
        // tract's own products were measured faster than Glimpse's packed f32 one.
        let target = Target {
            half: false,
            one_row_products: true,
        };
        let decoder_graph = file
            .build_with("decoder", &facts, &outputs, target, |model| {
                // `forward` reads the last token's logits alone.
                let sliced = last_row_of_first_output(model)?;
                Ok(sliced
                    + match kv_cache {
                        KvCache::InGraph => keep_in_graph(model, shape.context, half)?,
                        KvCache::Passed => 0,
                    })
            })?
            .with_pool(pool.clone());
        let in_graph = decoder_graph.holds_cache();
        // Where each graph input comes from: the facts are embeddings, positions, then the
        // cache in layer order, which is the order of the presents.
        let fed = if in_graph { 2 } else { facts.len() };
        let order = decoder_graph
            .input_names()
            .iter()
            .map(|name| facts[..fed].iter().position(|(n, _, _)| n == name))
            .collect::<Option<Vec<_>>>()
            .ok_or(unfed)?;
        Ok(Decoder {
            embed: embed_graph,
            decoder: decoder_graph,
            order,
            shape,
            in_graph,
        })
    }

    /// Width of a token embedding.
    pub fn hidden(&self) -> usize {
        self.shape.hidden
    }

    /// Where the cache lives: [`KvCache::InGraph`] when that could be done.
    pub fn kv_cache(&self) -> KvCache {
        match self.in_graph {
            true => KvCache::InGraph,
            false => KvCache::Passed,
        }
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
        let passed = if self.in_graph { 0 } else { 2 * layers };
        Cache {
            values: (0..passed).map(|_| empty.clone()).collect(),
            state: None,
            len: 0,
        }
    }

    /// The embeddings of `ids`: `[1, ids.len(), hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let ids = tensor1(&ids)
            .into_shape(&[1, ids.len()])
            .map_err(|e| Error::InvalidArgument(format!("token ids: {e:#}")))?;
        Ok(self.embed.run(tvec![ids])?)
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
        let mut outputs = if self.in_graph {
            let state = match &mut cache.state {
                Some(state) => state,
                None => cache.state.insert(self.decoder.state()?),
            };
            let run = self.decoder.run_in(state, inputs);
            run.inspect_err(|_| cache.roll_back())?
        } else {
            let mut outputs = self.decoder.run_values(inputs)?;
            let logits = outputs.remove(0);
            cache.values = outputs;
            tvec![logits]
        };
        let logits = outputs.remove(0);
        cache.len += n;
        let view = logits
            .to_plain_array_view::<f32>()
            .map_err(|e| self.bad_output(format!("logits are not f32: {e:#}")))?;
        // Every token's row, or the last one's alone (`last_row_of_first_output`).
        match view.shape() {
            [1, rows, _] if *rows == n || *rows == 1 => Ok(view
                .index_axis(tract_ndarray::Axis(1), rows - 1)
                .iter()
                .copied()
                .collect()),
            s => Err(self.bad_output(format!("logits of shape {s:?} for {n} tokens"))),
        }
    }

    /// Times every node of one decoder run of `embeds` after `cache` (the cache is left
    /// as it was): tract's per-node profile.
    pub fn profile(&self, cache: &Cache, embeds: Tensor) -> Result<Vec<crate::NodeTime>> {
        let inputs = self.inputs(cache, embeds)?;
        let state = match &cache.state {
            Some(state) => state.clone(),
            None => self.decoder.state()?,
        };
        let inputs = inputs.into_iter().map(|v| v.into_tensor()).collect();
        Ok(self.decoder.profile_in(state, inputs)?)
    }

    /// The decoder's inputs, in its order, to run `embeds` after what `cache` holds.
    fn inputs(&self, cache: &Cache, embeds: Tensor) -> Result<TVec<TValue>> {
        let ours = match self.in_graph {
            true => {
                cache.values.is_empty() && cache.state.as_ref().is_none_or(|s| self.decoder.made(s))
            }
            false => cache.state.is_none() && cache.values.len() == 2 * self.shape.layers,
        };
        if !ours {
            return Err(Error::InvalidArgument(
                "this cache was made by another decoder (Decoder::cache makes one)".into(),
            ));
        }
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
