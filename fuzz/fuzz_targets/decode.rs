//! Image bytes → decode (full and DCT-scaled) → CLIP preprocessing, EXIF date.
#![no_main]

use glimpse::image::{decode, decode_scaled, taken_at, ImageLimits};
use glimpse::image::PreprocessConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    glimpse_fuzz_quiet_panics();
    // Small limits keep each run fast; the limit checks themselves are under test too.
    let limits = ImageLimits {
        max_pixels: 1 << 22,
        max_bytes: 1 << 20,
        min_side: 8,
    };
    let cfg = PreprocessConfig::clip(32);
    let _ = taken_at(data);
    for img in [
        decode(data, "fuzz", &limits),
        decode_scaled(data, "fuzz", &limits, |w, h| cfg.needed_size(w, h)),
    ]
    .into_iter()
    .flatten()
    {
        let mut out = Vec::new();
        if cfg.run(&img, &mut out).is_ok() {
            assert_eq!(out.len(), 3 * 32 * 32);
        }
    }
});

/// Glimpse turns panics inside tract into errors; libfuzzer-sys's hook would abort on those
/// too. A quiet hook keeps them errors, while a panic escaping Glimpse still aborts the run
/// (libfuzzer-sys catches it and aborts).
fn glimpse_fuzz_quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}
