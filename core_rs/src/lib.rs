//! The durably state core.
//!
//! Everything the executor must get byte-for-byte right lives here, in pure Rust that knows nothing of
//! Python: step-id hashing and counters ([`ids`]), JSON validation ([`json`]), the limits ([`limits`]) and the memoized state of a run
//! ([`state`]); for the fault tests, a SQLite VFS that loses power on purpose ([`power_loss`]). The `py` module is the only place that touches pyo3; it exposes all of it to the daemon as
//! `durably_server._core`.

pub mod ids;
pub mod json;
pub mod limits;
#[cfg(unix)]
pub mod power_loss;
mod py;
pub mod state;
