//! What every bundle shares: load options, graph files with their checksums (`SHA256SUMS`),
//! the int8 siblings transformers.js names `<graph>_quantized.onnx`. Each model family reads
//! its own manifest ([`crate::clip`]'s `glimpse.json` or HF layout, `llm.json`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub use glimpse_graph::GraphSpec;

use crate::error::{Error, Result};

/// Optional checksums of a bundle's files, in `sha256sum` output format.
pub const CHECKSUMS: &str = "SHA256SUMS";
/// Default [`LoadOptions::max_model_bytes`]: 8 GiB.
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 8 << 30;
/// Default [`LoadOptions::max_text_bytes`]: 16 KiB, far past CLIP's 77 tokens.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 16 << 10;

/// Float precision of a model's math (tract's f32→f16 pass for f16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 throughout: matches the reference outputs.
    #[default]
    F32,
    /// f16 where the CPU has f16 arithmetic ([`glimpse_kernels::cpu::CpuFeatures::fp16`]; on such
    /// ARM cores about twice as fast), f32 elsewhere. Embeddings stay within cosine 0.9999
    /// of f32 (BENCHMARKS.md).
    Auto,
    /// f16 everywhere; on CPUs without f16 arithmetic tract emulates it, slower than f32.
    F16,
}

impl Precision {
    /// Whether this runs in f16 on this CPU.
    pub fn is_f16_here(self) -> bool {
        match self {
            Precision::F32 => false,
            Precision::Auto => glimpse_kernels::cpu::fp16(),
            Precision::F16 => true,
        }
    }
}

/// Which files of a bundle to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Load the image tower.
    pub vision: bool,
    /// Load the text tower (and the tokenizer).
    pub text: bool,
    /// Prefer the int8 `<graph>_quantized.onnx` beside each graph, where there is one.
    pub quantized: bool,
    /// Float precision of the graphs' math.
    pub precision: Precision,
    /// Threads a call uses: an image batch is split over them (one graph run per thread),
    /// a single image or text query splits its matrix products over them. Default: the
    /// performance cores ([`glimpse_kernels::cpu::default_threads`]).
    pub threads: usize,
    /// Largest graph file accepted, checked before reading it.
    pub max_model_bytes: u64,
    /// Longest text accepted (UTF-8 bytes); longer texts are an error, not tokenised.
    pub max_text_bytes: usize,
    /// Where a language model keeps its key/value cache between steps.
    pub kv_cache: KvCache,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            vision: true,
            text: true,
            quantized: false,
            precision: Precision::F32,
            threads: glimpse_kernels::cpu::default_threads(),
            max_model_bytes: DEFAULT_MAX_MODEL_BYTES,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            kv_cache: Default::default(),
        }
    }
}

impl LoadOptions {
    /// Only the image tower: enough to embed and index photos.
    pub fn vision_only() -> Self {
        LoadOptions {
            text: false,
            ..Self::default()
        }
    }

    /// Only the text tower: enough to embed search queries.
    pub fn text_only() -> Self {
        LoadOptions {
            vision: false,
            ..Self::default()
        }
    }
}

/// Where a decoder's key/value cache lives between steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvCache {
    /// In the graph's attention ops, each step appending in place, when every layer's attention
    /// is one Glimpse runs (`GroupQueryAttention`); passed otherwise. Its room grows with the
    /// sequence, never past the context; [`Precision::F16`] (or `Auto` on CPUs with f16
    /// arithmetic) stores it in f16.
    #[default]
    InGraph,
    /// Passed in and out of every step as the graph's `past_key_values` / `present` tensors.
    Passed,
}

/// The graph `onnx/<name>` of the bundle in `dir`, with the SHA-256s its `SHA256SUMS` lists
/// for it and its external data, if any (for graphs whose inputs and outputs their loader
/// checks itself).
#[cfg(feature = "llm")]
pub(crate) fn bundle_graph(dir: &Path, name: &str, max_bytes: u64) -> Result<GraphSpec> {
    let sums = read_checksums(dir)?;
    let path = dir.join("onnx").join(name);
    Ok(GraphSpec {
        input: String::new(),
        output: String::new(),
        sha256: sums.get(&format!("onnx/{name}")).cloned(),
        data_sha256: data_sums(&sums, dir, &path),
        max_bytes,
        path,
    })
}

/// The checksums listed for files in `graph`'s directory other than the graph itself, by
/// their path relative to that directory: those of its external data.
#[cfg(any(feature = "clip", feature = "llm"))]
pub(crate) fn data_sums(
    sums: &HashMap<String, String>,
    dir: &Path,
    graph: &Path,
) -> BTreeMap<String, String> {
    let rel = |p: &Path| {
        p.strip_prefix(dir)
            .ok()
            .map(|r| r.to_string_lossy().replace('\\', "/"))
    };
    let (Some(graph), Some(parent)) = (rel(graph), graph.parent().and_then(rel)) else {
        return BTreeMap::new();
    };
    let prefix = if parent.is_empty() {
        parent
    } else {
        parent + "/"
    };
    (sums.iter())
        .filter(|(file, _)| **file != graph)
        .filter_map(|(file, sum)| Some((file.strip_prefix(&prefix)?.to_owned(), sum.clone())))
        .collect()
}

/// `SHA256SUMS` (as `sha256sum` writes it: hex, two spaces or " *", relative path), if the
/// bundle has one: relative path → lowercase hex.
#[cfg(any(feature = "clip", feature = "llm"))]
pub(crate) fn read_checksums(dir: &Path) -> Result<HashMap<String, String>> {
    let path = dir.join(CHECKSUMS);
    let mut out = HashMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed = line.split_once(' ').and_then(|(hash, rest)| {
            let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'))?;
            let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then(|| {
                (
                    name.trim_start_matches("./").to_owned(),
                    hash.to_ascii_lowercase(),
                )
            })
        });
        let (name, hash) = parsed.ok_or_else(|| {
            Error::bundle(
                &path,
                format!("line {}: expected `<64 hex digits>  <file>`", n + 1),
            )
        })?;
        out.insert(name, hash);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_graph::GraphFile;
    use sha2::{Digest, Sha256};

    /// A checksum `SHA256SUMS` lists for a graph's external data is checked against the data,
    /// and is found for the graph from the bundle's relative paths.
    #[test]
    fn external_data_is_checked_against_its_listed_sha256() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/projectors/external");
        let data = std::fs::read(dir.join("ldp.onnx_data")).unwrap();
        let right: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let open = |sum: &str| {
            let listed = [("external/ldp.onnx_data".to_owned(), sum.to_owned())];
            let sums = listed.into_iter().collect();
            GraphFile::open(&GraphSpec {
                path: dir.join("ldp.onnx"),
                input: String::new(),
                output: String::new(),
                sha256: None,
                data_sha256: data_sums(&sums, dir.parent().unwrap(), &dir.join("ldp.onnx")),
                max_bytes: DEFAULT_MAX_MODEL_BYTES,
            })
            .map_err(Error::from)
        };
        assert!(open(&right).is_ok());
        let first = if right.starts_with('0') { '1' } else { '0' };
        let wrong = format!("{first}{}", &right[1..]);
        match open(&wrong) {
            Err(Error::Integrity { path, actual, .. }) => {
                assert!(path.ends_with("ldp.onnx_data"));
                assert_eq!(actual, right);
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a wrong checksum passed"),
        }
    }
}
