//! ONNX graphs: reading a file, checking its interface, optimising it into a tract
//! plan with symbolic batch (and sequence) dimensions, and running it.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core;
use tract_onnx::tract_core::plan::SimpleState;

use crate::error::{Error, Result};
use crate::onnx::onnx;
use crate::passes::{self, Target, BEFORE_DECLUTTER, PASSES};
use crate::pool::Pool;

/// Bound on the `axis` / `axes` attributes a graph may carry. tract 0.23 trusts them while
/// typing the graph (LayerNormalization counts up to its axis: 2^62 hangs the load), and no
/// real tensor comes near this rank.
const MAX_AXIS: i64 = 64;

/// ONNX element types Glimpse feeds.
pub const ONNX_FLOAT: i32 = 1;
pub const ONNX_INT32: i32 = 6;
pub const ONNX_INT64: i32 = 7;

/// One graph file and the names of the tensors Glimpse feeds and reads.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSpec {
    pub path: PathBuf,
    pub input: String,
    pub output: String,
    /// The file's expected SHA-256 (hex), from the manifest or `SHA256SUMS`.
    pub sha256: Option<String>,
    /// Expected SHA-256s (hex) of the external data files the graph names, by their path
    /// relative to its directory (from `SHA256SUMS`).
    pub data_sha256: std::collections::BTreeMap<String, String>,
    /// Largest accepted size of the file and its external data.
    pub max_bytes: u64,
}

/// A graph input or output as the file declares it.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub elem_type: i32,
    /// Declared dimensions: `Some(n)` fixed, `None` symbolic or unknown.
    pub dims: Vec<Option<i64>>,
}

/// A dimension of an input fact Glimpse sets.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Fixed(usize),
    /// Known per run, at least 1 (a batch, a sequence). tract is told so: without it, it
    /// cannot prove an elementwise operand such as `[batch, 50, 3072]` big enough for its
    /// by-scalar and unicast kernels, and keeps the generic, broadcasting ones (a quarter of
    /// an int8 ViT-B/32 image; BENCHMARKS.md).
    Symbol(&'static str),
    /// Known per run, possibly 0 (a cache empty before the first step).
    MaybeEmpty(&'static str),
}

/// A parsed ONNX file whose interface can be inspected before optimising it.
pub struct GraphFile {
    path: PathBuf,
    proto: pb::ModelProto,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

/// The time one node of a graph took in a profiled run ([`Graph::profile`]).
#[derive(Debug, Clone)]
pub struct NodeTime {
    /// tract's operator name (`Conv`, `OptMatMul`, `Softmax`, ...).
    pub op: String,
    /// The node's name, from the ONNX node it came from.
    pub node: String,
    pub seconds: f64,
}

/// An optimised, runnable graph. Cheap to share between threads: each run has its own state.
#[derive(Debug, Clone)]
pub struct Graph {
    plan: Arc<TypedRunnableModel>,
    tower: &'static str,
    input_types: Vec<DatumType>,
    /// Where runs execute: a pool splits each matrix product over its threads.
    pool: Pool,
    /// Whether runs keep the pool's workers spinning between products ([`Pool::run_spinning`]):
    /// when Glimpse's own f32, int8 or 4-bit products carry the graph, most too short for a
    /// sleeping worker to wake in time (tract's own products then run on one thread).
    spins: bool,
}

impl GraphFile {
    /// Reads a bundle's graph: refused over its size limit before reading, checked against
    /// its SHA-256 when the bundle lists one, then decoded. The file is streamed into the
    /// decoder (hashed on the way): only the decoder's buffer and the decoded graph are held.
    pub fn open(spec: &GraphSpec) -> Result<Self> {
        let path = spec.path.as_path();
        let model_err = |reason: String| Error::Model {
            path: path.to_owned(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > spec.max_bytes {
            return Err(model_err(format!(
                "the file is {len} bytes, over the {} byte limit (LoadOptions::max_model_bytes)",
                spec.max_bytes
            )));
        }
        if len == 0 {
            return Err(model_err("the file is empty".into()));
        }
        let mut reader = Hashing {
            inner: file,
            hasher: spec.sha256.as_ref().map(|_| Sha256::new()),
        };
        let parsed = contained(|| Self::parse(path, &mut reader), model_err);
        if reader.hasher.is_some() {
            // What the decoder left unread (it stops early on an error) still counts.
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| Error::io(path, e))?;
        }
        if let (Some(expected), Some(hasher)) = (&spec.sha256, reader.hasher) {
            check_sha256(path, expected, hasher)?;
        }
        let file = parsed?;
        file.check_external_data(spec, len)?;
        Ok(file)
    }

    /// The files of external data holding the graph's weights (ONNX's `data_location`
    /// EXTERNAL, as exporters write graphs past 2 GB), checked before tract reads them: each
    /// a file inside the graph's directory that exists, all of them with the graph within
    /// `spec.max_bytes`, each one `spec.data_sha256` lists matching it.
    fn check_external_data(&self, spec: &GraphSpec, graph_bytes: u64) -> Result<()> {
        let model_err = |reason: String| Error::Model {
            path: self.path.clone(),
            reason,
        };
        let external = pb::tensor_proto::DataLocation::External as i32;
        let locations: BTreeSet<&str> = (self.proto.graph.iter())
            .flat_map(|g| &g.initializer)
            .filter(|t| t.data_location == Some(external))
            .map(|t| {
                let location = t.external_data.iter().find(|e| e.key == "location");
                location.map(|e| e.value.as_str()).ok_or_else(|| {
                    model_err(format!(
                        "tensor `{}` is stored externally in no file",
                        t.name
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let dir = self.data_dir();
        let mut total = graph_bytes;
        for location in locations {
            let beside = (Path::new(location).components())
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !beside {
                return Err(model_err(format!(
                    "its external data `{location}` is outside the graph's directory"
                )));
            }
            let path = dir.join(location);
            let len = std::fs::metadata(&path)
                .map_err(|e| model_err(format!("its external data file `{location}`: {e}")))?
                .len();
            total = total.saturating_add(len);
            if total > spec.max_bytes {
                return Err(model_err(format!(
                    "with its external data it is {total} bytes or more, over the {} byte \
                     limit (LoadOptions::max_model_bytes)",
                    spec.max_bytes
                )));
            }
            if let Some(expected) = spec.data_sha256.get(location) {
                let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let mut reader = Hashing {
                    inner: file,
                    hasher: Some(Sha256::new()),
                };
                std::io::copy(&mut reader, &mut std::io::sink())
                    .map_err(|e| Error::io(&path, e))?;
                if let Some(hasher) = reader.hasher {
                    check_sha256(&path, expected, hasher)?;
                }
            }
        }
        Ok(())
    }

    /// Decodes an ONNX protobuf read from `data`; `path` names it in errors.
    fn parse(path: &Path, data: &mut dyn std::io::Read) -> Result<Self> {
        let model_err = |reason: String| Error::Model {
            path: path.to_owned(),
            reason,
        };
        let mut proto = onnx().proto_model_for_read(data).map_err(|e| {
            model_err(format!(
                "not an ONNX protobuf (truncated or another format?): {e:#}"
            ))
        })?;
        crate::qdq::keep_softmax_in_float(&mut proto);
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| model_err("the file holds no graph".into()))?;
        check_axes(graph).map_err(model_err)?;
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(port)
            .collect();
        let outputs = graph.output.iter().map(port).collect();
        Ok(GraphFile {
            path: path.to_owned(),
            proto,
            inputs,
            outputs,
        })
    }

    /// Where the graph's external data is: beside the graph file, beside the file a symbolic
    /// link points to (where its exporter wrote both) when the graph is linked into a bundle.
    fn data_dir(&self) -> PathBuf {
        let real = self
            .path
            .canonicalize()
            .unwrap_or_else(|_| self.path.clone());
        real.parent().map(Path::to_owned).unwrap_or_default()
    }

    /// The declared input `name`, or an error naming the inputs the graph has.
    pub fn input(&self, name: &str) -> Result<&Port> {
        self.inputs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| self.missing("input", name, &self.inputs))
    }

    /// Checks the graph declares output `name`.
    pub fn require_output(&self, name: &str) -> Result<()> {
        match self.outputs.iter().any(|p| p.name == name) {
            true => Ok(()),
            false => Err(self.missing("output", name, &self.outputs)),
        }
    }

    /// An interface error naming this file (as the caller's error type).
    pub fn interface_error<E: From<Error>>(&self, reason: String) -> E {
        self.interface_errors()(reason)
    }

    /// Interface errors naming this file, for checks made after [`Self::build`] took it.
    pub fn interface_errors<E: From<Error>>(&self) -> impl Fn(String) -> E {
        let path = self.path.clone();
        move |reason| {
            E::from(Error::GraphInterface {
                path: path.clone(),
                reason,
            })
        }
    }

    fn missing(&self, kind: &str, name: &str, have: &[Port]) -> Error {
        let names: Vec<&str> = have.iter().map(|p| p.name.as_str()).collect();
        self.interface_error(format!(
            "the graph has no {kind} named `{name}` (its {kind}s: {})",
            names.join(", ")
        ))
    }

    /// Optimises the graph for the given input facts, keeping only `outputs` (in that order);
    /// `half` runs its float math in f16. Takes the file: its weights are freed as soon as
    /// tract has its own copy, before tract optimises (and repacks) them.
    pub fn build(
        self,
        tower: &'static str,
        facts: &[(String, DatumType, Vec<Dim>)],
        outputs: &[&str],
        half: bool,
    ) -> Result<Graph> {
        let target = Target {
            half,
            ..Target::default()
        };
        self.build_with(tower, facts, outputs, target, |_| Ok(0))
    }

    /// [`GraphFile::build`] for `target`, with `edit` rewriting the graph after Glimpse's own
    /// passes, before tract optimises it (it returns how many changes it made).
    pub fn build_with(
        self,
        tower: &'static str,
        facts: &[(String, DatumType, Vec<Dim>)],
        outputs: &[&str],
        target: Target,
        edit: impl FnOnce(&mut TypedModel) -> TractResult<usize>,
    ) -> Result<Graph> {
        crate::pool::prepare();
        let path = self.path.clone();
        contained(
            || self.build_unguarded(tower, facts, outputs, target, edit),
            |reason| Error::Model { path, reason },
        )
    }

    fn build_unguarded(
        self,
        tower: &'static str,
        facts: &[(String, DatumType, Vec<Dim>)],
        outputs: &[&str],
        target: Target,
        edit: impl FnOnce(&mut TypedModel) -> TractResult<usize>,
    ) -> Result<Graph> {
        let path = &self.path;
        let fail = |e: TractError| Error::Model {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let dir = self.data_dir();
        let mut model = onnx().parse(&self.proto, dir.to_str()).map_err(fail)?.model;
        drop(self.proto);
        for (ix, outlet) in model
            .input_outlets()
            .map_err(fail)?
            .to_vec()
            .into_iter()
            .enumerate()
        {
            let name = model.node(outlet.node).name.clone();
            let (_, dt, dims) =
                facts
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .ok_or_else(|| Error::GraphInterface {
                        path: path.to_owned(),
                        reason: format!(
                        "the graph has an input `{name}` that Glimpse does not know how to feed"
                    ),
                    })?;
            let shape: TVec<TDim> = dims
                .iter()
                .map(|d| -> TractResult<TDim> {
                    Ok(match d {
                        Dim::Fixed(n) => TDim::from(*n),
                        Dim::Symbol(s) => {
                            model.symbols.add_assertion(format!("{s} >= 1"))?;
                            model.symbols.sym(s).into()
                        }
                        Dim::MaybeEmpty(s) => model.symbols.sym(s).into(),
                    })
                })
                .collect::<TractResult<_>>()
                .map_err(fail)?;
            model
                .set_input_fact(ix, InferenceFact::dt_shape(*dt, shape))
                .map_err(fail)?;
        }
        model.select_outputs_by_name(outputs).map_err(fail)?;
        let plan = (|| {
            let mut typed = model.into_typed()?;
            passes::run(&BEFORE_DECLUTTER, &mut typed, &target)?;
            typed.declutter()?;
            if target.half {
                // After declutter, before optimisation: tract's recommended place.
                let f16 = tract_core::transform::get_transform("f32_to_f16")?;
                f16.ok_or_else(|| TractError::msg("tract has no f32_to_f16 transform"))?
                    .transform(&mut typed)?;
                typed.declutter()?;
            }
            let rewrites = passes::run(&PASSES, &mut typed, &target)? + edit(&mut typed)?;
            if rewrites > 0 {
                typed.compact()?;
            }
            // Not into_optimized: its declutter would undo the fold.
            typed.optimize()?;
            typed.into_runnable()
        })()
        .map_err(fail)?;
        let input_types = (0..plan.model().inputs.len())
            .map(|i| Ok(plan.model().input_fact(i)?.datum_type))
            .collect::<TractResult<_>>()
            .map_err(fail)?;
        let mut graph = Graph {
            plan,
            tower,
            input_types,
            pool: Pool::Caller,
            spins: false,
        };
        graph.spins = graph.has_op::<crate::ops::int8_matmul::Int8MatMul>()
            || graph.has_op::<crate::ops::q4_matmul::Q4MatMul>()
            || graph.has_op::<crate::ops::f32_matmul::F32MatMul>();
        Ok(graph)
    }
}

/// Runs tract code, turning a panic inside it into an error made by `err`: tract asserts
/// on some malformed graphs (fuzzing found an out-of-range Gather that panics while constants
/// are folded), and no panic may reach a caller. Needs `panic = "unwind"` (the default).
fn contained<T>(f: impl FnOnce() -> Result<T>, err: impl FnOnce(String) -> Error) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(err(format!(
            "tract failed on this graph (internal panic: {msg})"
        )))
    })
}

/// A reader that feeds what it reads to a SHA-256 hasher, if it has one.
/// `hasher`'s digest of `path`'s bytes against the `expected` hex.
fn check_sha256(path: &Path, expected: &str, hasher: Sha256) -> Result<()> {
    let actual: String = (hasher.finalize().iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    match actual.eq_ignore_ascii_case(expected) {
        true => Ok(()),
        false => Err(Error::Integrity {
            path: path.to_owned(),
            expected: expected.to_ascii_lowercase(),
            actual,
        }),
    }
}

struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl Graph {
    /// This graph with its runs executed in `pool`.
    pub fn with_pool(self, pool: Pool) -> Self {
        Graph { pool, ..self }
    }

    /// This graph running on one thread per caller ([`Pool::Caller`]): for runs made side
    /// by side.
    pub fn unpooled(&self) -> Self {
        self.clone().with_pool(Pool::Caller)
    }

    /// Whether the plan holds a node of op `O`.
    pub(crate) fn has_op<O: Op>(&self) -> bool {
        self.plan.model().nodes().iter().any(|n| n.op_is::<O>())
    }

    /// Whether the graph keeps a decoder's key/value cache in its run state
    /// ([`crate::keep_in_graph`] moved it there).
    pub fn holds_cache(&self) -> bool {
        self.has_op::<crate::ops::kv_cache::StatefulAttention>()
    }

    /// The names of the graph's inputs, in its order.
    pub fn input_names(&self) -> Vec<String> {
        let model = self.plan.model();
        model
            .inputs
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect()
    }

    /// A fresh state to run the graph in: what stateful ops keep between runs
    /// ([`Graph::run_in`]).
    pub fn state(&self) -> Result<TypedSimpleState> {
        SimpleState::new(&self.plan).map_err(|e| self.inference_error(format!("{e:#}")))
    }

    /// Whether `state` is one of this graph's (not another's, even of the same file).
    pub fn made(&self, state: &TypedSimpleState) -> bool {
        Arc::ptr_eq(state.plan(), &self.plan)
    }

    /// [`Graph::run_values`] in `state`, which keeps what stateful ops hold for the next run.
    pub fn run_in(
        &self,
        state: &mut TypedSimpleState,
        inputs: TVec<TValue>,
    ) -> Result<TVec<TValue>> {
        contained(
            || {
                self.in_pool(|| state.run(inputs))
                    .map_err(|e| self.inference_error(format!("{e:#}")))
            },
            |reason| self.inference_error(reason),
        )
    }

    /// The concrete shape of output `ix`, when the plan knows it without running.
    pub fn output_shape(&self, ix: usize) -> Option<Vec<usize>> {
        let fact = self.plan.model().output_fact(ix).ok()?;
        fact.shape.as_concrete().map(|s| s.to_vec())
    }

    /// Runs the graph; returns its first output, in f32.
    pub fn run(&self, inputs: TVec<Tensor>) -> Result<Tensor> {
        let fail = |e: TractError| self.inference_error(format!("{e:#}"));
        let inputs = self.cast_inputs(inputs).map_err(fail)?;
        self.run_values(inputs)?
            .remove(0)
            .into_tensor()
            .cast_to::<f32>()
            .map(|t| t.into_owned())
            .map_err(fail)
    }

    /// Runs the graph on inputs of the plan's own types; returns every output kept.
    pub fn run_values(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        contained(
            || {
                self.in_pool(|| self.plan.run(inputs))
                    .map_err(|e| self.inference_error(format!("{e:#}")))
            },
            |reason| self.inference_error(reason),
        )
    }

    /// Runs `f` in the graph's pool, its workers spinning between products if the graph's
    /// products are Glimpse's own.
    fn in_pool<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self.spins {
            true => self.pool.run_spinning(f),
            false => self.pool.run(f),
        }
    }

    /// Runs once as [`Graph::run`] does (in its pool), timing every node: tract's per-node
    /// profile.
    pub fn profile(&self, inputs: TVec<Tensor>) -> Result<Vec<NodeTime>> {
        self.profile_in(self.state()?, inputs)
    }

    /// [`Graph::profile`] in `state` (one [`Graph::state`] has run in before).
    pub fn profile_in(
        &self,
        mut state: TypedSimpleState,
        inputs: TVec<Tensor>,
    ) -> Result<Vec<NodeTime>> {
        let fail = |e: TractError| self.inference_error(format!("{e:#}"));
        let inputs = self.cast_inputs(inputs).map_err(fail)?;
        let mut times = Vec::new();
        contained(
            || {
                let run = || {
                    state.run_plan_with_eval(inputs, |ctx, op_state, node, input| {
                        let started = std::time::Instant::now();
                        let out = tract_core::plan::eval(ctx, op_state, node, input);
                        times.push(NodeTime {
                            op: node.op().name().to_string(),
                            node: node.name.clone(),
                            seconds: started.elapsed().as_secs_f64(),
                        });
                        out
                    })
                };
                self.in_pool(run).map_err(fail)
            },
            |reason| self.inference_error(reason),
        )?;
        Ok(times)
    }

    fn inference_error(&self, reason: String) -> Error {
        Error::Inference {
            tower: self.tower,
            reason,
        }
    }

    /// An f16 plan takes f16 inputs: casts what the caller built in f32.
    fn cast_inputs(&self, inputs: TVec<Tensor>) -> TractResult<TVec<TValue>> {
        inputs
            .into_iter()
            .zip(&self.input_types)
            .map(|(t, dt)| Ok(t.cast_to_dt(*dt)?.into_owned().into_tvalue()))
            .collect()
    }

    /// Runs and reads a `[n, d]` f32 output as `n` rows.
    pub fn run_rows(&self, inputs: TVec<Tensor>, n: usize) -> Result<Vec<Vec<f32>>> {
        let out = self.run(inputs)?;
        let bad = |why: String| Error::Inference {
            tower: self.tower,
            reason: why,
        };
        let view = out
            .to_plain_array_view::<f32>()
            .map_err(|e| bad(format!("output is not f32: {e:#}")))?;
        match view.shape() {
            [rows, _] if *rows == n => Ok(view
                .outer_iter()
                .map(|r| r.iter().copied().collect())
                .collect()),
            s => Err(bad(format!(
                "expected an output of shape [{n}, d], got {s:?}"
            ))),
        }
    }
}

fn port(v: &pb::ValueInfoProto) -> Port {
    use pb::tensor_shape_proto::dimension::Value;
    let (elem_type, dims) = match &v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => (
            t.elem_type,
            t.shape.as_ref().map_or_else(Vec::new, |s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(n)) if n > 0 => Some(n),
                        _ => None,
                    })
                    .collect()
            }),
        ),
        None => (0, vec![]),
    };
    Port {
        name: v.name.clone(),
        elem_type,
        dims,
    }
}

/// Refuses `axis` / `axes` attributes no tensor could have, in `graph` and its subgraphs.
fn check_axes(graph: &pb::GraphProto) -> std::result::Result<(), String> {
    let in_range = |a: &i64| (-MAX_AXIS..MAX_AXIS).contains(a);
    for node in &graph.node {
        for attr in &node.attribute {
            let bad = match attr.name.as_str() {
                "axis" => Some(attr.i).filter(|a| !in_range(a)),
                "axes" => attr.ints.iter().copied().find(|a| !in_range(a)),
                _ => None,
            };
            if let Some(axis) = bad {
                return Err(format!(
                    "node `{}` ({}) has {} {axis}, beyond any tensor's rank",
                    node.name, node.op_type, attr.name
                ));
            }
            for sub in attr.g.iter().chain(&attr.graphs) {
                check_axes(sub)?;
            }
        }
    }
    Ok(())
}
