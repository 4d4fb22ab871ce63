//! Checking that bytes a worker sent are one JSON value, without building it.
//!
//! The executor stores step results and outputs as the bytes it received and must refuse anything that
//! is not JSON (NaN, Infinity, trailing garbage, invalid UTF-8). Parsing into Python objects only to throw
//! them away cost a large share of the daemon's time on big results; this walks the bytes once.

use serde::de::IgnoredAny;

/// Deepest nesting of arrays and objects accepted, as the Python SDK's `durably._json.MAX_DEPTH`: what
/// is stored must load again in Python, whose `json` recurses (about 1,000 levels at most).
pub const MAX_DEPTH: usize = 500;

/// Why `data` is not a single JSON value of at most [`MAX_DEPTH`] levels, or `None` when it is.
pub fn json_error(data: &[u8]) -> Option<String> {
    // serde_json skips ignored strings without checking their UTF-8, so check the whole text first.
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(err) => return Some(format!("not UTF-8: {err}")),
    };
    if let Err(err) = serde_json::from_str::<IgnoredAny>(text) {
        return Some(err.to_string());
    }
    let deepest = depth(data);
    (deepest > MAX_DEPTH).then(|| format!("nested {deepest} levels deep, more than {MAX_DEPTH}"))
}

/// How deeply arrays and objects nest in `data` (0 for a scalar), counted without recursion. Brackets
/// inside strings do not count; on bytes that are not JSON the figure means nothing, but it is bounded.
pub fn depth(data: &[u8]) -> usize {
    let (mut level, mut deepest, mut at) = (0usize, 0usize, 0usize);
    while at < data.len() {
        match data[at] {
            b'"' => at = string_end(data, at + 1),
            b'[' | b'{' => {
                level += 1;
                deepest = deepest.max(level);
            }
            b']' | b'}' => level = level.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    deepest
}

/// The index of the quote closing the string whose content starts at `from` (or the end of `data`):
/// memchr finds the next quote or backslash, so a 4 MB string costs a fraction of a byte-by-byte walk.
fn string_end(data: &[u8], mut from: usize) -> usize {
    while let Some(found) = memchr::memchr2(b'"', b'\\', &data[from..]) {
        let at = from + found;
        if data[at] == b'"' {
            return at;
        }
        from = at + 2; // a backslash escapes the next byte, whatever it is
        if from >= data.len() {
            break;
        }
    }
    data.len()
}

#[cfg(test)]
mod tests {
    use super::{MAX_DEPTH, depth, json_error};

    fn nested(levels: usize) -> Vec<u8> {
        [b"[".repeat(levels), b"]".repeat(levels)].concat()
    }

    #[test]
    fn counts_nesting_outside_strings_only() {
        assert_eq!(depth(b"1"), 0);
        assert_eq!(depth(b"{\"a\": [[1], {\"b\": []}]}"), 4);
        assert_eq!(depth(b"[\"[[[\\\"[[\"]"), 1);
        assert_eq!(depth(&nested(1_000_000)), 1_000_000);
    }

    #[test]
    fn refuses_json_nested_deeper_than_python_can_load() {
        assert_eq!(json_error(&nested(MAX_DEPTH)), None);
        let message = json_error(&nested(MAX_DEPTH + 1)).expect("too deep");
        assert!(
            message.contains("501 levels") && message.contains("500"),
            "{message}"
        );
        assert!(json_error(&nested(1_000_000)).is_some());
    }

    #[test]
    fn accepts_json_and_refuses_the_rest() {
        for ok in [
            &b"null"[..],
            b"1",
            b"\"s\"",
            b"{\"a\":[1,2.5,true]}",
            b" [] ",
        ] {
            assert_eq!(json_error(ok), None, "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"NaN",
            b"Infinity",
            b"{",
            b"1 2",
            b"\"\xff\"",
            b"{'a':1}",
        ] {
            assert!(json_error(bad).is_some(), "{bad:?}");
        }
    }
}
