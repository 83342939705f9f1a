//! The Fashion-MNIST CLIP trained by tools/train_fashion_clip.py (the README's demo model):
//! through Glimpse, zero-shot predictions agree with PyTorch's, and int8 and f16 keep its
//! accuracy (within 1 point of fp32, embeddings at cosine ≥ 0.99 to fp32's).

use std::path::PathBuf;
use std::sync::OnceLock;

use glimpse::{ClipModel, Embedding, LoadOptions};
use glimpse_tests::{fixtures, min_cosine};
use serde::Deserialize;

#[derive(Deserialize)]
struct Eval {
    classes: Vec<String>,
    templates: Vec<String>,
    torch_accuracy_eval: f64,
    torch_accuracy_10k: f64,
}

struct Data {
    eval: Eval,
    images: Vec<glimpse::RgbImage>,
    labels: Vec<i64>,
    torch: Vec<i64>,
}

fn dir() -> PathBuf {
    fixtures().join("../models/fashion-clip")
}

fn read_npy<T: npyz::Deserialize>(name: &str) -> Vec<T> {
    let p = dir().join(name);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap()
}

fn data() -> Data {
    let text = std::fs::read_to_string(dir().join("eval.json")).unwrap();
    let pixels: Vec<u8> = read_npy("eval_images.npy");
    let images = pixels
        .chunks(28 * 28)
        .map(|p| {
            let grey = image::GrayImage::from_raw(28, 28, p.to_vec()).unwrap();
            image::DynamicImage::ImageLuma8(grey).to_rgb8()
        })
        .collect();
    Data {
        eval: serde_json::from_str(&text).unwrap(),
        images,
        labels: read_npy("eval_labels.npy"),
        torch: read_npy("eval_torch_preds.npy"),
    }
}

/// The evaluation data and its fp32 run, computed once for all the tests (under qemu in CI's
/// ARM stage one run takes over a minute).
fn fp32() -> &'static (Data, Vec<Embedding>, Vec<i64>) {
    static FP32: OnceLock<(Data, Vec<Embedding>, Vec<i64>)> = OnceLock::new();
    FP32.get_or_init(|| {
        let d = data();
        let (embeddings, preds) = run(&d, LoadOptions::default());
        (d, embeddings, preds)
    })
}

/// Embeddings and predicted class indices of the evaluation images.
fn run(d: &Data, opts: LoadOptions) -> (Vec<Embedding>, Vec<i64>) {
    let model = ClipModel::load_with(dir(), opts).unwrap();
    let zs = model.zero_shot(&d.eval.classes, &d.eval.templates).unwrap();
    let embeddings = model.embed_images(&d.images).unwrap();
    let preds = embeddings
        .iter()
        .map(|e| {
            let best = &zs.classify(e)[0].label;
            d.eval.classes.iter().position(|c| c == best).unwrap() as i64
        })
        .collect();
    (embeddings, preds)
}

fn accuracy(preds: &[i64], labels: &[i64]) -> f64 {
    preds.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

#[test]
fn fp32_matches_pytorch() {
    let (d, _, preds) = fp32();
    let agree = preds.iter().zip(&d.torch).filter(|(a, b)| a == b).count();
    let acc = accuracy(preds, &d.labels);
    eprintln!(
        "fashion-clip fp32 on {} test images: accuracy {acc:.4}, PyTorch {:.4} (PyTorch on all 10k: {:.4}); \
         same prediction on {agree}",
        d.labels.len(),
        d.eval.torch_accuracy_eval,
        d.eval.torch_accuracy_10k
    );
    assert!(
        agree as f64 >= 0.99 * d.labels.len() as f64,
        "only {agree} agree with PyTorch"
    );
    assert!((acc - d.eval.torch_accuracy_eval).abs() <= 0.01);
    assert!(
        acc > 0.7,
        "a trained model should beat chance (10%) by far: {acc}"
    );
}

fn check_reduced_precision(name: &str, opts: LoadOptions) {
    let (d, fp32, fp32_preds) = fp32();
    let (low, preds) = run(d, opts);
    let (acc32, acc) = (accuracy(fp32_preds, &d.labels), accuracy(&preds, &d.labels));
    let cos = min_cosine(&low, fp32);
    eprintln!("fashion-clip {name}: accuracy {acc:.4} (fp32 {acc32:.4}), min embedding cosine to fp32 {cos:.5} (1 - cos = {:.1e})", 1.0 - cos);
    assert!(
        (acc - acc32).abs() <= 0.01,
        "{name} accuracy {acc} vs fp32 {acc32}"
    );
    assert!(cos >= 0.99, "{name} embedding cosine {cos}");
}

#[test]
fn int8_keeps_accuracy() {
    check_reduced_precision(
        "int8 (dynamic, ORT quantize_dynamic)",
        LoadOptions {
            quantized: true,
            ..Default::default()
        },
    );
}

#[test]
fn f16_keeps_accuracy() {
    check_reduced_precision(
        "f16 (tract f32_to_f16)",
        LoadOptions {
            precision: glimpse::Precision::F16,
            ..Default::default()
        },
    );
}
