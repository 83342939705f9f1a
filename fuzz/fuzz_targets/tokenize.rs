//! Any text (lossy UTF-8) → the real CLIP tokenizer: ids framed and within the context.
#![no_main]

use std::sync::OnceLock;

use glimpse::{ClipTokenizer, TokenizerSource};
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static ClipTokenizer {
    static T: OnceLock<ClipTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/clip-tokenizer/tokenizer.json"
        );
        ClipTokenizer::load(&TokenizerSource::from_path(path.into()), 77).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    glimpse_fuzz_quiet_panics();
    let text = String::from_utf8_lossy(data);
    let t = tokenizer();
    if let Ok(ids) = t.encode(&text) {
        assert!(ids.len() >= 3 && ids.len() <= 77);
        assert!(ids.iter().all(|&i| (i as usize) < t.vocab_size()));
    }
});

/// Glimpse turns panics inside tract into errors; libfuzzer-sys's hook would abort on those
/// too. A quiet hook keeps them errors, while a panic escaping Glimpse still aborts the run
/// (libfuzzer-sys catches it and aborts).
fn glimpse_fuzz_quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}
