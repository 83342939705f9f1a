//! The Fashion-MNIST CLIP trained by tools/train_fashion_clip.py (the README's demo model):
//! through Glimpse, zero-shot predictions agree with PyTorch's and accuracy is the same.

use std::path::PathBuf;

use glimpse::ClipModel;
use glimpse_tests::fixtures;
use serde::Deserialize;

#[derive(Deserialize)]
struct Eval {
    classes: Vec<String>,
    templates: Vec<String>,
    torch_accuracy_eval: f64,
    torch_accuracy_10k: f64,
}

fn read_npy<T: npyz::Deserialize>(p: PathBuf) -> Vec<T> {
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap()
}

#[test]
fn fashion_clip_zero_shot_matches_pytorch() {
    let dir = fixtures().join("../models/fashion-clip");
    let eval: Eval =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    let pixels: Vec<u8> = read_npy(dir.join("eval_images.npy"));
    let labels: Vec<i64> = read_npy(dir.join("eval_labels.npy"));
    let torch: Vec<i64> = read_npy(dir.join("eval_torch_preds.npy"));

    let model = ClipModel::load(&dir).unwrap();
    let zs = model.zero_shot(&eval.classes, &eval.templates).unwrap();
    let images: Vec<glimpse::RgbImage> = pixels
        .chunks(28 * 28)
        .map(|p| {
            image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(28, 28, p.to_vec()).unwrap())
                .to_rgb8()
        })
        .collect();
    let embeddings = model.embed_images(&images).unwrap();
    let (mut agree, mut correct) = (0, 0);
    for ((e, &label), &t) in embeddings.iter().zip(&labels).zip(&torch) {
        let best = &zs.classify(e)[0].label;
        let ix = eval.classes.iter().position(|c| c == best).unwrap() as i64;
        agree += (ix == t) as usize;
        correct += (ix == label) as usize;
    }
    let n = labels.len() as f64;
    let acc = correct as f64 / n;
    eprintln!(
        "fashion-clip on {} test images: Glimpse accuracy {acc:.4}, PyTorch {:.4} (PyTorch on all 10k: {:.4}); \
         same prediction on {agree}",
        labels.len(),
        eval.torch_accuracy_eval,
        eval.torch_accuracy_10k
    );
    assert!(
        agree as f64 >= 0.99 * n,
        "only {agree} predictions agree with PyTorch"
    );
    assert!((acc - eval.torch_accuracy_eval).abs() <= 0.01);
    assert!(
        acc > 0.7,
        "a trained model should beat chance (10%) by far: {acc}"
    );
}
