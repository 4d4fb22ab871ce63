//! The shared step-id vectors (`tests/vectors/step_ids.json`, also run against the Python SDK) against
//! the Rust implementation.

use _core::ids::{StepIdCounter, hash_step_id, pre_hash_id};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/step_ids.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).expect("step_ids.json is valid JSON")
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn hashes_match_vectors() {
    let vectors = vectors();
    let hashes = vectors["hashes"].as_array().expect("hashes");
    assert!(hashes.len() >= 10);
    for case in hashes {
        let pre = str_of(case, "pre_hash_id");
        assert_eq!(
            hash_step_id(pre),
            str_of(case, "hashed"),
            "pre_hash_id {pre:?}"
        );
    }
}

#[test]
fn sequences_match_vectors() {
    let vectors = vectors();
    let sequences = vectors["sequences"].as_array().expect("sequences");
    assert!(!sequences.is_empty());
    for sequence in sequences {
        let names = sequence["names"].as_array().expect("names");
        let expected = sequence["expected"].as_array().expect("expected");
        assert_eq!(names.len(), expected.len());
        let mut counter = StepIdCounter::new();
        for (name, want) in names.iter().zip(expected) {
            let name = name.as_str().expect("name");
            let index = want["index"].as_u64().expect("index");
            assert_eq!(pre_hash_id(name, index), str_of(want, "pre_hash_id"));
            let hashed = str_of(want, "hashed");
            assert_eq!(
                counter.next(name),
                (hashed.to_owned(), index),
                "{name:?} in {names:?}"
            );
        }
    }
}
