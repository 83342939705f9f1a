//! The one error type every public call returns.

use std::path::{Path, PathBuf};

/// What went wrong, with the file or input it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The directory is not a usable model bundle (missing or malformed files).
    #[error("{}: {reason}", path.display())]
    Bundle { path: PathBuf, reason: String },
    /// A graph file could not be parsed, typed or optimised.
    #[error("{}: not a usable ONNX model: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    /// A graph lacks the input or output the bundle says it has, or has the wrong shape.
    #[error("{}: {reason}", path.display())]
    GraphInterface { path: PathBuf, reason: String },
    /// An image could not be decoded or is outside the accepted sizes.
    #[error("image {name}: {reason}")]
    Image { name: String, reason: String },
    /// A tokenizer file could not be loaded.
    #[error("{}: not a usable tokenizer: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    /// The text input is unusable (empty, or tokenisation failed).
    #[error("text: {0}")]
    Text(String),
    /// A call needs a tower the model was loaded without.
    #[error("the {0} tower is not loaded (load the bundle with it to use this call)")]
    TowerNotLoaded(&'static str),
    /// An argument is out of its domain (empty label list, mismatched lengths...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file's SHA-256 differs from the one its bundle lists: corrupt, or another file.
    #[error("{}: SHA-256 is {actual}, the bundle expects {expected}: the file is corrupt or not the one the bundle was made with", path.display())]
    Integrity {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A photo index file could not be opened, read or written, or belongs to another model.
    #[error("index {}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
    /// The graph failed while running.
    #[error("inference failed in the {tower} tower: {reason}")]
    Inference { tower: &'static str, reason: String },
}

/// Shorthand for `Result<T, glimpse::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Each graph error is the variant of the same name.
impl From<glimpse_graph::Error> for Error {
    fn from(e: glimpse_graph::Error) -> Self {
        use glimpse_graph::Error as G;
        match e {
            G::Io { path, source } => Error::Io { path, source },
            G::Model { path, reason } => Error::Model { path, reason },
            G::GraphInterface { path, reason } => Error::GraphInterface { path, reason },
            G::Integrity {
                path,
                expected,
                actual,
            } => Error::Integrity {
                path,
                expected,
                actual,
            },
            G::Inference { tower, reason } => Error::Inference { tower, reason },
        }
    }
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn bundle(path: &Path, reason: impl Into<String>) -> Self {
        Error::Bundle {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}
