//! The durably state core.
//!
//! Everything the executor must get byte-for-byte right lives here, in pure Rust that knows nothing of
//! Python: step-id hashing and counters ([`ids`]), JSON validation ([`json`]), the limits ([`limits`]) and the memoized state of a run
//! ([`state`]). The `py` module is the only place that touches pyo3; it exposes all of it to the daemon as
//! `durably_server._core`.

pub mod ids;
pub mod json;
pub mod limits;
mod py;
pub mod state;
