//! Glimpse for Kotlin and Swift: a thin uniffi skin over the `glimpse` runtime.
//!
//! Every exported call runs inside [`guard`], so a runtime error becomes a `GlimpseException`
//! (Kotlin) or a thrown `GlimpseError` (Swift) carrying the runtime's message, and a panic
//! becomes `Internal` instead of unwinding into the app. Objects are `Send + Sync`; calls
//! block, so apps make them off the main thread (the Kotlin and Swift wrappers in android/
//! and ios/ do).

mod clip;
#[cfg(target_os = "android")]
mod jni;
#[cfg(feature = "photos")]
mod photos;

use std::panic::{catch_unwind, AssertUnwindSafe};

pub use clip::{Classifier, ClipModel, ModelOptions, PixelFormat, Prediction};
#[cfg(feature = "photos")]
pub use photos::{
    CancelToken, Hit, PhotoIndex, ScanEvent, ScanListener, ScanOptions, ScanReport, SearchFilter,
    Skipped, Tag,
};

uniffi::setup_scaffolding!();

/// Why a call failed; the message names the file or input and the problem.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum GlimpseError {
    /// A file or directory could not be read.
    #[error("{0}")]
    Io(String),
    /// The directory is not a usable model bundle.
    #[error("{0}")]
    Bundle(String),
    /// A graph file is not a usable ONNX model, or lacks the expected inputs and outputs.
    #[error("{0}")]
    Model(String),
    /// A file's SHA-256 differs from the one its bundle lists.
    #[error("{0}")]
    Integrity(String),
    /// An image could not be decoded or is outside the accepted sizes.
    #[error("{0}")]
    Image(String),
    /// A tokenizer could not be loaded, or a text is empty or too long.
    #[error("{0}")]
    Text(String),
    /// The call needs a tower the model was loaded without.
    #[error("{0}")]
    TowerNotLoaded(String),
    /// An argument is out of its domain.
    #[error("{0}")]
    InvalidArgument(String),
    /// A photo index file could not be used.
    #[error("{0}")]
    Index(String),
    /// A graph failed while running.
    #[error("{0}")]
    Inference(String),
    /// A bug in Glimpse (a panic), stopped at the boundary.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<glimpse::Error> for GlimpseError {
    fn from(e: glimpse::Error) -> Self {
        use glimpse::Error as E;
        let message = e.to_string();
        match e {
            E::Io { .. } => GlimpseError::Io(message),
            E::Bundle { .. } => GlimpseError::Bundle(message),
            E::Model { .. } | E::GraphInterface { .. } => GlimpseError::Model(message),
            E::Integrity { .. } => GlimpseError::Integrity(message),
            E::Image { .. } => GlimpseError::Image(message),
            E::Tokenizer { .. } | E::Text(_) => GlimpseError::Text(message),
            E::TowerNotLoaded(_) => GlimpseError::TowerNotLoaded(message),
            E::InvalidArgument(_) => GlimpseError::InvalidArgument(message),
            E::Index { .. } => GlimpseError::Index(message),
            E::Inference { .. } => GlimpseError::Inference(message),
        }
    }
}

/// Runs one exported call: errors convert, panics become [`GlimpseError::Internal`].
pub(crate) fn guard<T>(call: impl FnOnce() -> glimpse::Result<T>) -> Result<T, GlimpseError> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result.map_err(GlimpseError::from),
        Err(panic) => Err(GlimpseError::Internal(panic_message(panic.as_ref()))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "panic without a message".to_owned(),
    }
}

/// Cosine similarity of two embeddings.
#[uniffi::export]
pub fn similarity(a: Vec<f32>, b: Vec<f32>) -> Result<f32, GlimpseError> {
    guard(|| {
        if a.len() != b.len() {
            return Err(glimpse::Error::InvalidArgument(format!(
                "embeddings of {} and {} values",
                a.len(),
                b.len()
            )));
        }
        Ok(glimpse::similarity(&a, &b))
    })
}

/// The Glimpse version these bindings were built from.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_panics_into_internal_errors() {
        let err = guard::<()>(|| panic!("index {} out of range", 7)).unwrap_err();
        assert!(matches!(&err, GlimpseError::Internal(m) if m == "index 7 out of range"));
        let err = guard::<()>(|| std::panic::panic_any(3_u8)).unwrap_err();
        assert!(matches!(err, GlimpseError::Internal(_)));
    }

    #[test]
    fn guard_keeps_the_runtime_message() {
        let err = guard::<()>(|| Err(glimpse::Error::Text("empty".into()))).unwrap_err();
        assert!(matches!(&err, GlimpseError::Text(m) if m == "text: empty"));
    }
}
