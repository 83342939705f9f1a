//! Helpers shared by the test files: fixture paths and reference outputs made by
//! `tools/make_fixtures.py` (PyTorch and ONNX Runtime).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Reference outputs of one bundle (`reference.json`).
#[derive(Deserialize)]
pub struct Reference {
    pub images: Vec<String>,
    pub pixels: String,
    pub image_embeds: Vec<Vec<f32>>,
    pub texts: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    pub text_embeds: Vec<Vec<f32>>,
    pub logit_scale: f32,
    pub probs: Vec<Vec<f32>>,
}

impl Reference {
    pub fn load(bundle: &Path) -> Reference {
        let text = std::fs::read_to_string(bundle.join("reference.json")).expect("reference.json");
        serde_json::from_str(&text).expect("valid reference.json")
    }

    /// The reference's preprocessed pixels, flattened (N×3×H×W).
    pub fn pixels(&self, bundle: &Path) -> Vec<f32> {
        read_npy_f32(&bundle.join(&self.pixels))
    }

    /// Paths of the sample images the reference embeds.
    pub fn image_paths(&self) -> Vec<PathBuf> {
        self.images
            .iter()
            .map(|n| fixtures().join("images").join(n))
            .collect()
    }
}

/// Reads a float32 `.npy` file, flattened in C order.
pub fn read_npy_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    // A transposed array saved as is is stored column-major: its flat data is not C order.
    assert_eq!(
        npy.order(),
        npyz::Order::C,
        "{}: not C order",
        path.display()
    );
    npy.into_vec::<f32>().expect("f32 npy data")
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// ‖got − want‖ / ‖want‖, in f64.
pub fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "vector lengths differ");
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

/// The smallest row-wise cosine between two sets of vectors.
pub fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len(), "row counts differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| cosine(x, y))
        .fold(f64::INFINITY, f64::min)
}

/// Copies a fixture bundle into a temp dir, for tests that alter it.
pub fn copy_bundle(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join(name), tmp.path());
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A PNG whose header claims `w` × `h` pixels, with one tiny IDAT chunk.
pub fn png_header(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::new(1, 1);
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    // Patch IHDR's width/height (bytes 16..24) and its CRC (bytes 29..33).
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The SmolLM2-135M-Instruct bundle `tools/smollm2.sh` builds from the real GGUF weights
/// (`GLIMPSE_SMOLLM2` overrides the path), or `None` when it is absent and the run does not
/// require it. CI sets `GLIMPSE_REQUIRE_LLM=1`: there a missing bundle fails the test.
pub fn smollm2() -> Option<PathBuf> {
    let dir = std::env::var_os("GLIMPSE_SMOLLM2").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2-135m-instruct"),
        PathBuf::from,
    );
    if dir.join("llm.json").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("GLIMPSE_REQUIRE_LLM").is_none(),
        "{} is missing: run `bash tools/smollm2.sh` (GLIMPSE_REQUIRE_LLM is set)",
        dir.display()
    );
    eprintln!(
        "skipped: {} is missing (build it with `bash tools/smollm2.sh`)",
        dir.display()
    );
    None
}

/// Index of the largest value.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}
