//! What the CPU offers, and the defaults that follow from it: f16 arithmetic, the int8 dot
//! product instructions (SDOT), and how many threads to run on. Features come from the
//! standard library's run-time detection (on Linux and Android, the kernel's `AT_HWCAP` bits).

use std::path::Path;

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

/// What this CPU offers.
pub fn features() -> CpuFeatures {
    CpuFeatures {
        fp16: fp16(),
        dotprod: dotprod(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        performance_cores: default_threads(),
    }
}

/// Whether the CPU has f16 arithmetic ([`CpuFeatures::fp16`]), without reading the rest.
pub fn fp16() -> bool {
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("fp16");
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512fp16");
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    false
}

/// Whether the CPU has the int8 dot product ([`CpuFeatures::dotprod`]).
pub fn dotprod() -> bool {
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("dotprod");
    #[cfg(not(target_arch = "aarch64"))]
    false
}

/// The default thread count: the performance cores. On a big.LITTLE phone the little cores
/// would finish their share of a batch last and hold the whole batch back.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    performance_cores().map_or(cores, |n| n.clamp(1, cores))
}

/// The highest `CPU part` in `/proc/cpuinfo` text: the biggest core (graph libraries tune for it).
pub fn largest_cpu_part(cpuinfo: &str) -> Option<String> {
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
