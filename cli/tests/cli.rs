//! The `glimpse` binary end to end: its outputs agree with the library's and errors
//! reach the user as one readable line and a failing exit code.

use std::process::{Command, Output};

use glimpse::ClipModel;
use glimpse_tests::{fixtures, smollm2};
use serde_json::Value;

fn glimpse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(args)
        .env_remove("GLIMPSE_MODEL")
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> Value {
    let out = glimpse(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn path(rel: &str) -> String {
    fixtures().join(rel).display().to_string()
}

#[test]
fn classify_json_matches_the_library() {
    let model = path("clip-vit-tiny");
    let image = path("images/franz-kafka.jpg");
    let v = json(&[
        "classify",
        &image,
        "--labels",
        "a man,a cat,a car",
        "--model",
        &model,
        "--json",
    ]);
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 3);

    let lib = ClipModel::load(&model).unwrap();
    let img = lib.embed_image_files(&[&image]).unwrap();
    let want = lib
        .zero_shot(&["a man", "a cat", "a car"], glimpse::DEFAULT_TEMPLATES)
        .unwrap()
        .classify(&img[0]);
    for (p, w) in preds.iter().zip(&want) {
        assert_eq!(p["label"], w.label.as_str());
        assert!((p["probability"].as_f64().unwrap() - w.probability as f64).abs() < 1e-6);
    }
}

#[test]
fn classify_text_output_is_readable() {
    let out = glimpse(&[
        "classify",
        &path("images/gradient.png"),
        "--labels",
        "red,green",
        "--template",
        "a {} gradient",
        "--model",
        &path("clip-rn-tiny"),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("gradient.png (model: tiny-rn-clip-random)"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains('%')).count(),
        2,
        "{text}"
    );
}

#[test]
fn similarity_and_embed_agree() {
    let model = path("clip-vit-tiny");
    let image = path("images/noise.png");
    let s = json(&[
        "similarity",
        &image,
        "a photo of a cat",
        "--model",
        &model,
        "--json",
    ]);
    let e = json(&[
        "embed",
        &image,
        "--text",
        "a photo of a cat",
        "--model",
        &model,
        "--json",
    ]);
    let rows = e["embeddings"].as_array().unwrap();
    let vec = |i: usize| -> Vec<f32> {
        rows[i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let cos = glimpse::similarity(&vec(0), &vec(1));
    assert!((s["cosine"].as_f64().unwrap() - cos as f64).abs() < 1e-5);
    assert!((s["logit"].as_f64().unwrap() - 100.0 * cos as f64).abs() < 1e-3);
}

#[test]
fn model_from_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["embed", "--text", "hello"])
        .env("GLIMPSE_MODEL", path("clip-vit-tiny"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout).unwrap().contains("16 dims"));
}

#[test]
fn errors_are_one_line_and_fail() {
    let out = glimpse(&[
        "classify",
        &path("images/franz-kafka.jpg"),
        "--labels",
        "a,b",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model"));

    let out = glimpse(&[
        "classify",
        "/nonexistent.jpg",
        "--labels",
        "a,b",
        "--model",
        &path("clip-vit-tiny"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("/nonexistent.jpg"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let out = glimpse(&["embed", "--text", "   ", "--model", &path("clip-vit-tiny")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn help_explains_the_model_argument() {
    let out = glimpse(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("vision_model.onnx")
            && text.contains("glimpse.json")
            && text.contains("GLIMPSE_MODEL")
    );
}

/// `index` then `search`, `similar`, `tags` and `dupes` agree with the library on the same index.
#[test]
fn photo_library_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("i.sqlite");
    let model = path("../models/fashion-clip");
    let photos = path("images/fashion");
    let base = ["--model", &model, "--index", db.to_str().unwrap(), "--json"];
    let run = |args: &[&str]| -> Vec<Value> {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        let out = glimpse(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let labels = "t-shirt,trousers,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot";
    let events = run(&["index", &photos, "--labels", labels]);
    let done = events.last().unwrap();
    assert_eq!(
        (done["event"].as_str(), done["added"].as_u64()),
        (Some("done"), Some(10))
    );

    let search = &run(&["search", "a photo of a sneaker", "-k", "3"])[0];
    let model_ = ClipModel::load(fixtures().join("../models/fashion-clip")).unwrap();
    let index = glimpse_photos::PhotoIndex::open(&db, &model_).unwrap();
    let lib = index
        .search_text("a photo of a sneaker", 3, &Default::default())
        .unwrap();
    let keys: Vec<&str> = search["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, lib.iter().map(|h| h.key.as_str()).collect::<Vec<_>>());

    let sandal = path("images/fashion/sandal.png");
    let similar = &run(&["similar", &sandal, "-k", "2"])[0];
    assert_eq!(similar["hits"].as_array().unwrap().len(), 2);
    assert!(
        similar["hits"][0]["key"].as_str().unwrap()
            != std::fs::canonicalize(&sandal).unwrap().to_str().unwrap()
    );

    let tags = &run(&["tags", &path("images/fashion/bag.png")])[0];
    assert_eq!(tags["tags"][0]["label"], "bag");

    let dupes = &run(&["dupes", "--threshold", "0.9999"])[0];
    assert_eq!(dupes["groups"].as_array().unwrap().len(), 0);

    // Another model's index is refused with one line.
    let out = glimpse(&[
        "--model",
        &path("clip-vit-tiny"),
        "--index",
        db.to_str().unwrap(),
        "search",
        "x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fashion-clip") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn bench_reports_a_row_of_real_measurements() {
    let model = path("clip-vit-tiny");
    let image = path("images/franz-kafka.jpg");
    let v = json(&[
        "--model",
        &model,
        "--json",
        "--threads",
        "2",
        "bench",
        "--image",
        &image,
        "--runs",
        "2",
        "--batch",
        "3",
        "--profile",
    ]);
    assert_eq!(v["model"], "clip-vit-tiny");
    // The profile: operators slowest first, the matrix products among them.
    let ops = v["profile"].as_array().unwrap();
    let ms: Vec<f64> = ops.iter().map(|o| o["ms"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "{ms:?}");
    assert!(
        ops.iter()
            .any(|o| o["op"].as_str().unwrap().contains("MatMul")),
        "{ops:?}"
    );
    assert_eq!(
        (v["weights"].as_str(), v["precision"].as_str()),
        (Some("fp32"), Some("f32"))
    );
    assert_eq!(
        (v["threads"].as_u64(), v["batch"].as_u64()),
        (Some(2), Some(3))
    );
    for key in ["load_ms", "image_ms", "images_per_s", "text_ms"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    // Peak RSS covers at least the model weights the process read.
    let weights = std::fs::metadata(fixtures().join("clip-vit-tiny/onnx/vision_model.onnx"))
        .unwrap()
        .len() as f64;
    assert!(v["peak_rss_mb"].as_f64().unwrap() * 1e6 > weights, "{v}");
    let cpu = &v["cpu"];
    let cores = cpu["cores"].as_u64().unwrap();
    assert!((1..=cores).contains(&cpu["performance_cores"].as_u64().unwrap()));

    let out = glimpse(&["--model", &model, "bench", "--runs", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--runs"));
}

#[test]
fn bench_times_a_language_model() {
    let Some(dir) = smollm2() else { return };
    let model = dir.display().to_string();
    let v = json(&[
        "--model",
        &model,
        "--json",
        "--quantized",
        "--threads",
        "1",
        "bench",
        "--runs",
        "1",
        "--max-tokens",
        "4",
    ]);
    assert_eq!(
        (v["model"].as_str(), v["weights"].as_str()),
        (Some("smollm2-135m-instruct"), Some("q4_0"))
    );
    // The first token comes from the prompt's pass; each further one is a decoder step.
    assert_eq!(v["decode_steps"].as_u64(), Some(3), "{v}");
    let library = glimpse::LanguageModel::load(&dir).unwrap();
    let prompt = library.chat_tokens("Write a long story about a lighthouse keeper and a storm.");
    assert_eq!(
        v["prompt_tokens"].as_u64(),
        Some(prompt.unwrap().len() as u64),
        "{v}"
    );
    for key in [
        "load_ms",
        "prefill_tokens_per_second",
        "decode_tokens_per_second",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    assert!(
        v["image_ms"].is_null(),
        "no image in a text-only bundle: {v}"
    );
    // The 4-bit decoder's weights, in its external data file.
    let weights = std::fs::metadata(dir.join("onnx/decoder_model_merged_q4.onnx_data"))
        .unwrap()
        .len() as f64;
    assert!(v["peak_rss_mb"].as_f64().unwrap() * 1e6 > weights, "{v}");

    let out = glimpse(&["--model", &model, "bench", "--max-tokens", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-tokens"));
}
