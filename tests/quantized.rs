//! Quantised graphs: per-channel weight dequantisation computes what ONNX Runtime computes
//! (tract 0.23.9 broadcasts per-axis scales and zero points); quantiser-written files load.

use glimpse::{ClipModel, LoadOptions};
use glimpse_tests::{copy_bundle, fixtures, min_cosine, Reference};
use serde::Deserialize;

#[derive(Deserialize)]
struct QdqReference {
    image_embeds: Vec<Vec<f32>>,
}

#[test]
fn per_channel_weight_qdq_matches_onnx_runtime() {
    let b = copy_bundle("clip-vit-tiny");
    let onnx = b.path().join("onnx");
    std::fs::rename(
        onnx.join("vision_model_qdq_per_channel.onnx"),
        onnx.join("vision_model_quantized.onnx"),
    )
    .unwrap();
    let text = std::fs::read_to_string(b.path().join("reference_qdq_per_channel.json")).unwrap();
    let want: QdqReference = serde_json::from_str(&text).unwrap();
    let opts = LoadOptions {
        quantized: true,
        ..LoadOptions::vision_only()
    };
    let model = ClipModel::load_with(b.path(), opts).unwrap();
    let got = model
        .embed_pixels(&Reference::load(b.path()).pixels(b.path()))
        .unwrap();
    let cos = min_cosine(&got, &want.image_embeds);
    eprintln!("per-channel weight QDQ ViT vs ONNX Runtime: min cosine {cos:.8}");
    assert!(cos >= 0.9999, "cosine {cos}");
}

#[test]
fn quantized_flag_falls_back_to_fp32_graphs() {
    let dir = fixtures().join("clip-vit-tiny");
    let q = ClipModel::load_with(
        &dir,
        LoadOptions {
            quantized: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let f = ClipModel::load(&dir).unwrap();
    assert_eq!(
        q.embed_texts(&["a cat"]).unwrap(),
        f.embed_texts(&["a cat"]).unwrap()
    );
}
