//! `glimpse-bench`: Glimpse's side of the measurements in BENCHMARKS.md.
//!
//! - `speed MODEL`: times the image and text towers and prints JSON; `benches/compare_ort.py`
//!   runs it beside ONNX Runtime on the same ONNX files, in one run, and reports the ratio.
//! - `fashion-accuracy MODEL`: zero-shot accuracy of the Fashion-MNIST CLIP on the 10k test
//!   images (Debian `dataset-fashion-mnist`), fp32 / int8 / f16.

use std::time::Instant;

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use glimpse::{ClipModel, LoadOptions};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time the towers.
    Speed(Args),
    /// Zero-shot accuracy on Fashion-MNIST's 10k test images, fp32 / int8 / f16.
    FashionAccuracy {
        /// The bundle made by tools/train_fashion_clip.py (with its eval.json).
        model: PathBuf,
        /// Fashion-MNIST's idx files.
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
        data: PathBuf,
    },
}

#[derive(clap::Args)]
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
    /// Threads an image batch is split over.
    #[arg(long, default_value_t = 1)]
    threads: usize,
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
    match Cli::parse().command {
        Command::Speed(a) => speed(a),
        Command::FashionAccuracy { model, data } => fashion_accuracy(&model, &data),
    }
}

fn speed(a: Args) -> glimpse::Result<()> {
    let opts = LoadOptions {
        quantized: a.quantized,
        threads: a.threads,
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

/// Reads a gzipped idx file: (dimensions, bytes).
fn read_idx(path: &Path) -> glimpse::Result<(Vec<usize>, Vec<u8>)> {
    let io = |e| glimpse::Error::InvalidArgument(format!("{}: {e}", path.display()));
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(io)?)
        .read_to_end(&mut data)
        .map_err(io)?;
    let rank = *data.get(3).unwrap_or(&0) as usize;
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(data[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    Ok((dims, data[4 + 4 * rank..].to_vec()))
}

fn fashion_accuracy(model: &Path, data: &Path) -> glimpse::Result<()> {
    let eval: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("eval.json"))
            .map_err(|e| glimpse::Error::InvalidArgument(e.to_string()))?,
    )
    .map_err(|e| glimpse::Error::InvalidArgument(e.to_string()))?;
    let strings = |k: &str| -> Vec<String> {
        eval[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let (classes, templates) = (strings("classes"), strings("templates"));
    let (dims, pixels) = read_idx(&data.join("t10k-images-idx3-ubyte.gz"))?;
    let (_, labels) = read_idx(&data.join("t10k-labels-idx1-ubyte.gz"))?;
    let images: Vec<glimpse::RgbImage> = pixels
        .chunks(dims[1] * dims[2])
        .map(|p| {
            let grey =
                image::GrayImage::from_raw(dims[2] as u32, dims[1] as u32, p.to_vec()).unwrap();
            image::DynamicImage::ImageLuma8(grey).to_rgb8()
        })
        .collect();
    let variants = [
        ("fp32", LoadOptions::default()),
        (
            "int8",
            LoadOptions {
                quantized: true,
                ..LoadOptions::default()
            },
        ),
        (
            "f16",
            LoadOptions {
                f16: true,
                ..LoadOptions::default()
            },
        ),
    ];
    let mut fp32: Vec<glimpse::Embedding> = Vec::new();
    println!(
        "| precision | accuracy on {} test images | min / mean embedding cosine to fp32 |",
        labels.len()
    );
    println!("|---|---|---|");
    for (name, opts) in variants {
        let m = ClipModel::load_with(model, opts)?;
        let zs = m.zero_shot(&classes, &templates)?;
        let embs = m.embed_images(&images)?;
        let correct = embs
            .iter()
            .zip(&labels)
            .filter(|(e, &l)| zs.classify(e)[0].label == classes[l as usize])
            .count();
        let cos = if fp32.is_empty() {
            "—".to_owned()
        } else {
            let c: Vec<f32> = embs
                .iter()
                .zip(&fp32)
                .map(|(a, b)| glimpse::similarity(a, b))
                .collect();
            let min = c.iter().copied().fold(f32::INFINITY, f32::min);
            format!("{min:.5} / {:.6}", c.iter().sum::<f32>() / c.len() as f32)
        };
        println!(
            "| {name} | {:.2}% | {cos} |",
            100.0 * correct as f64 / labels.len() as f64
        );
        if fp32.is_empty() {
            fp32 = embs;
        }
    }
    Ok(())
}
