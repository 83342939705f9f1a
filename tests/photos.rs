//! The photo index against ONNX Runtime + PIL references (`tools/reference_photos.py`):
//! tags, text search, filters, re-indexing, model binding, near-duplicates.

use std::fs;
use std::path::Path;

use glimpse::{ClipModel, Error};
use glimpse_photos::{file_key, PhotoIndex, ScanOptions, SearchFilter, TagOptions};
use glimpse_tests::fixtures;
use serde::Deserialize;

#[derive(Deserialize)]
struct PhotoReference {
    vocabulary: Vec<String>,
    images: Vec<String>,
    tag_probabilities: Vec<Vec<f32>>,
    queries: Vec<String>,
    query_cosines: Vec<Vec<f32>>,
}

fn reference() -> PhotoReference {
    let text = fs::read_to_string(fixtures().join("photos/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fashion() -> ClipModel {
    ClipModel::load(fixtures().join("../models/fashion-clip")).unwrap()
}

/// A folder with the reference images, plus files that must be skipped.
fn photo_folder(r: &PhotoReference) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for img in &r.images {
        let src = fixtures().join("..").join(img);
        fs::copy(&src, dir.path().join(src.file_name().unwrap())).unwrap();
    }
    let sub = dir.path().join("broken");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("garbage.jpg"), b"this is not a jpeg at all").unwrap();
    fs::write(sub.join("empty.png"), b"").unwrap();
    let png = fs::read(fixtures().join("images/gradient.png")).unwrap();
    fs::write(sub.join("truncated.png"), &png[..60]).unwrap();
    fs::write(sub.join("notes.txt"), b"shopping list").unwrap();
    fs::write(
        dir.path().join(".hidden.jpg"),
        b"hidden files are not looked at",
    )
    .unwrap();
    dir
}

fn key(dir: &Path, img: &str) -> String {
    file_key(&dir.join(Path::new(img).file_name().unwrap())).unwrap()
}

fn all_tags() -> TagOptions {
    TagOptions {
        threshold: 0.0,
        max_tags: 10,
    }
}

fn indexed(r: &PhotoReference) -> (tempfile::TempDir, PhotoIndex) {
    let dir = photo_folder(r);
    let model = fashion();
    let mut index = PhotoIndex::open(dir.path().join("index.sqlite"), &model).unwrap();
    index.set_vocabulary(&r.vocabulary).unwrap();
    index.set_tag_options(all_tags());
    let report = index
        .index_dir(dir.path(), &ScanOptions::default(), |_, _| {})
        .unwrap();
    assert_eq!(report.added, r.images.len(), "{report:?}");
    assert_eq!(report.found, r.images.len() + 3, "{report:?}");
    (dir, index)
}

/// Largest gap between Glimpse's and the reference's tag probabilities. The photos (640x480
/// JPEGs) go through DCT-scaled decoding, the PNGs through the full decoder.
#[test]
fn tags_match_onnx_runtime() {
    let r = reference();
    let (dir, index) = indexed(&r);
    // Worst gap for the PNGs (full decode) and the JPEGs (DCT-scaled decode).
    let (mut png, mut jpeg): (f32, f32) = (0.0, 0.0);
    for (img, probs) in r.images.iter().zip(&r.tag_probabilities) {
        let worst = if img.ends_with(".png") {
            &mut png
        } else {
            &mut jpeg
        };
        let tags = index.tags(&key(dir.path(), img)).unwrap();
        assert_eq!(tags.len(), r.vocabulary.len());
        let best = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        for t in &tags {
            let i = r.vocabulary.iter().position(|v| *v == t.label).unwrap();
            *worst = worst.max((t.score - probs[i]).abs());
        }
        // The top tag agrees wherever the reference's margin is clear.
        let mut sorted = probs.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 0.1 {
            assert_eq!(tags[0].label, r.vocabulary[best], "{img}");
        }
    }
    println!("max |tag probability - ONNX Runtime|: PNG {png:.4}, JPEG {jpeg:.4}");
    assert!(png < 0.01 && jpeg < 0.1, "{png} {jpeg}");
}

#[test]
fn text_search_matches_onnx_runtime() {
    let r = reference();
    let (dir, index) = indexed(&r);
    let mut worst: f32 = 0.0;
    for (q, cos) in r.queries.iter().zip(&r.query_cosines) {
        let hits = index
            .search_text(q, r.images.len(), &SearchFilter::default())
            .unwrap();
        assert_eq!(hits.len(), r.images.len());
        for h in &hits {
            let i = r
                .images
                .iter()
                .position(|img| key(dir.path(), img) == h.key)
                .unwrap();
            worst = worst.max((h.score - cos[i]).abs());
        }
        let best = cos
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(hits[0].key, key(dir.path(), &r.images[best]), "{q}");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    println!("max |cosine - ONNX Runtime| = {worst:.4}");
    assert!(worst < 0.03, "{worst}");
    // Top-k is a prefix of the full ranking.
    let top3 = index
        .search_text(&r.queries[0], 3, &SearchFilter::default())
        .unwrap();
    let all = index
        .search_text(&r.queries[0], 100, &SearchFilter::default())
        .unwrap();
    assert_eq!(top3[..], all[..3]);
}

#[test]
fn filters_by_date_and_tag() {
    let r = reference();
    let (dir, mut index) = indexed(&r);
    // fixtures/photos carry EXIF dates 2024-01-01 .. 2024-01-08, one per photo.
    let jan = |d| glimpse::image::unix_seconds(2024, 1, d, 0).unwrap();
    let filter = SearchFilter {
        after: Some(jan(3)),
        before: Some(jan(5)),
        ..SearchFilter::default()
    };
    let hits = index.search_text("anything", 50, &filter).unwrap();
    let mut names: Vec<&str> = hits
        .iter()
        .map(|h| h.key.rsplit('/').next().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["002-coffee.jpg", "003-rocket.jpg"]);
    assert_eq!(hits[0].taken_at.map(|t| t >= jan(3)), Some(true));

    // Tag filter at a threshold: exactly the images whose reference probability clears it.
    index.set_tag_options(TagOptions {
        threshold: 0.5,
        max_tags: 3,
    });
    let t = r.vocabulary.iter().position(|v| v == "sandal").unwrap();
    let mut want: Vec<String> = r
        .images
        .iter()
        .zip(&r.tag_probabilities)
        .filter(|(_, p)| p[t] >= 0.5)
        .map(|(img, _)| key(dir.path(), img))
        .collect();
    let filter = SearchFilter {
        tag: Some("sandal".into()),
        ..SearchFilter::default()
    };
    let mut got: Vec<String> = index
        .search_text("a photo of a sandal", 50, &filter)
        .unwrap()
        .into_iter()
        .map(|h| h.key)
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let e = index
        .search_text(
            "x",
            5,
            &SearchFilter {
                tag: Some("unicorn".into()),
                ..SearchFilter::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("unicorn"), "{e}");
}

#[test]
fn reports_skipped_files_with_reasons() {
    let r = reference();
    let dir = photo_folder(&r);
    let index = PhotoIndex::open(dir.path().join("index.sqlite"), &fashion()).unwrap();
    let report = index
        .index_dir(dir.path(), &ScanOptions::default(), |_, _| {})
        .unwrap();
    let reason = |name: &str| {
        report
            .skipped
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{name} not reported: {report:?}"))
    };
    assert!(
        reason("garbage.jpg").contains("not a recognised image"),
        "{}",
        reason("garbage.jpg")
    );
    assert!(
        reason("empty.png").contains("empty"),
        "{}",
        reason("empty.png")
    );
    assert!(!reason("truncated.png").is_empty());
    assert!(reason("notes.txt").contains("not an image"));
    assert_eq!(report.skipped.len(), 4, "{report:?}");
    assert!(!report
        .skipped
        .iter()
        .any(|(p, _)| p.ends_with(".hidden.jpg")));
    assert!(!report.cancelled);
}

#[test]
fn reindexing_skips_current_files_and_follows_changes() {
    let r = reference();
    let (dir, index) = indexed(&r);
    let again = index
        .index_dir(dir.path(), &ScanOptions::default(), |_, _| {})
        .unwrap();
    assert_eq!(
        (again.added, again.updated, again.unchanged),
        (0, 0, r.images.len())
    );

    // Same bytes, new mtime: recognised by content hash, not re-embedded.
    let sneaker = dir.path().join("sneaker.png");
    let bytes = fs::read(&sneaker).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&sneaker, &bytes).unwrap();
    // New contents under an old name: re-embedded.
    fs::copy(dir.path().join("bag.png"), dir.path().join("dress.png")).unwrap();
    // A deleted file leaves the index.
    fs::remove_file(dir.path().join("coat.png")).unwrap();
    let third = index
        .index_dir(dir.path(), &ScanOptions::default(), |_, _| {})
        .unwrap();
    assert_eq!(
        (third.added, third.updated, third.removed),
        (0, 1, 1),
        "{third:?}"
    );
    assert_eq!(third.unchanged, r.images.len() - 2);
    assert_eq!(index.len(), r.images.len() - 1);
    let dress = key(dir.path(), "dress.png");
    let bag = key(dir.path(), "bag.png");
    assert_eq!(index.tags(&dress).unwrap(), index.tags(&bag).unwrap());
    index.check().unwrap();

    // Everything survives a reopen.
    let path = index.path().to_owned();
    drop(index);
    let reopened = PhotoIndex::open(&path, &fashion()).unwrap();
    assert_eq!(reopened.len(), r.images.len() - 1);
    assert_eq!(reopened.vocabulary(), r.vocabulary);
    reopened.check().unwrap();
}

#[test]
fn an_index_refuses_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    PhotoIndex::open(&path, &fashion()).unwrap();
    let other = ClipModel::load(fixtures().join("clip-vit-tiny")).unwrap();
    let e = PhotoIndex::open(&path, &other).err().expect("must refuse");
    assert!(matches!(e, Error::Index { .. }), "{e:?}");
    assert!(
        e.to_string().contains("fashion-clip") && e.to_string().contains("clip-vit-tiny"),
        "{e}"
    );
    // The text tower alone (for queries) is the same model.
    let text_only = ClipModel::load_with(
        fixtures().join("../models/fashion-clip"),
        glimpse::LoadOptions::text_only(),
    )
    .unwrap();
    PhotoIndex::open(&path, &text_only).unwrap();
}

#[test]
fn bytes_by_id_remove_and_similar() {
    let dir = tempfile::tempdir().unwrap();
    let model = fashion();
    let index = PhotoIndex::open(dir.path().join("i.sqlite"), &model).unwrap();
    assert!(
        index.vocabulary().is_empty(),
        "no vocabulary before the first photo"
    );
    for name in ["sneaker", "sandal", "bag", "ankle-boot"] {
        let bytes = fs::read(fixtures().join(format!("images/fashion/{name}.png"))).unwrap();
        index.add_bytes(&format!("id:{name}"), &bytes).unwrap();
    }
    assert_eq!(index.len(), 4);
    let e = index
        .add_bytes("id:broken", b"\x89PNG\r\n\x1a\n")
        .unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e:?}");
    assert!(!index.contains("id:broken"));

    // Nearest neighbours of a stored photo leave it out and match the exact cosines.
    let hits = index
        .similar("id:sneaker", 3, &SearchFilter::default())
        .unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.key != "id:sneaker"));
    let file = |n: &str| fixtures().join(format!("images/fashion/{n}.png"));
    let exact = model
        .embed_image_files(&[file("sneaker"), file(hits[0].key.trim_start_matches("id:"))])
        .unwrap();
    let cos = glimpse::similarity(&exact[0], &exact[1]);
    assert!(
        (hits[0].score - cos).abs() < 0.01,
        "{} vs {cos}",
        hits[0].score
    );

    // An image file not in the index is embedded on the fly.
    let via_file = index
        .search_image_file(file("sneaker"), 1, &SearchFilter::default())
        .unwrap();
    assert_eq!(via_file[0].key, "id:sneaker");
    assert!(via_file[0].score > 0.99);

    assert!(index.remove("id:bag").unwrap());
    assert!(!index.remove("id:bag").unwrap());
    drop(index);
    let index = PhotoIndex::open(dir.path().join("i.sqlite"), &model).unwrap();
    assert_eq!(index.len(), 3);
    assert!(!index.contains("id:bag"));
}

#[test]
fn near_duplicates_are_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let model = fashion();
    let photos = fixtures().join("photos");
    for e in fs::read_dir(&photos).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jpg") {
            fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    // A re-encoded, slightly smaller copy of one photo: a near-duplicate.
    let img = image::open(photos.join("001-chelsea.jpg")).unwrap();
    img.resize(600, 450, image::imageops::FilterType::Triangle)
        .save_with_format(dir.path().join("chelsea-copy.png"), image::ImageFormat::Png)
        .unwrap();
    let index = PhotoIndex::open(dir.path().join("i.sqlite"), &model).unwrap();
    index
        .index_dir(dir.path(), &ScanOptions::default(), |_, _| {})
        .unwrap();
    // The demo model, trained on 28 px clothing, puts unrelated photos at cosine ~0.98 of
    // each other; the re-encoded copy sits at 0.9999.
    let groups = index.duplicates(0.995);
    let names: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|h| h.key.rsplit('/').next().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        [["001-chelsea.jpg", "chelsea-copy.png"]],
        "{groups:?}"
    );
}

#[test]
fn cancelling_stops_early_and_keeps_committed_batches() {
    let r = reference();
    let dir = photo_folder(&r);
    let index = PhotoIndex::open(dir.path().join("index.sqlite"), &fashion()).unwrap();
    let opts = ScanOptions {
        threads: 1,
        batch: 2,
        ..ScanOptions::default()
    };
    let cancel = opts.cancel.clone();
    let mut committed: Vec<String> = Vec::new();
    let report = index
        .index_dir(dir.path(), &opts, |event, _| {
            if let glimpse_photos::ScanEvent::Committed { keys } = event {
                committed.extend(keys.iter().cloned());
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .unwrap();
    assert!(report.cancelled);
    assert!(report.added < r.images.len());
    let mut stored = index.keys();
    stored.sort();
    committed.sort();
    assert_eq!(stored, committed);
    // The next run picks up the rest.
    let rest = index
        .index_dir(dir.path(), &ScanOptions::default(), |_, _| {})
        .unwrap();
    assert_eq!(rest.added + report.added, r.images.len());
    assert_eq!(rest.unchanged, report.added);
}
