//! The photo index: add photos, search by text or image, read tags, with progress and
//! cancellation for long scans.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glimpse_photos as rt;

use crate::clip::ClipModel;
use crate::{guard, GlimpseError};

/// A search result: the photo's key (its path, or the id it was added under) and cosine.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Hit {
    pub key: String,
    pub score: f32,
    /// When it was taken (EXIF), else its file time, as Unix seconds.
    pub taken_at: Option<i64>,
}

/// A tag and its probability.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Tag {
    pub label: String,
    pub score: f32,
}

/// Restricts a search to photos with a tag and/or taken within a time range.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct SearchFilter {
    /// Only photos carrying this tag.
    #[uniffi(default = None)]
    pub tag: Option<String>,
    /// Only photos taken at or after this Unix time.
    #[uniffi(default = None)]
    pub after: Option<i64>,
    /// Only photos taken before this Unix time.
    #[uniffi(default = None)]
    pub before: Option<i64>,
}

/// How a folder is indexed.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ScanOptions {
    /// Worker threads; 0 for one per core.
    #[uniffi(default = 0)]
    pub threads: u32,
    /// Photos per batch (one graph run and one transaction).
    #[uniffi(default = 8)]
    pub batch: u32,
    /// Remove photos under the folder whose files are gone.
    #[uniffi(default = true)]
    pub remove_missing: bool,
}

/// What a scan did (so far, when passed to a listener).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ScanReport {
    pub found: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub removed: u64,
    /// Files not indexed: path and reason.
    pub skipped: Vec<Skipped>,
    pub cancelled: bool,
}

/// A file a scan did not index, and why.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Progress of a scan.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ScanEvent {
    /// The walk is done: `to_do` of `found` image files need reading.
    Planned { found: u64, to_do: u64 },
    /// These photos are durably stored.
    Committed { keys: Vec<String> },
    /// A file was not indexed.
    Skipped { path: String, reason: String },
}

/// Receives scan progress, on the thread that called `index_dir`.
#[uniffi::export(foreign)]
pub trait ScanListener: Send + Sync {
    fn on_event(&self, event: ScanEvent, report: ScanReport);
}

/// Stops a scan from another thread; batches already embedded are kept.
#[derive(Debug, Default, uniffi::Object)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

#[uniffi::export]
impl CancelToken {
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// A photo library index in one file, bound to one model. Search from any thread while
/// one thread adds photos.
#[derive(uniffi::Object)]
pub struct PhotoIndex {
    inner: rt::PhotoIndex,
}

#[uniffi::export]
impl PhotoIndex {
    /// Opens (or creates) the index file at `path` for `model`; an index built with another
    /// model is refused.
    #[uniffi::constructor]
    pub fn open(path: String, model: Arc<ClipModel>) -> Result<Arc<Self>, GlimpseError> {
        guard(|| {
            let inner = rt::PhotoIndex::open(&path, &model.inner)?;
            Ok(Arc::new(PhotoIndex { inner }))
        })
    }

    /// The number of photos.
    pub fn len(&self) -> u64 {
        self.inner.len() as u64
    }

    /// Whether the index holds no photos.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Whether the photo `key` is stored.
    pub fn contains(&self, key: String) -> bool {
        self.inner.contains(&key)
    }

    /// Every stored key.
    pub fn keys(&self) -> Vec<String> {
        self.inner.keys()
    }

    /// Adds or refreshes one image file; false when it was already current.
    pub fn add_file(&self, path: String) -> Result<bool, GlimpseError> {
        guard(|| self.inner.add_file(&path))
    }

    /// Adds an encoded image under `id` (e.g. a media-store id), replacing any earlier one.
    pub fn add_bytes(&self, id: String, encoded: Vec<u8>) -> Result<(), GlimpseError> {
        guard(|| self.inner.add_bytes(&id, &encoded))
    }

    /// Removes a photo; false when it was not stored.
    pub fn remove(&self, key: String) -> Result<bool, GlimpseError> {
        guard(|| self.inner.remove(&key))
    }

    /// Indexes the image files under `dir`, reporting to `listener` and stopping when
    /// `cancel` is cancelled.
    #[uniffi::method(default(listener = None, cancel = None))]
    pub fn index_dir(
        &self,
        dir: String,
        options: ScanOptions,
        listener: Option<Arc<dyn ScanListener>>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<ScanReport, GlimpseError> {
        guard(|| {
            let defaults = rt::ScanOptions::default();
            let opts = rt::ScanOptions {
                threads: match options.threads {
                    0 => defaults.threads,
                    n => n as usize,
                },
                batch: options.batch.max(1) as usize,
                cancel: cancel.map_or(defaults.cancel, |c| c.flag.clone()),
                remove_missing: options.remove_missing,
            };
            let report = self.inner.index_dir(dir.as_ref(), &opts, |event, report| {
                if let Some(l) = &listener {
                    l.on_event(event.into(), report.into());
                }
            })?;
            Ok(ScanReport::from(&report))
        })
    }

    /// The `k` photos closest to a text query.
    #[uniffi::method(default(filter = None))]
    pub fn search_text(
        &self,
        query: String,
        k: u32,
        filter: Option<SearchFilter>,
    ) -> Result<Vec<Hit>, GlimpseError> {
        guard(|| {
            hits(
                self.inner
                    .search_text(&query, k as usize, &rt_filter(filter)),
            )
        })
    }

    /// The `k` photos closest to an image file (its stored embedding if indexed).
    #[uniffi::method(default(filter = None))]
    pub fn search_image_file(
        &self,
        path: String,
        k: u32,
        filter: Option<SearchFilter>,
    ) -> Result<Vec<Hit>, GlimpseError> {
        guard(|| {
            hits(
                self.inner
                    .search_image_file(&path, k as usize, &rt_filter(filter)),
            )
        })
    }

    /// The `k` photos closest to an embedding from this index's model.
    #[uniffi::method(default(filter = None))]
    pub fn search_embedding(
        &self,
        embedding: Vec<f32>,
        k: u32,
        filter: Option<SearchFilter>,
    ) -> Result<Vec<Hit>, GlimpseError> {
        guard(|| {
            hits(
                self.inner
                    .search_embedding(&embedding, k as usize, &rt_filter(filter)),
            )
        })
    }

    /// The `k` photos closest to the stored photo `key`, itself left out.
    #[uniffi::method(default(filter = None))]
    pub fn similar(
        &self,
        key: String,
        k: u32,
        filter: Option<SearchFilter>,
    ) -> Result<Vec<Hit>, GlimpseError> {
        guard(|| hits(self.inner.similar(&key, k as usize, &rt_filter(filter))))
    }

    /// The stored photo's tags, best first.
    pub fn tags(&self, key: String) -> Result<Vec<Tag>, GlimpseError> {
        guard(|| {
            let tags = self.inner.tags(&key)?;
            Ok(tags
                .into_iter()
                .map(|t| Tag {
                    label: t.label,
                    score: t.score,
                })
                .collect())
        })
    }

    /// The tag vocabulary.
    pub fn vocabulary(&self) -> Vec<String> {
        self.inner.vocabulary()
    }

    /// Replaces the tag vocabulary and re-tags every photo from its stored embedding.
    pub fn set_vocabulary(&self, labels: Vec<String>) -> Result<(), GlimpseError> {
        guard(|| self.inner.set_vocabulary(&labels))
    }

    /// Groups of near-duplicate photos (cosine ≥ `threshold`), largest first.
    pub fn duplicates(&self, threshold: f32) -> Result<Vec<Vec<Hit>>, GlimpseError> {
        guard(|| {
            let groups = self.inner.duplicates(threshold);
            Ok(groups
                .into_iter()
                .map(|g| g.into_iter().map(Hit::from).collect())
                .collect())
        })
    }
}

fn rt_filter(filter: Option<SearchFilter>) -> rt::SearchFilter {
    let f = filter.unwrap_or_default();
    rt::SearchFilter {
        tag: f.tag,
        after: f.after,
        before: f.before,
    }
}

fn hits(found: glimpse::Result<Vec<rt::Hit>>) -> glimpse::Result<Vec<Hit>> {
    Ok(found?.into_iter().map(Hit::from).collect())
}

impl From<rt::Hit> for Hit {
    fn from(h: rt::Hit) -> Self {
        Hit {
            key: h.key,
            score: h.score,
            taken_at: h.taken_at,
        }
    }
}

impl From<&rt::ScanReport> for ScanReport {
    fn from(r: &rt::ScanReport) -> Self {
        ScanReport {
            found: r.found as u64,
            added: r.added as u64,
            updated: r.updated as u64,
            unchanged: r.unchanged as u64,
            removed: r.removed as u64,
            skipped: r
                .skipped
                .iter()
                .map(|(path, reason)| Skipped {
                    path: path.display().to_string(),
                    reason: reason.clone(),
                })
                .collect(),
            cancelled: r.cancelled,
        }
    }
}

impl From<&rt::ScanEvent<'_>> for ScanEvent {
    fn from(e: &rt::ScanEvent) -> Self {
        match *e {
            rt::ScanEvent::Planned { found, to_do } => ScanEvent::Planned {
                found: found as u64,
                to_do: to_do as u64,
            },
            rt::ScanEvent::Committed { keys } => ScanEvent::Committed {
                keys: keys.to_vec(),
            },
            rt::ScanEvent::Skipped { path, reason } => ScanEvent::Skipped {
                path: path.display().to_string(),
                reason: reason.to_owned(),
            },
        }
    }
}
