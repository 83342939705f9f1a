//! Bad input gets a typed error that names the file and the problem; nothing panics.

use std::fs;
use std::path::Path;

use glimpse::image::{decode, ImageLimits};
use glimpse::{ClipModel, Error, LoadOptions};
use glimpse_tests::{copy_bundle, fixtures, png_header};

fn load_err(dir: &Path) -> Error {
    ClipModel::load(dir).expect_err("loading should fail")
}

#[test]
fn missing_directory() {
    let e = load_err(Path::new("/nonexistent/model"));
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/model"), "{e}");
}

#[test]
fn bundle_path_is_a_file() {
    let e = load_err(&fixtures().join("images/noise.png"));
    assert!(
        matches!(e, Error::Bundle { .. }) && e.to_string().contains("directory"),
        "{e}"
    );
}

#[test]
fn missing_graph_file() {
    let b = copy_bundle("clip-vit-tiny");
    fs::remove_file(b.path().join("onnx/vision_model.onnx")).unwrap();
    let e = load_err(b.path());
    assert!(
        matches!(e, Error::Bundle { .. }) && e.to_string().contains("vision_model.onnx"),
        "{e}"
    );
    // The text tower alone still loads: a search query needs only it.
    ClipModel::load_with(b.path(), LoadOptions::text_only()).unwrap();
}

#[test]
fn missing_tokenizer_and_preprocessor_config() {
    let b = copy_bundle("clip-vit-tiny");
    fs::remove_file(b.path().join("vocab.json")).unwrap();
    let e = load_err(b.path());
    assert!(e.to_string().contains("no tokenizer"), "{e}");
    let b = copy_bundle("clip-vit-tiny");
    fs::remove_file(b.path().join("preprocessor_config.json")).unwrap();
    let e = load_err(b.path());
    assert!(e.to_string().contains("preprocessor_config.json"), "{e}");
}

#[test]
fn truncated_model_file() {
    let b = copy_bundle("clip-vit-tiny");
    let p = b.path().join("onnx/vision_model.onnx");
    let data = fs::read(&p).unwrap();
    fs::write(&p, &data[..data.len() / 2]).unwrap();
    let e = load_err(b.path());
    assert!(matches!(e, Error::Model { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("vision_model.onnx") && msg.contains("not an ONNX protobuf"),
        "{msg}"
    );
}

#[test]
fn non_onnx_and_empty_model_files() {
    let b = copy_bundle("clip-vit-tiny");
    let p = b.path().join("onnx/text_model.onnx");
    fs::write(&p, b"<html>404 Not Found</html>").unwrap();
    let e = load_err(b.path());
    assert!(
        matches!(e, Error::Model { .. }) && e.to_string().contains("text_model.onnx"),
        "{e}"
    );
    fs::write(&p, b"").unwrap();
    let e = load_err(b.path());
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn graph_without_the_expected_input_or_output() {
    let b = copy_bundle("clip-rn-tiny");
    let manifest = b.path().join("glimpse.json");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(
        &manifest,
        text.replace(r#""input": "image""#, r#""input": "pixel_values""#),
    )
    .unwrap();
    let e = load_err(b.path());
    assert!(matches!(e, Error::GraphInterface { .. }), "{e:?}");
    assert!(
        e.to_string().contains("no input named `pixel_values`") && e.to_string().contains("image"),
        "{e}"
    );

    fs::write(
        &manifest,
        text.replace(r#""output": "embedding""#, r#""output": "image_embeds""#),
    )
    .unwrap();
    let e = load_err(b.path());
    assert!(
        e.to_string().contains("no output named `image_embeds`"),
        "{e}"
    );

    // The towers swapped: the text graph has no float image input.
    let swapped = text
        .replace("visual.onnx", "TMP")
        .replace("textual.onnx", "visual.onnx")
        .replace("TMP", "textual.onnx");
    fs::write(&manifest, swapped).unwrap();
    assert!(matches!(load_err(b.path()), Error::GraphInterface { .. }));
}

#[test]
fn image_size_mismatch_between_graph_and_preprocessing() {
    let b = copy_bundle("clip-rn-tiny");
    let manifest = b.path().join("glimpse.json");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(
        &manifest,
        text.replace(r#""image_size": 64"#, r#""image_size": 224"#),
    )
    .unwrap();
    let e = load_err(b.path());
    assert!(
        matches!(e, Error::GraphInterface { .. } | Error::Model { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("visual.onnx"), "{e}");
}

#[test]
fn malformed_manifest() {
    let b = copy_bundle("clip-rn-tiny");
    fs::write(b.path().join("glimpse.json"), "{ not json").unwrap();
    let e = load_err(b.path());
    assert!(
        matches!(e, Error::Bundle { .. }) && e.to_string().contains("glimpse.json"),
        "{e}"
    );
    fs::write(
        b.path().join("glimpse.json"),
        r#"{"vision": {"graph": "nope.onnx", "input": "a", "output": "b"}}"#,
    )
    .unwrap();
    let e = load_err(b.path());
    assert!(e.to_string().contains("nope.onnx"), "{e}");
}

#[test]
fn corrupt_tokenizer() {
    let b = copy_bundle("clip-rn-tiny");
    fs::write(b.path().join("bpe_simple_vocab_16e6.txt.gz"), b"not gzip").unwrap();
    let e = load_err(b.path());
    assert!(
        matches!(e, Error::Tokenizer { .. }) && e.to_string().contains("bpe_simple_vocab"),
        "{e}"
    );
}

fn model() -> ClipModel {
    ClipModel::load(fixtures().join("clip-vit-tiny")).unwrap()
}

#[test]
fn unreadable_and_empty_images() {
    let m = model();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.jpg");
    fs::write(&empty, b"").unwrap();
    let e = m.embed_image_files(&[&empty]).unwrap_err();
    assert!(
        matches!(e, Error::Image { .. }) && e.to_string().contains("empty.jpg"),
        "{e}"
    );
    assert!(e.to_string().contains("0 bytes"), "{e}");

    let garbage = tmp.path().join("garbage.png");
    fs::write(&garbage, b"this is not an image at all").unwrap();
    let e = m.embed_image_files(&[&garbage]).unwrap_err();
    assert!(
        e.to_string().contains("garbage.png") && e.to_string().contains("not a recognised image"),
        "{e}"
    );

    // A real JPEG cut inside its headers. (One cut inside the entropy-coded data decodes,
    // grey below the cut, as browsers show it: decoding is lenient by design.)
    let jpeg = fs::read(fixtures().join("images/franz-kafka.jpg")).unwrap();
    let e = m
        .decode_image(&jpeg[..200], "cut.jpg")
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(e, Error::Image { .. }) && e.to_string().contains("cut.jpg"),
        "{e}"
    );

    let e = m
        .embed_image_files(&[tmp.path().join("absent.jpg")])
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("absent.jpg"),
        "{e}"
    );
}

#[test]
fn huge_and_tiny_images() {
    let limits = ImageLimits::default();
    let e = decode(&png_header(20000, 20000), "bomb.png", &limits).unwrap_err();
    assert!(
        e.to_string().contains("bomb.png") && e.to_string().contains("20000x20000"),
        "{e}"
    );
    let e = decode(&png_header(1, 1), "dot.png", &limits).unwrap_err();
    assert!(
        e.to_string().contains("1x1") && e.to_string().contains("too small"),
        "{e}"
    );
    let strict = ImageLimits {
        max_bytes: 100,
        ..limits
    };
    let e = decode(
        &fs::read(fixtures().join("images/noise.png")).unwrap(),
        "big.png",
        &strict,
    )
    .unwrap_err();
    assert!(e.to_string().contains("byte limit"), "{e}");
}

#[test]
fn bad_text_and_arguments() {
    let m = model();
    let e = m.embed_texts(&[""]).unwrap_err();
    assert!(matches!(e, Error::Text(_)), "{e:?}");
    assert!(matches!(
        m.embed_texts(&["ok", "  \n "]),
        Err(Error::Text(_))
    ));
    assert!(matches!(
        m.embed_pixels(&[0.0; 10]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        m.embed_pixels(&[]),
        Err(Error::InvalidArgument(_))
    ));
    let none: [&str; 0] = [];
    assert!(matches!(
        m.zero_shot(&none, glimpse::DEFAULT_TEMPLATES),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        m.zero_shot(&["cat"], &["no placeholder"]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        m.zero_shot(&["cat", " "], glimpse::DEFAULT_TEMPLATES),
        Err(Error::InvalidArgument(_))
    ));
    // Hostile but valid text: control characters, special-token strings, huge input.
    let hostile = [
        "\u{0}\u{1}\u{7f}",
        "<|endoftext|><|startoftext|>",
        &"🐱".repeat(10_000),
    ];
    for t in hostile {
        let r = m.embed_texts(&[t]);
        assert!(
            r.is_ok() || matches!(r, Err(Error::Text(_))),
            "{t:?}: {r:?}"
        );
    }
}

/// Inputs the fuzzers (fuzz/) found crashing, each now a clean error.
#[test]
fn fuzz_regressions_are_errors() {
    // A graph with an out-of-range Gather index: it loads, and tract panics running it.
    let bundle = copy_bundle("clip-vit-tiny");
    fs::copy(
        fixtures().join("fuzz/onnx-gather-out-of-range.onnx"),
        bundle.path().join("onnx/vision_model.onnx"),
    )
    .unwrap();
    let model = ClipModel::load_with(bundle.path(), LoadOptions::vision_only()).unwrap();
    let e = model.embed_pixels(&vec![0.0; 3 * 64 * 64]).unwrap_err();
    assert!(matches!(e, Error::Inference { .. }), "{e:?}");
    assert!(e.to_string().contains("internal panic"), "{e}");

    // LayerNormalization axes no tensor has: tract counted up to them while typing the graph
    // and never returned (tools/make_fuzz_fixtures.py).
    for case in ["huge", "negative"] {
        fs::copy(
            fixtures().join(format!("fuzz/onnx-layernorm-axis-{case}.onnx")),
            bundle.path().join("onnx/vision_model.onnx"),
        )
        .unwrap();
        let e = ClipModel::load_with(bundle.path(), LoadOptions::vision_only()).unwrap_err();
        assert!(matches!(e, Error::Model { .. }), "{case}: {e:?}");
        assert!(e.to_string().contains("LayerNormalization"), "{case}: {e}");
    }
}
