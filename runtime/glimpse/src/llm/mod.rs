//! A causal language model bundle (`llm.json`, tokenizer, [`crate::llm::decoder`] graphs) and its
//! generation loop: prompt → prefill → decode token by token with a KV cache, streaming text.

pub(crate) mod decoder;
mod sampling;

pub use sampling::{argmax, Sampling};

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::bundle::{bundle_graph, LoadOptions};
use crate::error::{Error, Result};
use crate::llm::decoder::{CacheShape, Decoder};
use sampling::Sampler;

/// The manifest of a language model bundle.
pub const LLM_MANIFEST: &str = "llm.json";
const DECODER: &str = "decoder_model_merged.onnx";
const DECODER_Q4: &str = "decoder_model_merged_q4.onnx";
/// Where the user's text goes in a manifest's chat templates (`chat_template` and
/// `image_chat_template`).
pub(crate) const PROMPT_SLOT: &str = "{prompt}";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    r#type: String,
    chat_template: String,
    /// The template for a turn with an image ([`crate::vlm`]): `{prompt}` and `<image>`.
    image_chat_template: Option<String>,
    stop_tokens: Vec<u32>,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: usize,
    vocab: usize,
    context: usize,
}

/// A causal language model: tokenizer, chat template and decoder. `Send + Sync`; each
/// generation has its own cache.
#[derive(Debug, Clone)]
pub struct LanguageModel {
    decoder: Decoder,
    /// Reads the chat template's special tokens (`<|im_start|>`...).
    template_tokenizer: Tokenizer,
    /// Reads user text: special-token strings in it stay plain text.
    text_tokenizer: Tokenizer,
    /// The chat template around [`PROMPT_SLOT`].
    before: String,
    after: String,
    stop_tokens: Vec<u32>,
    vocab: usize,
    context: usize,
    max_text_bytes: usize,
    #[cfg_attr(not(feature = "vlm"), allow(dead_code, reason = "read by vlm/"))]
    pub(crate) image_chat_template: Option<String>,
}

/// Limits and sampling of one generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: Sampling,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: Sampling::GREEDY,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced one of its stop tokens.
    StopToken,
    /// [`GenerateOptions::max_tokens`] were generated.
    MaxTokens,
    /// The model's context is full.
    ContextFull,
    /// The text callback asked to stop.
    Cancelled,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (special tokens left out).
    pub text: String,
    /// The generated token ids, the stop token excluded.
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop: StopReason,
    /// Time to encode the image (vision encoder and projector; 0 without an image).
    pub image_seconds: f64,
    /// Time to run the prompt through the decoder.
    pub prefill_seconds: f64,
    /// Time of the decoder steps after the prompt.
    pub decode_seconds: f64,
    /// Decoder steps after the prompt (each adds one token).
    pub decode_steps: usize,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds
    }

    /// Generated tokens per second after the first.
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.decode_steps as f64 / self.decode_seconds
    }
}

impl LanguageModel {
    /// Loads the bundle in `dir` with default options.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, LoadOptions::default())
    }

    /// Loads the bundle in `dir`. Of `opts`, `threads`, `max_model_bytes`, `max_text_bytes`,
    /// `kv_cache`, `precision` (f16: the key/value cache kept in the graph is stored in f16)
    /// and `quantized` apply: `quantized` picks the decoder's 4-bit variant
    /// (`decoder_model_merged_q4.onnx`, transformers.js's name) where the bundle has one; a
    /// bundle with only that one always uses it.
    pub fn load_with(dir: impl AsRef<Path>, opts: LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(LLM_MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::bundle(&path, format!("not a language model manifest: {e}")))?;
        if m.r#type != "llm" {
            return Err(Error::bundle(
                &path,
                format!("type is `{}`, not `llm`", m.r#type),
            ));
        }
        let mut parts = m.chat_template.split(PROMPT_SLOT);
        let (before, after) = match (parts.next(), parts.next(), parts.next()) {
            (Some(b), Some(a), None) => (b.to_string(), a.to_string()),
            _ => {
                return Err(Error::bundle(
                    &path,
                    format!("chat_template must hold `{PROMPT_SLOT}` exactly once"),
                ))
            }
        };
        if let Some(bad) = m.stop_tokens.iter().find(|&&t| t as usize >= m.vocab) {
            return Err(Error::bundle(
                &path,
                format!("stop token {bad} is outside the vocabulary of {}", m.vocab),
            ));
        }
        if m.layers == 0 || m.kv_heads == 0 || m.head_dim == 0 || m.hidden == 0 || m.context == 0 {
            return Err(Error::bundle(
                &path,
                "layers, kv_heads, head_dim, hidden and context must be > 0",
            ));
        }

        let tok_path = dir.join("tokenizer.json");
        let template_tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| Error::Tokenizer {
            path: tok_path.clone(),
            reason: e.to_string(),
        })?;
        let mut text_tokenizer = template_tokenizer.clone();
        text_tokenizer.set_encode_special_tokens(true);

        let graph = |name: &str| bundle_graph(dir, name, opts.max_model_bytes);
        let shape = CacheShape {
            layers: m.layers,
            kv_heads: m.kv_heads,
            head_dim: m.head_dim,
            hidden: m.hidden,
            context: m.context,
        };
        let pool = glimpse_graph::Pool::new(opts.threads);
        let has = |name: &str| dir.join("onnx").join(name).is_file();
        // A bundle with only the 4-bit decoder (too large for float32 in one ONNX file) uses it.
        let decoder_file = match has(DECODER_Q4) && (opts.quantized || !has(DECODER)) {
            true => DECODER_Q4,
            false => DECODER,
        };
        let decoder = Decoder::load(
            &graph("embed_tokens.onnx")?,
            &graph(decoder_file)?,
            shape,
            (opts.kv_cache, opts.precision.is_f16_here()),
            &pool,
        )?;
        Ok(LanguageModel {
            decoder,
            template_tokenizer,
            text_tokenizer,
            before,
            after,
            stop_tokens: m.stop_tokens,
            vocab: m.vocab,
            context: m.context,
            max_text_bytes: opts.max_text_bytes,
            image_chat_template: m.image_chat_template,
        })
    }

    /// The decoder graphs, for running token embeddings directly.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Tokens the model's context holds (prompt and generated text together).
    pub fn context(&self) -> usize {
        self.context
    }

    /// The token ids of `prompt` inside the chat template. Special-token strings in `prompt`
    /// (`<|im_end|>`...) are read as plain text, so user text cannot end its own turn.
    pub fn chat_tokens(&self, prompt: &str) -> Result<Vec<u32>> {
        let mut ids = self.template_tokens(&self.before)?;
        ids.extend(self.text_tokens(prompt)?);
        ids.extend(self.template_tokens(&self.after)?);
        Ok(ids)
    }

    /// Token ids of a piece of chat template: special-token strings are special tokens.
    pub(crate) fn template_tokens(&self, text: &str) -> Result<Vec<u32>> {
        encode(&self.template_tokenizer, text)
    }

    /// Token ids of user text, checked (not empty, within `max_text_bytes`); special-token
    /// strings in it stay plain text.
    pub(crate) fn text_tokens(&self, prompt: &str) -> Result<Vec<u32>> {
        if prompt.trim().is_empty() {
            return Err(Error::Text("the prompt is empty".into()));
        }
        if prompt.len() > self.max_text_bytes {
            return Err(Error::Text(format!(
                "the prompt is {} bytes, over the {} byte limit (LoadOptions::max_text_bytes)",
                prompt.len(),
                self.max_text_bytes
            )));
        }
        encode(&self.text_tokenizer, prompt)
    }

    /// Answers `prompt` (put in the chat template), calling `on_text` with each new piece of
    /// text as it is generated; `on_text` returning `Break` stops the generation.
    pub fn generate(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let ids = self.chat_tokens(prompt)?;
        self.generate_from(&ids, opts, on_text)
    }

    /// Continues the token ids `prompt` as they are (no chat template).
    pub fn generate_from(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        self.check_tokens(prompt)?;
        self.check_prompt_len(prompt.len())?;
        let embeds = self.decoder.embed(prompt)?;
        self.generate_embedded(embeds, opts, on_text)
    }

    /// Checks ids are in the vocabulary (and there are some).
    pub(crate) fn check_tokens(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::Text("the prompt holds no tokens".into()));
        }
        match ids.iter().find(|&&t| t as usize >= self.vocab) {
            Some(bad) => Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab
            ))),
            None => Ok(()),
        }
    }

    pub(crate) fn check_prompt_len(&self, n: usize) -> Result<()> {
        match n < self.context {
            true => Ok(()),
            false => Err(Error::Text(format!(
                "the prompt is {n} tokens, the model's context holds {} (prompt and answer)",
                self.context
            ))),
        }
    }

    /// Generates after the prompt embeddings `prompt` (`[1, n, hidden]`).
    pub(crate) fn generate_embedded(
        &self,
        prompt: tract_onnx::prelude::Tensor,
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        opts.sampling.check().map_err(Error::InvalidArgument)?;
        let prompt_tokens = prompt.shape().get(1).copied().unwrap_or(0);
        self.check_prompt_len(prompt_tokens)?;
        let mut sampler = Sampler::new(opts.sampling);
        let mut cache = self.decoder.cache();
        let started = Instant::now();
        let mut logits = self.decoder.forward(&mut cache, prompt)?;
        let prefill_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut out = Generation {
            text: String::new(),
            tokens: Vec::new(),
            prompt_tokens,
            stop: StopReason::MaxTokens,
            image_seconds: 0.0,
            prefill_seconds,
            decode_seconds: 0.0,
            decode_steps: 0,
        };
        let mut stream = TextStream::default();
        while out.tokens.len() < opts.max_tokens {
            let token = sampler.pick(&logits);
            if self.stop_tokens.contains(&token) {
                out.stop = StopReason::StopToken;
                break;
            }
            out.tokens.push(token);
            let piece = stream.push(&self.template_tokenizer, &out.tokens)?;
            if !piece.is_empty() && on_text(piece).is_break() {
                out.stop = StopReason::Cancelled;
                break;
            }
            if out.tokens.len() == opts.max_tokens {
                break;
            }
            if cache.len() >= self.context {
                out.stop = StopReason::ContextFull;
                break;
            }
            logits = self
                .decoder
                .forward(&mut cache, self.decoder.embed(&[token])?)?;
            out.decode_steps += 1;
        }
        out.decode_seconds = started.elapsed().as_secs_f64();
        out.text = decode(&self.template_tokenizer, &out.tokens)?;
        Ok(out)
    }
}

/// Decoded text of the tokens so far, handed out in pieces that end on whole characters
/// (a byte-level token may hold half of one).
#[derive(Default)]
struct TextStream {
    text: String,
}

impl TextStream {
    fn push(&mut self, tokenizer: &Tokenizer, tokens: &[u32]) -> Result<&str> {
        let full = decode(tokenizer, tokens)?;
        if full.ends_with('\u{FFFD}') || !full.starts_with(&self.text) {
            return Ok("");
        }
        let start = self.text.len();
        self.text = full;
        Ok(&self.text[start..])
    }
}

fn decode(tokenizer: &Tokenizer, tokens: &[u32]) -> Result<String> {
    tokenizer
        .decode(tokens, true)
        .map_err(|e| Error::Text(format!("decoding the generated tokens: {e}")))
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tokenizer
        .encode(text, false)
        .map_err(|e| Error::Text(format!("tokenising the prompt: {e}")))?;
    Ok(enc.get_ids().to_vec())
}
