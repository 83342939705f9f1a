//! Where a graph's runs execute (a caller's own worker, or a pool that splits each product),
//! and what tract is told of the CPU before it picks its kernels.

use std::sync::{Arc, Mutex, Once, PoisonError};

#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    target_arch = "aarch64"
))]
use glimpse_kernels::cpu;
use glimpse_kernels::parallel::{with_workers, Crew};
use tract_core::tract_linalg::isa::{self, Isa};
use tract_core::tract_linalg::multithread::{multithread_tract_scope, Executor};

/// Whether Glimpse computes int8 matrix products (`MatMulInteger`) in f32: on x86-64 where
/// neither its own kernels (AVX2 at least) nor tract's VNNI ones run. tract's (0.23.9) x86
/// int8 kernels without VNNI are far slower than its f32 ones: `avx2_mmm_i32_8x8`'s inner
/// loop stalls on a legacy-SSE load, ~100× (BENCHMARKS.md).
pub(crate) fn int8_products_in_f32() -> bool {
    let native = native_isa();
    cfg!(target_arch = "x86_64")
        && !int8_products_packed()
        && !native.has(Isa::X86_64Avx512Vnni)
        && !native.has(Isa::X86_64AvxVnni)
}

/// Whether Glimpse runs int8 matrix products with constant weights in its own packed kernel
/// ([`crate::ops::int8_matmul`]): on x86-64 with AVX-512 VNNI or AVX2, and on aarch64 with the
/// dot product (`SDOT`); elsewhere tract's (on a Cortex-A53, its SMLAL kernel).
pub(crate) fn int8_products_packed() -> bool {
    glimpse_kernels::int8_matmul::kernel_available()
}

fn native_isa() -> isa::IsaSet {
    prepare();
    isa::native()
}

/// Where a graph's runs execute: on a worker of the calling thread's own, or in a pool of
/// workers that split each matrix product between them.
///
/// A whole run goes into the pool, not just its products: a caller thread running the other
/// nodes while the workers spin between products would be one thread too many for the cores
/// (two-thread LLM decode 1.2–1.4× faster this way, BENCHMARKS.md). Runs on one pool take
/// turns: a worker waiting inside a product would otherwise pick up another caller's queued
/// run, and tract keeps per-thread scratch space that two runs on one thread must not share.
#[derive(Debug, Clone)]
pub enum Pool {
    /// Each calling thread's runs go to a one-worker pool of its own, so callers run side by
    /// side. Not tract's single-thread mode: there it multiplies a whole matrix product in
    /// one cache-blocked walk, which a one-worker pool splits into chunks — 1.6× faster on
    /// ViT-L/14's products here (BENCHMARKS.md).
    Caller,
    Workers {
        pool: Arc<rayon::ThreadPool>,
        turn: Arc<Mutex<()>>,
    },
}

thread_local! {
    /// The calling thread's one-worker pool ([`Pool::Caller`]); `None` if it cannot start.
    static SOLO: Option<Arc<rayon::ThreadPool>> = workers(1);
}

fn workers(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("glimpse-mm-{i}"))
        .num_threads(threads)
        .build()
        .ok()
        .map(Arc::new)
}

impl Pool {
    /// A pool of `threads` workers; for one thread (or a pool that cannot start),
    /// [`Pool::Caller`].
    pub fn new(threads: usize) -> Pool {
        match threads {
            0 | 1 => Pool::Caller,
            _ => workers(threads).map_or(Pool::Caller, |pool| Pool::Workers {
                pool,
                turn: Arc::default(),
            }),
        }
    }

    /// Runs `f`, a graph run, where this pool says, with tract's products split accordingly.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self {
            Pool::Caller => SOLO.with(|solo| match solo {
                Some(pool) => in_pool(pool, f),
                None => with_workers(None, || multithread_tract_scope(Executor::SingleThread, f)),
            }),
            Pool::Workers { pool, turn } => {
                let _turn = turn.lock().unwrap_or_else(PoisonError::into_inner);
                in_pool(pool, f)
            }
        }
    }

    /// Runs `f`, a run of short products (a decoder step, an int8 image), as [`Pool::run`] does but
    /// with the pool's other workers spinning between its products instead of falling asleep
    /// ([`Crew`]); tract's own products in it run on one thread.
    pub(crate) fn run_spinning<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self {
            Pool::Caller => self.run(f),
            Pool::Workers { pool, turn } => {
                let _turn = turn.lock().unwrap_or_else(PoisonError::into_inner);
                // Spinning on a core the run itself needs would only slow it down.
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let helpers = pool.current_num_threads().min(cores).saturating_sub(1);
                pool.install(|| {
                    Crew::serve(helpers, || {
                        with_workers(None, || multithread_tract_scope(Executor::SingleThread, f))
                    })
                })
            }
        }
    }
}

/// Runs `f` on `pool`'s workers, tract's products split over them.
fn in_pool<T: Send>(pool: &Arc<rayon::ThreadPool>, f: impl FnOnce() -> T + Send) -> T {
    let executor = Executor::MultiThread(pool.clone());
    pool.install(|| with_workers(Some(pool.clone()), || multithread_tract_scope(executor, f)))
}

/// Tells tract what it cannot find out for itself; runs once, before any graph is optimised.
///
/// tract learns of f16 arithmetic from `/proc/cpuinfo`, which sandboxes and emulators may
/// hide or fake, and of the dot product (and the core type its cost model is tuned for) only
/// on Linux, macOS and iOS: on Android it never picks its SDOT int8 kernel. On Linux and
/// Android the kernel's `AT_HWCAP` bits are the authority, so they are passed on.
pub fn prepare() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(
            any(target_os = "linux", target_os = "android"),
            target_arch = "aarch64"
        ))]
        {
            use tract_core::knobs::set_config_global;
            // A deployer's own TRACT_* environment variables still take precedence.
            let (fp16, dotprod) = (cpu::fp16(), cpu::dotprod());
            let isa: Vec<&str> = [(fp16, "+fp16"), (dotprod, "+dotprod")]
                .into_iter()
                .filter_map(|(has, token)| has.then_some(token))
                .collect();
            if !isa.is_empty() {
                let _ = set_config_global("TRACT_CPU_ISA", &isa.join(","));
            }
            #[cfg(target_os = "android")]
            if let Some(part) = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|info| cpu::largest_cpu_part(&info))
            {
                let _ = set_config_global("TRACT_CPU_AARCH64_OVERRIDE_CPU_PART", &part);
            }
        }
    });
}
