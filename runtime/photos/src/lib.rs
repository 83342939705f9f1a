//! An offline photo library: embeddings of a folder's photos in one SQLite file, searched
//! by text or by image, tagged from a label vocabulary, grouped into near-duplicates.
//!
//! ```no_run
//! use glimpse::ClipModel;
//! use glimpse_photos::{PhotoIndex, ScanOptions, SearchFilter};
//! let model = ClipModel::load("models/fashion-clip")?;
//! let index = PhotoIndex::open("photos.glimpse", &model)?;
//! index.index_dir("Pictures".as_ref(), &ScanOptions::default(), |_, _| {})?;
//! for hit in index.search_text("a dog on the beach", 10, &SearchFilter::default())? {
//!     println!("{:.3} {}", hit.score, hit.key);
//! }
//! # Ok::<(), glimpse::Error>(())
//! ```
//!
//! Stages: [`scan`] (walk, decode, embed in parallel) → `store` (SQLite, one transaction
//! per batch) → [`search`] (int8 brute force) and [`tags`].

pub mod scan;
pub mod search;
mod store;
pub mod tags;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sha2::Digest;

use glimpse::image::{decode_scaled, read_file};
use glimpse::{ClipModel, Embedding, Error, Result, ZeroShot};
use search::{dequantize, Matrix};
use store::{Batch, NewPhoto, Store};

pub use scan::{ScanEvent, ScanOptions, ScanReport};
pub use tags::{Tag, TagOptions, DEFAULT_VOCABULARY, TAG_TEMPLATES};

/// A search result: the photo's key (its path, or the id it was added under) and cosine.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub key: String,
    pub score: f32,
    /// When it was taken (EXIF), else its file time, as Unix seconds.
    pub taken_at: Option<i64>,
}

/// Restricts a search to photos with a tag and/or taken within a time range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Only photos carrying this tag (above the index's tag threshold).
    pub tag: Option<String>,
    /// Only photos taken at or after this Unix time.
    pub after: Option<i64>,
    /// Only photos taken before this Unix time.
    pub before: Option<i64>,
}

/// A photo index bound to one model. `Send + Sync`: search from any thread while one
/// thread adds photos.
pub struct PhotoIndex {
    path: PathBuf,
    model: ClipModel,
    tag_options: TagOptions,
    store: Mutex<Store>,
    catalog: RwLock<Catalog>,
}

/// The searchable mirror of the database, kept in memory.
#[derive(Default)]
struct Catalog {
    ids: Vec<i64>,
    keys: Vec<String>,
    taken: Vec<Option<i64>>,
    tags: Vec<Vec<(usize, f32)>>,
    matrix: Option<Matrix>,
    rows: HashMap<String, usize>,
    vocab: Option<ZeroShot>,
}

impl Catalog {
    fn insert(&mut self, id: i64, p: &NewPhoto) -> Result<()> {
        let matrix = self
            .matrix
            .get_or_insert_with(|| Matrix::new(p.embedding.len()));
        if matrix.dim() != p.embedding.len() {
            return Err(Error::InvalidArgument(format!(
                "embedding width {} differs from the index's {}",
                p.embedding.len(),
                matrix.dim()
            )));
        }
        if let Some(&i) = self.rows.get(&p.key) {
            matrix.set(i, p.scale, &p.embedding);
            self.ids[i] = id;
            self.taken[i] = p.taken_at;
            self.tags[i] = p.tags.clone();
        } else {
            matrix.push(p.scale, &p.embedding);
            self.rows.insert(p.key.clone(), self.keys.len());
            self.ids.push(id);
            self.keys.push(p.key.clone());
            self.taken.push(p.taken_at);
            self.tags.push(p.tags.clone());
        }
        Ok(())
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(i) = self.rows.remove(key) else {
            return false;
        };
        if let Some(m) = &mut self.matrix {
            m.swap_remove(i);
        }
        self.ids.swap_remove(i);
        self.keys.swap_remove(i);
        self.taken.swap_remove(i);
        self.tags.swap_remove(i);
        if i < self.keys.len() {
            self.rows.insert(self.keys[i].clone(), i);
        }
        true
    }

    fn embedding(&self, i: usize) -> Embedding {
        let (s, q) = self
            .matrix
            .as_ref()
            .expect("a stored row implies a matrix")
            .row(i);
        dequantize(s, q)
    }

    fn label_index(&self, label: &str) -> Option<usize> {
        self.vocab
            .as_ref()?
            .labels()
            .iter()
            .position(|l| l == label)
    }
}

impl PhotoIndex {
    /// Opens the index file at `path` (created if absent) for `model`. An index built
    /// with another model is refused. An index without a tag vocabulary gets the default
    /// one when its first photos are added (if the model has its text tower).
    pub fn open(path: impl AsRef<Path>, model: &ClipModel) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let store = Store::open(&path, model.id(), model.name())?;
        let mut catalog = Catalog::default();
        for p in store.photos()? {
            let new = NewPhoto {
                key: p.key,
                size: 0,
                mtime_ns: None,
                sha256: [0; 32],
                taken_at: p.taken_at,
                width: 0,
                height: 0,
                scale: p.scale,
                embedding: p.embedding,
                tags: p.tags,
            };
            catalog.insert(p.id, &new).map_err(|e| Error::Index {
                path: path.clone(),
                reason: format!("corrupt row for {}: {e}", new.key),
            })?;
        }
        let (labels, embeddings) = store.labels()?;
        if !labels.is_empty() {
            catalog.vocab = Some(ZeroShot::from_parts(
                labels,
                embeddings,
                model.logit_scale(),
            ));
        }
        let index = PhotoIndex {
            path,
            model: model.clone(),
            tag_options: TagOptions::default(),
            store: Mutex::new(store),
            catalog: RwLock::new(catalog),
        };
        Ok(index)
    }

    /// Sets the tag threshold and count (applied when tags are read and filtered).
    pub fn set_tag_options(&mut self, options: TagOptions) {
        self.tag_options = options;
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model this index embeds with.
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    /// Number of photos.
    pub fn len(&self) -> usize {
        self.read().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a photo is stored under `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.read().rows.contains_key(key)
    }

    /// Every stored key.
    pub fn keys(&self) -> Vec<String> {
        self.read().keys.clone()
    }

    fn read(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or re-indexes, if its contents changed) one image file. Returns whether it
    /// was embedded; `false` when the stored version is current.
    pub fn add_file(&self, path: impl AsRef<Path>) -> Result<bool> {
        let report = self.index_files(&[path.as_ref().to_owned()], &ScanOptions::default())?;
        if let Some((_, reason)) = report.skipped.first() {
            return Err(Error::Image {
                name: path.as_ref().display().to_string(),
                reason: reason.clone(),
            });
        }
        Ok(report.added + report.updated > 0)
    }

    /// Adds encoded image bytes under the caller's `id` (replacing what was stored there).
    pub fn add_bytes(&self, id: &str, data: &[u8]) -> Result<()> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("a photo id is empty".into()));
        }
        let hash = sha2::Sha256::digest(data).into();
        let prepared = scan::prepare(&self.model, id, data, hash, data.len() as u64, None)?;
        let mut photos = scan::embed(&self.model, vec![prepared])?;
        self.commit(Batch {
            photos: std::mem::take(&mut photos),
            ..Batch::default()
        })
    }

    /// Removes the photo stored under `key`; returns whether there was one.
    pub fn remove(&self, key: &str) -> Result<bool> {
        if !self.contains(key) {
            return Ok(false);
        }
        self.commit(Batch {
            removed: vec![key.to_owned()],
            ..Batch::default()
        })?;
        Ok(true)
    }

    /// Writes a batch (tagging its new photos) and mirrors it in memory.
    fn commit(&self, mut batch: Batch) -> Result<()> {
        if !batch.photos.is_empty() && self.read().vocab.is_none() && self.model.text().is_ok() {
            self.set_vocabulary(DEFAULT_VOCABULARY)?;
        }
        {
            let catalog = self.read();
            if let Some(vocab) = &catalog.vocab {
                for p in &mut batch.photos {
                    let emb = dequantize(p.scale, &p.embedding);
                    p.tags = tags::top_labels(vocab, &emb, self.tag_options.max_tags);
                }
            }
        }
        let mut store = self.store();
        let ids = store.commit(&batch)?;
        let mut catalog = self.write();
        for key in batch
            .removed
            .iter()
            .chain(batch.skipped.iter().map(|s| &s.key))
        {
            catalog.remove(key);
        }
        for (id, p) in ids.into_iter().zip(&batch.photos) {
            catalog.insert(id, p)?;
        }
        Ok(())
    }

    /// The `k` photos closest to a text query.
    pub fn search_text(&self, query: &str, k: usize, filter: &SearchFilter) -> Result<Vec<Hit>> {
        let q = self.model.embed_texts(&[query])?;
        self.search_embedding(&q[0], k, filter)
    }

    /// The `k` photos closest to an image file. A file in the index uses its stored
    /// embedding and is left out of the results.
    pub fn search_image_file(
        &self,
        path: impl AsRef<Path>,
        k: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>> {
        let key = file_key(path.as_ref())?;
        if self.contains(&key) {
            return self.similar(&key, k, filter);
        }
        let emb = self.embed_file(path.as_ref())?;
        self.search_embedding(&emb, k, filter)
    }

    /// The `k` photos closest to the stored photo `key`, itself left out.
    pub fn similar(&self, key: &str, k: usize, filter: &SearchFilter) -> Result<Vec<Hit>> {
        let emb = {
            let c = self.read();
            let i = *c.rows.get(key).ok_or_else(|| not_indexed(key))?;
            c.embedding(i)
        };
        let mut hits = self.search_embedding(&emb, k + 1, filter)?;
        hits.retain(|h| h.key != key);
        hits.truncate(k);
        Ok(hits)
    }

    /// The `k` photos closest to an embedding (from this index's model).
    pub fn search_embedding(
        &self,
        embedding: &[f32],
        k: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>> {
        let c = self.read();
        let Some(matrix) = &c.matrix else {
            return Ok(Vec::new());
        };
        if embedding.len() != matrix.dim() {
            return Err(Error::InvalidArgument(format!(
                "query embedding has {} values, the index stores {}",
                embedding.len(),
                matrix.dim()
            )));
        }
        let tag = match &filter.tag {
            Some(t) => Some(c.label_index(t).ok_or_else(|| {
                Error::InvalidArgument(format!("`{t}` is not in the tag vocabulary"))
            })?),
            None => None,
        };
        let threshold = self.tag_options.threshold;
        let keep = |i: usize| {
            let taken = c.taken[i];
            tag.is_none_or(|t| c.tags[i].iter().any(|&(l, s)| l == t && s >= threshold))
                && filter.after.is_none_or(|a| taken.is_some_and(|t| t >= a))
                && filter.before.is_none_or(|b| taken.is_some_and(|t| t < b))
        };
        Ok(matrix
            .top_k(embedding, k, keep)
            .into_iter()
            .map(|(i, score)| Hit {
                key: c.keys[i].clone(),
                score,
                taken_at: c.taken[i],
            })
            .collect())
    }

    /// The stored photo's tags above the threshold, best first.
    pub fn tags(&self, key: &str) -> Result<Vec<Tag>> {
        let c = self.read();
        let i = *c.rows.get(key).ok_or_else(|| not_indexed(key))?;
        Ok(self.named_tags(&c, &c.tags[i]))
    }

    /// Tags for an embedding that is not (or not yet) in the index.
    pub fn tag_embedding(&self, embedding: &[f32]) -> Vec<Tag> {
        let c = self.read();
        let Some(vocab) = &c.vocab else {
            return Vec::new();
        };
        let top = tags::top_labels(vocab, embedding, self.tag_options.max_tags);
        self.named_tags(&c, &top)
    }

    fn named_tags(&self, c: &Catalog, top: &[(usize, f32)]) -> Vec<Tag> {
        let Some(vocab) = &c.vocab else {
            return Vec::new();
        };
        top.iter()
            .filter(|&&(_, s)| s >= self.tag_options.threshold)
            .take(self.tag_options.max_tags)
            .filter_map(|&(l, score)| {
                Some(Tag {
                    label: vocab.labels().get(l)?.clone(),
                    score,
                })
            })
            .collect()
    }

    /// The tag vocabulary.
    pub fn vocabulary(&self) -> Vec<String> {
        self.read()
            .vocab
            .as_ref()
            .map_or_else(Vec::new, |v| v.labels().to_vec())
    }

    /// Replaces the tag vocabulary: embeds the labels (text tower needed), stores their
    /// embeddings, and re-tags every photo from its stored embedding, in one transaction.
    pub fn set_vocabulary<S: AsRef<str>>(&self, labels: &[S]) -> Result<()> {
        let vocab = self.model.zero_shot(labels, TAG_TEMPLATES)?;
        let mut store = self.store();
        let mut c = self.write();
        let retag: Vec<(i64, Vec<(usize, f32)>)> = (0..c.ids.len())
            .map(|i| {
                let emb = c.embedding(i);
                (
                    c.ids[i],
                    tags::top_labels(&vocab, &emb, self.tag_options.max_tags),
                )
            })
            .collect();
        store.set_labels(vocab.labels(), vocab.embeddings(), &retag)?;
        for (i, (_, t)) in retag.into_iter().enumerate() {
            c.tags[i] = t;
        }
        c.vocab = Some(vocab);
        Ok(())
    }

    /// Groups of near-duplicate photos: each member has cosine ≥ `threshold` with another
    /// member. Largest group first, each ordered by key. Quadratic in the photo count.
    pub fn duplicates(&self, threshold: f32) -> Vec<Vec<Hit>> {
        let c = self.read();
        let Some(m) = &c.matrix else {
            return Vec::new();
        };
        m.groups_above(threshold)
            .into_iter()
            .map(|g| {
                let first = m.row(g[0]);
                let mut hits: Vec<Hit> = g
                    .iter()
                    .map(|&i| Hit {
                        key: c.keys[i].clone(),
                        score: search::cosine(first, m.row(i)),
                        taken_at: c.taken[i],
                    })
                    .collect();
                hits.sort_by(|a, b| a.key.cmp(&b.key));
                hits
            })
            .collect()
    }

    /// Checks the file (SQLite's integrity check) and that memory mirrors it.
    pub fn check(&self) -> Result<()> {
        let store = self.store();
        store.integrity_check()?;
        let stored = store.photos()?;
        let c = self.read();
        let dim = c.matrix.as_ref().map_or(0, Matrix::dim);
        let bad = stored.len() != c.keys.len()
            || stored
                .iter()
                .any(|p| p.embedding.len() != dim || !c.rows.contains_key(&p.key));
        if bad {
            return Err(Error::Index {
                path: self.path.clone(),
                reason: "stored photos and the in-memory index differ".into(),
            });
        }
        Ok(())
    }

    /// Reads, decodes (DCT-scaled) and embeds one image file.
    pub fn embed_file(&self, path: &Path) -> Result<Embedding> {
        let data = read_file(path, &self.model.image_limits())?;
        let name = path.display().to_string();
        let vision = self.model.vision()?;
        let pre = vision.preprocess_config();
        let img = decode_scaled(&data, &name, &self.model.image_limits(), |w, h| {
            pre.needed_size(w, h)
        })?;
        Ok(self.model.embed_images(&[img])?.remove(0))
    }
}

/// The key a file is stored under: its absolute, canonical path.
pub fn file_key(path: &Path) -> Result<String> {
    let abs = path.canonicalize().map_err(|e| Error::io(path, e))?;
    Ok(abs.to_string_lossy().into_owned())
}

fn not_indexed(key: &str) -> Error {
    Error::InvalidArgument(format!("no photo `{key}` in the index"))
}
