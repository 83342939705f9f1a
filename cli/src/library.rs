//! The photo-library commands: `index`, `search`, `similar`, `tags`, `dupes`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use clap::{Args, Subcommand};
use glimpse::{ClipModel, Error, Result};
use glimpse_photos::{Hit, PhotoIndex, ScanEvent, ScanOptions, SearchFilter, TagOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Subcommand)]
pub enum LibraryCommand {
    /// Index the photos under a folder (JPEG, PNG, WebP; recursive): only new and
    /// changed files are embedded; Ctrl-C stops after the batches in flight are saved.
    Index {
        dir: PathBuf,
        /// Replace the tag vocabulary (comma-separated); default: everyday photo concepts.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Photos per batch (one graph run and one transaction each).
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Keep index entries whose files are gone.
        #[arg(long)]
        keep_missing: bool,
    },
    /// Photos that match a text, best first.
    Search {
        query: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Photos that look like an image (a file, in the index or not).
    Similar {
        image: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// An image's tags (from the index, or computed for a file not in it).
    Tags {
        image: PathBuf,
        /// Smallest tag probability shown.
        #[arg(long, default_value_t = TagOptions::default().threshold)]
        threshold: f32,
        /// Most tags shown.
        #[arg(long, default_value_t = TagOptions::default().max_tags)]
        max: usize,
    },
    /// Groups of near-duplicate photos.
    Dupes {
        /// Smallest cosine between two photos of a group.
        #[arg(long, default_value_t = 0.97)]
        threshold: f32,
    },
}

#[derive(Args)]
pub struct FilterArgs {
    /// How many results.
    #[arg(long, short = 'k', default_value_t = 10)]
    top: usize,
    /// Only photos with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only photos taken on or after this day (YYYY-MM-DD, UTC).
    #[arg(long)]
    after: Option<String>,
    /// Only photos taken before this day (YYYY-MM-DD, UTC).
    #[arg(long)]
    before: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Result<SearchFilter> {
        Ok(SearchFilter {
            tag: self.tag.clone(),
            after: self.after.as_deref().map(day).transpose()?,
            before: self.before.as_deref().map(day).transpose()?,
        })
    }
}

/// Unix seconds at the start of a `YYYY-MM-DD` day (UTC).
fn day(s: &str) -> Result<i64> {
    let parts: Vec<i64> = s.split('-').filter_map(|p| p.parse().ok()).collect();
    match parts[..] {
        [y, m, d] => glimpse::image::unix_seconds(y, m, d, 0),
        _ => None,
    }
    .ok_or_else(|| Error::InvalidArgument(format!("`{s}` is not a date like 2024-07-31")))
}

/// Which towers a command needs: (vision, text).
pub fn towers(cmd: &LibraryCommand) -> (bool, bool) {
    match cmd {
        LibraryCommand::Index { .. } => (true, true),
        LibraryCommand::Search { .. } => (false, true),
        LibraryCommand::Similar { .. }
        | LibraryCommand::Tags { .. }
        | LibraryCommand::Dupes { .. } => (true, false),
    }
}

pub fn run(
    cmd: &LibraryCommand,
    model: &ClipModel,
    index_path: &Path,
    as_json: bool,
) -> Result<()> {
    let mut index = PhotoIndex::open(index_path, model)?;
    match cmd {
        LibraryCommand::Index {
            dir,
            labels,
            threads,
            batch,
            keep_missing,
        } => {
            if !labels.is_empty() {
                index.set_vocabulary(labels)?;
            }
            let mut opts = ScanOptions {
                batch: *batch,
                remove_missing: !keep_missing,
                ..ScanOptions::default()
            };
            if let Some(t) = threads {
                opts.threads = *t;
            }
            let cancel = opts.cancel.clone();
            // A second Ctrl-C exits at once (the index stays consistent either way).
            let _ = ctrlc::set_handler(move || {
                if cancel.swap(true, Ordering::Relaxed) {
                    std::process::exit(130);
                }
            });
            index_dir(&index, dir, &opts, as_json)
        }
        LibraryCommand::Search { query, filter } => {
            let hits = index.search_text(query, filter.top, &filter.filter()?)?;
            print_hits(json!({"query": query}), &hits, as_json);
            Ok(())
        }
        LibraryCommand::Similar { image, filter } => {
            let hits = index.search_image_file(image, filter.top, &filter.filter()?)?;
            print_hits(json!({"image": image}), &hits, as_json);
            Ok(())
        }
        LibraryCommand::Tags {
            image,
            threshold,
            max,
        } => {
            index.set_tag_options(TagOptions {
                threshold: *threshold,
                max_tags: *max,
            });
            let key = glimpse_photos::file_key(image)?;
            let tags = if index.contains(&key) {
                index.tags(&key)?
            } else {
                index.tag_embedding(&index.embed_file(image)?)
            };
            if as_json {
                let tags: Vec<_> = tags
                    .iter()
                    .map(|t| json!({"label": t.label, "score": t.score}))
                    .collect();
                println!("{}", json!({"image": image, "tags": tags}));
            } else {
                println!("{}", image.display());
                for t in &tags {
                    println!("  {:>6.2}%  {}", t.score * 100.0, t.label);
                }
                if tags.is_empty() {
                    println!("  (no tag above {threshold})");
                }
            }
            Ok(())
        }
        LibraryCommand::Dupes { threshold } => {
            let groups = index.duplicates(*threshold);
            if as_json {
                let groups: Vec<Vec<&str>> = groups
                    .iter()
                    .map(|g| g.iter().map(|h| h.key.as_str()).collect())
                    .collect();
                println!("{}", json!({"threshold": threshold, "groups": groups}));
            } else {
                for (i, g) in groups.iter().enumerate() {
                    println!("group {} ({} photos)", i + 1, g.len());
                    for h in g {
                        println!("  {:.4}  {}", h.score, h.key);
                    }
                }
                if groups.is_empty() {
                    println!("no near-duplicates at cosine >= {threshold}");
                }
            }
            Ok(())
        }
    }
}

fn index_dir(index: &PhotoIndex, dir: &Path, opts: &ScanOptions, as_json: bool) -> Result<()> {
    let bar = if as_json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} photos, {per_sec}, eta {eta} {msg}")
                .expect("valid template"),
        )
    };
    let report = index.index_dir(dir, opts, |event, _| match event {
        ScanEvent::Planned { found, to_do } => {
            bar.set_length(*to_do as u64);
            bar.set_position(0);
            if as_json {
                println!(
                    "{}",
                    json!({"event": "planned", "found": found, "to_do": to_do})
                );
            }
        }
        ScanEvent::Committed { keys } => {
            bar.inc(keys.len() as u64);
            if as_json {
                println!("{}", json!({"event": "committed", "keys": keys}));
            }
        }
        ScanEvent::Skipped { path, reason } => {
            bar.inc(1);
            if as_json {
                println!(
                    "{}",
                    json!({"event": "skipped", "path": path, "reason": reason})
                );
            } else {
                bar.suspend(|| eprintln!("skipped {}: {reason}", path.display()));
            }
        }
    })?;
    bar.finish_and_clear();
    if as_json {
        println!(
            "{}",
            json!({"event": "done", "found": report.found, "added": report.added, "updated": report.updated,
                   "unchanged": report.unchanged, "removed": report.removed, "skipped": report.skipped.len(),
                   "cancelled": report.cancelled, "photos": index.len()})
        );
    } else {
        println!(
            "{} photos found: {} added, {} updated, {} unchanged, {} removed, {} skipped{}; {} in {}",
            report.found,
            report.added,
            report.updated,
            report.unchanged,
            report.removed,
            report.skipped.len(),
            if report.cancelled { " (cancelled)" } else { "" },
            index.len(),
            index.path().display()
        );
    }
    Ok(())
}

fn print_hits(what: serde_json::Value, hits: &[Hit], as_json: bool) {
    if as_json {
        let hits: Vec<_> = hits
            .iter()
            .map(|h| json!({"key": h.key, "score": h.score, "taken_at": h.taken_at}))
            .collect();
        let mut v = what;
        v["hits"] = json!(hits);
        println!("{v}");
    } else {
        for h in hits {
            println!("{:.4}  {}", h.score, h.key);
        }
        if hits.is_empty() {
            println!("no photos match");
        }
    }
}
