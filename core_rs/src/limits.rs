//! The run limits the article sets for Inngest (and so for us). Breaching one is a clear error, never a
//! crash or a silent truncation; a value of exactly the limit is allowed.

/// Step outcomes one run may record.
pub const MAX_STEPS: usize = 1000;
/// Bytes of one step's recorded payload (4 MiB, Inngest's `MaxStepOutputSize`).
pub const MAX_STEP_BYTES: u64 = 4 * 1024 * 1024;
/// Bytes of a run's whole state: triggering event(s) plus every payload (32 MiB, Inngest's
/// `DefaultMaxStateSizeLimit`).
pub const MAX_STATE_BYTES: u64 = 32 * 1024 * 1024;

/// The limits one run is held to; configurable so tests and operators can lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_steps: usize,
    pub max_step_bytes: u64,
    pub max_state_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: MAX_STEPS,
            max_step_bytes: MAX_STEP_BYTES,
            max_state_bytes: MAX_STATE_BYTES,
        }
    }
}
