//! README's Kotlin and Swift snippets are the bodies of the `readmeExample` tests in the
//! two suites (run by .ci/bindings): each snippet appears there as one block of lines.

use std::fs;
use std::path::Path;

fn snippet(readme: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let start = readme.find(&fence).expect("README has the snippet") + fence.len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn assert_is_a_block_of(lines: &[String], test_file: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = fs::read_to_string(root.join(test_file)).unwrap();
    let body: Vec<&str> = text.lines().map(str::trim).collect();
    let start = body
        .windows(lines.len())
        .position(|w| w.iter().zip(lines).all(|(a, b)| a == b));
    assert!(
        start.is_some(),
        "README snippet is not a test body in {test_file}"
    );
}

#[test]
fn readme_snippets_are_the_tested_code() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    assert_is_a_block_of(
        &snippet(&readme, "kotlin"),
        "android/glimpse/src/test/kotlin/dev/glimpse/GlimpseTest.kt",
    );
    assert_is_a_block_of(
        &snippet(&readme, "swift"),
        "ios/Tests/GlimpseTests/GlimpseTests.swift",
    );
}
