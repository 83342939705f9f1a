//! CLIP tokenizer ids equal HF's `CLIPTokenizer` on 220 varied strings, from each of
//! the three file forms a bundle may carry.

use glimpse::{ClipTokenizer, TokenizerSource};
use glimpse_tests::fixtures;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn check(source: TokenizerSource) {
    let dir = fixtures().join("clip-tokenizer");
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    assert!(cases.cases.len() >= 200);
    let tok = ClipTokenizer::load(&source, 77).unwrap();
    let mut checked = 0;
    for c in &cases.cases {
        match tok.encode(&c.text) {
            Ok(ids) => assert_eq!(ids, c.ids, "{source:?}: ids of {:?}", c.text),
            // Blank text has nothing to embed: Glimpse refuses it; HF frames it as [start, end].
            Err(glimpse::Error::Text(_)) => assert_eq!(c.ids.len(), 2, "{:?} was refused", c.text),
            Err(e) => panic!("{:?}: {e}", c.text),
        }
        checked += 1;
    }
    assert_eq!(checked, cases.cases.len());
}

#[test]
fn tokenizer_json_matches_hf() {
    check(TokenizerSource::Json(
        fixtures().join("clip-tokenizer/tokenizer.json"),
    ));
}

#[test]
fn vocab_and_merges_match_hf() {
    let dir = fixtures().join("clip-tokenizer");
    check(TokenizerSource::VocabMerges {
        vocab: dir.join("vocab.json"),
        merges: dir.join("merges.txt"),
    });
}

#[test]
fn openai_bpe_file_matches_hf() {
    check(TokenizerSource::ClipBpe(
        fixtures().join("clip-tokenizer/bpe_simple_vocab_16e6.txt.gz"),
    ));
}

fn json_tokenizer(context_length: usize) -> ClipTokenizer {
    let path = fixtures().join("clip-tokenizer/tokenizer.json");
    ClipTokenizer::load(&TokenizerSource::Json(path), context_length).unwrap()
}

#[test]
fn reference_sentence_and_truncation() {
    let tok = json_tokenizer(77);
    assert_eq!(
        tok.encode("a photo of a cat").unwrap(),
        [49406, 320, 1125, 539, 320, 2368, 49407]
    );
    let long = tok.encode(&"word ".repeat(200)).unwrap();
    assert_eq!(long.len(), 77);
    assert_eq!(long[76], 49407, "the end token survives truncation");
    let short = json_tokenizer(8);
    assert_eq!(
        short.encode("a photo of a cat on a mat").unwrap(),
        [49406, 320, 1125, 539, 320, 2368, 525, 49407]
    );
}

#[test]
fn blank_text_is_refused() {
    let tok = json_tokenizer(77);
    for t in ["", "   ", "\n\t "] {
        let e = tok.encode(t).unwrap_err();
        assert!(matches!(e, glimpse::Error::Text(_)));
        assert!(e.to_string().contains("no words"), "{e}");
    }
}
