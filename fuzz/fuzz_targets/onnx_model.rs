//! ONNX bytes as a bundle's image tower: parsed, checked against the bundle, typed and
//! optimised by tract, and run once if it loads.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use glimpse::{ClipModel, LoadOptions};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("glimpse-fuzz-onnx-{}", std::process::id()));
        let _ = std::fs::create_dir_all(d.join("onnx"));
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/clip-vit-tiny/preprocessor_config.json"
        );
        std::fs::copy(src, d.join("preprocessor_config.json")).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    glimpse_fuzz_quiet_panics();
    let d = dir();
    std::fs::write(d.join("onnx/vision_model.onnx"), data).unwrap();
    let opts = LoadOptions {
        threads: 1,
        max_model_bytes: 1 << 20,
        ..LoadOptions::vision_only()
    };
    if let Ok(model) = ClipModel::load_with(d, opts) {
        let (w, h) = model.vision().unwrap().preprocess_config().output_size();
        let _ = model.embed_pixels(&vec![0.0; 3 * (w * h) as usize]);
    }
});

/// Glimpse turns panics inside tract into errors; libfuzzer-sys's hook would abort on those
/// too. A quiet hook keeps them errors, while a panic escaping Glimpse still aborts the run
/// (libfuzzer-sys catches it and aborts).
fn glimpse_fuzz_quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}
