//! `glimpse chat`, `describe`, `ask`: a language model (or vision-language) bundle answers,
//! streamed as it is generated, then the timings.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use clap::Args;
use glimpse::{
    GenerateOptions, Generation, LanguageModel, LoadOptions, Sampling, VisionLanguageModel,
};
use serde_json::json;

/// How to generate.
#[derive(Args)]
pub struct GenerateArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0: greedy. Above 0: seeded sampling with top-k and top-p.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// What to answer.
pub enum Request<'a> {
    Chat(&'a str),
    Describe(&'a Path),
    Ask(&'a Path, &'a str),
}

impl GenerateArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampling: Sampling {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
        }
    }
}

pub fn run(
    dir: &Path,
    opts: LoadOptions,
    request: Request,
    args: &GenerateArgs,
    as_json: bool,
) -> glimpse::Result<()> {
    let gen = args.options();
    let mut stdout = std::io::stdout();
    let on_text = |piece: &str| {
        // A closed stdout (a pipe into `head`) ends the generation.
        if !as_json
            && write!(stdout, "{piece}")
                .and_then(|_| stdout.flush())
                .is_err()
        {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };
    let image = match request {
        Request::Chat(_) => None,
        Request::Describe(path) | Request::Ask(path, _) => Some(path),
    };
    let started = Instant::now();
    let (out, load_seconds) = match request {
        Request::Chat(prompt) => {
            let model = LanguageModel::load_with(dir, opts)?;
            let load = started.elapsed().as_secs_f64();
            (model.generate(prompt, &gen, on_text)?, load)
        }
        Request::Describe(path) | Request::Ask(path, _) => {
            let model = VisionLanguageModel::load_with(dir, opts)?;
            let load = started.elapsed().as_secs_f64();
            let img = model.open_image(path)?;
            let out = match request {
                Request::Ask(_, question) => model.ask(&img, question, &gen, on_text)?,
                _ => model.describe(&img, &gen, on_text)?,
            };
            (out, load)
        }
    };
    report(out, load_seconds, image, as_json)
}

fn report(
    out: Generation,
    load_seconds: f64,
    image: Option<&Path>,
    as_json: bool,
) -> glimpse::Result<()> {
    if as_json {
        println!(
            "{}",
            json!({
                "image": image, "text": out.text, "tokens": out.tokens,
                "stop": format!("{:?}", out.stop), "prompt_tokens": out.prompt_tokens,
                "load_seconds": load_seconds, "image_ms": out.image_seconds * 1e3,
                "prefill_tokens_per_second": out.prefill_tokens_per_second(),
                "decode_tokens_per_second": out.decode_tokens_per_second(),
            })
        );
        return Ok(());
    }
    println!();
    let image_ms = match image {
        Some(_) => format!("image {:.0} ms · ", out.image_seconds * 1e3),
        None => String::new(),
    };
    eprintln!(
        "[load {load_seconds:.1} s · {image_ms}prompt {} tokens, prefill {:.0} ms ({:.1} tok/s) · \
         {} tokens, decode {:.1} tok/s · stop: {:?}]",
        out.prompt_tokens,
        out.prefill_seconds * 1e3,
        out.prefill_tokens_per_second(),
        out.tokens.len(),
        out.decode_tokens_per_second(),
        out.stop
    );
    Ok(())
}
