//! The Python face of the core, `durably_server._core`: thin wrappers that convert arguments, map
//! errors to exceptions and keep payloads as the caller's own `bytes` objects. No rule lives here.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::ids;
use crate::limits::{self, Limits};
use crate::state::{self, ErrorKind, Payload, StateError, StepCheck, StepOutcome};

create_exception!(
    durably_server._core,
    CoreError,
    PyException,
    "Base of every error the core raises, so the daemon can catch them all in one place."
);
create_exception!(
    durably_server._core,
    LimitExceeded,
    CoreError,
    "A run limit would be breached: the run must fail with this message, not retry."
);
create_exception!(
    durably_server._core,
    StepLimitExceeded,
    LimitExceeded,
    "Recording the step would take the run over max_steps step outcomes."
);
create_exception!(
    durably_server._core,
    StepOutputTooLarge,
    LimitExceeded,
    "One step's payload is over max_step_bytes."
);
create_exception!(
    durably_server._core,
    StateTooLarge,
    LimitExceeded,
    "Recording the step would take the run's total state over max_state_bytes."
);
create_exception!(
    durably_server._core,
    DuplicateStep,
    CoreError,
    "The step id is already recorded: a step's outcome is recorded once and never changes."
);
create_exception!(
    durably_server._core,
    InvalidStepId,
    CoreError,
    "The id is not the hash of the step's name and index (or the name is empty, or the index negative)."
);

impl From<StateError> for PyErr {
    fn from(err: StateError) -> Self {
        match err.kind {
            ErrorKind::InvalidStepId => InvalidStepId::new_err(err.message),
            ErrorKind::DuplicateStep => DuplicateStep::new_err(err.message),
            ErrorKind::StepLimitExceeded => StepLimitExceeded::new_err(err.message),
            ErrorKind::StepOutputTooLarge => StepOutputTooLarge::new_err(err.message),
            ErrorKind::StateTooLarge => StateTooLarge::new_err(err.message),
        }
    }
}

/// Python ints may be negative; a step index may not.
fn step_index(name: &str, index: i64) -> PyResult<u64> {
    u64::try_from(index).map_err(|_| negative_index(name, index))
}

fn negative_index(name: &str, index: i64) -> PyErr {
    InvalidStepId::new_err(format!(
        "invalid step index {index} for step {name:?}: an index is never negative"
    ))
}

/// A batch item as Python passes it to `check_batch`: `(id, name, index, payload_len)`.
type CheckItem = (String, String, i64, u64);
/// A batch item as Python passes it to `record_batch`: `(id, name, index, payload, is_error)`.
type RecordItem<'py> = (String, String, i64, Bound<'py, PyBytes>, bool);

/// A negative index in a batch: InvalidStepId, unless an item before it is refused first, so a batch
/// reports its first refused item, whatever the rule, as recording the items one by one would.
fn refuse_negative_index(
    state: &state::RunState<PyPayload>,
    earlier: &[StepCheck<'_>],
    name: &str,
    index: i64,
) -> PyErr {
    match state.check_batch(earlier) {
        Err(err) => err.into(),
        Ok(()) => negative_index(name, index),
    }
}

/// Lowercase hex SHA-1 of the UTF-8 bytes of `pre_hash_id`.
/// Raises ValueError naming the problem when `data` is not exactly one JSON value.
#[pyfunction]
fn check_json(data: &[u8]) -> PyResult<()> {
    match crate::json::json_error(data) {
        None => Ok(()),
        Some(message) => Err(pyo3::exceptions::PyValueError::new_err(message)),
    }
}

/// How deeply arrays and objects nest in `data`, without parsing it (see [`crate::json::depth`]).
#[pyfunction]
fn json_depth(data: &[u8]) -> usize {
    crate::json::depth(data)
}

#[pyfunction]
fn hash_step_id(pre_hash_id: &str) -> String {
    ids::hash_step_id(pre_hash_id)
}

/// `name` when `index` is 0, else `name:index`.
#[pyfunction]
fn pre_hash_id(name: &str, index: i64) -> PyResult<String> {
    Ok(ids::pre_hash_id(name, step_index(name, index)?))
}

/// Per-execution counter of repeated step names.
#[pyclass(module = "durably_server._core", name = "StepIdCounter")]
struct PyStepIdCounter(ids::StepIdCounter);

#[pymethods]
impl PyStepIdCounter {
    #[new]
    fn new() -> Self {
        Self(ids::StepIdCounter::new())
    }

    /// The hashed id and index of the next use of `name`.
    fn next(&mut self, name: &str) -> (String, u64) {
        self.0.next(name)
    }
}

/// A payload kept as the caller's immutable `bytes` object, so reads hand back that same object;
/// `None` once forgotten (the store has it), the size still counted.
struct PyPayload {
    bytes: Option<Py<PyBytes>>,
    size: u64,
}

impl PyPayload {
    /// Keeps the reference to `bytes`; the bytes themselves are never copied.
    fn new(bytes: &Bound<'_, PyBytes>) -> Self {
        Self {
            size: bytes.as_bytes().len() as u64,
            bytes: Some(bytes.clone().unbind()),
        }
    }

    fn bind<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.bytes.as_ref().map(|bytes| bytes.bind(py).clone())
    }
}

impl Payload for PyPayload {
    fn size(&self) -> u64 {
        self.size
    }
}

/// A memo as `memos()` and `memos_from()` hand it out: `(id, bytes or None, is_error)`.
fn memo_tuple<'py>(
    py: Python<'py>,
    id: &str,
    bytes: Option<&Bound<'py, PyBytes>>,
    is_error: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    (id, bytes, is_error).into_pyobject(py)
}

fn out_of_range(start: i64, count: usize) -> PyErr {
    PyValueError::new_err(format!(
        "memo position {start} is out of range: start must be from 0 to {count}, the run's step count"
    ))
}

/// The memoized state of one run: step outcomes in record order, with their sizes.
#[pyclass(module = "durably_server._core", name = "RunState")]
struct PyRunState {
    state: state::RunState<PyPayload>,
    /// Every memo's tuple, in record order, built once as it is recorded: `memos()` and `memos_from()`
    /// are then one slice of a Python list (a new list of 1,000 built item by item from the Rust side
    /// took twice as long as Python copying its own list; bench/README.md, the Rust core's table).
    tuples: Py<PyList>,
}

impl PyRunState {
    /// Lists the tuples of the memos recorded from position `from` on (after a record succeeded).
    fn list_from(&self, py: Python<'_>, from: usize) -> PyResult<()> {
        let tuples = self.tuples.bind(py);
        for memo in self.state.memos_from(from).unwrap_or_default() {
            tuples.append(memo_tuple(
                py,
                &memo.id,
                memo.payload.bind(py).as_ref(),
                memo.is_error,
            )?)?;
        }
        Ok(())
    }

    fn slice<'py>(&self, py: Python<'py>, start: usize) -> Bound<'py, PyList> {
        let count = self.state.step_count();
        self.tuples.bind(py).get_slice(start, count)
    }
}

#[pymethods]
impl PyRunState {
    // The text signature spells out the default limits (pyo3 would show `...` for constants), so
    // help() and stubtest see the real values; tests/test_core.py checks they equal MAX_*.
    #[new]
    #[pyo3(
        signature = (
            base_bytes = 0,
            max_steps = limits::MAX_STEPS,
            max_step_bytes = limits::MAX_STEP_BYTES,
            max_state_bytes = limits::MAX_STATE_BYTES,
        ),
        text_signature = "(base_bytes=0, max_steps=1000, max_step_bytes=4194304, max_state_bytes=33554432)"
    )]
    fn new(
        py: Python<'_>,
        base_bytes: u64,
        max_steps: usize,
        max_step_bytes: u64,
        max_state_bytes: u64,
    ) -> Self {
        let limits = Limits {
            max_steps,
            max_step_bytes,
            max_state_bytes,
        };
        Self {
            state: state::RunState::new(base_bytes, limits),
            tuples: PyList::empty(py).unbind(),
        }
    }

    fn record(
        &mut self,
        id: &str,
        name: &str,
        index: i64,
        payload: Bound<'_, PyBytes>,
        is_error: bool,
    ) -> PyResult<u64> {
        let index = step_index(name, index)?;
        let from = self.state.step_count();
        let size = self
            .state
            .record(id, name, index, PyPayload::new(&payload), is_error)?;
        self.list_from(payload.py(), from)?;
        Ok(size)
    }

    fn record_batch(&mut self, py: Python<'_>, items: Vec<RecordItem<'_>>) -> PyResult<u64> {
        let mut steps = Vec::with_capacity(items.len());
        for (id, name, index, payload, is_error) in &items {
            let Ok(step_index) = u64::try_from(*index) else {
                let earlier: Vec<_> = steps.iter().map(StepOutcome::to_check).collect();
                return Err(refuse_negative_index(&self.state, &earlier, name, *index));
            };
            steps.push(StepOutcome {
                id,
                name,
                index: step_index,
                payload: PyPayload::new(payload),
                is_error: *is_error,
            });
        }
        let from = self.state.step_count();
        let size = self.state.record_batch(steps)?;
        self.list_from(py, from)?;
        Ok(size)
    }

    fn check(&self, id: &str, name: &str, index: i64, payload_len: u64) -> PyResult<()> {
        Ok(self
            .state
            .check(id, name, step_index(name, index)?, payload_len)?)
    }

    fn check_batch(&self, items: Vec<CheckItem>) -> PyResult<()> {
        let mut steps = Vec::with_capacity(items.len());
        for (id, name, index, payload_len) in &items {
            let Ok(step_index) = u64::try_from(*index) else {
                return Err(refuse_negative_index(&self.state, &steps, name, *index));
            };
            steps.push(StepCheck {
                id,
                name,
                index: step_index,
                payload_size: *payload_len,
            });
        }
        Ok(self.state.check_batch(&steps)?)
    }

    fn check_output(&self, output_len: u64) -> PyResult<()> {
        Ok(self.state.check_output(output_len)?)
    }

    fn contains(&self, id: &str) -> bool {
        self.state.contains(id)
    }

    #[allow(clippy::type_complexity)]
    fn get<'py>(&self, py: Python<'py>, id: &str) -> Option<(Option<Bound<'py, PyBytes>>, bool)> {
        let memo = self.state.get(id)?;
        Some((memo.payload.bind(py), memo.is_error))
    }

    fn memos<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.slice(py, 0)
    }

    // Forgetting a payload never changes what the checks see: its size stays counted.
    fn forget_payloads(&mut self, py: Python<'_>, start: i64, min_size: u64) -> PyResult<usize> {
        let start = usize::try_from(start)
            .ok()
            .filter(|start| *start <= self.state.step_count())
            .ok_or_else(|| out_of_range(start, self.state.step_count()))?;
        let tuples = self.tuples.bind(py);
        let mut forgotten = 0;
        for (position, memo) in (start..).zip(self.state.memos_from_mut(start)) {
            if memo.payload.size >= min_size && memo.payload.bytes.take().is_some() {
                tuples.set_item(position, memo_tuple(py, &memo.id, None, memo.is_error)?)?;
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    // A negative `start` is a ValueError like one past the end (not Python's count from the end): a
    // position the caller got wrong must fail, not silently resend the last memos.
    fn memos_from<'py>(&self, py: Python<'py>, start: i64) -> PyResult<Bound<'py, PyList>> {
        let count = self.state.step_count();
        usize::try_from(start)
            .ok()
            .filter(|start| *start <= count)
            .map(|start| self.slice(py, start))
            .ok_or_else(|| out_of_range(start, count))
    }

    #[getter]
    fn step_count(&self) -> usize {
        self.state.step_count()
    }

    #[getter]
    fn size_bytes(&self) -> u64 {
        self.state.size_bytes()
    }

    fn __len__(&self) -> usize {
        self.state.step_count()
    }
}

/// Make the `crash_at_sync`-th sync of a file opened through the returned VFS lose power (the fault
/// tests' T15; never outside them): `library` is the SQLite that Python's `sqlite3` loaded.
#[cfg(unix)]
#[pyfunction]
fn simulate_power_loss(library: &str, crash_at_sync: u64, seed: u64) -> PyResult<&'static str> {
    crate::power_loss::install(library, crash_at_sync, seed).map_err(PyValueError::new_err)
}

/// The durably state core (Rust): step-id hashing, run-state merge and limits.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(hash_step_id, m)?)?;
    m.add_function(wrap_pyfunction!(check_json, m)?)?;
    m.add_function(wrap_pyfunction!(json_depth, m)?)?;
    m.add_function(wrap_pyfunction!(pre_hash_id, m)?)?;
    #[cfg(unix)]
    m.add_function(wrap_pyfunction!(simulate_power_loss, m)?)?;
    m.add_class::<PyStepIdCounter>()?;
    m.add_class::<PyRunState>()?;
    m.add("MAX_STEPS", limits::MAX_STEPS)?;
    m.add("MAX_STEP_BYTES", limits::MAX_STEP_BYTES)?;
    m.add("MAX_STATE_BYTES", limits::MAX_STATE_BYTES)?;
    m.add("MAX_JSON_DEPTH", crate::json::MAX_DEPTH)?;
    m.add("CoreError", py.get_type::<CoreError>())?;
    m.add("LimitExceeded", py.get_type::<LimitExceeded>())?;
    m.add("StepLimitExceeded", py.get_type::<StepLimitExceeded>())?;
    m.add("StepOutputTooLarge", py.get_type::<StepOutputTooLarge>())?;
    m.add("StateTooLarge", py.get_type::<StateTooLarge>())?;
    m.add("DuplicateStep", py.get_type::<DuplicateStep>())?;
    m.add("InvalidStepId", py.get_type::<InvalidStepId>())?;
    Ok(())
}
