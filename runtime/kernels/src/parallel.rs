//! Where a kernel's work runs: split over the current graph run's threads, which are either a
//! pool of workers ([`with_workers`]) or a [`Crew`] of workers that spin between the products
//! of a run carried by Glimpse's own products (4-bit and int8): a decoder step, a prompt, an
//! int8 image. Outside both, on the calling thread alone.
//!
//! One token of decode is ~170 small 4-bit products back to back, each 0.1–1 ms over two
//! threads, with single-threaded nodes (attention, norms) between them. A pool's idle rayon
//! workers fall asleep within microseconds and take 0.1–0.2 ms to wake (virtual machines
//! most of all), which cost each product that much: two-thread decode ran at 1.37× one
//! thread's speed instead of ~2×. For such a run, [`Crew::serve`] keeps the pool's other
//! workers spinning on a [`Crew`] until the run ends, and the products it runs split their
//! rows over them through [`par_rows`] (as llama.cpp's thread pool spins between its ops).
//! The run's other nodes stay on the calling worker, so the spinning workers never wait for
//! rayon work and the cores are not oversubscribed. An int8 ViT-B/32 image is the same story
//! at 73 products of ~0.3 ms: two threads ran it no faster than one until it spun.
//!
//! Hand-written: rayon has no spinning mode, and a crew is a hundred lines.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::hint::spin_loop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;

use rayon::prelude::*;

/// Products below this many multiply-adds run on the calling thread alone.
const MIN_SPLIT: usize = 1 << 15;
/// Chunks per thread: late or slow workers take fewer.
const CHUNKS_PER_THREAD: usize = 4;
/// Idle spins between yields of a waiting worker.
const YIELD_EVERY: u32 = 256;

/// A job: run chunk `i`.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// One run's spinning workers and the job they share.
pub struct Crew {
    /// Odd while `job` is open to workers, even between jobs.
    generation: AtomicUsize,
    job: UnsafeCell<Option<Job<'static>>>,
    chunks: AtomicUsize,
    next: AtomicUsize,
    finished: AtomicUsize,
    /// Workers that may be reading `job`.
    inside: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
    threads: usize,
}

// SAFETY: `job` is written only while no worker can read it (generation even and `inside`
// zero), and points to a job its poster keeps alive until every worker is out of it.
unsafe impl Sync for Crew {}

thread_local! {
    /// The crew of the run on this thread, if any.
    static CURRENT: Cell<*const Crew> = const { Cell::new(std::ptr::null()) };
    /// The pool the run on this thread splits its work over, if any ([`with_workers`]).
    static WORKERS: RefCell<Option<Arc<rayon::ThreadPool>>> = const { RefCell::new(None) };
}

/// Runs `f` with the kernels it calls splitting their work over `pool` (`None`: on the calling
/// thread alone), unless a [`Crew`] serves them. `f` itself runs on the calling thread.
pub fn with_workers<T>(pool: Option<Arc<rayon::ThreadPool>>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<rayon::ThreadPool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            WORKERS.with(|w| *w.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(WORKERS.with(|w| w.replace(pool)));
    f()
}

impl Crew {
    /// Runs `f` on this rayon worker while `helpers` other workers of its pool spin, ready
    /// for the kernels `f` runs.
    pub fn serve<T: Send>(helpers: usize, f: impl FnOnce() -> T + Send) -> T {
        let crew = Crew {
            generation: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            chunks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            threads: helpers + 1,
        };
        crew.with_helpers(helpers, f)
    }

    fn with_helpers<T: Send>(&self, helpers: usize, f: impl FnOnce() -> T + Send) -> T {
        if helpers == 0 {
            struct Leave<'a>(&'a Crew);
            impl Drop for Leave<'_> {
                fn drop(&mut self) {
                    CURRENT.with(|c| c.set(std::ptr::null()));
                    self.0.stop.store(true, Release);
                }
            }
            let _leave = Leave(self);
            CURRENT.with(|c| c.set(self));
            return f();
        }
        // Another worker takes `help`; if none does before `f` ends, this one runs it, and
        // it returns at once. `f` never waits on rayon work, so it cannot end up in `help`.
        rayon::join(|| self.with_helpers(helpers - 1, f), || self.help()).0
    }

    /// A worker's loop: spin, joining each job opened, until the run ends.
    fn help(&self) {
        let mut done = 0;
        let mut idle = 0u32;
        while !self.stop.load(Acquire) {
            let generation = self.generation.load(SeqCst);
            if generation.is_multiple_of(2) || generation == done {
                idle = idle.wrapping_add(1);
                match idle % YIELD_EVERY {
                    // Lets a thread that shares this core (more threads than cores) run.
                    0 => std::thread::yield_now(),
                    _ => spin_loop(),
                }
                continue;
            }
            self.inside.fetch_add(1, SeqCst);
            if self.generation.load(SeqCst) == generation {
                // SAFETY: the job is open and its poster waits for `inside` to drop to zero.
                if let Some(job) = unsafe { *self.job.get() } {
                    self.work(job);
                }
                done = generation;
            }
            self.inside.fetch_sub(1, SeqCst);
        }
    }

    /// Takes chunks of the open job until none is left.
    fn work(&self, job: Job) {
        let chunks = self.chunks.load(Acquire);
        loop {
            let i = self.next.fetch_add(1, AcqRel);
            if i >= chunks {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| job(i))).is_err() {
                self.panicked.store(true, Release);
            }
            self.finished.fetch_add(1, Release);
        }
    }

    /// Runs `job(i)` for every `i < chunks`, here and on the spinning workers.
    fn run(&self, chunks: usize, job: Job) {
        let generation = self.generation.load(Relaxed);
        // SAFETY: no job is open (even generation) and no worker is inside the last one, so
        // nothing reads the cell; the job outlives its use, which ends before this returns.
        unsafe { *self.job.get() = Some(std::mem::transmute::<Job, Job<'static>>(job)) };
        self.chunks.store(chunks, Release);
        self.next.store(0, Release);
        self.finished.store(0, Release);
        self.generation.store(generation + 1, SeqCst);
        self.work(job);
        while self.finished.load(Acquire) < chunks {
            spin_loop();
        }
        self.generation.store(generation + 2, SeqCst);
        while self.inside.load(SeqCst) != 0 {
            spin_loop();
        }
        // SAFETY: as above: closed, and every worker is out.
        unsafe { *self.job.get() = None };
        if self.panicked.swap(false, AcqRel) {
            panic!("a matrix product panicked on a worker thread");
        }
    }
}

/// Splits `tasks` column groups of a product's output `out` over the current run's workers
/// (as [`par_rows`]), `f(groups, out)` writing the columns of each piece through the pointer:
/// every thread reads only its share of the weight. `f` must write only its groups' columns.
pub fn par_columns<T>(
    out: &mut [T],
    tasks: usize,
    cost: usize,
    f: impl Fn(std::ops::Range<usize>, *mut T) + Sync,
) {
    let mut groups = vec![0u8; tasks];
    let out = Out(out.as_mut_ptr());
    par_rows(&mut groups, 1, cost, |first, mine| {
        f(first..first + mine.len(), out.get())
    })
}

/// A product's output, written by several threads, each in its own columns.
struct Out<T>(*mut T);

impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<T> {}

// SAFETY: the threads writing through it write disjoint elements (`par_columns`' contract).
unsafe impl<T> Sync for Out<T> {}
unsafe impl<T> Send for Out<T> {}

impl<T> Out<T> {
    /// The pointer (a method, so closures capture the whole `Out`).
    fn get(self) -> *mut T {
        self.0
    }
}

/// Splits `out` (rows of `row_len`) over the current run's workers, `f(first_row, rows)`
/// filling each piece: the run's [`Crew`] if it has one, else its pool ([`with_workers`]),
/// else this thread alone. `cost` (the work's multiply-adds or elements) below [`MIN_SPLIT`]
/// runs here.
pub fn par_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    cost: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let crew = CURRENT.with(Cell::get);
    let n_rows = out.len() / row_len.max(1);
    if cost < MIN_SPLIT || n_rows < 2 {
        return f(0, out);
    }
    if crew.is_null() {
        let pool = WORKERS.with(|w| w.borrow().clone());
        return match pool {
            Some(pool) if pool.current_num_threads() > 1 => pool.install(|| {
                let chunks = (CHUNKS_PER_THREAD * rayon::current_num_threads()).min(n_rows);
                let chunk_rows = n_rows.div_ceil(chunks);
                (out.par_chunks_mut(chunk_rows * row_len).enumerate())
                    .for_each(|(i, rows)| f(i * chunk_rows, rows))
            }),
            _ => f(0, out),
        };
    }
    // SAFETY: set only while `Crew::serve` runs on this thread, the crew alive on its stack.
    let crew = unsafe { &*crew };
    let chunks = (crew.threads * CHUNKS_PER_THREAD).min(n_rows);
    let chunk_rows = n_rows.div_ceil(chunks);
    let chunks = n_rows.div_ceil(chunk_rows);
    let base = out.as_mut_ptr() as usize;
    let len = out.len();
    crew.run(chunks, &|i| {
        let start = i * chunk_rows * row_len;
        let end = ((i + 1) * chunk_rows * row_len).min(len);
        // SAFETY: chunk `i` runs once, on one thread, and chunks do not overlap; `out` is
        // borrowed until `run` returns, after every chunk.
        let rows =
            unsafe { std::slice::from_raw_parts_mut((base as *mut T).add(start), end - start) };
        f(i * chunk_rows, rows);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Every row is written once, by its own index, through many jobs in one run.
    #[test]
    fn splits_rows_over_the_crew() {
        for threads in [2, 3] {
            let out = pool(threads).install(|| {
                Crew::serve(threads - 1, || {
                    let mut all = Vec::new();
                    for (rows, row_len) in [(1, 4096), (7, 4096), (1000, 1), (4096, 3)] {
                        let mut out = vec![0f32; rows * row_len];
                        par_rows(&mut out, row_len, 1 << 20, |first, piece| {
                            for (j, row) in piece.chunks_mut(row_len).enumerate() {
                                row.iter_mut().for_each(|v| *v += (first + j) as f32);
                            }
                        });
                        all.push((row_len, out));
                    }
                    all
                })
            });
            for (row_len, out) in out {
                for (i, row) in out.chunks(row_len).enumerate() {
                    assert!(row.iter().all(|&v| v == i as f32), "row {i}");
                }
            }
        }
    }

    /// The spinning worker takes chunks: the caller holds its first chunk until another
    /// thread has run one (bounded, so a crew whose worker never joins fails the test
    /// instead of hanging it; a loaded machine may take a while to schedule the worker).
    #[test]
    fn workers_take_chunks() {
        let others = pool(2).install(|| {
            Crew::serve(1, || {
                let caller = std::thread::current().id();
                let others = AtomicUsize::new(0);
                let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
                let mut out = vec![0f32; 64];
                par_rows(&mut out, 1, 1 << 20, |_, _| {
                    if std::thread::current().id() != caller {
                        others.fetch_add(1, Relaxed);
                        return;
                    }
                    while others.load(Relaxed) == 0 && std::time::Instant::now() < give_up {
                        std::thread::yield_now();
                    }
                });
                others.load(Relaxed)
            })
        });
        assert!(others > 0, "no chunk ran on the other worker");
    }

    /// A panic in a product reaches the caller; the crew's workers are released.
    #[test]
    fn a_panicking_product_panics_the_run() {
        let pool = pool(2);
        let result = pool.install(|| {
            catch_unwind(AssertUnwindSafe(|| {
                Crew::serve(1, || {
                    let mut out = vec![0f32; 64];
                    par_rows(&mut out, 1, 1 << 20, |first, _| {
                        assert!(first < 32, "boom");
                    })
                })
            }))
        });
        assert!(result.is_err());
        // The pool still runs work afterwards.
        assert_eq!(pool.install(|| rayon::join(|| 1, || 2)), (1, 2));
    }
}
