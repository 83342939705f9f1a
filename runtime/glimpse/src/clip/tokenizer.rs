//! CLIP's tokenizer: byte-level BPE with CLIP's cleanup (NFC, whitespace runs folded,
//! lower case), `<|startoftext|>` … `<|endoftext|>`, truncated to the context length.
//!
//! The BPE itself is the `tokenizers` crate. A `tokenizer.json` is used as written;
//! `vocab.json` + `merges.txt` and OpenAI's `bpe_simple_vocab_16e6.txt.gz` are turned into
//! the same pipeline HF's `CLIPTokenizer` builds, so all three give the same ids.

use std::io::Read;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Model, SplitDelimiterBehavior, Tokenizer, TruncationParams};

use crate::error::{Error, Result};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's pre-tokenisation pattern (words, single digits, punctuation runs, contractions).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// Merges used from OpenAI's BPE file: 49152 - 256 - 2 (its first line is a header).
const CLIP_MERGES: usize = 49152 - 256 - 2;

/// Where a bundle's tokenizer comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSource {
    /// An HF `tokenizer.json`.
    Json(PathBuf),
    /// HF's `vocab.json` and `merges.txt`.
    VocabMerges { vocab: PathBuf, merges: PathBuf },
    /// OpenAI's `bpe_simple_vocab_16e6.txt.gz`.
    ClipBpe(PathBuf),
}

impl TokenizerSource {
    /// Guesses the form from a file name (`.gz` = OpenAI BPE, otherwise tokenizer.json).
    pub fn from_path(path: PathBuf) -> Self {
        if path.extension().is_some_and(|e| e == "gz") {
            TokenizerSource::ClipBpe(path)
        } else {
            TokenizerSource::Json(path)
        }
    }

    fn path(&self) -> &Path {
        match self {
            TokenizerSource::Json(p) | TokenizerSource::ClipBpe(p) => p,
            TokenizerSource::VocabMerges { vocab, .. } => vocab,
        }
    }
}

/// Text to CLIP token ids.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    context_length: usize,
    max_text_bytes: usize,
    bos: u32,
    eos: u32,
}

impl ClipTokenizer {
    /// Loads a tokenizer; sequences are cut to `context_length` ids, end token included.
    pub fn load(source: &TokenizerSource, context_length: usize) -> Result<Self> {
        let path = source.path();
        let fail = |reason: String| Error::Tokenizer {
            path: path.to_owned(),
            reason,
        };
        let mut inner = match source {
            TokenizerSource::Json(p) => Tokenizer::from_file(p).map_err(|e| fail(e.to_string()))?,
            TokenizerSource::VocabMerges { vocab, merges } => {
                let v = std::fs::read_to_string(vocab).map_err(|e| Error::io(vocab, e))?;
                let vocab: Vocab =
                    serde_json::from_str(&v).map_err(|e| fail(format!("vocab.json: {e}")))?;
                let m = std::fs::read_to_string(merges).map_err(|e| Error::io(merges, e))?;
                let merges =
                    parse_merges(m.lines().filter(|l| !l.starts_with("#version")), usize::MAX)
                        .map_err(|e| Error::Tokenizer {
                            path: merges.clone(),
                            reason: e,
                        })?;
                clip_pipeline(vocab, merges).map_err(fail)?
            }
            TokenizerSource::ClipBpe(p) => {
                let (vocab, merges) = read_clip_bpe(p)?;
                clip_pipeline(vocab, merges).map_err(fail)?
            }
        };
        let (bos, eos) = match (inner.token_to_id(BOS), inner.token_to_id(EOS)) {
            (Some(b), Some(e)) => (b, e),
            _ => {
                return Err(fail(format!(
                    "no {BOS} / {EOS} tokens: not a CLIP tokenizer"
                )))
            }
        };
        if context_length < 3 {
            return Err(fail(format!(
                "context length {context_length} is too short"
            )));
        }
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context_length,
                ..Default::default()
            }))
            .map_err(|e| fail(e.to_string()))?;
        inner.with_padding(None);
        Ok(ClipTokenizer {
            inner,
            context_length,
            max_text_bytes: crate::bundle::DEFAULT_MAX_TEXT_BYTES,
            bos,
            eos,
        })
    }

    /// Refuses texts longer than `bytes` (UTF-8) instead of tokenising them.
    pub fn set_max_text_bytes(&mut self, bytes: usize) {
        self.max_text_bytes = bytes;
    }

    /// Number of ids in the vocabulary (every id `encode` returns is below it).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`: start token, content (truncated), end token.
    /// Text with no content once cleaned (empty, only spaces) or over the length limit is
    /// an error.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > self.max_text_bytes {
            return Err(Error::Text(format!(
                "{} bytes of text is over the {} byte limit (LoadOptions::max_text_bytes)",
                text.len(),
                self.max_text_bytes
            )));
        }
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Text(e.to_string()))?;
        let ids = enc.get_ids();
        if ids.len() <= 2 {
            let shown: String = text.chars().take(40).collect();
            return Err(Error::Text(format!("{shown:?} has no words to embed")));
        }
        if ids.first() != Some(&self.bos)
            || ids.last() != Some(&self.eos)
            || ids.len() > self.context_length
        {
            return Err(Error::Text(
                "tokenizer.json does not frame text with CLIP's start/end tokens".into(),
            ));
        }
        Ok(ids.to_vec())
    }

    /// The longest id sequence `encode` returns.
    pub fn context_length(&self) -> usize {
        self.context_length
    }
}

/// Builds the pipeline HF's `CLIPTokenizer` describes in its `tokenizer.json`.
fn clip_pipeline(vocab: Vocab, merges: Vec<(String, String)>) -> Result<Tokenizer, String> {
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(EOS.into())
        .end_of_word_suffix("</w>".into())
        .build()
        .map_err(|e| e.to_string())?;
    let id = |t: &str| {
        bpe.token_to_id(t)
            .ok_or_else(|| format!("vocabulary has no {t} token"))
    };
    let (bos, eos) = (id(BOS)?, id(EOS)?);
    let mut tok = Tokenizer::new(bpe);
    let space_runs =
        Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(|e| e.to_string())?;
    tok.with_normalizer(Some(NormSeq::new(vec![
        NFC.into(),
        space_runs.into(),
        Lowercase.into(),
    ])))
    .map_err(|e| e.to_string())?;
    let split = Split::new(
        SplitPattern::Regex(CLIP_PATTERN.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| e.to_string())?;
    tok.with_pre_tokenizer(Some(PreSeq::new(vec![
        split.into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_post_processor(Some(
        RobertaProcessing::new((EOS.into(), eos), (BOS.into(), bos))
            .trim_offsets(false)
            .add_prefix_space(false),
    ));
    tok.add_special_tokens([AddedToken::from(BOS, true), AddedToken::from(EOS, true)])
        .map_err(|e| e.to_string())?;
    Ok(tok)
}

fn parse_merges<'a>(
    lines: impl Iterator<Item = &'a str>,
    limit: usize,
) -> Result<Vec<(String, String)>, String> {
    lines
        .filter(|l| !l.is_empty())
        .take(limit)
        .enumerate()
        .map(|(i, l)| match l.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => Ok((a.to_owned(), b.to_owned())),
            _ => Err(format!("merge {} is not two symbols: {l:?}", i + 1)),
        })
        .collect()
}

/// Derives vocab and merges from OpenAI's BPE file, as CLIP's own tokenizer does:
/// 256 byte symbols, the same with `</w>`, one symbol per merge, then the two specials.
fn read_clip_bpe(path: &Path) -> Result<(Vocab, Vec<(String, String)>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| Error::Tokenizer {
            path: path.to_owned(),
            reason: format!("not a gzip text file: {e}"),
        })?;
    let merges =
        parse_merges(text.lines().skip(1), CLIP_MERGES).map_err(|reason| Error::Tokenizer {
            path: path.to_owned(),
            reason,
        })?;
    if merges.len() != CLIP_MERGES {
        return Err(Error::Tokenizer {
            path: path.to_owned(),
            reason: format!("{} merges, CLIP's file has {CLIP_MERGES}", merges.len()),
        });
    }
    let bytes = byte_symbols();
    let symbols = bytes
        .iter()
        .map(|c| c.to_string())
        .chain(bytes.iter().map(|c| format!("{c}</w>")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain([BOS.to_owned(), EOS.to_owned()]);
    let vocab = symbols.enumerate().map(|(i, s)| (s, i as u32)).collect();
    Ok((vocab, merges))
}

/// GPT-2/CLIP's printable stand-in for each byte, in CLIP's vocabulary order:
/// the printable Latin-1 bytes as themselves, then the rest mapped from U+0100 up.
fn byte_symbols() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut out: Vec<char> = (0..256u32)
        .filter(|&b| printable(b))
        .filter_map(char::from_u32)
        .collect();
    out.extend(
        (0..256u32)
            .filter(|&b| !printable(b))
            .enumerate()
            .filter_map(|(n, _)| char::from_u32(256 + n as u32)),
    );
    out
}
