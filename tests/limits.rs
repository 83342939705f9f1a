//! Resource limits and integrity: every limit is a typed error, checked before the work it
//! bounds; a corrupt model file is detected before it runs.

use std::fs;
use std::path::Path;

use glimpse::image::{decode, decode_file, decode_scaled, ImageLimits};
use glimpse::{ClipModel, Error, LoadOptions};
use glimpse_photos::{PhotoIndex, ScanOptions};
use glimpse_tests::{copy_bundle, fixtures, png_header};
use sha2::{Digest, Sha256};

const FASHION: &str = "../models/fashion-clip";

fn fashion() -> ClipModel {
    ClipModel::load(fixtures().join(FASHION)).unwrap()
}

#[test]
fn decompression_bomb_is_refused_from_the_header() {
    let bomb = png_header(65535, 65535);
    let limits = ImageLimits::default();
    for e in [
        decode(&bomb, "bomb.png", &limits).unwrap_err(),
        decode_scaled(&bomb, "bomb.png", &limits, |_, _| (224, 224)).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Image { .. }), "{e:?}");
        assert!(
            e.to_string().contains("65535x65535") && e.to_string().contains("pixel limit"),
            "{e}"
        );
    }
    // Through the photo index: an error, and nothing stored.
    let dir = tempfile::tempdir().unwrap();
    let index = PhotoIndex::open(dir.path().join("i.sqlite"), &fashion()).unwrap();
    let e = index.add_bytes("bomb", &bomb).unwrap_err();
    assert!(e.to_string().contains("pixel limit"), "{e}");
    assert!(index.is_empty());
}

/// A sparse file: 1 GiB long, no disk used.
fn sparse(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

#[test]
fn a_one_gigabyte_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.jpg");
    sparse(&big, 1 << 30);
    let t = std::time::Instant::now();
    let e = decode_file(&big, &ImageLimits::default()).unwrap_err();
    assert!(e.to_string().contains("1073741824 bytes is over"), "{e}");
    assert!(t.elapsed().as_secs() < 2, "refused without reading it");
    // The indexer reports it and goes on.
    fs::copy(
        fixtures().join("images/fashion/bag.png"),
        dir.path().join("bag.png"),
    )
    .unwrap();
    let index = PhotoIndex::open(dir.path().join("i.sqlite"), &fashion()).unwrap();
    let report = index
        .index_dir(dir.path(), &ScanOptions::default(), |_, _| {})
        .unwrap();
    assert_eq!(report.added, 1);
    assert!(
        report.skipped[0].1.contains("byte limit"),
        "{:?}",
        report.skipped
    );

    // A graph file over the model-size limit is refused before it is read.
    let bundle = copy_bundle(FASHION);
    sparse(&bundle.path().join("onnx/vision_model.onnx"), 1 << 30);
    let opts = LoadOptions {
        max_model_bytes: 512 << 20,
        ..LoadOptions::vision_only()
    };
    let e = ClipModel::load_with(bundle.path(), opts).unwrap_err();
    assert!(matches!(e, Error::Model { .. }), "{e:?}");
    assert!(
        e.to_string().contains("over the 536870912 byte limit"),
        "{e}"
    );
}

#[test]
fn text_over_the_length_limit_is_refused() {
    let opts = LoadOptions {
        max_text_bytes: 100,
        ..LoadOptions::text_only()
    };
    let model = ClipModel::load_with(fixtures().join(FASHION), opts).unwrap();
    model.embed_texts(&["a".repeat(100)]).unwrap();
    let e = model.embed_texts(&["a".repeat(101)]).unwrap_err();
    assert!(
        matches!(e, Error::Text(_)) && e.to_string().contains("100 byte limit"),
        "{e}"
    );
    // The default limit (16 KiB) stops a megabyte of text before tokenising it.
    let e = fashion()
        .embed_texts(&["word ".repeat(200_000)])
        .unwrap_err();
    assert!(e.to_string().contains("16384 byte limit"), "{e}");
}

#[test]
fn hostile_text_embeds_or_errors_cleanly() {
    let model = fashion();
    let hostile = [
        "\0\0\0 a bag \0".to_string(),
        "\u{202e}gab a\u{202d}".into(), // bidi overrides
        "e\u{301}\u{301}\u{301}\u{301}\u{301}".into(), // stacked combining marks
        "👩‍👩‍👧‍👦".repeat(2000),              // long ZWJ emoji run, under the limit
        "<|endoftext|><|startoftext|>".repeat(50),
        "\u{feff}\u{200b}\u{200b}".into(), // invisible only
        "\r\n\t\u{b}\u{c}".into(),
    ];
    for t in &hostile {
        match model.embed_texts(&[t]) {
            Ok(e) => assert!(e[0].iter().all(|x| x.is_finite())),
            Err(e) => assert!(matches!(e, Error::Text(_)), "{t:?}: {e:?}"),
        }
    }
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused() {
    let model = fashion();
    let e = model
        .text()
        .unwrap()
        .embed_ids(&[vec![49406, 4_000_000, 49407]])
        .unwrap_err();
    assert!(e.to_string().contains("4000000"), "{e}");
}

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn flip_a_bit(path: &Path) {
    let mut data = fs::read(path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x10;
    fs::write(path, data).unwrap();
}

#[test]
fn manifest_sha256_detects_bit_flips_and_truncation() {
    let bundle = copy_bundle(FASHION);
    let graph = bundle.path().join("onnx/vision_model.onnx");
    let manifest = bundle.path().join("glimpse.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifest).unwrap()).unwrap();
    m["vision"]["sha256"] = sha256_hex(&graph).into();
    fs::write(&manifest, m.to_string()).unwrap();
    let vision = LoadOptions::vision_only();
    ClipModel::load_with(bundle.path(), vision).unwrap();

    let good = fs::read(&graph).unwrap();
    flip_a_bit(&graph);
    // Without the hash a flipped weight bit would load and run silently: the hash catches it.
    let e = ClipModel::load_with(bundle.path(), vision).unwrap_err();
    assert!(matches!(e, Error::Integrity { .. }), "{e:?}");
    assert!(
        e.to_string().contains("vision_model.onnx") && e.to_string().contains("corrupt"),
        "{e}"
    );

    fs::write(&graph, &good[..good.len() - 1000]).unwrap();
    let e = ClipModel::load_with(bundle.path(), vision).unwrap_err();
    assert!(matches!(e, Error::Integrity { .. }), "{e:?}");
}

#[test]
fn sha256sums_file_checks_an_hf_layout_bundle() {
    let bundle = copy_bundle("clip-vit-tiny");
    let sums: String = ["onnx/vision_model.onnx", "onnx/text_model.onnx"]
        .iter()
        .map(|f| format!("{}  {f}\n", sha256_hex(&bundle.path().join(f))))
        .collect();
    fs::write(bundle.path().join("SHA256SUMS"), sums).unwrap();
    ClipModel::load(bundle.path()).unwrap();

    flip_a_bit(&bundle.path().join("onnx/text_model.onnx"));
    let e = ClipModel::load(bundle.path()).unwrap_err();
    assert!(
        matches!(e, Error::Integrity { .. }) && e.to_string().contains("text_model.onnx"),
        "{e}"
    );
    // The image tower alone still loads: its file is intact.
    ClipModel::load_with(bundle.path(), LoadOptions::vision_only()).unwrap();

    fs::write(bundle.path().join("SHA256SUMS"), "not a checksum line\n").unwrap();
    let e = ClipModel::load(bundle.path()).unwrap_err();
    assert!(
        matches!(e, Error::Bundle { .. }) && e.to_string().contains("line 1"),
        "{e}"
    );
}
