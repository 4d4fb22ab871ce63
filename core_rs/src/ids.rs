//! Step ids, hashed exactly as Inngest's SDKs hash them.
//!
//! A step's outcome is memoized under its hashed id, so the SDK (Python), this core (Rust) and any other
//! language must agree byte for byte; `tests/vectors/step_ids.json` holds the vectors all of them test
//! against.

use std::collections::HashMap;

use sha1::{Digest, Sha1};

/// Lowercase hex SHA-1 of the UTF-8 bytes of `pre_hash_id`: the key a step's outcome is memoized under.
pub fn hash_step_id(pre_hash_id: &str) -> String {
    hex::encode(Sha1::digest(pre_hash_id.as_bytes()))
}

/// The string a step's id is hashed from: `name` for the first use of a name in a run, `name:index`
/// for the index-th repeat, so a step called in a loop gets one memo per iteration.
pub fn pre_hash_id(name: &str, index: u64) -> String {
    if index == 0 {
        name.to_owned()
    } else {
        format!("{name}:{index}")
    }
}

/// Counts the uses of each step name during one execution of a handler; the count is what turns the
/// n-th `step.run("send", ...)` in a loop into `send:n`. Purely positional, as in Inngest's Python SDK.
#[derive(Debug, Default)]
pub struct StepIdCounter {
    uses: HashMap<String, u64>,
}

impl StepIdCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The hashed id and index of the next use of `name`.
    pub fn next(&mut self, name: &str) -> (String, u64) {
        let index = match self.uses.get_mut(name) {
            Some(uses) => {
                *uses += 1;
                *uses - 1
            }
            None => {
                self.uses.insert(name.to_owned(), 1);
                0
            }
        };
        (hash_step_id(&pre_hash_id(name, index)), index)
    }
}
