//! Glimpse's graph layer: ONNX graphs read, checked, rewritten and run through tract.
//!
//! - [`graph`]: reading a file (size limits, SHA-256, external data), its interface, building
//!   an optimised plan and running it ([`Graph`], [`GraphFile`]).
//! - [`ops`]: tract custom ops, thin wrappers over `glimpse-kernels`.
//! - [`onnx`]: the ONNX operators Glimpse maps to its own ops (or fixes) when a file is read.
//! - [`passes`]: rewrites of the typed graph, an ordered list chosen from the CPU's features.
//! - [`pool`]: where runs execute (threads), and what tract is told of the CPU.

mod error;
mod graph;
mod onnx;
mod ops;
mod passes;
mod pool;
mod qdq;

pub use error::{Error, Result};
pub use graph::{
    Dim, Graph, GraphFile, GraphSpec, NodeTime, Port, ONNX_FLOAT, ONNX_INT32, ONNX_INT64,
};
pub use onnx::onnx;
pub use ops::kv_cache::{keep_in_graph, layer_bytes, truncate_layer};
pub use passes::{last_row_of_first_output, Target};
pub use pool::{prepare, Pool};
pub use tract_onnx::prelude::TypedSimpleState;

/// Deterministic test values in [-1, 1), different for each `seed`.
#[cfg(test)]
pub(crate) use glimpse_kernels::test_values;
