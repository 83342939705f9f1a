//! `glimpse chat`: a language model bundle answers one prompt, streamed as it is generated.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;

use clap::Args;
use glimpse::{GenerateOptions, LanguageModel, LoadOptions, Sampling};
use serde_json::json;

#[derive(Args)]
pub struct ChatArgs {
    /// The user's message; the bundle's chat template (llm.json) goes around it.
    prompt: String,
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

pub fn run(dir: &Path, opts: LoadOptions, args: &ChatArgs, as_json: bool) -> glimpse::Result<()> {
    let started = std::time::Instant::now();
    let model = LanguageModel::load_with(dir, opts)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let gen = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: Sampling {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    let mut stdout = std::io::stdout();
    let out = model.generate(&args.prompt, &gen, |piece| {
        if !as_json {
            // A closed stdout (a pipe into `head`) ends the generation.
            if write!(stdout, "{piece}")
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if as_json {
        println!(
            "{}",
            json!({
                "text": out.text, "tokens": out.tokens, "stop": format!("{:?}", out.stop),
                "prompt_tokens": out.prompt_tokens, "load_seconds": load_seconds,
                "prefill_tokens_per_second": out.prefill_tokens_per_second(),
                "decode_tokens_per_second": out.decode_tokens_per_second(),
            })
        );
    } else {
        println!();
        eprintln!(
            "[load {load_seconds:.1} s · prompt {} tokens, prefill {:.0} ms ({:.1} tok/s) · \
             {} tokens, decode {:.1} tok/s · stop: {:?}]",
            out.prompt_tokens,
            out.prefill_seconds * 1e3,
            out.prefill_tokens_per_second(),
            out.tokens.len(),
            out.decode_tokens_per_second(),
            out.stop
        );
    }
    Ok(())
}
