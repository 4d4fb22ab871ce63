//! Checking that bytes a worker sent are one JSON value, without building it.
//!
//! The executor stores step results and outputs as the bytes it received and must refuse anything that
//! is not JSON (NaN, Infinity, trailing garbage, invalid UTF-8). Parsing into Python objects only to throw
//! them away cost a large share of the daemon's time on big results; this walks the bytes once.

use serde::de::IgnoredAny;

/// Why `data` is not a single JSON value, or `None` when it is.
pub fn json_error(data: &[u8]) -> Option<String> {
    // serde_json skips ignored strings without checking their UTF-8, so check the whole text first.
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(err) => return Some(format!("not UTF-8: {err}")),
    };
    serde_json::from_str::<IgnoredAny>(text)
        .err()
        .map(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::json_error;

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
