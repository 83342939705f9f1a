//! Nothing is lost: `glimpse index` is killed with SIGKILL at random points, again and again.
//! After every kill the index must open, pass SQLite's integrity check, hold only whole
//! photos (embedding and tags written together), and keep every batch the process reported
//! committed; the final run must finish the rest without redoing committed work.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use glimpse::ClipModel;
use glimpse_photos::{PhotoIndex, TagOptions};
use glimpse_tests::fixtures;
use serde_json::Value;

const COPIES: usize = 8;

/// 8 copies of the 18 sample images (distinct files), plus 3 that cannot be indexed.
fn photo_folder() -> (tempfile::TempDir, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let sources: Vec<_> = ["photos", "images/fashion"]
        .iter()
        .flat_map(|d| fs::read_dir(fixtures().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .collect();
    for c in 0..COPIES {
        let sub = dir.path().join(format!("roll-{c}"));
        fs::create_dir(&sub).unwrap();
        for src in &sources {
            fs::copy(src, sub.join(src.file_name().unwrap())).unwrap();
            n += 1;
        }
    }
    let jpg = fs::read(fixtures().join("photos/000-astronaut.jpg")).unwrap();
    fs::write(dir.path().join("cut-in-header.jpg"), &jpg[..300]).unwrap();
    fs::write(dir.path().join("garbage.png"), vec![0x5a; 5000]).unwrap();
    fs::write(dir.path().join("readme.txt"), b"not a photo").unwrap();
    (dir, n)
}

fn index_cmd(dir: &Path, index: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glimpse"));
    cmd.args(["index", "--json", "--batch", "4", "--model"])
        .arg(fixtures().join("../models/fashion-clip"))
        .arg("--index")
        .arg(index)
        .arg(dir)
        .env_remove("GLIMPSE_MODEL")
        .env_remove("GLIMPSE_INDEX")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// The JSON-lines events a run printed (a line cut by the kill is ignored).
fn events(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn committed(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "committed")
        .flat_map(|e| {
            e["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
        })
        .collect()
}

/// A small xorshift generator: random kill times without a dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn index_survives_sigkill_at_random_points() {
    let (dir, total) = photo_folder();
    let model = ClipModel::load(fixtures().join("../models/fashion-clip")).unwrap();
    let work = tempfile::tempdir().unwrap();

    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("kill seed {seed}");
    let mut rng = Rng(seed);
    let index_path = work.path().join("index.sqlite");
    let mut known: HashSet<String> = HashSet::new();
    for round in 0..12 {
        // Kill after a random number (0-5) of reported commits, then a random 0-40 ms more:
        // so kills land before, inside and between transactions.
        let mut child = index_cmd(dir.path(), &index_path).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (wait_commits, delay) = (rng.below(6), rng.below(40));
        let mut seen = 0;
        while seen <= wait_commits {
            let Some(Ok(line)) = lines.next() else { break };
            let ev = events(&line);
            known.extend(committed(&ev));
            seen += ev.iter().filter(|e| e["event"] != "skipped").count() as u64;
        }
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        // What it printed before dying.
        for line in lines.map_while(Result::ok) {
            known.extend(committed(&events(&line)));
        }

        let mut index = PhotoIndex::open(&index_path, &model).unwrap();
        index.set_tag_options(TagOptions {
            threshold: 0.0,
            max_tags: 5,
        });
        index.check().unwrap();
        let stored: HashSet<String> = index.keys().into_iter().collect();
        let lost: Vec<_> = known.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "round {round}: committed but lost: {lost:?}"
        );
        // Whole photos only: each has its tags, written in the same transaction.
        for k in &stored {
            assert_eq!(index.tags(k).unwrap().len(), 5, "{k}: tags missing");
        }
        println!(
            "round {round}: killed {delay} ms after {wait_commits} events, {} photos stored",
            stored.len()
        );
        known = stored;
    }

    // A clean run finishes the job and redoes nothing already stored.
    let before = known.len();
    let out = index_cmd(dir.path(), &index_path).output().unwrap();
    assert!(out.status.success());
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    let done = ev
        .iter()
        .find(|e| e["event"] == "done")
        .expect("a done event");
    assert_eq!(done["unchanged"], before as u64, "{done}");
    assert_eq!(done["added"], (total - before) as u64, "{done}");
    assert_eq!(done["photos"], total as u64);
    let skipped: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "skipped")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    let index = PhotoIndex::open(&index_path, &model).unwrap();
    index.check().unwrap();
    assert_eq!(index.len(), total);
}
