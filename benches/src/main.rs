//! `glimpse-bench`: Glimpse's side of the measurements in BENCHMARKS.md.
//!
//! - `speed MODEL`: times the image and text towers and prints JSON; `benches/compare_ort.py`
//!   runs it beside ONNX Runtime on the same ONNX files, in one run, and reports the ratio.
//! - `fashion-accuracy MODEL`: zero-shot accuracy of the Fashion-MNIST CLIP on the 10k test
//!   images (Debian `dataset-fashion-mnist`), fp32 / int8 / f16.
//! - `index MODEL DIR`: photo-indexing throughput into a fresh index; `benches/compare_index.py`
//!   runs it beside a Python ONNX Runtime + PIL pipeline on the same photos.
//! - `calibrate-tags MODEL`: precision and recall of tags over the threshold, on Fashion-MNIST.
//! - `llm MODEL`: prefill and decode tokens per second of a language model bundle;
//!   `benches/compare_llama_cpp.py` runs it beside llama.cpp on the same weights.
//! - `peak`: one core's f32 and int8 multiply-add ceiling, the floor under an image tower's time.

mod peak;

use std::time::Instant;

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use glimpse::{ClipModel, LanguageModel, LoadOptions, Projector, VisionEncoder};
use glimpse_photos::{PhotoIndex, ScanOptions};
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
    /// Photos per second indexing a folder into a fresh index (model load excluded).
    Index {
        model: PathBuf,
        dir: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
    },
    /// Tag precision / recall over thresholds: calibrated on 10k Fashion-MNIST training
    /// images, checked on the 10k test images.
    CalibrateTags {
        model: PathBuf,
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
        data: PathBuf,
        /// The precision the chosen threshold must reach on the calibration images.
        #[arg(long, default_value_t = 0.9)]
        precision: f64,
    },
    /// Image encode time of a VLM vision half (vision encoder + projector); prints JSON.
    VisionEncode {
        /// A directory with onnx/vision_encoder.onnx, onnx/projector.onnx,
        /// preprocessor_config.json (tools/make_vlm.py).
        dir: PathBuf,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        #[arg(long, default_value_t = glimpse::cpu::default_threads())]
        threads: usize,
        /// The int8 `onnx/vision_encoder_quantized.onnx` (`tools/quantize.py DIR`).
        #[arg(long)]
        quantized: bool,
    },
    /// Prefill and greedy decode speed of a language model bundle; prints JSON.
    Llm {
        model: PathBuf,
        /// The user message (in the bundle's chat template) to prefill.
        #[arg(long, default_value = "What is the capital of France?")]
        prompt: String,
        /// Decode steps, run whatever the tokens (stop tokens do not stop them).
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// The 4-bit decoder (`decoder_model_merged_q4.onnx`).
        #[arg(long)]
        quantized: bool,
        /// Where the key/value cache lives between steps.
        #[arg(long, value_enum, default_value_t = Cache::InGraph)]
        kv_cache: Cache,
        /// Store the in-graph cache in f16 (`Precision::F16`).
        #[arg(long)]
        f16_cache: bool,
    },
    /// One core's multiply-add ceiling, f32 and int8 (x86-64 AVX2); prints JSON.
    Peak {
        /// Steps of every chain a run.
        #[arg(long, default_value_t = 100_000_000)]
        steps: usize,
        /// Runs; the fastest counts.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

/// [`glimpse::KvCache`] on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Cache {
    InGraph,
    Passed,
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
    /// Time one tower only (`image` or `text`); both by default. Instruction counts under
    /// qemu (benches/arm) take one tower's work by the difference of two `--iters`.
    #[arg(long, value_parser = ["image", "text"])]
    only: Option<String>,
    /// Float precision: `f32`, `auto` (f16 where the CPU has f16 arithmetic) or `f16`.
    #[arg(long, default_value = "f32", value_parser = ["f32", "auto", "f16"])]
    precision: String,
}

/// Median milliseconds of `iters` calls of `f`, after one warm-up call (none, and NaN, for 0).
fn median_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    if iters == 0 {
        return f64::NAN;
    }
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
        Command::Index {
            model,
            dir,
            threads,
            batch,
        } => index(&model, &dir, threads, batch),
        Command::CalibrateTags {
            model,
            data,
            precision,
        } => calibrate_tags(&model, &data, precision),
        Command::VisionEncode {
            dir,
            iters,
            threads,
            quantized,
        } => vision_encode(&dir, iters, threads, quantized),
        Command::Llm {
            model,
            prompt,
            tokens,
            threads,
            quantized,
            kv_cache,
            f16_cache,
        } => llm(
            &model,
            &prompt,
            tokens,
            threads,
            quantized,
            (kv_cache, f16_cache),
        ),
        Command::Peak { steps, rounds } => peak::peak(steps, rounds),
    }
}

fn llm(
    dir: &Path,
    prompt: &str,
    steps: usize,
    threads: usize,
    quantized: bool,
    (kv_cache, f16_cache): (Cache, bool),
) -> glimpse::Result<()> {
    let opts = LoadOptions {
        quantized,
        threads,
        precision: match f16_cache {
            true => glimpse::Precision::F16,
            false => glimpse::Precision::F32,
        },
        kv_cache: match kv_cache {
            Cache::InGraph => glimpse::KvCache::InGraph,
            Cache::Passed => glimpse::KvCache::Passed,
        },
        ..LoadOptions::default()
    };
    let t = Instant::now();
    let model = LanguageModel::load_with(dir, opts)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let ids = model.chat_tokens(prompt)?;
    let decoder = model.decoder();
    let mut cache = decoder.cache();
    let t = Instant::now();
    let mut logits = decoder.forward(&mut cache, decoder.embed(&ids)?)?;
    let prefill_s = t.elapsed().as_secs_f64();
    let mut generated = Vec::new();
    let t = Instant::now();
    for _ in 0..steps {
        let best = glimpse::argmax(&logits);
        generated.push(best);
        logits = decoder.forward(&mut cache, decoder.embed(&[best])?)?;
    }
    let decode_s = t.elapsed().as_secs_f64();
    if std::env::var_os("GLIMPSE_PROFILE").is_some() {
        print_profile(
            "one decode step",
            &decoder.profile(&cache, decoder.embed(&[generated[0]])?)?,
        );
    }
    println!(
        "{}",
        json!({
            "load_ms": load_ms, "prompt_ids": &ids, "threads": threads,
            "prefill_tok_s": ids.len() as f64 / prefill_s,
            "decode_tok_s": steps as f64 / decode_s,
            "tokens": generated, "cache_bytes": cache.bytes(),
            "kv_cache": format!("{:?}", decoder.kv_cache()),
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}

/// Prints a per-node profile to stderr: time by operator, then the slowest nodes.
fn print_profile(what: &str, times: &[glimpse::NodeTime]) {
    let mut by_op = std::collections::BTreeMap::<&str, (f64, usize)>::new();
    for t in times {
        let e = by_op.entry(&t.op).or_default();
        e.0 += t.seconds;
        e.1 += 1;
    }
    let mut rows: Vec<_> = by_op.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    eprintln!("{what}: {:.2} ms in {} nodes", total * 1e3, times.len());
    for (op, (s, n)) in rows.iter().take(15) {
        eprintln!("  {op:24} {:9.3} ms  ({n} nodes)", s * 1e3);
    }
    let mut slow: Vec<_> = times.iter().collect();
    slow.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    // GLIMPSE_PROFILE=OP lists every node of that operator; otherwise the twelve slowest.
    let op = std::env::var("GLIMPSE_PROFILE").unwrap_or_default();
    let (keep, take) = match times.iter().any(|t| t.op == op) {
        true => (op.as_str(), usize::MAX),
        false => ("", 12),
    };
    for t in slow
        .iter()
        .filter(|t| keep.is_empty() || t.op == keep)
        .take(take)
    {
        eprintln!("  {:9.3} ms  {} {}", t.seconds * 1e3, t.op, t.node);
    }
}

fn vision_encode(dir: &Path, iters: usize, threads: usize, quantized: bool) -> glimpse::Result<()> {
    let opts = LoadOptions {
        threads,
        quantized,
        ..LoadOptions::default()
    };
    let t = Instant::now();
    let encoder = VisionEncoder::load_with(dir, opts)?;
    let projector = Projector::load_with(dir.join("onnx/projector.onnx"), opts)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let image = encoder.open_image(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/images/franz-kafka.jpg"),
    )?;
    let encode_ms = median_ms(iters, || {
        encoder.encode(&image).unwrap();
    });
    let features = encoder.encode(&image)?;
    if std::env::var_os("GLIMPSE_PROFILE").is_some() {
        print_profile("one image", &encoder.profile(&encoder.pixels(&image)?)?);
    }
    let project_ms = median_ms(iters, || {
        projector.project(&features).unwrap();
    });
    let peak_rss_mb = peak_rss_mb();
    // The int8 features' closeness to the f32 graph's, patch by patch (after timing).
    let cosine = match quantized {
        true => {
            let f32_opts = LoadOptions {
                quantized: false,
                ..opts
            };
            let reference = VisionEncoder::load_with(dir, f32_opts)?.encode(&image)?;
            let width = encoder.output_shape().1;
            let cos: Vec<f64> = features
                .chunks(width)
                .zip(reference.chunks(width))
                .map(|(a, b)| cosine(a, b))
                .collect();
            let mean = cos.iter().sum::<f64>() / cos.len() as f64;
            json!({"min": cos.iter().copied().fold(1.0, f64::min), "mean": mean})
        }
        false => json!(null),
    };
    println!(
        "{}",
        json!({"threads": threads, "quantized": quantized, "load_ms": load_ms, "encode_ms": encode_ms, "project_ms": project_ms,
               "peak_rss_mb": peak_rss_mb, "patch_cosine_to_f32": cosine})
    );
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| *p as f64 * *q as f64)
            .sum::<f64>()
    };
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

/// This process's peak resident memory (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn speed(a: Args) -> glimpse::Result<()> {
    let opts = LoadOptions {
        quantized: a.quantized,
        threads: a.threads,
        precision: match a.precision.as_str() {
            "auto" => glimpse::Precision::Auto,
            "f16" => glimpse::Precision::F16,
            _ => glimpse::Precision::F32,
        },
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
    let image_iters = if a.only.as_deref() == Some("text") {
        0
    } else {
        a.iters
    };
    let text_iters = if a.only.as_deref() == Some("image") {
        0
    } else {
        a.iters
    };
    let image_ms = median_ms(image_iters, || {
        model.embed_pixels(&pixels).unwrap();
    });
    // A query of exactly `tokens` ids: start, (tokens - 2) × "a", end.
    let ids = [
        vec![49406],
        vec![320; a.tokens.saturating_sub(2)],
        vec![49407],
    ]
    .concat();
    let text_ms = median_ms(text_iters, || {
        model
            .text()
            .unwrap()
            .embed_ids(std::slice::from_ref(&ids))
            .unwrap();
    });
    println!(
        "{}",
        json!({"load_ms": load_ms, "image_ms_per_call": image_ms, "batch": a.batch,
               "precision": format!("{:?}", model.precision()),
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

/// Fashion-MNIST images (as RGB) and labels of one split (`train` or `t10k`).
fn fashion_split(data: &Path, split: &str) -> glimpse::Result<(Vec<glimpse::RgbImage>, Vec<u8>)> {
    let (dims, pixels) = read_idx(&data.join(format!("{split}-images-idx3-ubyte.gz")))?;
    let (_, labels) = read_idx(&data.join(format!("{split}-labels-idx1-ubyte.gz")))?;
    let images = pixels
        .chunks(dims[1] * dims[2])
        .map(|p| {
            let grey =
                image::GrayImage::from_raw(dims[2] as u32, dims[1] as u32, p.to_vec()).unwrap();
            image::DynamicImage::ImageLuma8(grey).to_rgb8()
        })
        .collect();
    Ok((images, labels))
}

fn fashion_classes(model: &Path) -> glimpse::Result<Vec<String>> {
    let text = std::fs::read_to_string(model.join("eval.json"))
        .map_err(|e| glimpse::Error::InvalidArgument(e.to_string()))?;
    let eval: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| glimpse::Error::InvalidArgument(e.to_string()))?;
    Ok(eval["classes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

fn index(model: &Path, dir: &Path, threads: usize, batch: usize) -> glimpse::Result<()> {
    let m = ClipModel::load(model)?;
    let tmp = std::env::temp_dir().join(format!("glimpse-bench-{}.sqlite", std::process::id()));
    let index = PhotoIndex::open(&tmp, &m)?;
    let opts = ScanOptions {
        threads,
        batch,
        ..ScanOptions::default()
    };
    let t = Instant::now();
    let report = index.index_dir(dir, &opts, |_, _| {})?;
    let secs = t.elapsed().as_secs_f64();
    drop(index);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
    }
    println!(
        "{}",
        json!({"photos": report.added, "skipped": report.skipped.len(), "seconds": secs,
               "photos_per_s": report.added as f64 / secs, "threads": threads, "batch": batch})
    );
    Ok(())
}

/// (class, probability) of one image, most probable first.
type ClassProbs = Vec<(usize, f32)>;

fn calibrate_tags(model: &Path, data: &Path, want: f64) -> glimpse::Result<()> {
    let m = ClipModel::load(model)?;
    let classes = fashion_classes(model)?;
    let zs = m.zero_shot(&classes, glimpse_photos::TAG_TEMPLATES)?;
    let max_tags = glimpse_photos::TagOptions::default().max_tags;
    // (precision, recall, tags per image) of the tags at `t`.
    let score = |probs: &[ClassProbs], labels: &[u8], t: f32| {
        let (mut emitted, mut right) = (0usize, 0usize);
        for (p, &l) in probs.iter().zip(labels) {
            for &(c, s) in p.iter().take(max_tags) {
                if s >= t {
                    emitted += 1;
                    right += (c == l as usize) as usize;
                }
            }
        }
        let n = labels.len() as f64;
        (
            right as f64 / emitted.max(1) as f64,
            right as f64 / n,
            emitted as f64 / n,
        )
    };
    let probs_of = |split: &str, n: usize| -> glimpse::Result<(Vec<ClassProbs>, Vec<u8>)> {
        let (images, labels) = fashion_split(data, split)?;
        let embs = m.embed_images(&images[..n.min(images.len())])?;
        let probs = embs
            .iter()
            .map(|e| {
                zs.classify(e)
                    .into_iter()
                    .map(|p| {
                        (
                            classes.iter().position(|c| *c == p.label).unwrap(),
                            p.probability,
                        )
                    })
                    .collect()
            })
            .collect();
        Ok((probs, labels[..n.min(labels.len())].to_vec()))
    };
    let (cal, cal_labels) = probs_of("train", 10_000)?;
    let (test, test_labels) = probs_of("t10k", 10_000)?;
    println!("| threshold | precision (train 10k) | recall | tags/photo | precision (test 10k) | recall |");
    println!("|---|---|---|---|---|---|");
    let mut chosen = None;
    for i in 1..=18 {
        let t = i as f32 * 0.05;
        let (p, r, k) = score(&cal, &cal_labels, t);
        let (tp, tr, _) = score(&test, &test_labels, t);
        println!(
            "| {t:.2} | {:.1}% | {:.1}% | {k:.2} | {:.1}% | {:.1}% |",
            p * 100.0,
            r * 100.0,
            tp * 100.0,
            tr * 100.0
        );
        if chosen.is_none() && p >= want {
            chosen = Some(t);
        }
    }
    match chosen {
        Some(t) => println!(
            "lowest threshold with precision >= {:.0}% on the calibration images: {t:.2}",
            want * 100.0
        ),
        None => println!("no threshold reaches precision {:.0}%", want * 100.0),
    }
    Ok(())
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
    let (images, labels) = fashion_split(data, "t10k")?;
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
                precision: glimpse::Precision::F16,
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
