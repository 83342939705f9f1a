//! `glimpse bench`: how fast a bundle runs on this device, as one results-table row: CLIP
//! bundles (image and text embedding) or language-model bundles (`llm.json`; with an image
//! when the bundle has a vision encoder): image ms, prefill and decode tokens per second.

use std::path::Path;
use std::time::{Duration, Instant};

use glimpse::{
    ClipModel, GenerateOptions, Generation, LanguageModel, LoadOptions, Precision, RgbImage,
    Sampling, VisionLanguageModel,
};
use serde_json::json;

/// What `bench` measures, as asked on the command line.
pub struct BenchArgs<'a> {
    pub image: Option<&'a Path>,
    pub text: &'a str,
    pub batch: usize,
    pub runs: usize,
    pub profile: bool,
}

/// Loads the bundle, then times single images, a batch and a text query; prints one row of
/// BENCHMARKS.md's device table (or JSON).
pub fn run(dir: &Path, opts: LoadOptions, args: &BenchArgs, as_json: bool) -> glimpse::Result<()> {
    if args.runs == 0 || args.batch == 0 {
        return Err(glimpse::Error::InvalidArgument(
            "--runs and --batch must be at least 1".into(),
        ));
    }
    let cpu = glimpse::cpu::features();
    let started = Instant::now();
    let model = ClipModel::load_with(dir, opts)?;
    let load = started.elapsed();

    let image = match args.image {
        Some(path) => glimpse::image::decode_file(path, &model.image_limits())?,
        None => test_pattern(640, 480),
    };
    let one = [image.clone()];
    let image_ms = median_ms(args.runs, || model.embed_images(&one).map(drop))?;
    let batch = vec![image; args.batch];
    let batch_ms = median_ms(args.runs.div_ceil(4), || {
        model.embed_images(&batch).map(drop)
    })?;
    let images_per_s = args.batch as f64 / (batch_ms / 1e3);
    let text_ms = median_ms(args.runs, || model.embed_texts(&[args.text]).map(drop))?;

    let quant = if opts.quantized { "int8" } else { "fp32" };
    let precision = match model.precision() {
        Precision::F16 => "f16",
        _ => "f32",
    };
    let rss_mb = peak_rss_bytes().map(|b| b as f64 / 1e6);
    let profile = match args.profile {
        true => Some(profile_by_op(&model, &one[0], args.runs)?),
        false => None,
    };
    if as_json {
        let row = json!({
            "model": model.name(), "weights": quant, "precision": precision,
            "threads": opts.threads, "load_ms": ms(load), "image_ms": image_ms,
            "batch": args.batch, "images_per_s": images_per_s, "text_ms": text_ms,
            "peak_rss_mb": rss_mb,
            "profile": profile.as_ref().map(|ops| ops.iter().map(|o| json!({
                "op": o.op, "nodes": o.nodes, "ms": o.ms})).collect::<Vec<_>>()),
            "cpu": {"arch": std::env::consts::ARCH, "os": std::env::consts::OS,
                    "cores": cpu.cores, "performance_cores": cpu.performance_cores,
                    "fp16": cpu.fp16, "dotprod": cpu.dotprod},
        });
        println!("{row}");
    } else {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        println!(
            "CPU: {} {}, {} cores ({} performance), fp16 {}, dotprod {}",
            std::env::consts::OS,
            std::env::consts::ARCH,
            cpu.cores,
            cpu.performance_cores,
            yes_no(cpu.fp16),
            yes_no(cpu.dotprod)
        );
        println!("| model | weights | precision | threads | load ms | image ms | img/s (batch {}) | text ms | peak RSS MB |", args.batch);
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {quant} | {precision} | {} | {:.0} | {image_ms:.1} | {images_per_s:.1} | {text_ms:.1} | {} |",
            model.name(),
            opts.threads,
            ms(load),
            rss_mb.map_or("—".into(), |m| format!("{m:.0}"))
        );
        if let Some(ops) = &profile {
            let total: f64 = ops.iter().map(|o| o.ms).sum();
            println!(
                "\nOne image on one thread, {total:.1} ms in graph nodes (median of {} runs):",
                args.runs
            );
            println!("| operator | nodes | ms | share |");
            println!("|---|---|---|---|");
            for o in ops {
                println!(
                    "| {} | {} | {:.2} | {:.1}% |",
                    o.op,
                    o.nodes,
                    o.ms,
                    100.0 * o.ms / total
                );
            }
        }
    }
    Ok(())
}

/// The prompt a language-model bench answers: one that draws a long answer, so decode is
/// timed over many steps.
const PROMPT: &str = "Write a long story about a lighthouse keeper and a storm.";

/// Loads a language-model bundle (a vision-language one when it has
/// `onnx/vision_encoder.onnx`), then generates `runs` greedy answers of up to `max_tokens`;
/// prints the medians as one table row (or JSON).
pub fn run_generation(
    dir: &Path,
    opts: LoadOptions,
    args: &BenchArgs,
    max_tokens: usize,
    as_json: bool,
) -> glimpse::Result<()> {
    if args.runs == 0 || max_tokens < 2 {
        return Err(glimpse::Error::InvalidArgument(
            "--runs must be at least 1 and --max-tokens at least 2".into(),
        ));
    }
    let gen = GenerateOptions {
        max_tokens,
        sampling: Sampling::GREEDY,
    };
    let started = Instant::now();
    let vision = dir.join("onnx/vision_encoder.onnx").exists();
    let mut runs: Vec<Generation> = Vec::new();
    if vision {
        let model = VisionLanguageModel::load_with(dir, opts)?;
        let load = started.elapsed();
        let image = match args.image {
            Some(path) => model.open_image(path)?,
            None => test_pattern(640, 480),
        };
        for _ in 0..=args.runs {
            runs.push(model.describe(&image, &gen, |_| std::ops::ControlFlow::Continue(()))?);
        }
        return report_generation(dir, opts, load, &runs[1..], as_json);
    }
    let model = LanguageModel::load_with(dir, opts)?;
    let load = started.elapsed();
    for _ in 0..=args.runs {
        runs.push(model.generate(PROMPT, &gen, |_| std::ops::ControlFlow::Continue(()))?);
    }
    report_generation(dir, opts, load, &runs[1..], as_json)
}

/// One row from the timed runs (the warm-up left out): medians of each figure.
fn report_generation(
    dir: &Path,
    opts: LoadOptions,
    load: Duration,
    runs: &[Generation],
    as_json: bool,
) -> glimpse::Result<()> {
    let median = |f: &dyn Fn(&Generation) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let vision = runs[0].image_seconds > 0.0;
    let image_ms = vision.then(|| median(&|g| g.image_seconds * 1e3));
    let prefill = median(&|g| g.prefill_tokens_per_second());
    let decode = median(&|g| g.decode_tokens_per_second());
    let (prompt_tokens, steps) = (runs[0].prompt_tokens, runs[0].decode_steps);
    let model = dir
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
    let quant = if opts.quantized { "q4_0" } else { "fp32" };
    let rss_mb = peak_rss_bytes().map(|b| b as f64 / 1e6);
    if as_json {
        let row = json!({
            "model": model, "weights": quant, "threads": opts.threads, "load_ms": ms(load),
            "image_ms": image_ms, "prompt_tokens": prompt_tokens,
            "prefill_tokens_per_second": prefill, "decode_steps": steps,
            "decode_tokens_per_second": decode, "peak_rss_mb": rss_mb, "runs": runs.len(),
            "arch": std::env::consts::ARCH,
        });
        println!("{row}");
        return Ok(());
    }
    println!("| model | weights | threads | load ms | image ms | prefill tok/s | decode tok/s | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {model} | {quant} | {} | {:.0} | {} | {prefill:.1} ({prompt_tokens} tokens) | {decode:.1} ({steps} steps) | {} |",
        opts.threads,
        ms(load),
        image_ms.map_or("—".into(), |m| format!("{m:.0}")),
        rss_mb.map_or("—".into(), |m| format!("{m:.0}"))
    );
    Ok(())
}

/// Time spent in one kind of graph operator.
struct OpTime {
    op: String,
    nodes: usize,
    ms: f64,
}

/// Profiles `runs` single-image runs (after a warm-up); per node the median, summed per
/// operator, slowest first.
fn profile_by_op(model: &ClipModel, image: &RgbImage, runs: usize) -> glimpse::Result<Vec<OpTime>> {
    let vision = model.vision()?;
    let mut pixels = Vec::new();
    vision
        .preprocess_config()
        .run(image, &mut pixels)
        .map_err(glimpse::Error::InvalidArgument)?;
    vision.profile(&pixels)?;
    let profiles = (0..runs.max(1))
        .map(|_| vision.profile(&pixels))
        .collect::<glimpse::Result<Vec<_>>>()?;
    let mut by_op: Vec<OpTime> = Vec::new();
    for (i, node) in profiles[0].iter().enumerate() {
        let mut times: Vec<f64> = profiles.iter().map(|p| p[i].seconds * 1e3).collect();
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        match by_op.iter_mut().find(|o| o.op == node.op) {
            Some(o) => {
                o.nodes += 1;
                o.ms += ms;
            }
            None => by_op.push(OpTime {
                op: node.op.clone(),
                nodes: 1,
                ms,
            }),
        }
    }
    by_op.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(by_op)
}

/// The median wall time of `runs` calls, after one warm-up call.
fn median_ms(runs: usize, mut f: impl FnMut() -> glimpse::Result<()>) -> glimpse::Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A deterministic photo-sized image (colour ramps and a checkerboard) so the bench needs
/// no file: preprocessing cost depends on the size, the graph's on nothing in the pixels.
fn test_pattern(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let check = if (x / 32 + y / 32) % 2 == 0 { 64 } else { 0 };
        image::Rgb([
            (x * 255 / width) as u8,
            (y * 255 / height) as u8,
            check + ((x + y) % 128) as u8,
        ])
    })
}

/// This process's peak resident set size.
fn peak_rss_bytes() -> Option<u64> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let max = u64::try_from(usage.ru_maxrss).ok()?;
    // Linux and Android report KiB, Apple systems bytes.
    Some(if cfg!(target_vendor = "apple") {
        max
    } else {
        max * 1024
    })
}
