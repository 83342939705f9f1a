//! What the CPU offers, and the defaults that follow from it: f16 arithmetic, the int8 dot
//! product instructions (SDOT), and how many threads to run on.

use std::path::Path;
use std::sync::{Arc, Mutex, Once, PoisonError};

use tract_core::tract_linalg::isa::{self, Isa};
use tract_core::tract_linalg::multithread::{multithread_tract_scope, Executor};

use crate::crew::Crew;

/// The CPU features Glimpse's choices depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    /// f16 arithmetic (aarch64 FEAT_FP16: Cortex-A55/A75 and later, Apple A11 and later; x86
    /// AVX512-FP16): tract's f16 kernels run natively, about twice the f32 throughput.
    pub fp16: bool,
    /// The int8 dot product (aarch64 FEAT_DotProd, SDOT): tract's fastest int8 matmul kernel.
    pub dotprod: bool,
    /// Cores the process may use.
    pub cores: usize,
    /// Of those, the fast ones (all of them on CPUs whose cores are alike).
    pub performance_cores: usize,
}

/// What this CPU offers, as tract's kernel selection sees it.
pub fn features() -> CpuFeatures {
    CpuFeatures {
        fp16: fp16(),
        dotprod: native_isa().has(Isa::Aarch64DotProd),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        performance_cores: default_threads(),
    }
}

/// Whether the CPU has f16 arithmetic ([`CpuFeatures::fp16`]), without reading the rest.
pub(crate) fn fp16() -> bool {
    let native = native_isa();
    native.has(Isa::Aarch64Fp16) || native.has(Isa::X86_64Avx512Fp16)
}

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
/// ([`crate::int8_matmul`]): on x86-64 with AVX-512 VNNI or AVX2, the ones written.
pub(crate) fn int8_products_packed() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::int8_matmul::kernel_available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn native_isa() -> isa::IsaSet {
    prepare();
    isa::native()
}

/// The default thread count: the performance cores. On a big.LITTLE phone the little cores
/// would finish their share of a batch last and hold the whole batch back.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    performance_cores().map_or(cores, |n| n.clamp(1, cores))
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
pub(crate) enum Pool {
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
    pub(crate) fn new(threads: usize) -> Pool {
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
                None => multithread_tract_scope(Executor::SingleThread, f),
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
                        multithread_tract_scope(Executor::SingleThread, f)
                    })
                })
            }
        }
    }
}

/// Runs `f` on `pool`'s workers, tract's products split over them.
fn in_pool<T: Send>(pool: &Arc<rayon::ThreadPool>, f: impl FnOnce() -> T + Send) -> T {
    let executor = Executor::MultiThread(pool.clone());
    pool.install(|| multithread_tract_scope(executor, f))
}

/// Tells tract what it cannot find out for itself; runs once, before any graph is optimised.
///
/// tract learns of f16 arithmetic from `/proc/cpuinfo`, which sandboxes and emulators may
/// hide or fake, and of the dot product (and the core type its cost model is tuned for) only
/// on Linux, macOS and iOS: on Android it never picks its SDOT int8 kernel. On Linux and
/// Android the kernel's `AT_HWCAP` bits are the authority, so they are passed on.
pub(crate) fn prepare() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(
            any(target_os = "linux", target_os = "android"),
            target_arch = "aarch64"
        ))]
        {
            use tract_core::knobs::set_config_global;
            // A deployer's own TRACT_* environment variables still take precedence.
            let (fp16, dotprod) = kernel_fp16_dotprod();
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
                .and_then(|info| largest_cpu_part(&info))
            {
                let _ = set_config_global("TRACT_CPU_AARCH64_OVERRIDE_CPU_PART", &part);
            }
        }
    });
}

/// Whether the kernel reports f16 arithmetic (`HWCAP_ASIMDHP`) and the int8 dot product
/// (`HWCAP_ASIMDDP`) for this process.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    target_arch = "aarch64"
))]
fn kernel_fp16_dotprod() -> (bool, bool) {
    // SAFETY: getauxval only reads the auxiliary vector the kernel gave the process.
    let hwcap = unsafe { libc::getauxval(libc::AT_HWCAP) };
    (
        hwcap & libc::HWCAP_ASIMDHP != 0,
        hwcap & libc::HWCAP_ASIMDDP != 0,
    )
}

/// The highest `CPU part` in `/proc/cpuinfo` text: the biggest core, which tract tunes for.
#[cfg_attr(not(target_os = "android"), allow(dead_code))]
fn largest_cpu_part(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.strip_prefix("CPU part")?.split(':').nth(1))
        .map(|p| p.trim().to_owned())
        .max()
}

/// How many performance cores the CPU has, where it says so; `None` when unknown.
fn performance_cores() -> Option<usize> {
    if cfg!(any(target_os = "ios", target_os = "macos")) {
        return apple_performance_cores();
    }
    if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
        return performance_cores_in(Path::new("/sys/devices/system/cpu"));
    }
    // x86 reports turbo-binned "favoured" cores with higher clocks, which are not a
    // separate class of core: use them all.
    None
}

/// Performance cores from a Linux sysfs CPU directory: each core's `cpu_capacity` (the
/// scheduler's relative speed, set from the device tree), else its `cpufreq/cpuinfo_max_freq`.
/// The slowest class is left out when the cores differ.
fn performance_cores_in(sysfs_cpu: &Path) -> Option<usize> {
    let read = |file: &str| -> Option<Vec<u64>> {
        let mut values = Vec::new();
        for entry in std::fs::read_dir(sysfs_cpu).ok()?.flatten() {
            let name = entry.file_name();
            let name = name.to_str()?;
            let is_core = name
                .strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_core {
                let text = std::fs::read_to_string(entry.path().join(file)).ok()?;
                values.push(text.trim().parse().ok()?);
            }
        }
        (!values.is_empty()).then_some(values)
    };
    let values = read("cpu_capacity").or_else(|| read("cpufreq/cpuinfo_max_freq"))?;
    Some(faster_than_slowest(&values))
}

/// How many of the cores' speeds exceed the slowest; all of them when they are alike.
fn faster_than_slowest(speeds: &[u64]) -> usize {
    let slowest = speeds.iter().copied().min().unwrap_or(0);
    match speeds.iter().filter(|&&s| s > slowest).count() {
        0 => speeds.len(),
        n => n,
    }
}

#[cfg(any(target_os = "ios", target_os = "macos"))]
fn apple_performance_cores() -> Option<usize> {
    let mut value: u32 = 0;
    let mut size = std::mem::size_of::<u32>();
    // SAFETY: the name is NUL-terminated and `value`/`size` describe a valid u32 buffer.
    let status = unsafe {
        libc::sysctlbyname(
            c"hw.perflevel0.logicalcpu".as_ptr(),
            (&mut value as *mut u32).cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    (status == 0 && value > 0).then_some(value as usize)
}

#[cfg(not(any(target_os = "ios", target_os = "macos")))]
fn apple_performance_cores() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_little_phones_use_their_big_cores() {
        // cpuinfo_max_freq (kHz) per core, as the devices report them.
        let snapdragon_888 = [1_804_800; 4]
            .into_iter()
            .chain([2_419_200; 3])
            .chain([2_841_600])
            .collect::<Vec<_>>();
        assert_eq!(faster_than_slowest(&snapdragon_888), 4);
        let tensor_g3 = [1_704_000; 4]
            .into_iter()
            .chain([2_367_000; 4])
            .chain([2_910_000])
            .collect::<Vec<_>>();
        assert_eq!(faster_than_slowest(&tensor_g3), 5);
        // Raspberry Pi 4: four alike Cortex-A72s.
        assert_eq!(faster_than_slowest(&[1_500_000; 4]), 4);
        assert_eq!(faster_than_slowest(&[]), 0);
    }

    fn sysfs(cores: &[(Option<u64>, Option<u64>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (i, (capacity, freq)) in cores.iter().enumerate() {
            let core = dir.path().join(format!("cpu{i}"));
            std::fs::create_dir_all(core.join("cpufreq")).unwrap();
            if let Some(c) = capacity {
                std::fs::write(core.join("cpu_capacity"), format!("{c}\n")).unwrap();
            }
            if let Some(f) = freq {
                std::fs::write(core.join("cpufreq/cpuinfo_max_freq"), format!("{f}\n")).unwrap();
            }
        }
        // Entries beside the cores that are not cores.
        std::fs::create_dir_all(dir.path().join("cpufreq")).unwrap();
        std::fs::create_dir_all(dir.path().join("cpuidle")).unwrap();
        std::fs::write(dir.path().join("online"), "0-3\n").unwrap();
        dir
    }

    #[test]
    fn sysfs_capacity_then_frequency() {
        // Capacity wins over frequency when present.
        let dir = sysfs(&[
            (Some(160), Some(1_800_000)),
            (Some(160), Some(1_800_000)),
            (Some(1024), Some(1_800_000)),
            (Some(1024), Some(1_800_000)),
        ]);
        assert_eq!(performance_cores_in(dir.path()), Some(2));
        // A core without capacity: fall back to frequencies.
        let dir = sysfs(&[
            (Some(160), Some(1_800_000)),
            (None, Some(2_400_000)),
            (Some(1024), Some(2_400_000)),
        ]);
        assert_eq!(performance_cores_in(dir.path()), Some(2));
        // Neither: unknown.
        let dir = sysfs(&[(None, None), (None, None)]);
        assert_eq!(performance_cores_in(dir.path()), None);
        assert_eq!(performance_cores_in(&dir.path().join("missing")), None);
    }

    #[test]
    fn largest_part_is_the_big_core() {
        let cpuinfo = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd05\n\n\
                       processor\t: 7\nCPU implementer\t: 0x41\nCPU part\t: 0xd44\n";
        assert_eq!(largest_cpu_part(cpuinfo).as_deref(), Some("0xd44"));
        assert_eq!(largest_cpu_part("model name\t: AMD EPYC\n"), None);
    }

    #[test]
    fn defaults_stay_within_the_cores() {
        let f = features();
        assert!((1..=f.cores).contains(&f.performance_cores));
        assert_eq!(default_threads(), f.performance_cores);
    }
}
