//! Indexing a folder: walk it, skip what is current, then read, hash, decode (DCT-scaled),
//! preprocess and embed on every core, committing each batch as one transaction.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::search::quantize;
use super::store::{Batch, FileState, NewPhoto, Skip};
use super::PhotoIndex;
use glimpse::image::{decode_scaled, read_file, taken_at, ImageLimits};
use glimpse::{ClipModel, Error, Result};

/// File extensions read as images.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "png", "webp"];

/// How a folder is indexed.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Worker threads, each decoding and embedding its own batches. Default: the
    /// machine's available parallelism.
    pub threads: usize,
    /// Photos per batch: one graph run and one transaction each.
    pub batch: usize,
    /// Set to stop: finished batches are committed, the rest left for the next run.
    pub cancel: Arc<AtomicBool>,
    /// Remove photos under the folder whose files are gone.
    pub remove_missing: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            threads: glimpse::cpu::default_threads(),
            batch: 8,
            cancel: Arc::default(),
            remove_missing: true,
        }
    }
}

/// What a scan did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanReport {
    /// Image files found (by extension).
    pub found: usize,
    /// Newly embedded.
    pub added: usize,
    /// Re-embedded because their contents changed.
    pub updated: usize,
    /// Already current (same size and time, or same content hash).
    pub unchanged: usize,
    /// Removed because their files are gone.
    pub removed: usize,
    /// Files not indexed, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// The scan was cancelled before the end.
    pub cancelled: bool,
}

/// Progress, reported on the calling thread as the scan goes.
#[derive(Debug)]
pub enum ScanEvent<'a> {
    /// The walk is done: `to_do` of `found` image files need reading.
    Planned { found: usize, to_do: usize },
    /// A batch is durably committed.
    Committed { keys: &'a [String] },
    /// A file was not indexed.
    Skipped { path: &'a Path, reason: &'a str },
}

/// A file to look at.
struct Candidate {
    path: PathBuf,
    key: String,
    size: u64,
    mtime_ns: Option<i64>,
    known: Option<FileState>,
}

/// A file read and preprocessed, ready for the image tower.
pub(crate) struct Prepared {
    key: String,
    size: u64,
    mtime_ns: Option<i64>,
    sha256: [u8; 32],
    taken_at: Option<i64>,
    width: u32,
    height: u32,
    pixels: Vec<f32>,
}

/// One worker batch's results.
#[derive(Default)]
struct Worked {
    photos: Vec<NewPhoto>,
    updated: usize,
    touched: Vec<(String, u64, Option<i64>)>,
    skipped: Vec<(PathBuf, Skip)>,
}

impl PhotoIndex {
    /// Indexes the image files under `dir` (recursively; hidden files skipped), calling
    /// `progress` on this thread after each walk, commit and skip.
    pub fn index_dir(
        &self,
        dir: &Path,
        opts: &ScanOptions,
        mut progress: impl FnMut(&ScanEvent, &ScanReport),
    ) -> Result<ScanReport> {
        let root = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        if !root.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
        let mut files = Vec::new();
        let mut report = ScanReport::default();
        let own = self.own_files();
        let walk = walkdir::WalkDir::new(&root)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walk {
            match entry {
                Ok(e) if e.file_type().is_file() && !own.contains(&e.path().to_owned()) => {
                    files.push(e.into_path())
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().unwrap_or(&root).to_owned();
                    let reason = e.to_string();
                    skipped(&mut report, &mut progress, path, reason);
                }
            }
        }
        let (images, others): (Vec<PathBuf>, Vec<PathBuf>) =
            files.into_iter().partition(|p| has_image_extension(p));
        for path in others {
            let reason = "not an image file (by its extension)".to_string();
            skipped(&mut report, &mut progress, path, reason);
        }
        report.found = images.len();
        let mut removed = Vec::new();
        if opts.remove_missing {
            let prefix = format!("{}{}", root.display(), std::path::MAIN_SEPARATOR);
            let present: std::collections::HashSet<String> = images
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            removed = self
                .keys()
                .into_iter()
                .filter(|k| k.starts_with(&prefix) && !present.contains(k))
                .collect();
        }
        self.run(images, removed, opts, &mut report, &mut progress)?;
        Ok(report)
    }

    /// Indexes a list of files (for [`PhotoIndex::add_file`]).
    pub(crate) fn index_files(&self, paths: &[PathBuf], opts: &ScanOptions) -> Result<ScanReport> {
        let mut report = ScanReport::default();
        let mut images = Vec::new();
        for p in paths {
            images.push(p.canonicalize().map_err(|e| Error::io(p, e))?);
        }
        report.found = images.len();
        self.run(images, Vec::new(), opts, &mut report, &mut |_, _| {})?;
        Ok(report)
    }

    /// The index file and its WAL/SHM companions: never indexed as photos.
    fn own_files(&self) -> Vec<PathBuf> {
        let base = self
            .path()
            .canonicalize()
            .unwrap_or_else(|_| self.path().to_owned());
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .map(|s| PathBuf::from(format!("{}{s}", base.display())))
            .collect()
    }

    fn run(
        &self,
        images: Vec<PathBuf>,
        removed: Vec<String>,
        opts: &ScanOptions,
        report: &mut ScanReport,
        progress: &mut dyn FnMut(&ScanEvent, &ScanReport),
    ) -> Result<()> {
        let known = self.store().file_states()?;
        let mut todo = Vec::new();
        for path in images {
            let key = path.to_string_lossy().into_owned();
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    let reason = e.to_string();
                    skipped(report, progress, path, reason);
                    continue;
                }
            };
            let (size, mtime_ns) = (meta.len(), mtime_ns(&meta));
            let state = known.get(&key).cloned();
            match &state {
                Some(s) if s.size == size && s.mtime_ns == mtime_ns => {
                    if let Some(reason) = &s.skipped {
                        skipped(report, progress, path, reason.clone());
                    } else {
                        report.unchanged += 1;
                    }
                }
                _ => todo.push(Candidate {
                    path,
                    key,
                    size,
                    mtime_ns,
                    known: state.filter(|s| s.skipped.is_none()),
                }),
            }
        }
        progress(
            &ScanEvent::Planned {
                found: report.found,
                to_do: todo.len(),
            },
            report,
        );
        if !removed.is_empty() {
            report.removed = removed.len();
            self.commit(Batch {
                removed,
                ..Batch::default()
            })?;
        }
        let limits = self.model().image_limits();
        let threads = opts.threads.clamp(1, todo.len().max(1));
        let batch = opts.batch.max(1);
        let next = AtomicUsize::new(0);
        // Stops the workers on cancellation or on the first error.
        let stop = AtomicBool::new(false);
        let stopped = || stop.load(Ordering::Relaxed) || opts.cancel.load(Ordering::Relaxed);
        let mut failure = None;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::sync_channel::<Result<Worked>>(threads);
            for _ in 0..threads {
                let tx = tx.clone();
                let (todo, next, stopped) = (&todo, &next, &stopped);
                s.spawn(move || loop {
                    if stopped() {
                        break;
                    }
                    let start = next.fetch_add(batch, Ordering::Relaxed);
                    if start >= todo.len() {
                        break;
                    }
                    let chunk = &todo[start..(start + batch).min(todo.len())];
                    if tx.send(work(self.model(), chunk, &limits)).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            for msg in rx {
                if failure.is_some() {
                    continue;
                }
                let result = msg.and_then(|w| self.commit_worked(w, report, progress));
                if let Err(e) = result {
                    failure = Some(e);
                    stop.store(true, Ordering::Relaxed);
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        // Workers only stop taking batches early when cancelled.
        report.cancelled = next.load(Ordering::Relaxed) < todo.len();
        Ok(())
    }

    fn commit_worked(
        &self,
        w: Worked,
        report: &mut ScanReport,
        progress: &mut dyn FnMut(&ScanEvent, &ScanReport),
    ) -> Result<()> {
        let keys: Vec<String> = w
            .photos
            .iter()
            .map(|p| p.key.clone())
            .chain(w.touched.iter().map(|t| t.0.clone()))
            .collect();
        let (n_new, n_touched) = (w.photos.len(), w.touched.len());
        let failed: Vec<(PathBuf, String)> = w
            .skipped
            .iter()
            .map(|(p, s)| (p.clone(), s.reason.clone()))
            .collect();
        self.commit(Batch {
            photos: w.photos,
            touched: w.touched,
            skipped: w.skipped.into_iter().map(|(_, s)| s).collect(),
            removed: Vec::new(),
        })?;
        report.added += n_new - w.updated;
        report.updated += w.updated;
        report.unchanged += n_touched;
        if !keys.is_empty() {
            progress(&ScanEvent::Committed { keys: &keys }, report);
        }
        for (path, reason) in failed {
            skipped(report, progress, path, reason);
        }
        Ok(())
    }
}

/// Reports a file that was not indexed, and records it.
fn skipped(
    report: &mut ScanReport,
    progress: &mut dyn FnMut(&ScanEvent, &ScanReport),
    path: PathBuf,
    reason: String,
) {
    progress(
        &ScanEvent::Skipped {
            path: &path,
            reason: &reason,
        },
        report,
    );
    report.skipped.push((path, reason));
}

/// Reads, checks, decodes and embeds one batch of files (on a worker thread).
fn work(model: &ClipModel, chunk: &[Candidate], limits: &ImageLimits) -> Result<Worked> {
    let mut out = Worked::default();
    let mut ready = Vec::new();
    for c in chunk {
        let skip = |reason: String| {
            (
                c.path.clone(),
                Skip {
                    key: c.key.clone(),
                    size: c.size,
                    mtime_ns: c.mtime_ns,
                    reason,
                },
            )
        };
        let data = match read_file(&c.path, limits) {
            Ok(d) => d,
            Err(e) => {
                out.skipped.push(skip(reason_of(e)));
                continue;
            }
        };
        let hash: [u8; 32] = Sha256::digest(&data).into();
        if let Some(k) = &c.known {
            if k.sha256 == Some(hash) {
                out.touched.push((c.key.clone(), c.size, c.mtime_ns));
                continue;
            }
        }
        match prepare(model, &c.key, &data, hash, c.size, c.mtime_ns) {
            Ok(p) => ready.push((p, c.known.is_some())),
            Err(e) => out.skipped.push(skip(reason_of(e))),
        }
    }
    if !ready.is_empty() {
        let (prepared, updated): (Vec<Prepared>, Vec<bool>) = ready.into_iter().unzip();
        out.updated = updated.iter().filter(|&&u| u).count();
        out.photos = embed(model, prepared)?;
    }
    Ok(out)
}

/// Decodes and preprocesses one image (whose SHA-256 is `sha256`) for the image tower.
pub(crate) fn prepare(
    model: &ClipModel,
    key: &str,
    data: &[u8],
    sha256: [u8; 32],
    size: u64,
    mtime_ns: Option<i64>,
) -> Result<Prepared> {
    let pre = model.vision()?.preprocess_config();
    let img = decode_scaled(data, key, &model.image_limits(), |w, h| {
        pre.needed_size(w, h)
    })?;
    let mut pixels = Vec::new();
    pre.run(&img, &mut pixels).map_err(|reason| Error::Image {
        name: key.to_owned(),
        reason,
    })?;
    Ok(Prepared {
        key: key.to_owned(),
        size,
        mtime_ns,
        sha256,
        taken_at: taken_at(data).or(mtime_ns.map(|ns| ns.div_euclid(1_000_000_000))),
        width: img.width(),
        height: img.height(),
        pixels,
    })
}

/// Embeds prepared images on the calling thread and quantises the embeddings.
pub(crate) fn embed(model: &ClipModel, prepared: Vec<Prepared>) -> Result<Vec<NewPhoto>> {
    let pixels: Vec<f32> = prepared
        .iter()
        .flat_map(|p| p.pixels.iter().copied())
        .collect();
    let embeddings = model.vision()?.embed_pixels_here(&pixels)?;
    Ok(prepared
        .into_iter()
        .zip(embeddings)
        .map(|(p, e)| {
            let (scale, embedding) = quantize(&e);
            NewPhoto {
                key: p.key,
                size: p.size,
                mtime_ns: p.mtime_ns,
                sha256: p.sha256,
                taken_at: p.taken_at,
                width: p.width,
                height: p.height,
                scale,
                embedding,
                tags: Vec::new(),
            }
        })
        .collect())
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn mtime_ns(meta: &std::fs::Metadata) -> Option<i64> {
    let t = meta.modified().ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(d.as_nanos()).ok()
}

fn reason_of(e: Error) -> String {
    match e {
        Error::Image { reason, .. } => reason,
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}
