//! The CPU features Glimpse detects and the f16 choice that follows. Where the runner knows
//! its CPU it says so in `GLIMPSE_EXPECT_CPU` (comma-separated `fp16`, `dotprod`, or `none`):
//! `.ci/arm` runs this under qemu as a CPU with both and as a Cortex-A53 with neither.
//! Elsewhere x86-64's `/proc/cpuinfo` flags are the reference.

use glimpse::{ClipModel, LoadOptions, Precision};
use glimpse_tests::{fixtures, min_cosine, Reference};

/// The features this CPU should report, from a source independent of Glimpse and tract.
fn expected() -> Option<(bool, bool)> {
    if let Ok(spec) = std::env::var("GLIMPSE_EXPECT_CPU") {
        return Some((spec.contains("fp16"), spec.contains("dotprod")));
    }
    if cfg!(target_arch = "x86_64") {
        let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let flags = info.lines().find(|l| l.starts_with("flags"))?;
        let fp16 = flags.split_whitespace().any(|f| f == "avx512_fp16");
        return Some((fp16, false));
    }
    None
}

#[test]
fn detected_features_are_the_cpus() {
    let f = glimpse::cpu::features();
    eprintln!("detected: {f:?}");
    let Some((fp16, dotprod)) = expected() else {
        eprintln!("no reference for this CPU: set GLIMPSE_EXPECT_CPU");
        return;
    };
    assert_eq!((f.fp16, f.dotprod), (fp16, dotprod), "{f:?}");
}

#[test]
fn auto_precision_runs_f16_only_where_the_cpu_has_it() {
    let bundle = fixtures().join("clip-vit-tiny");
    let r = Reference::load(&bundle);
    let pixels = r.pixels(&bundle);
    let load = |precision| {
        let opts = LoadOptions {
            precision,
            ..LoadOptions::vision_only()
        };
        ClipModel::load_with(&bundle, opts).unwrap()
    };
    let auto = load(Precision::Auto);
    let fp16 = glimpse::cpu::features().fp16;
    let want = if fp16 { Precision::F16 } else { Precision::F32 };
    assert_eq!(auto.precision(), want);

    let embeds = auto.embed_pixels(&pixels).unwrap();
    let cos = min_cosine(&embeds, &r.image_embeds);
    eprintln!("{want:?} (auto) vs PyTorch: min cosine {cos:.6}");
    if fp16 {
        assert!(cos >= 0.999, "f16 cosine {cos}");
    } else {
        // f32 fallback: the same plan as an explicit f32 load, bit for bit.
        let f32_embeds = load(Precision::F32).embed_pixels(&pixels).unwrap();
        assert_eq!(embeds, f32_embeds);
    }
}
