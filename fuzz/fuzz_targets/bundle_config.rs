//! Bundle configuration files: the first byte picks which file the rest becomes
//! (glimpse.json, preprocessor_config.json + config.json, SHA256SUMS); the bundle is then
//! opened, and its graphs (real, tiny) loaded when the config allows.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use glimpse::{ClipModel, LoadOptions};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("glimpse-fuzz-bundle-{}", std::process::id()));
        let _ = std::fs::create_dir_all(d.join("onnx"));
        let src = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/clip-vit-tiny"
        ));
        std::fs::copy(
            src.join("onnx/vision_model.onnx"),
            d.join("onnx/vision_model.onnx"),
        )
        .unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    glimpse_fuzz_quiet_panics();
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let d = dir();
    for f in [
        "glimpse.json",
        "preprocessor_config.json",
        "config.json",
        "SHA256SUMS",
    ] {
        let _ = std::fs::remove_file(d.join(f));
    }
    let name = [
        "glimpse.json",
        "preprocessor_config.json",
        "config.json",
        "SHA256SUMS",
    ][which as usize % 4];
    std::fs::write(d.join(name), rest).unwrap();
    if name != "preprocessor_config.json" && name != "glimpse.json" {
        let pre = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/clip-vit-tiny/preprocessor_config.json"
        );
        std::fs::copy(pre, d.join("preprocessor_config.json")).unwrap();
    }
    let _ = glimpse::image::PreprocessConfig::from_hf_json(&String::from_utf8_lossy(rest));
    let _ = ClipModel::load_with(
        d,
        LoadOptions {
            threads: 1,
            ..LoadOptions::vision_only()
        },
    );
});

/// Glimpse turns panics inside tract into errors; libfuzzer-sys's hook would abort on those
/// too. A quiet hook keeps them errors, while a panic escaping Glimpse still aborts the run
/// (libfuzzer-sys catches it and aborts).
fn glimpse_fuzz_quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}
