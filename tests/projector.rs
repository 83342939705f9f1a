//! Vision-language projectors (MobileVLM LDP, LDPv2, LLaVA mlp2x_gelu) against PyTorch:
//! `tools/make_projectors.py` builds them with seeded weights and records PyTorch's output.
//! The committed fixtures are narrow (vision width 32, hidden 48) on the real 24 × 24 patch
//! grid; `python3 tools/make_projectors.py real models/projectors` makes MobileVLM's shapes
//! (1024 → 2048), checked here too when present.

use std::path::{Path, PathBuf};

use glimpse::{LoadOptions, Projector};
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

fn project(path: &Path, opts: LoadOptions) -> glimpse::Result<Vec<f32>> {
    let input = read_npy_f32(&fixtures().join("projectors/input.npy"));
    let out = Projector::load_with(path, opts)?.project(&input)?;
    Ok(out
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect())
}

/// A graph whose weights are in an external data file (ONNX's `data_location`, as exporters
/// write graphs past 2 GB; `tools/external_data.py`) computes exactly what the same graph
/// with its weights inside does, which matches PyTorch; linked into another directory, its
/// data is found beside the file the link points to.
#[test]
fn weights_in_external_data_load() {
    let external = fixtures().join("projectors/external/ldp.onnx");
    assert!(
        std::fs::metadata(external.with_extension("onnx_data"))
            .unwrap()
            .len()
            > 40_000
    );
    assert!(std::fs::metadata(&external).unwrap().len() < 20_000);
    let inside = project(
        &fixtures().join("projectors/ldp.onnx"),
        LoadOptions::default(),
    );
    let want = read_npy_f32(&fixtures().join("projectors/ldp_output.npy"));
    let got = project(&external, LoadOptions::default()).unwrap();
    assert_eq!(got, inside.unwrap());
    assert!(relative_error(&got, &want) <= RELATIVE_ERROR);
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(external.canonicalize().unwrap(), tmp.path().join("p.onnx"))
        .unwrap();
    assert_eq!(
        project(&tmp.path().join("p.onnx"), LoadOptions::default()).unwrap(),
        got
    );
}

/// External data that is missing, cut short, past the size limit or outside the graph's
/// directory is a model error naming the problem, before or instead of a wrong answer.
#[test]
fn broken_external_data_is_an_error() {
    let src = fixtures().join("projectors/external");
    let tmp = tempfile::tempdir().unwrap();
    let (graph, data) = (
        tmp.path().join("ldp.onnx"),
        tmp.path().join("ldp.onnx_data"),
    );
    std::fs::copy(src.join("ldp.onnx"), &graph).unwrap();
    let fails = |opts: LoadOptions, want: &str| {
        let err = project(&graph, opts).unwrap_err();
        assert!(matches!(err, glimpse::Error::Model { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    };
    fails(LoadOptions::default(), "external data file `ldp.onnx_data`");
    let bytes = std::fs::read(src.join("ldp.onnx_data")).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    fails(LoadOptions::default(), "out of bounds");
    std::fs::write(&data, &bytes).unwrap();
    let graph_bytes = std::fs::metadata(&graph).unwrap().len();
    let limit = LoadOptions {
        max_model_bytes: graph_bytes + 1000,
        ..LoadOptions::default()
    };
    fails(limit, "with its external data");
    assert!(project(&graph, LoadOptions::default()).is_ok());
}

#[test]
fn external_data_outside_the_graphs_directory_is_refused() {
    let graph = fixtures().join("projectors/external/outside.onnx");
    let err = project(&graph, LoadOptions::default()).unwrap_err();
    assert!(matches!(err, glimpse::Error::Model { .. }), "{err:?}");
    assert!(
        err.to_string().contains("outside the graph's directory"),
        "{err}"
    );
}
