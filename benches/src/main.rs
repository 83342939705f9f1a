//! `glimpse-bench`: times Glimpse's image and text towers on a bundle and prints JSON.
//! `benches/compare_ort.py` runs it beside ONNX Runtime on the same ONNX files, in one
//! run, and reports the ratio.

use std::time::Instant;

use clap::Parser;
use glimpse::{ClipModel, LoadOptions};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Model bundle directory.
    model: std::path::PathBuf,
    /// Images per call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed calls (after one warm-up call).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Use the int8 `<graph>_quantized.onnx` graphs.
    #[arg(long)]
    quantized: bool,
    /// Text tokens per query (start and end included) for the text timing.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
}

/// Median milliseconds of `iters` calls of `f`, after one warm-up call.
fn median_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ms: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

fn main() -> glimpse::Result<()> {
    let a = Args::parse();
    let opts = LoadOptions {
        quantized: a.quantized,
        ..LoadOptions::default()
    };
    let t = Instant::now();
    let model = ClipModel::load_with(&a.model, opts)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let (w, h) = model.vision()?.preprocess_config().output_size();
    // Seeded pseudo-random pixels: the timing does not depend on their values.
    let n = a.batch * 3 * (w * h) as usize;
    let pixels: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let image_ms = median_ms(a.iters, || {
        model.embed_pixels(&pixels).unwrap();
    });
    // A query of exactly `tokens` ids: start, (tokens - 2) × "a", end.
    let ids = [
        vec![49406],
        vec![320; a.tokens.saturating_sub(2)],
        vec![49407],
    ]
    .concat();
    let text_ms = median_ms(a.iters, || {
        model
            .text()
            .unwrap()
            .embed_ids(std::slice::from_ref(&ids))
            .unwrap();
    });
    println!(
        "{}",
        json!({"load_ms": load_ms, "image_ms_per_call": image_ms, "batch": a.batch,
               "text_ms": text_ms, "tokens": a.tokens})
    );
    Ok(())
}
