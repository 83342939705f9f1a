//! The index file: one SQLite database in WAL mode. Every change is one transaction, so a
//! crash at any point leaves the index as of its last commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use glimpse::{Error, Result};

const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,       -- absolute path, or the caller's id for added bytes
    size INTEGER NOT NULL,
    mtime_ns INTEGER,               -- NULL for added bytes
    sha256 BLOB NOT NULL,
    taken_at INTEGER,               -- Unix seconds: EXIF date, else the file's mtime
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    scale REAL NOT NULL,            -- embedding = int8 values × scale
    embedding BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
    label INTEGER NOT NULL,         -- position in `labels`
    score REAL NOT NULL,
    PRIMARY KEY (photo_id, label)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labels (
    position INTEGER PRIMARY KEY,
    label TEXT NOT NULL UNIQUE,
    embedding BLOB NOT NULL         -- f32 little-endian text embedding
);
CREATE TABLE IF NOT EXISTS skipped (
    key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER,
    reason TEXT NOT NULL
);
";

/// A photo as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredPhoto {
    pub id: i64,
    pub key: String,
    pub taken_at: Option<i64>,
    pub scale: f32,
    pub embedding: Vec<i8>,
    pub tags: Vec<(usize, f32)>,
}

/// A photo to write.
#[derive(Debug, Clone)]
pub(crate) struct NewPhoto {
    pub key: String,
    pub size: u64,
    pub mtime_ns: Option<i64>,
    pub sha256: [u8; 32],
    pub taken_at: Option<i64>,
    pub width: u32,
    pub height: u32,
    pub scale: f32,
    pub embedding: Vec<i8>,
    pub tags: Vec<(usize, f32)>,
}

/// What the index knows of a file, to tell whether it changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileState {
    pub size: u64,
    pub mtime_ns: Option<i64>,
    pub sha256: Option<[u8; 32]>,
    /// Why it was skipped, for files that failed before.
    pub skipped: Option<String>,
}

pub(crate) struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens or creates the index at `path` for the model `model_id`.
    pub fn open(path: &Path, model_id: &str, model_name: &str) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| index_error(path, e))?;
        let store = Store {
            conn,
            path: path.to_owned(),
        };
        store.setup(model_id, model_name)?;
        Ok(store)
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        index_error(&self.path, e)
    }

    fn setup(&self, model_id: &str, model_name: &str) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        // WAL: readers never block the writer; a commit is durable once it returns.
        let mode: String = c
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Index {
                path: self.path.clone(),
                reason: format!("cannot use WAL journaling (got {mode})"),
            });
        }
        c.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(|e| self.err(e))?;
        c.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA}"))
            .map_err(|e| self.err(e))?;
        let result = self.check_meta(model_id, model_name);
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        c.execute_batch(end).map_err(|e| self.err(e))?;
        result
    }

    fn check_meta(&self, model_id: &str, model_name: &str) -> Result<()> {
        let get = |k: &str| -> Result<Option<String>> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))
        };
        match get("model_id")? {
            None => {
                for (k, v) in [
                    ("schema", SCHEMA_VERSION),
                    ("model_id", model_id),
                    ("model_name", model_name),
                ] {
                    self.conn
                        .execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", [k, v])
                        .map_err(|e| self.err(e))?;
                }
                Ok(())
            }
            Some(id) if id == model_id => match get("schema")?.as_deref() {
                Some(SCHEMA_VERSION) => Ok(()),
                v => Err(Error::Index {
                    path: self.path.clone(),
                    reason: format!("index schema {v:?} is not this version's ({SCHEMA_VERSION})"),
                }),
            },
            Some(id) => {
                let name = get("model_name")?.unwrap_or_default();
                Err(Error::Index {
                    path: self.path.clone(),
                    reason: format!(
                        "built with model `{name}` (id {id}); this is `{model_name}` (id {model_id}), \
                         whose embeddings are not comparable: open it with `{name}`, or index into a new file"
                    ),
                })
            }
        }
    }

    /// All rows of a query, each turned into a `T` by `row`.
    fn query<T>(
        &self,
        sql: &str,
        row: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = st.query_map([], row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<T>>>()
            .map_err(|e| self.err(e))
    }

    /// Every stored photo with its tags.
    pub fn photos(&self) -> Result<Vec<StoredPhoto>> {
        let mut tags: HashMap<i64, Vec<(usize, f32)>> = HashMap::new();
        let rows = self.query(
            "SELECT photo_id, label, score FROM tags ORDER BY photo_id, score DESC",
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, f64>(2)?,
                ))
            },
        )?;
        for (id, label, score) in rows {
            tags.entry(id)
                .or_default()
                .push((label as usize, score as f32));
        }
        let mut photos = self.query(
            "SELECT id, key, taken_at, scale, embedding FROM photos ORDER BY id",
            |r| {
                let blob: Vec<u8> = r.get(4)?;
                Ok(StoredPhoto {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    taken_at: r.get(2)?,
                    scale: r.get::<_, f64>(3)? as f32,
                    embedding: blob.into_iter().map(|b| b as i8).collect(),
                    tags: Vec::new(),
                })
            },
        )?;
        for p in &mut photos {
            p.tags = tags.remove(&p.id).unwrap_or_default();
        }
        Ok(photos)
    }

    /// What is known of every file key: size, mtime and hash of indexed ones, and the
    /// stat and reason of skipped ones.
    pub fn file_states(&self) -> Result<HashMap<String, FileState>> {
        let indexed = self.query("SELECT key, size, mtime_ns, sha256 FROM photos", |r| {
            let hash: Vec<u8> = r.get(3)?;
            Ok((
                r.get::<_, String>(0)?,
                FileState {
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    sha256: hash.try_into().ok(),
                    skipped: None,
                },
            ))
        })?;
        let skipped = self.query("SELECT key, size, mtime_ns, reason FROM skipped", |r| {
            Ok((
                r.get::<_, String>(0)?,
                FileState {
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    sha256: None,
                    skipped: Some(r.get(3)?),
                },
            ))
        })?;
        Ok(indexed.into_iter().chain(skipped).collect())
    }

    /// Writes a batch of changes in one transaction; returns the new photos' row ids.
    pub fn commit(&mut self, batch: &Batch) -> Result<Vec<i64>> {
        let path = self.path.clone();
        let err = |e| index_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let mut ids = Vec::with_capacity(batch.photos.len());
        {
            let mut del = tx
                .prepare_cached("DELETE FROM photos WHERE key = ?1")
                .map_err(err)?;
            let mut unskip = tx
                .prepare_cached("DELETE FROM skipped WHERE key = ?1")
                .map_err(err)?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO photos (key, size, mtime_ns, sha256, taken_at, width, height, scale, embedding)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(err)?;
            let mut tag = tx
                .prepare_cached("INSERT INTO tags (photo_id, label, score) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            for key in &batch.removed {
                del.execute([key]).map_err(err)?;
                unskip.execute([key]).map_err(err)?;
            }
            for p in &batch.photos {
                del.execute([&p.key]).map_err(err)?;
                unskip.execute([&p.key]).map_err(err)?;
                let blob: Vec<u8> = p.embedding.iter().map(|&v| v as u8).collect();
                ins.execute(params![
                    p.key,
                    p.size as i64,
                    p.mtime_ns,
                    &p.sha256[..],
                    p.taken_at,
                    p.width,
                    p.height,
                    p.scale as f64,
                    blob
                ])
                .map_err(err)?;
                let id = tx.last_insert_rowid();
                for &(label, score) in &p.tags {
                    tag.execute(params![id, label as i64, score as f64])
                        .map_err(err)?;
                }
                ids.push(id);
            }
            let mut touch = tx
                .prepare_cached("UPDATE photos SET size = ?2, mtime_ns = ?3 WHERE key = ?1")
                .map_err(err)?;
            for (key, size, mtime) in &batch.touched {
                touch
                    .execute(params![key, *size as i64, mtime])
                    .map_err(err)?;
            }
            let mut skip = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO skipped (key, size, mtime_ns, reason) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for s in &batch.skipped {
                del.execute([&s.key]).map_err(err)?;
                skip.execute(params![s.key, s.size as i64, s.mtime_ns, s.reason])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// The vocabulary and its cached text embeddings, in position order.
    pub fn labels(&self) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
        let rows = self.query(
            "SELECT label, embedding FROM labels ORDER BY position",
            |r| {
                let blob: Vec<u8> = r.get(1)?;
                let emb = blob
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok((r.get::<_, String>(0)?, emb))
            },
        )?;
        Ok(rows.into_iter().unzip())
    }

    /// Replaces the vocabulary and every photo's tags, in one transaction.
    pub fn set_labels(
        &mut self,
        labels: &[String],
        embeddings: &[Vec<f32>],
        tags: &[(i64, Vec<(usize, f32)>)],
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| index_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch("DELETE FROM tags; DELETE FROM labels;")
            .map_err(err)?;
        {
            let mut ins = tx
                .prepare("INSERT INTO labels (position, label, embedding) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            for (i, (l, e)) in labels.iter().zip(embeddings).enumerate() {
                let blob: Vec<u8> = e.iter().flat_map(|x| x.to_le_bytes()).collect();
                ins.execute(params![i as i64, l, blob]).map_err(err)?;
            }
            let mut tag = tx
                .prepare("INSERT INTO tags (photo_id, label, score) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            for (id, t) in tags {
                for &(label, score) in t {
                    tag.execute(params![id, label as i64, score as f64])
                        .map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)
    }

    /// SQLite's own consistency check: `Ok` when it reports "ok".
    pub fn integrity_check(&self) -> Result<()> {
        let r: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if r == "ok" {
            Ok(())
        } else {
            Err(Error::Index {
                path: self.path.clone(),
                reason: format!("integrity check failed: {r}"),
            })
        }
    }
}

/// A file that could not be indexed.
#[derive(Debug, Clone)]
pub(crate) struct Skip {
    pub key: String,
    pub size: u64,
    pub mtime_ns: Option<i64>,
    pub reason: String,
}

/// One transaction's worth of changes.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub photos: Vec<NewPhoto>,
    /// Unchanged content under a new size or mtime: (key, size, mtime).
    pub touched: Vec<(String, u64, Option<i64>)>,
    pub skipped: Vec<Skip>,
    pub removed: Vec<String>,
}

fn index_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::Index {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}
