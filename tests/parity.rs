//! Embeddings match PyTorch / ONNX Runtime on seeded models of CLIP's real
//! architectures (references from tools/make_fixtures.py).

use std::path::{Path, PathBuf};

use glimpse::ClipModel;
use glimpse_tests::{copy_bundle, fixtures, min_cosine, Reference};

/// fp32 parity bound on graph outputs fed identical inputs.
const GRAPH_COSINE: f64 = 0.9999;
/// End to end from image files: bounded by the preprocessing difference to PIL.
const FILE_COSINE: f64 = 0.999;

fn check_bundle(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let r = Reference::load(dir);
    let model = ClipModel::load(dir).unwrap();

    let images = model.embed_pixels(&r.pixels(dir)).unwrap();
    let cos = min_cosine(&images, &r.image_embeds);
    eprintln!("{name}: image embeddings from reference pixels: min cosine {cos:.8}");
    assert!(cos >= GRAPH_COSINE, "{name}: image cosine {cos}");

    let tok = model.text().unwrap().tokenizer();
    for (t, ids) in r.texts.iter().zip(&r.input_ids) {
        assert_eq!(&tok.encode(t).unwrap(), ids, "{name}: ids of {t:?}");
    }
    let texts = model.embed_texts(&r.texts).unwrap();
    let cos = min_cosine(&texts, &r.text_embeds);
    eprintln!("{name}: text embeddings: min cosine {cos:.8}");
    assert!(cos >= GRAPH_COSINE, "{name}: text cosine {cos}");

    // Softmax over the probe texts at the logit scale, as CLIP scores image-text pairs.
    assert_eq!(model.logit_scale(), r.logit_scale);
    for (img, want) in images.iter().zip(&r.probs) {
        let logits: Vec<f32> = texts.iter().map(|t| model.match_score(img, t)).collect();
        let max = logits.iter().cloned().fold(f32::MIN, f32::max);
        let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
        for (l, w) in logits.iter().zip(want) {
            let p = (l - max).exp() / sum;
            assert!(
                (p - w).abs() < 2e-3,
                "{name}: probability {p} vs reference {w}"
            );
        }
    }

    let from_files = model.embed_image_files(&r.image_paths()).unwrap();
    let cos = min_cosine(&from_files, &r.image_embeds);
    eprintln!("{name}: image embeddings end to end from files: min cosine {cos:.8}");
    assert!(cos >= FILE_COSINE, "{name}: end-to-end image cosine {cos}");
}

#[test]
fn vit_tower_matches_onnx_runtime() {
    check_bundle(&fixtures().join("clip-vit-tiny"));
}

#[test]
fn resnet_attention_pool_tower_matches_onnx_runtime() {
    check_bundle(&fixtures().join("clip-rn-tiny"));
}

/// The full ViT-B/32 shape, generated on demand (not committed):
/// `python tools/make_fixtures.py vit-b32 models/clip-vit-b32-random`.
#[test]
fn vit_b32_full_size_matches_onnx_runtime() {
    let dir = std::env::var_os("GLIMPSE_VIT_B32")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures().join("../models/clip-vit-b32-random"));
    if !dir.join("reference.json").exists() {
        eprintln!(
            "SKIPPED: no full-size ViT-B/32 at {}; make it with \
             `python tools/make_fixtures.py vit-b32 models/clip-vit-b32-random`",
            dir.display()
        );
        return;
    }
    check_bundle(&dir);
}

#[test]
fn batched_and_single_embeddings_agree() {
    let dir = fixtures().join("clip-vit-tiny");
    let model = ClipModel::load(&dir).unwrap();
    let r = Reference::load(&dir);
    let batch = model.embed_image_files(&r.image_paths()).unwrap();
    for (path, b) in r.image_paths().iter().zip(&batch) {
        let one = model.embed_image_files(&[path]).unwrap();
        assert!(min_cosine(&one, std::slice::from_ref(b)) > 0.99999);
    }
    let texts = model.embed_texts(&r.texts).unwrap();
    for (t, b) in r.texts.iter().zip(&texts) {
        let one = model.embed_texts(&[t]).unwrap();
        assert!(
            min_cosine(&one, std::slice::from_ref(b)) > 0.99999,
            "{t:?} alone vs in a padded batch"
        );
    }
}

#[test]
fn towers_load_independently() {
    let dir = fixtures().join("clip-vit-tiny");
    let text_only = ClipModel::load_with(&dir, glimpse::LoadOptions::text_only()).unwrap();
    assert!(matches!(
        text_only.vision(),
        Err(glimpse::Error::TowerNotLoaded("image"))
    ));
    let full = ClipModel::load(&dir).unwrap();
    let q = "a photo of a cat";
    let a = text_only.embed_texts(&[q]).unwrap();
    let b = full.embed_texts(&[q]).unwrap();
    assert_eq!(a, b);
    let vision_only = ClipModel::load_with(&dir, glimpse::LoadOptions::vision_only()).unwrap();
    assert!(matches!(
        vision_only.embed_texts(&[q]),
        Err(glimpse::Error::TowerNotLoaded("text"))
    ));
}

#[test]
fn zero_shot_ranks_by_ensembled_text_embeddings() {
    let dir = fixtures().join("clip-rn-tiny");
    let model = ClipModel::load(&dir).unwrap();
    let labels = ["cat", "dog", "car"];
    let templates = ["a photo of a {}.", "a drawing of a {}."];
    let zs = model.zero_shot(&labels, &templates).unwrap();
    let img = model
        .embed_image_files(&[fixtures().join("images/franz-kafka.jpg")])
        .unwrap();
    let preds = zs.classify(&img[0]);
    // Independent computation: mean of normalised template embeddings, renormalised.
    let mut expected = Vec::new();
    for l in labels {
        let rows = model
            .embed_texts(&templates.map(|t| t.replace("{}", l)))
            .unwrap();
        let mut m: Vec<f32> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i]).sum())
            .collect();
        glimpse::normalize(&mut m);
        expected.push((l, glimpse::similarity(&img[0], &m)));
    }
    let total: f32 = expected
        .iter()
        .map(|(_, s)| (s * model.logit_scale()).exp())
        .sum();
    for p in &preds {
        let (_, s) = expected.iter().find(|(l, _)| *l == p.label).unwrap();
        assert!((p.similarity - s).abs() < 1e-5);
        assert!((p.probability - (s * model.logit_scale()).exp() / total).abs() < 1e-4);
    }
    assert!(preds
        .windows(2)
        .all(|w| w[0].probability >= w[1].probability));
    assert!((preds.iter().map(|p| p.probability).sum::<f32>() - 1.0).abs() < 1e-5);
}

/// Exporters that give the text tower an `attention_mask` input (transformers 5 builds its
/// mask arithmetic from it) must give the same embeddings.
#[test]
fn text_graph_with_attention_mask_matches_onnx_runtime() {
    let b = copy_bundle("clip-vit-tiny");
    std::fs::rename(
        b.path().join("text_model_with_mask.onnx"),
        b.path().join("onnx/text_model.onnx"),
    )
    .unwrap();
    let r = Reference::load(b.path());
    let model = ClipModel::load_with(b.path(), glimpse::LoadOptions::text_only()).unwrap();
    let texts = model.embed_texts(&r.texts).unwrap();
    let cos = min_cosine(&texts, &r.text_embeds);
    eprintln!("clip-vit-tiny, text graph with attention_mask: min cosine {cos:.8}");
    assert!(cos >= GRAPH_COSINE, "cosine {cos}");
}

#[test]
fn model_is_shareable_between_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<ClipModel>();
    let model = ClipModel::load(fixtures().join("clip-vit-tiny")).unwrap();
    let want = model.embed_texts(&["a photo of a cat"]).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(model.embed_texts(&["a photo of a cat"]).unwrap(), want));
        }
    });
}

#[test]
fn images_split_over_threads_agree_with_one_thread() {
    let dir = fixtures().join("clip-vit-tiny");
    let r = Reference::load(&dir);
    let pixels = r.pixels(&dir);
    let with = |threads| {
        let opts = glimpse::LoadOptions {
            threads,
            ..glimpse::LoadOptions::vision_only()
        };
        ClipModel::load_with(&dir, opts)
            .unwrap()
            .embed_pixels(&pixels)
            .unwrap()
    };
    let one = with(1);
    for threads in [2, 3, 8] {
        let cos = min_cosine(&with(threads), &one);
        assert!(cos > 0.99999, "{threads} threads: cosine {cos}");
    }
    assert!(min_cosine(&one, &r.image_embeds) >= GRAPH_COSINE);
}

#[test]
fn one_image_or_query_over_a_thread_pool_matches_the_references() {
    // A single image or text runs alone, its matrix products split over the model's pool.
    let dir = fixtures().join("clip-vit-tiny");
    let r = Reference::load(&dir);
    let per = r.pixels(&dir).len() / r.image_embeds.len();
    for threads in [2, 4] {
        let opts = glimpse::LoadOptions {
            threads,
            ..glimpse::LoadOptions::default()
        };
        let model = ClipModel::load_with(&dir, opts).unwrap();
        for (i, want) in r.image_embeds.iter().enumerate() {
            let px = &r.pixels(&dir)[i * per..(i + 1) * per];
            let got = model.embed_pixels(px).unwrap();
            let cos = min_cosine(&got, std::slice::from_ref(want));
            assert!(
                cos >= GRAPH_COSINE,
                "{threads} threads, image {i}: cosine {cos}"
            );
        }
        for (t, want) in r.texts.iter().zip(&r.text_embeds) {
            let got = model.embed_texts(&[t]).unwrap();
            let cos = min_cosine(&got, std::slice::from_ref(want));
            assert!(
                cos >= GRAPH_COSINE,
                "{threads} threads, {t:?}: cosine {cos}"
            );
        }
    }
}

#[test]
fn profile_times_every_node_of_one_image() {
    let dir = fixtures().join("clip-vit-tiny");
    let r = Reference::load(&dir);
    let pixels = r.pixels(&dir);
    let per = pixels.len() / r.image_embeds.len();
    let model = ClipModel::load(&dir).unwrap();
    let vision = model.vision().unwrap();
    let nodes = vision.profile(&pixels[..per]).unwrap();
    assert!(nodes.iter().any(|n| n.op.contains("MatMul")), "{nodes:?}");
    assert!(nodes.iter().all(|n| n.seconds >= 0.0 && !n.node.is_empty()));
    // Same plan every run: the same nodes, in order.
    let again: Vec<String> = vision
        .profile(&pixels[..per])
        .unwrap()
        .into_iter()
        .map(|n| n.node)
        .collect();
    assert_eq!(
        again,
        nodes.iter().map(|n| n.node.clone()).collect::<Vec<_>>()
    );
    let err = vision.profile(&pixels[..per - 1]).unwrap_err();
    assert!(matches!(err, glimpse::Error::InvalidArgument(_)), "{err}");
}
