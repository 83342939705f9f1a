//! Bytes as a photo index file: opened (or refused) with the demo model, then searched,
//! listed and checked.
#![no_main]

use std::sync::OnceLock;

use glimpse_photos::{PhotoIndex, SearchFilter};
use glimpse::{ClipModel, LoadOptions};
use libfuzzer_sys::fuzz_target;

fn model() -> &'static ClipModel {
    static M: OnceLock<ClipModel> = OnceLock::new();
    M.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fashion-clip");
        ClipModel::load_with(
            dir,
            LoadOptions {
                threads: 1,
                ..LoadOptions::vision_only()
            },
        )
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    glimpse_fuzz_quiet_panics();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    std::fs::write(&path, data).unwrap();
    if let Ok(index) = PhotoIndex::open(&path, model()) {
        let _ = index.search_embedding(&vec![0.1; 64], 5, &SearchFilter::default());
        for k in index.keys() {
            let _ = index.tags(&k);
            let _ = index.similar(&k, 3, &SearchFilter::default());
        }
        let _ = index.duplicates(0.9);
        let _ = index.check();
    }
});

/// Glimpse turns panics inside tract into errors; libfuzzer-sys's hook would abort on those
/// too. A quiet hook keeps them errors, while a panic escaping Glimpse still aborts the run
/// (libfuzzer-sys catches it and aborts).
fn glimpse_fuzz_quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}
