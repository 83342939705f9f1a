//! `glimpse`: CLIP embeddings, zero-shot classification and image-text similarity
//! from the command line, an offline photo library (index, search, tags, dupes), and
//! chat with a language model bundle.

mod bench;
mod chat;
mod library;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use glimpse::{ClipModel, LoadOptions, Precision};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "glimpse",
    version,
    about = "On-device CLIP: embed, classify and compare images and text"
)]
struct Cli {
    /// Model bundle directory. Either the HF optimum / transformers.js layout
    /// (onnx/vision_model.onnx, onnx/text_model.onnx, preprocessor_config.json,
    /// tokenizer.json or vocab.json + merges.txt, config.json) or a directory with a
    /// glimpse.json manifest. Defaults to $GLIMPSE_MODEL.
    #[arg(long, short, env = "GLIMPSE_MODEL", global = true)]
    model: Option<PathBuf>,
    /// Use the int8 <graph>_quantized.onnx beside each graph where the bundle has one.
    #[arg(long, global = true)]
    quantized: bool,
    /// Float precision: f32; auto (f16 where the CPU has f16 arithmetic, as on most ARM
    /// phone cores, f32 elsewhere); or f16 (emulated, slower, without f16 arithmetic). For a
    /// language model, f16 is its key/value cache's storage (half the memory).
    #[arg(long, global = true, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Threads an image batch is split over. Default: the performance cores.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Print JSON instead of text (JSON lines for `index`).
    #[arg(long, global = true)]
    json: bool,
    /// The photo index file (created by `index`). Defaults to $GLIMPSE_INDEX.
    #[arg(
        long,
        env = "GLIMPSE_INDEX",
        global = true,
        default_value = "glimpse-index.sqlite"
    )]
    index: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print L2-normalised embeddings of images and/or texts.
    Embed {
        /// Image files.
        images: Vec<PathBuf>,
        /// A text to embed (repeatable).
        #[arg(long = "text", short)]
        texts: Vec<String>,
    },
    /// Zero-shot classify an image among labels.
    Classify {
        image: PathBuf,
        /// Comma-separated labels, e.g. "a cat,a dog,a car".
        #[arg(long, short, value_delimiter = ',', required = true)]
        labels: Vec<String>,
        /// Prompt template with {} for the label (repeatable); default: CLIP's 7-template ensemble.
        #[arg(long = "template", short)]
        templates: Vec<String>,
        /// How many labels to print.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Cosine similarity and CLIP logit between an image and a text.
    Similarity { image: PathBuf, text: String },
    /// Time a bundle on this device; prints a BENCHMARKS.md row. CLIP: load, image and text
    /// embedding. Language model (llm.json): load, image (vision-language bundles), prefill
    /// and decode tokens per second of greedy answers.
    Bench {
        /// An image file to embed (default: a built-in 640×480 test pattern).
        #[arg(long)]
        image: Option<PathBuf>,
        /// The text query to embed.
        #[arg(long, default_value = "a photo of a dog")]
        text: String,
        /// Batch size for the throughput figure.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Timed calls per figure (median reported, after one warm-up).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Also print where one image's time goes: tract's per-node profile, by operator.
        #[arg(long)]
        profile: bool,
        /// Language models: most tokens an answer may have.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
    },
    /// Answer a prompt with a language model bundle (llm.json), streaming the text.
    Chat {
        prompt: String,
        #[command(flatten)]
        gen: chat::GenerateArgs,
    },
    /// Describe an image with a vision-language bundle (llm.json with image_chat_template).
    Describe {
        image: PathBuf,
        #[command(flatten)]
        gen: chat::GenerateArgs,
    },
    /// Answer a question about an image with a vision-language bundle.
    Ask {
        image: PathBuf,
        question: String,
        #[command(flatten)]
        gen: chat::GenerateArgs,
    },
    #[command(flatten)]
    Library(library::LibraryCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    F32,
    Auto,
    F16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Auto => Precision::Auto,
            PrecisionArg::F16 => Precision::F16,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> glimpse::Result<()> {
    let dir = cli.model.as_deref().ok_or_else(|| {
        glimpse::Error::InvalidArgument("no model: pass --model DIR or set GLIMPSE_MODEL".into())
    })?;
    let opts = |vision: bool, text: bool| LoadOptions {
        vision,
        text,
        quantized: cli.quantized,
        precision: cli.precision.into(),
        threads: cli
            .threads
            .unwrap_or_else(glimpse::cpu::default_threads)
            .max(1),
        ..LoadOptions::default()
    };
    match &cli.command {
        Command::Bench {
            image,
            text,
            batch,
            runs,
            profile,
            max_tokens,
        } => {
            let args = bench::BenchArgs {
                image: image.as_deref(),
                text,
                batch: *batch,
                runs: *runs,
                profile: *profile,
            };
            if dir.join("llm.json").exists() {
                bench::run_generation(dir, opts(false, false), &args, *max_tokens, cli.json)?;
            } else {
                bench::run(dir, opts(true, true), &args, cli.json)?;
            }
        }
        Command::Chat { prompt, gen } => chat::run(
            dir,
            opts(false, false),
            chat::Request::Chat(prompt),
            gen,
            cli.json,
        )?,
        Command::Describe { image, gen } => chat::run(
            dir,
            opts(false, false),
            chat::Request::Describe(image),
            gen,
            cli.json,
        )?,
        Command::Ask {
            image,
            question,
            gen,
        } => chat::run(
            dir,
            opts(false, false),
            chat::Request::Ask(image, question),
            gen,
            cli.json,
        )?,
        Command::Library(cmd) => {
            let (vision, text) = library::towers(cmd);
            let model = ClipModel::load_with(dir, opts(vision, text))?;
            library::run(cmd, &model, &cli.index, cli.json)?;
        }
        Command::Embed { images, texts } => {
            if images.is_empty() && texts.is_empty() {
                return Err(glimpse::Error::InvalidArgument(
                    "nothing to embed: give image files and/or --text".into(),
                ));
            }
            let model = ClipModel::load_with(dir, opts(!images.is_empty(), !texts.is_empty()))?;
            let mut rows = Vec::new();
            if !images.is_empty() {
                let embs = model.embed_image_files(images)?;
                rows.extend(images.iter().map(|p| p.display().to_string()).zip(embs));
            }
            if !texts.is_empty() {
                rows.extend(texts.iter().cloned().zip(model.embed_texts(texts)?));
            }
            if cli.json {
                let items: Vec<_> = rows
                    .iter()
                    .map(|(k, v)| json!({"input": k, "embedding": v}))
                    .collect();
                println!("{}", json!({"model": model.name(), "embeddings": items}));
            } else {
                for (k, v) in &rows {
                    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:+.4}")).collect();
                    println!("{k}\n  {} dims: [{}, ...]", v.len(), head.join(", "));
                }
            }
        }
        Command::Classify {
            image,
            labels,
            templates,
            top,
        } => {
            let model = ClipModel::load_with(dir, opts(true, true))?;
            let zs = if templates.is_empty() {
                model.zero_shot(labels, glimpse::DEFAULT_TEMPLATES)?
            } else {
                model.zero_shot(labels, templates)?
            };
            let emb = model.embed_image_files(&[image])?;
            let preds = zs.classify(&emb[0]);
            if cli.json {
                println!(
                    "{}",
                    json!({"model": model.name(), "image": image, "predictions": preds.iter().map(|p| json!({"label": p.label, "probability": p.probability, "similarity": p.similarity})).collect::<Vec<_>>()})
                );
            } else {
                println!("{} (model: {})", image.display(), model.name());
                for p in preds.iter().take(*top) {
                    println!(
                        "  {:>6.2}%  {}  (cosine {:+.3})",
                        p.probability * 100.0,
                        p.label,
                        p.similarity
                    );
                }
            }
        }
        Command::Similarity { image, text } => {
            let model = ClipModel::load_with(dir, opts(true, true))?;
            let img = model.embed_image_files(&[image])?;
            let txt = model.embed_texts(&[text])?;
            let cosine = glimpse::similarity(&img[0], &txt[0]);
            let logit = model.match_score(&img[0], &txt[0]);
            if cli.json {
                println!(
                    "{}",
                    json!({"model": model.name(), "image": image, "text": text, "cosine": cosine, "logit": logit})
                );
            } else {
                println!(
                    "{} ~ {text:?}: cosine {cosine:+.4}, logit {logit:.2}",
                    image.display()
                );
            }
        }
    }
    Ok(())
}
