//! `glimpse`: CLIP embeddings, zero-shot classification and image-text similarity
//! from the command line, and an offline photo library (index, search, tags, dupes).

mod library;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use glimpse::{ClipModel, LoadOptions};
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
    /// Run float math in f16 (for ARM cores with FP16 arithmetic; emulated, slower, elsewhere).
    #[arg(long, global = true)]
    f16: bool,
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
    #[command(flatten)]
    Library(library::LibraryCommand),
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
        f16: cli.f16,
        ..LoadOptions::default()
    };
    match &cli.command {
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
