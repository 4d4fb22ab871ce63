//! RunState: validation order, the limits at their exact boundaries, and that a refused step changes
//! nothing.

use _core::ids::{hash_step_id, pre_hash_id};
use _core::limits::{Limits, MAX_STATE_BYTES, MAX_STEP_BYTES, MAX_STEPS};
use _core::state::{ErrorKind, RunState};

fn id(name: &str, index: u64) -> String {
    hash_step_id(&pre_hash_id(name, index))
}

fn small(max_steps: usize, max_step_bytes: u64, max_state_bytes: u64) -> RunState<Vec<u8>> {
    RunState::new(
        0,
        Limits {
            max_steps,
            max_step_bytes,
            max_state_bytes,
        },
    )
}

/// Records `name` (index 0) with `len` bytes.
fn record(state: &mut RunState<Vec<u8>>, name: &str, len: usize) -> Result<u64, ErrorKind> {
    state
        .record(&id(name, 0), name, 0, vec![b'x'; len], false)
        .map_err(|e| e.kind)
}

/// Asserts that a refused record leaves every observable part of the state unchanged.
fn assert_refused(state: &mut RunState<Vec<u8>>, name: &str, len: usize, kind: ErrorKind) {
    let (count, size, memos) = (
        state.step_count(),
        state.size_bytes(),
        state.memos().to_vec(),
    );
    assert_eq!(
        state
            .check(&id(name, 0), name, 0, len as u64)
            .map_err(|e| e.kind),
        Err(kind)
    );
    assert_eq!(record(state, name, len), Err(kind));
    assert_eq!((state.step_count(), state.size_bytes()), (count, size));
    assert_eq!(state.memos(), memos.as_slice());
    let was_recorded = memos.iter().any(|m| m.id == id(name, 0));
    assert_eq!(state.contains(&id(name, 0)), was_recorded);
}

#[test]
fn defaults_are_the_article_limits() {
    assert_eq!(MAX_STEPS, 1000);
    assert_eq!(MAX_STEP_BYTES, 4 * 1024 * 1024);
    assert_eq!(MAX_STATE_BYTES, 32 * 1024 * 1024);
    assert_eq!(
        Limits::default(),
        Limits {
            max_steps: MAX_STEPS,
            max_step_bytes: MAX_STEP_BYTES,
            max_state_bytes: MAX_STATE_BYTES
        }
    );
}

#[test]
fn records_in_order_and_reads_back() {
    let mut state = RunState::new(7, Limits::default());
    assert_eq!(
        state.record(&id("a", 0), "a", 0, b"1".to_vec(), false),
        Ok(8)
    );
    assert_eq!(
        state.record(&id("b", 0), "b", 0, b"22".to_vec(), true),
        Ok(10)
    );
    assert_eq!(
        state.record(&id("a", 1), "a", 1, b"333".to_vec(), false),
        Ok(13)
    );
    assert_eq!((state.step_count(), state.size_bytes()), (3, 13));
    let ids: Vec<_> = state.memos().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, [id("a", 0), id("b", 0), id("a", 1)]);
    let b = state.get(&id("b", 0)).expect("b recorded");
    assert_eq!((b.payload.as_slice(), b.is_error), (&b"22"[..], true));
    assert!(state.contains(&id("a", 1)));
    assert!(!state.contains(&id("a", 2)));
    assert!(state.get(&id("a", 2)).is_none());
}

#[test]
fn step_output_exactly_at_the_limit_passes_one_more_byte_fails() {
    let mut state = small(10, 100, 1000);
    assert_eq!(record(&mut state, "at-limit", 100), Ok(100));
    assert_refused(&mut state, "over-limit", 101, ErrorKind::StepOutputTooLarge);
}

#[test]
fn default_step_output_limit_is_4_mib() {
    let mut state = RunState::new(0, Limits::default());
    assert!(record(&mut state, "at-limit", MAX_STEP_BYTES as usize).is_ok());
    assert_refused(
        &mut state,
        "over",
        MAX_STEP_BYTES as usize + 1,
        ErrorKind::StepOutputTooLarge,
    );
}

#[test]
fn state_exactly_at_the_limit_passes_one_more_byte_fails() {
    let mut state = RunState::new(
        10,
        Limits {
            max_steps: 10,
            max_step_bytes: 100,
            max_state_bytes: 200,
        },
    );
    assert_eq!(record(&mut state, "a", 100), Ok(110));
    assert_refused(&mut state, "b", 91, ErrorKind::StateTooLarge);
    assert_eq!(record(&mut state, "b", 90), Ok(200));
    assert_refused(&mut state, "c", 1, ErrorKind::StateTooLarge);
    assert_eq!(record(&mut state, "empty", 0), Ok(200));
}

#[test]
fn step_count_exactly_at_the_limit_passes_one_more_fails() {
    let mut state = small(3, 100, 1000);
    for name in ["a", "b", "c"] {
        assert!(record(&mut state, name, 1).is_ok());
    }
    assert_refused(&mut state, "d", 1, ErrorKind::StepLimitExceeded);
    assert_eq!(state.step_count(), 3);
}

#[test]
fn default_step_limit_is_1000() {
    let mut state = RunState::new(0, Limits::default());
    for i in 0..MAX_STEPS as u64 {
        assert!(state.record(&id("s", i), "s", i, Vec::new(), false).is_ok());
    }
    let next = MAX_STEPS as u64;
    let err = state
        .record(&id("s", next), "s", next, Vec::new(), false)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::StepLimitExceeded);
    assert!(err.message.contains("1000"), "{err}");
}

#[test]
fn duplicate_is_refused_and_the_first_outcome_kept() {
    let mut state = small(10, 100, 1000);
    assert!(record(&mut state, "a", 5).is_ok());
    let err = state
        .record(&id("a", 0), "a", 0, b"other".to_vec(), true)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::DuplicateStep);
    let memo = state.get(&id("a", 0)).expect("still there");
    assert_eq!(
        (memo.payload.as_slice(), memo.is_error),
        (&b"xxxxx"[..], false)
    );
    assert_eq!((state.step_count(), state.size_bytes()), (1, 5));
}

#[test]
fn invalid_ids_are_refused() {
    let mut state = small(10, 100, 1000);
    let cases = [
        (id("a", 1), "a", 0),                // index does not match
        (id("a", 0), "b", 0),                // name does not match
        (id("a", 0).to_uppercase(), "a", 0), // hashes are lowercase hex, byte for byte
        ("a".to_owned(), "a", 0),            // the pre-hash id is not the id
        (hash_step_id(""), "", 0),           // empty name
    ];
    for (bad, name, index) in cases {
        let err = state
            .record(&bad, name, index, Vec::new(), false)
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidStepId, "{bad} {name} {index}");
    }
    assert_eq!((state.step_count(), state.size_bytes()), (0, 0));
}

#[test]
fn checks_run_in_the_documented_order() {
    // A step that breaks every rule reports the first: id, duplicate, count, output size, state size.
    let mut state = small(1, 10, 15);
    assert!(record(&mut state, "a", 10).is_ok());
    let kind = |s: &RunState<Vec<u8>>, id: &str, name: &str, len: u64| {
        s.check(id, name, 0, len).unwrap_err().kind
    };
    assert_eq!(kind(&state, "bad", "a", 100), ErrorKind::InvalidStepId);
    assert_eq!(
        kind(&state, &id("a", 0), "a", 100),
        ErrorKind::DuplicateStep
    );
    assert_eq!(
        kind(&state, &id("b", 0), "b", 100),
        ErrorKind::StepLimitExceeded
    );
    let state = RunState::<Vec<u8>>::new(
        10,
        Limits {
            max_steps: 1,
            max_step_bytes: 10,
            max_state_bytes: 15,
        },
    );
    assert_eq!(
        kind(&state, &id("b", 0), "b", 11),
        ErrorKind::StepOutputTooLarge
    );
    assert_eq!(kind(&state, &id("b", 0), "b", 6), ErrorKind::StateTooLarge);
    assert!(state.check(&id("b", 0), "b", 0, 5).is_ok());
}

#[test]
fn messages_name_the_limit_the_step_and_the_size() {
    let mut state = small(10, 100, 1000);
    let err = state
        .record(&id("big", 0), "big", 0, vec![0; 101], false)
        .unwrap_err();
    for part in [
        "\"big\"",
        id("big", 0).as_str(),
        "101",
        "100",
        "max_step_bytes",
    ] {
        assert!(err.message.contains(part), "{part:?} not in {err}");
    }
}
