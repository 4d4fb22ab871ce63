//! The memoized state of one run: step outcomes in record order, each recorded once, within the limits.
//!
//! This is where the executor's guarantees about step results are enforced: an outcome is only
//! accepted under the id its name and index hash to, is never overwritten, and never takes the run past
//! a limit. A refused outcome leaves the state exactly as it was, so the caller can report the error and
//! carry on with a consistent state.

use std::collections::{HashMap, HashSet};
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

fn refuse<T>(kind: ErrorKind, message: String) -> Result<T, StateError> {
    Err(StateError { kind, message })
}

/// Said after a count or a size that includes `earlier` steps of the batch not yet recorded, so the
/// number in the message can be traced; built only when a step is refused.
fn batch_note(earlier: usize) -> String {
    match earlier {
        0 => String::new(),
        1 => ", counting the 1 step before it in this batch".to_owned(),
        n => format!(", counting the {n} steps before it in this batch"),
    }
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

/// What checking a step needs: its id, name, index and payload size, but not the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCheck<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub index: u64,
    pub payload_size: u64,
}

/// One step outcome of a batch, as `record` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome<'a, P> {
    pub id: &'a str,
    pub name: &'a str,
    pub index: u64,
    pub payload: P,
    pub is_error: bool,
}

impl<P: Payload> StepOutcome<'_, P> {
    /// The part of the outcome the checks look at.
    pub fn to_check(&self) -> StepCheck<'_> {
        StepCheck {
            id: self.id,
            name: self.name,
            index: self.index,
            payload_size: self.payload.size(),
        }
    }
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

    /// Everything `record` checks, in the same order, without recording. Order: id, duplicate, step
    /// count, payload size, total size. It sees the current state only; to validate several outcomes
    /// that will be recorded together, use [`RunState::check_batch`].
    pub fn check(
        &self,
        id: &str,
        name: &str,
        index: u64,
        payload_size: u64,
    ) -> Result<(), StateError> {
        let step = StepCheck {
            id,
            name,
            index,
            payload_size,
        };
        self.check_step(&step, 0, self.size_bytes, false)
            .map(|_| ())
    }

    /// Everything `record_batch` checks, without recording: each step is checked as `check` would check
    /// it after every earlier step of the batch had been recorded, so the batch cannot jointly cross a
    /// limit, and an id repeated within the batch is a duplicate. The first refused step's error is
    /// returned. O(batch): nothing is copied and the recorded outcomes are not scanned.
    pub fn check_batch(&self, steps: &[StepCheck<'_>]) -> Result<(), StateError> {
        self.check_steps(steps.iter().copied())
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
        self.push(id, payload, is_error);
        Ok(self.size_bytes)
    }

    /// Records every outcome of the batch, in order, after `check_batch`ing all of them: all or
    /// nothing, so a refused batch leaves the state exactly as it was. Returns the new size.
    pub fn record_batch(&mut self, steps: Vec<StepOutcome<'_, P>>) -> Result<u64, StateError> {
        self.check_steps(steps.iter().map(StepOutcome::to_check))?;
        self.memos.reserve(steps.len());
        self.by_id.reserve(steps.len());
        for step in steps {
            self.push(step.id, step.payload, step.is_error);
        }
        Ok(self.size_bytes)
    }

    /// Whether the function's return value, `output_size` bytes, fits in the run's state: like Inngest,
    /// the output counts in the state, so it is held to `max_state_bytes` with the recorded outcomes.
    pub fn check_output(&self, output_size: u64) -> Result<(), StateError> {
        let max_state_bytes = self.limits.max_state_bytes;
        let total = self.size_bytes.saturating_add(output_size);
        if total > max_state_bytes {
            return refuse(
                ErrorKind::StateTooLarge,
                format!(
                    "run state too large: the function's output of {output_size} bytes would bring \
                     the run state to {total} bytes, over the limit of {max_state_bytes} bytes per \
                     run (max_state_bytes)"
                ),
            );
        }
        Ok(())
    }

    /// Checks `steps` as if each were recorded before the next: the shared walk of `check_batch` and
    /// `record_batch`.
    fn check_steps<'a>(
        &self,
        steps: impl IntoIterator<Item = StepCheck<'a>>,
    ) -> Result<(), StateError> {
        // The ids seen so far in this batch; HashSet::new does not allocate until the first insert.
        let mut seen: HashSet<&'a str> = HashSet::new();
        let mut size = self.size_bytes;
        for (earlier, step) in steps.into_iter().enumerate() {
            size = self.check_step(&step, earlier, size, seen.contains(step.id))?;
            seen.insert(step.id);
        }
        Ok(())
    }

    /// Checks one step as if `earlier` steps of its batch were already recorded, bringing the state to
    /// `size` bytes; `in_batch` says one of those has the same id. Returns the size after this step.
    fn check_step(
        &self,
        step: &StepCheck<'_>,
        earlier: usize,
        size: u64,
        in_batch: bool,
    ) -> Result<u64, StateError> {
        let StepCheck {
            id,
            name,
            index,
            payload_size,
        } = *step;
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
        if in_batch {
            return refuse(
                ErrorKind::DuplicateStep,
                format!(
                    "step {name:?} (id {id}) appears more than once in this batch: \
                     a step's outcome is recorded once and never changes"
                ),
            );
        }
        let max_steps = self.limits.max_steps;
        let count = self.memos.len().saturating_add(earlier);
        if count >= max_steps {
            return refuse(
                ErrorKind::StepLimitExceeded,
                format!(
                    "step limit exceeded: step {name:?} (id {id}) would be step {} of this run{}, \
                     over the limit of {max_steps} steps per run (max_steps)",
                    count + 1,
                    batch_note(earlier)
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
        let total = size.saturating_add(payload_size);
        if total > max_state_bytes {
            return refuse(
                ErrorKind::StateTooLarge,
                format!(
                    "run state too large: step {name:?} (id {id}) output of {payload_size} bytes \
                     would bring the run state to {total} bytes{}, over the limit of \
                     {max_state_bytes} bytes per run (max_state_bytes)",
                    batch_note(earlier)
                ),
            );
        }
        Ok(total)
    }

    /// Appends an outcome that has passed the checks.
    fn push(&mut self, id: &str, payload: P, is_error: bool) {
        self.size_bytes += payload.size();
        self.by_id.insert(id.to_owned(), self.memos.len());
        self.memos.push(Memo {
            id: id.to_owned(),
            payload,
            is_error,
        });
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

    /// The outcomes from record position `start` on (empty when `start` is the step count), or `None`
    /// when `start` is past the end. A worker that has seen the first `start` outcomes needs only these,
    /// so a run of N steps ships each outcome once, O(N) in all, instead of O(N^2).
    pub fn memos_from(&self, start: usize) -> Option<&[Memo<P>]> {
        self.memos.get(start..)
    }

    /// The outcomes from record position `start` on, to change their payloads in place (e.g. drop
    /// the bytes and keep the size); an empty slice when `start` is past the end.
    pub fn memos_from_mut(&mut self, start: usize) -> &mut [Memo<P>] {
        let start = start.min(self.memos.len());
        &mut self.memos[start..]
    }

    pub fn step_count(&self) -> usize {
        self.memos.len()
    }

    /// The base bytes plus the size of every recorded payload.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}
