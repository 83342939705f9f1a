//! Finding a CLIP bundle's files: the HF optimum / transformers.js layout, or a directory with
//! Glimpse's own small manifest (`glimpse.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::tokenizer::TokenizerSource;
use crate::bundle::{
    data_sums, read_checksums, GraphSpec, LoadOptions, CHECKSUMS, DEFAULT_MAX_MODEL_BYTES,
};
use crate::error::{Error, Result};
use crate::image::PreprocessConfig;

/// The manifest file name of Glimpse's own layout.
pub const MANIFEST: &str = "glimpse.json";
/// OpenAI's CLIP checkpoints all train their logit scale to its clamp, 100; HF tower
/// exports do not carry it, so bundles without a manifest use this.
pub const DEFAULT_LOGIT_SCALE: f32 = 100.0;
const DEFAULT_CONTEXT: usize = 77;
/// transformers.js names a graph's int8 version `<graph>_quantized.onnx`.
const QUANTIZED_SUFFIX: &str = "_quantized";

/// Everything needed to build a CLIP model from a directory.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    pub name: String,
    pub vision: Option<GraphSpec>,
    pub text: Option<GraphSpec>,
    pub tokenizer: Option<TokenizerSource>,
    pub preprocess: PreprocessConfig,
    pub context_length: usize,
    pub logit_scale: f32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: Option<String>,
    vision: Option<ManifestGraph>,
    text: Option<ManifestGraph>,
    tokenizer: Option<String>,
    context_length: Option<usize>,
    image_size: Option<u32>,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    logit_scale: Option<f32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestGraph {
    graph: String,
    input: String,
    output: String,
    sha256: Option<String>,
}

impl BundleSpec {
    /// Reads the bundle in `dir`, picking the files `opts` asks for.
    pub fn open(dir: &Path, opts: LoadOptions) -> Result<Self> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(Error::bundle(
                dir,
                "a model bundle is a directory, this is a file",
            ));
        }
        let manifest = dir.join(MANIFEST);
        let mut spec = if manifest.exists() {
            Self::from_manifest(dir, &manifest, opts)?
        } else {
            Self::from_hf_layout(dir, opts)?
        };
        let sums = read_checksums(dir)?;
        for g in [&mut spec.vision, &mut spec.text].into_iter().flatten() {
            g.max_bytes = opts.max_model_bytes;
            let listed = g
                .path
                .strip_prefix(dir)
                .ok()
                .and_then(|rel| sums.get(&rel.to_string_lossy().replace('\\', "/")));
            match (&g.sha256, listed) {
                (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
                    return Err(Error::bundle(
                        &g.path,
                        format!("{MANIFEST} and {CHECKSUMS} list different SHA-256s"),
                    ))
                }
                (None, Some(b)) => g.sha256 = Some(b.clone()),
                _ => {}
            }
            g.data_sha256 = data_sums(&sums, dir, &g.path);
        }
        if opts.vision && spec.vision.is_none() {
            return Err(Error::bundle(dir, "no image tower: expected onnx/vision_model.onnx or a `vision` entry in glimpse.json"));
        }
        if opts.text && spec.text.is_none() {
            return Err(Error::bundle(
                dir,
                "no text tower: expected onnx/text_model.onnx or a `text` entry in glimpse.json",
            ));
        }
        if opts.text && spec.tokenizer.is_none() {
            return Err(Error::bundle(
                dir,
                "no tokenizer: expected tokenizer.json, vocab.json + merges.txt or bpe_simple_vocab_16e6.txt.gz",
            ));
        }
        Ok(spec)
    }

    /// An id for the embedding space this bundle produces: a SHA-256 over the
    /// preprocessing and, per graph, its size and 32 evenly spaced 4 KiB samples (any
    /// retraining or re-quantisation changes them; reading 256 KiB keeps it cheap). Not an
    /// integrity check.
    pub fn model_id(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        use std::io::{Read, Seek, SeekFrom};
        const SAMPLES: u64 = 32;
        const SAMPLE: u64 = 4096;
        let mut h = Sha256::new();
        h.update(b"glimpse-model-id-v1");
        h.update(format!("{:?}", self.preprocess).as_bytes());
        for g in [&self.vision, &self.text].into_iter().flatten() {
            let mut f = std::fs::File::open(&g.path).map_err(|e| Error::io(&g.path, e))?;
            let len = f.metadata().map_err(|e| Error::io(&g.path, e))?.len();
            h.update(len.to_le_bytes());
            let mut buf = vec![0; SAMPLE.min(len) as usize];
            for i in 0..SAMPLES {
                let at = i * len.saturating_sub(SAMPLE) / (SAMPLES - 1);
                f.seek(SeekFrom::Start(at))
                    .and_then(|_| f.read_exact(&mut buf))
                    .map_err(|e| Error::io(&g.path, e))?;
                h.update(&buf);
            }
        }
        Ok(h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    fn from_manifest(dir: &Path, path: &Path, opts: LoadOptions) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::bundle(path, format!("invalid manifest: {e}")))?;
        let graph = |g: Option<ManifestGraph>, wanted: bool| -> Result<Option<GraphSpec>> {
            match g {
                Some(g) if wanted => {
                    let path = existing(dir, &g.graph)?;
                    let quantized =
                        path.with_file_name(format!("{}{QUANTIZED_SUFFIX}.onnx", stem(&path)));
                    let path = if opts.quantized && quantized.is_file() {
                        quantized
                    } else {
                        path
                    };
                    // A listed hash is of the named graph, not of its int8 sibling.
                    let sha256 = if path.ends_with(&g.graph) {
                        g.sha256
                    } else {
                        None
                    };
                    Ok(Some(GraphSpec {
                        path,
                        input: g.input,
                        output: g.output,
                        sha256,
                        data_sha256: BTreeMap::new(),
                        max_bytes: DEFAULT_MAX_MODEL_BYTES,
                    }))
                }
                _ => Ok(None),
            }
        };
        let image_size = m.image_size.unwrap_or(224);
        let mut preprocess = PreprocessConfig::clip(image_size);
        if let Some(mean) = m.mean {
            preprocess.mean = mean;
        }
        if let Some(std) = m.std {
            preprocess.std = std;
        }
        preprocess.validate().map_err(|r| Error::bundle(path, r))?;
        let tokenizer = match (&m.tokenizer, opts.text) {
            (Some(t), true) => Some(TokenizerSource::from_path(existing(dir, t)?)),
            (None, true) => find_tokenizer(dir),
            _ => None,
        };
        Ok(BundleSpec {
            name: m.name.unwrap_or_else(|| dir_name(dir)),
            vision: graph(m.vision, opts.vision)?,
            text: graph(m.text, opts.text)?,
            tokenizer,
            preprocess,
            context_length: m.context_length.unwrap_or(DEFAULT_CONTEXT),
            logit_scale: m.logit_scale.unwrap_or(DEFAULT_LOGIT_SCALE),
        })
    }

    fn from_hf_layout(dir: &Path, opts: LoadOptions) -> Result<Self> {
        let graph = |stem: &str, input: &str, output: &str, wanted: bool| {
            if !wanted {
                return None;
            }
            let names = if opts.quantized {
                vec![
                    format!("{stem}{QUANTIZED_SUFFIX}.onnx"),
                    format!("{stem}.onnx"),
                ]
            } else {
                vec![format!("{stem}.onnx")]
            };
            names
                .iter()
                .flat_map(|n| [dir.join("onnx").join(n), dir.join(n)])
                .find(|p| p.is_file())
                .map(|path| GraphSpec {
                    path,
                    input: input.into(),
                    output: output.into(),
                    sha256: None,
                    data_sha256: BTreeMap::new(),
                    max_bytes: DEFAULT_MAX_MODEL_BYTES,
                })
        };
        let pre_path = dir.join("preprocessor_config.json");
        let preprocess = if pre_path.is_file() {
            let text = std::fs::read_to_string(&pre_path).map_err(|e| Error::io(&pre_path, e))?;
            PreprocessConfig::from_hf_json(&text).map_err(|r| Error::bundle(&pre_path, r))?
        } else if opts.vision {
            return Err(Error::bundle(
                dir,
                "missing preprocessor_config.json (image size, mean and std)",
            ));
        } else {
            PreprocessConfig::clip(224)
        };
        Ok(BundleSpec {
            name: dir_name(dir),
            vision: graph("vision_model", "pixel_values", "image_embeds", opts.vision),
            text: graph("text_model", "input_ids", "text_embeds", opts.text),
            tokenizer: if opts.text { find_tokenizer(dir) } else { None },
            preprocess,
            context_length: hf_context_length(dir)?,
            logit_scale: DEFAULT_LOGIT_SCALE,
        })
    }
}

/// `text_config.max_position_embeddings` from config.json, or CLIP's 77.
fn hf_context_length(dir: &Path) -> Result<usize> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(DEFAULT_CONTEXT);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::bundle(&path, format!("invalid JSON: {e}")))?;
    Ok(v.pointer("/text_config/max_position_embeddings")
        .and_then(|n| n.as_u64())
        .map_or(DEFAULT_CONTEXT, |n| n as usize))
}

fn find_tokenizer(dir: &Path) -> Option<TokenizerSource> {
    let json = dir.join("tokenizer.json");
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    let gz = dir.join("bpe_simple_vocab_16e6.txt.gz");
    if json.is_file() {
        Some(TokenizerSource::Json(json))
    } else if vocab.is_file() && merges.is_file() {
        Some(TokenizerSource::VocabMerges { vocab, merges })
    } else if gz.is_file() {
        Some(TokenizerSource::ClipBpe(gz))
    } else {
        None
    }
}

fn existing(dir: &Path, rel: &str) -> Result<PathBuf> {
    let p = dir.join(rel);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::bundle(
            &p,
            format!("file named in {MANIFEST} does not exist"),
        ))
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
}
