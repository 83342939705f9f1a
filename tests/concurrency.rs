//! Heavy use: one model from 8 threads gives the sequential results exactly; the photo index
//! answers searches while a writer indexes; 10,000 embed calls do not grow memory.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};

use glimpse::{ClipModel, RgbImage};
use glimpse_photos::{PhotoIndex, ScanOptions, SearchFilter};
use glimpse_tests::fixtures;

fn fashion() -> ClipModel {
    ClipModel::load(fixtures().join("../models/fashion-clip")).unwrap()
}

fn sample_images(model: &ClipModel) -> Vec<RgbImage> {
    ["images/fashion", "photos"]
        .iter()
        .flat_map(|d| fs::read_dir(fixtures().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png" || x == "jpg"))
        .map(|p| {
            model
                .decode_image(&fs::read(&p).unwrap(), "sample")
                .unwrap()
        })
        .collect()
}

#[test]
fn eight_threads_match_sequential_use() {
    let model = fashion();
    let images = sample_images(&model);
    let texts = [
        "a photo of a bag",
        "a sneaker",
        "trousers",
        "a red dress",
        "a cat",
    ];
    let want_img: Vec<_> = images
        .iter()
        .map(|i| model.embed_images(std::slice::from_ref(i)).unwrap())
        .collect();
    let want_txt: Vec<_> = texts
        .iter()
        .map(|t| model.embed_texts(&[t]).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (model, images, want_img, want_txt) = (&model, &images, &want_img, &want_txt);
            s.spawn(move || {
                for round in 0..4 {
                    for k in 0..images.len() {
                        let i = (k + t + round) % images.len();
                        assert_eq!(
                            model
                                .embed_images(std::slice::from_ref(&images[i]))
                                .unwrap(),
                            want_img[i]
                        );
                        let j = (k + t) % texts.len();
                        assert_eq!(model.embed_texts(&[texts[j]]).unwrap(), want_txt[j]);
                    }
                }
            });
        }
    });
}

#[test]
fn searches_run_while_a_writer_indexes() {
    let model = fashion();
    let photos = tempfile::tempdir().unwrap();
    for c in 0..6 {
        let sub = photos.path().join(format!("roll-{c}"));
        fs::create_dir(&sub).unwrap();
        for d in ["images/fashion", "photos"] {
            for e in fs::read_dir(fixtures().join(d)).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "png" || x == "jpg") {
                    fs::copy(&p, sub.join(p.file_name().unwrap())).unwrap();
                }
            }
        }
    }
    let db = tempfile::tempdir().unwrap();
    let index = PhotoIndex::open(db.path().join("i.sqlite"), &model).unwrap();
    let done = AtomicBool::new(false);
    let searches = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let mut last = 0;
                while !done.load(Ordering::Relaxed) {
                    let hits = index
                        .search_text("a photo of a bag", 5, &SearchFilter::default())
                        .unwrap();
                    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
                    let n = index.len();
                    assert!(n >= last, "the index never shrinks while adding");
                    last = n;
                    if let Some(h) = hits.first() {
                        index.similar(&h.key, 3, &SearchFilter::default()).unwrap();
                        index.tags(&h.key).unwrap();
                    }
                    searches.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let opts = ScanOptions {
            threads: 1,
            batch: 4,
            ..ScanOptions::default()
        };
        let report = index.index_dir(photos.path(), &opts, |_, _| {}).unwrap();
        done.store(true, Ordering::Relaxed);
        assert_eq!(report.added, 6 * 18);
    });
    assert!(searches.load(Ordering::Relaxed) > 0);
    index.check().unwrap();
    assert_eq!(index.len(), 6 * 18);
}

#[cfg(target_os = "linux")]
fn rss_bytes() -> u64 {
    let statm = fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[cfg(target_os = "linux")]
#[test]
fn ten_thousand_embeds_do_not_grow_memory() {
    // Emulated ARM (CI's qemu stage) runs a fifth of the calls.
    let calls = if cfg!(target_arch = "aarch64") {
        2_000
    } else {
        10_000
    };
    let model = fashion();
    // The 28 px Fashion-MNIST samples: no resize, so the calls are the graphs' work.
    let images: Vec<RgbImage> = sample_images(&model)
        .into_iter()
        .filter(|i| i.width() == 28)
        .collect();
    let mut call = |i: usize| {
        if i.is_multiple_of(2) {
            model
                .embed_images(std::slice::from_ref(&images[i % images.len()]))
                .unwrap();
        } else {
            model
                .embed_texts(&[format!("a photo of item {i}")])
                .unwrap();
        }
    };
    let warm = calls / 10;
    (0..warm).for_each(&mut call);
    let before = rss_bytes();
    let mut peak = before;
    for i in warm..calls {
        call(i);
        if i.is_multiple_of(500) {
            peak = peak.max(rss_bytes());
        }
    }
    let after = rss_bytes();
    println!(
        "RSS after {warm} calls {:.1} MB, after {calls} {:.1} MB (peak {:.1} MB)",
        before as f64 / 1e6,
        after as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert!(after < before + (4 << 20), "grew {} bytes", after - before);
}
