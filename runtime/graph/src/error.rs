//! What can go wrong reading, building or running a graph; `glimpse::Error` has a variant of the
//! same name for each.

use std::path::{Path, PathBuf};

/// A graph error, with the file or tower it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A graph file could not be parsed, typed or optimised.
    #[error("{}: not a usable ONNX model: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    /// A graph lacks an input or output the caller needs, or has the wrong shape.
    #[error("{}: {reason}", path.display())]
    GraphInterface { path: PathBuf, reason: String },
    /// A file's SHA-256 differs from the one expected.
    #[error("{}: SHA-256 is {actual}, the bundle expects {expected}: the file is corrupt or not the one the bundle was made with", path.display())]
    Integrity {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The graph failed while running.
    #[error("inference failed in the {tower} tower: {reason}")]
    Inference { tower: &'static str, reason: String },
}

/// Shorthand for `Result<T, glimpse_graph::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}
