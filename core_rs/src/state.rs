//! The memoized state of one run: step outcomes in record order, each recorded once, within the limits.
//!
//! This is where the executor's guarantees about step results are enforced: an outcome is only
//! accepted under the id its name and index hash to, is never overwritten, and never takes the run past
//! a limit. A refused outcome leaves the state exactly as it was, so the caller can report the error and
//! carry on with a consistent state.

use std::collections::HashMap;
use std::fmt;

use crate::ids::{hash_step_id, pre_hash_id};
use crate::limits::Limits;

/// The rule a refused step broke; each maps to one exception class in the Python layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidStepId,
    DuplicateStep,
    StepLimitExceeded,
    StepOutputTooLarge,
    StateTooLarge,
}

/// Why a step outcome was refused, with a message a person can act on: it names the step (name and
/// hashed id) and, for a limit, the limit and the size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StateError {}

fn refuse(kind: ErrorKind, message: String) -> Result<(), StateError> {
    Err(StateError { kind, message })
}

/// All the state needs to know about a payload is its size: the bytes are opaque (JSON the daemon
/// stores, never parsed here), which lets the Python layer keep the caller's own `bytes` object.
pub trait Payload {
    fn size(&self) -> u64;
}

impl Payload for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

/// One recorded step outcome: a result, or the error the step ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memo<P> {
    pub id: String,
    pub payload: P,
    pub is_error: bool,
}

#[derive(Debug)]
pub struct RunState<P> {
    limits: Limits,
    size_bytes: u64,
    memos: Vec<Memo<P>>,
    by_id: HashMap<String, usize>,
}

impl<P: Payload> RunState<P> {
    /// `base_bytes` is the size of the triggering event(s): like Inngest, we count them in the state.
    pub fn new(base_bytes: u64, limits: Limits) -> Self {
        Self {
            limits,
            size_bytes: base_bytes,
            memos: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    /// Everything `record` checks, in the same order, without recording, so a caller can validate
    /// each outcome of a batch before committing any of them. Order: id, duplicate, step count,
    /// payload size, total size.
    pub fn check(
        &self,
        id: &str,
        name: &str,
        index: u64,
        payload_size: u64,
    ) -> Result<(), StateError> {
        if name.is_empty() {
            return refuse(
                ErrorKind::InvalidStepId,
                format!("invalid step id {id:?}: the step name is empty"),
            );
        }
        let pre_hash = pre_hash_id(name, index);
        let expected = hash_step_id(&pre_hash);
        if id != expected {
            return refuse(
                ErrorKind::InvalidStepId,
                format!(
                    "invalid step id {id:?} for step {name:?} index {index}: \
                     expected {expected}, the SHA-1 of {pre_hash:?}"
                ),
            );
        }
        if self.by_id.contains_key(id) {
            return refuse(
                ErrorKind::DuplicateStep,
                format!(
                    "step {name:?} (id {id}) is already recorded: \
                     a step's outcome is recorded once and never changes"
                ),
            );
        }
        let max_steps = self.limits.max_steps;
        if self.memos.len() >= max_steps {
            return refuse(
                ErrorKind::StepLimitExceeded,
                format!(
                    "step limit exceeded: step {name:?} (id {id}) would be step {} of this run, \
                     over the limit of {max_steps} steps per run (max_steps)",
                    self.memos.len() + 1
                ),
            );
        }
        let max_step_bytes = self.limits.max_step_bytes;
        if payload_size > max_step_bytes {
            return refuse(
                ErrorKind::StepOutputTooLarge,
                format!(
                    "step output too large: step {name:?} (id {id}) output is {payload_size} bytes, \
                     over the limit of {max_step_bytes} bytes per step (max_step_bytes)"
                ),
            );
        }
        let max_state_bytes = self.limits.max_state_bytes;
        let total = self.size_bytes.saturating_add(payload_size);
        if total > max_state_bytes {
            return refuse(
                ErrorKind::StateTooLarge,
                format!(
                    "run state too large: step {name:?} (id {id}) output of {payload_size} bytes \
                     would bring the run state to {total} bytes, over the limit of \
                     {max_state_bytes} bytes per run (max_state_bytes)"
                ),
            );
        }
        Ok(())
    }

    /// Records a step's outcome after `check`ing it; on error nothing changes. Returns the new size.
    pub fn record(
        &mut self,
        id: &str,
        name: &str,
        index: u64,
        payload: P,
        is_error: bool,
    ) -> Result<u64, StateError> {
        self.check(id, name, index, payload.size())?;
        self.size_bytes += payload.size();
        self.by_id.insert(id.to_owned(), self.memos.len());
        self.memos.push(Memo {
            id: id.to_owned(),
            payload,
            is_error,
        });
        Ok(self.size_bytes)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<&Memo<P>> {
        self.by_id.get(id).map(|&i| &self.memos[i])
    }

    /// The outcomes in record order, the order a worker met the steps in.
    pub fn memos(&self) -> &[Memo<P>] {
        &self.memos
    }

    pub fn step_count(&self) -> usize {
        self.memos.len()
    }

    /// The base bytes plus the size of every recorded payload.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}
