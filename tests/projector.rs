//! Vision-language projectors (MobileVLM LDP, LDPv2, LLaVA mlp2x_gelu) against PyTorch:
//! `tools/make_projectors.py` builds them with seeded weights and records PyTorch's output.
//! The committed fixtures are narrow (vision width 32, hidden 48) on the real 24 × 24 patch
//! grid; `python3 tools/make_projectors.py real models/projectors` makes MobileVLM's shapes
//! (1024 → 2048), checked here too when present.

use std::path::{Path, PathBuf};

use glimpse::Projector;
use glimpse_tests::{fixtures, read_npy_f32, relative_error};

/// ‖glimpse − torch‖ / ‖torch‖ allowed.
const RELATIVE_ERROR: f64 = 1e-4;

fn check(dir: &Path, name: &str, tokens: usize) -> f64 {
    let projector = Projector::load(dir.join(format!("{name}.onnx"))).unwrap();
    let input = read_npy_f32(&dir.join("input.npy"));
    let want = read_npy_f32(&dir.join(format!("{name}_output.npy")));
    let (patches, width) = projector.input_shape();
    assert_eq!(patches * width, input.len());
    let (out_tokens, hidden) = projector.output_shape();
    assert_eq!(out_tokens, tokens, "{name}");
    let got = projector.project(&input).unwrap();
    assert_eq!(got.shape(), &[1, tokens, hidden]);
    let got: Vec<f32> = got
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    let rel = relative_error(&got, &want);
    assert!(rel <= RELATIVE_ERROR, "{name}: relative error {rel:.2e}");
    eprintln!("{name} ({}): relative error {rel:.2e}", dir.display());
    rel
}

fn all(dir: &Path) {
    check(dir, "ldp", 144);
    check(dir, "ldpv2", 144);
    check(dir, "mlp2x_gelu", 576);
}

#[test]
fn projectors_match_pytorch() {
    all(&fixtures().join("projectors"));
}

#[test]
fn projectors_at_mobilevlm_shapes_match_pytorch() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/projectors");
    if !dir.join("input.npy").is_file() {
        eprintln!(
            "skipped: {} is missing (tools/make_projectors.py real)",
            dir.display()
        );
        return;
    }
    all(&dir);
}

#[test]
fn features_of_the_wrong_size_are_an_error() {
    let projector = Projector::load(fixtures().join("projectors/ldp.onnx")).unwrap();
    let err = projector.project(&[0.0; 100]).unwrap_err().to_string();
    assert!(err.contains("576 patches × 32"), "{err}");
    let err = Projector::load(fixtures().join("clip-vit-tiny/onnx/vision_model.onnx"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("image_features"), "{err}");
}
