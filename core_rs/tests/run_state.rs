//! RunState: validation order, the limits at their exact boundaries, and that a refused step changes
//! nothing; the same for batches of outcomes, whose steps count against the limits together; memo
//! deltas; the function's output against the state limit.

use _core::ids::{hash_step_id, pre_hash_id};
use _core::limits::{Limits, MAX_STATE_BYTES, MAX_STEP_BYTES, MAX_STEPS};
use _core::state::{ErrorKind, Memo, RunState, StateError, StepCheck, StepOutcome};

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

// --- Batches, memo deltas and the function's output ---

/// `check_batch` of `(name, index, payload size)` steps under their correct ids.
fn check_batch(state: &RunState<Vec<u8>>, steps: &[(&str, u64, u64)]) -> Result<(), StateError> {
    let ids: Vec<String> = steps
        .iter()
        .map(|&(name, index, _)| id(name, index))
        .collect();
    let checks: Vec<StepCheck<'_>> = steps
        .iter()
        .zip(&ids)
        .map(|(&(name, index, payload_size), id)| StepCheck {
            id,
            name,
            index,
            payload_size,
        })
        .collect();
    state.check_batch(&checks)
}

/// `record_batch` of `(name, index, payload length)` steps under their correct ids, each payload `len`
/// copies of the byte `b'0' + position in the batch`, so tests can tell the outcomes apart.
fn record_batch(
    state: &mut RunState<Vec<u8>>,
    steps: &[(&str, u64, usize)],
) -> Result<u64, StateError> {
    let ids: Vec<String> = steps
        .iter()
        .map(|&(name, index, _)| id(name, index))
        .collect();
    let outcomes = steps
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(pos, (&(name, index, len), id))| StepOutcome {
            id,
            name,
            index,
            payload: vec![b'0' + pos as u8; len],
            is_error: pos % 2 == 1,
        })
        .collect();
    state.record_batch(outcomes)
}

/// Everything observable about a state, to show a refusal changed nothing.
fn snapshot(state: &RunState<Vec<u8>>) -> (usize, u64, Vec<Memo<Vec<u8>>>) {
    (
        state.step_count(),
        state.size_bytes(),
        state.memos().to_vec(),
    )
}

fn assert_contains(err: &StateError, parts: &[&str]) {
    for part in parts {
        assert!(err.message.contains(part), "{part:?} not in {err}");
    }
}

#[test]
fn memos_from_returns_only_the_outcomes_from_a_position_on() {
    let mut state = small(10, 100, 1000);
    assert_eq!(state.memos_from(0).map(<[_]>::len), Some(0));
    assert!(state.memos_from(1).is_none());
    for (name, len) in [("a", 1), ("b", 2), ("c", 3)] {
        assert!(record(&mut state, name, len).is_ok());
    }
    assert_eq!(state.memos_from(0), Some(state.memos()));
    assert_eq!(state.memos_from(1), Some(&state.memos()[1..]));
    let last = state.memos_from(2).expect("in range");
    assert_eq!((last.len(), last[0].id.as_str()), (1, id("c", 0).as_str()));
    assert_eq!(state.memos_from(3).map(<[_]>::len), Some(0), "start == len");
    assert!(state.memos_from(4).is_none(), "start > len");
    assert!(state.memos_from(usize::MAX).is_none());
    assert!(record(&mut state, "d", 4).is_ok());
    let new = state.memos_from(3).expect("in range");
    assert_eq!((new.len(), new[0].payload.len()), (1, 4));
}

#[test]
fn memos_from_mut_changes_payloads_in_place_and_never_the_sizes_the_limits_count() {
    let mut state = small(10, 100, 20);
    for (name, len) in [("a", 5), ("b", 6), ("c", 7)] {
        assert!(record(&mut state, name, len).is_ok());
    }
    for memo in state.memos_from_mut(1) {
        memo.payload.clear(); // what the daemon does: drop the bytes, the store has them
    }
    let lens: Vec<usize> = state.memos().iter().map(|m| m.payload.len()).collect();
    assert_eq!(lens, [5, 0, 0]);
    assert_eq!(state.size_bytes(), 18, "the dropped payloads still count");
    assert_eq!(record(&mut state, "d", 3), Err(ErrorKind::StateTooLarge));
    assert!(state.memos_from_mut(3).is_empty() && state.memos_from_mut(9).is_empty());
}

#[test]
fn memo_deltas_ship_each_outcome_once() {
    // What the executor does: after each step, send the worker only what it has not seen.
    let steps = 200;
    let mut state = small(steps, 100, 1_000_000);
    let (mut seen, mut shipped) = (0, 0);
    for i in 0..steps as u64 {
        state
            .record(&id("s", i), "s", i, vec![0; 10], false)
            .expect("within limits");
        let delta = state.memos_from(seen).expect("seen <= len");
        shipped += delta.iter().map(|m| m.payload.len()).sum::<usize>();
        seen += delta.len();
    }
    assert_eq!(
        (seen, shipped),
        (steps, steps * 10),
        "O(N) in all, not O(N^2)"
    );
}

#[test]
fn batch_step_count_exactly_at_the_limit_passes_one_more_fails() {
    let mut state = small(5, 100, 1000);
    for name in ["a", "b"] {
        assert!(record(&mut state, name, 1).is_ok());
    }
    let before = snapshot(&state);
    assert_eq!(
        check_batch(&state, &[("c", 0, 1), ("d", 0, 1), ("e", 0, 1)]),
        Ok(())
    );
    // Each of these passes `check` alone; together the fourth would be step 6 of 5.
    let over = [
        ("c", 0, 1),
        ("d", 0, 1),
        ("e", 0, 1),
        ("f", 0, 1),
        ("g", 0, 1),
    ];
    for &(name, index, len) in &over {
        assert!(state.check(&id(name, index), name, index, len).is_ok());
    }
    let err = check_batch(&state, &over).unwrap_err();
    assert_eq!(err.kind, ErrorKind::StepLimitExceeded);
    assert_contains(
        &err,
        &[
            "\"f\"",
            &id("f", 0),
            "step 6",
            "counting the 3 steps before it in this batch",
            "5 steps",
            "max_steps",
        ],
    );
    assert_eq!(snapshot(&state), before);
}

#[test]
fn batch_state_size_is_cumulative_exactly_at_the_limit_passes_one_more_byte_fails() {
    let state = RunState::<Vec<u8>>::new(
        10,
        Limits {
            max_steps: 10,
            max_step_bytes: 60,
            max_state_bytes: 100,
        },
    );
    assert_eq!(check_batch(&state, &[("a", 0, 50), ("b", 0, 40)]), Ok(()));
    assert!(
        state.check(&id("b", 0), "b", 0, 41).is_ok(),
        "alone it fits"
    );
    let err = check_batch(&state, &[("a", 0, 50), ("b", 0, 41)]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::StateTooLarge);
    assert_contains(
        &err,
        &[
            "\"b\"",
            &id("b", 0),
            "41 bytes",
            "101 bytes",
            "counting the 1 step before it",
            "100 bytes",
            "max_state_bytes",
        ],
    );
    // Names the step that crosses, not a later one.
    let err = check_batch(&state, &[("a", 0, 50), ("b", 0, 41), ("c", 0, 60)]).unwrap_err();
    assert_contains(&err, &["\"b\""]);
    // Empty payloads after the state is full still fit.
    assert_eq!(
        check_batch(&state, &[("a", 0, 50), ("b", 0, 40), ("c", 0, 0)]),
        Ok(())
    );
}

#[test]
fn batch_step_output_exactly_at_the_limit_passes_one_more_byte_fails() {
    let state = small(10, 100, 1000);
    assert_eq!(check_batch(&state, &[("a", 0, 100), ("b", 0, 100)]), Ok(()));
    let err = check_batch(&state, &[("a", 0, 100), ("b", 0, 101)]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::StepOutputTooLarge);
    assert_contains(
        &err,
        &["\"b\"", "101", "100 bytes per step", "max_step_bytes"],
    );
}

#[test]
fn batch_duplicates_within_the_batch_and_against_the_state_are_refused() {
    let mut state = small(10, 100, 1000);
    assert!(record(&mut state, "a", 1).is_ok());
    let err = check_batch(&state, &[("b", 0, 1), ("c", 0, 1), ("b", 0, 1)]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::DuplicateStep);
    assert_contains(
        &err,
        &["\"b\"", &id("b", 0), "more than once in this batch"],
    );
    let err = check_batch(&state, &[("b", 0, 1), ("a", 0, 1)]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::DuplicateStep);
    assert_contains(&err, &["\"a\"", "already recorded"]);
    // Same name, different index: different steps.
    assert_eq!(
        check_batch(&state, &[("b", 0, 1), ("b", 1, 1), ("b", 2, 1)]),
        Ok(())
    );
}

#[test]
fn batch_invalid_ids_are_refused() {
    let state = small(10, 100, 1000);
    let (good, bad) = (id("a", 0), id("b", 1));
    let batch = [
        StepCheck {
            id: &good,
            name: "a",
            index: 0,
            payload_size: 1,
        },
        StepCheck {
            id: &bad,
            name: "b",
            index: 0,
            payload_size: 1,
        },
    ];
    let err = state.check_batch(&batch).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidStepId);
    assert_contains(&err, &["\"b\"", &bad]);
    let empty_name = hash_step_id("");
    let batch = [StepCheck {
        id: &empty_name,
        name: "",
        index: 0,
        payload_size: 0,
    }];
    assert_eq!(
        state.check_batch(&batch).unwrap_err().kind,
        ErrorKind::InvalidStepId
    );
}

#[test]
fn batch_reports_the_first_refused_step_with_checks_in_the_documented_order() {
    let state = small(3, 10, 1000);
    // The second step is over max_step_bytes; the fourth would be over max_steps: the second wins.
    let err = check_batch(
        &state,
        &[("a", 0, 1), ("b", 0, 11), ("c", 0, 1), ("d", 0, 1)],
    )
    .unwrap_err();
    assert_eq!(
        (err.kind, err.message.contains("\"b\"")),
        (ErrorKind::StepOutputTooLarge, true)
    );
    // Within one step, the order is check's: a repeat over the step count is a duplicate first...
    let err = check_batch(
        &state,
        &[("a", 0, 1), ("b", 0, 1), ("c", 0, 1), ("a", 0, 100)],
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::DuplicateStep);
    // ...and a new step over the count and the output size is over the count.
    let err = check_batch(
        &state,
        &[("a", 0, 1), ("b", 0, 1), ("c", 0, 1), ("d", 0, 100)],
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::StepLimitExceeded);
    // A one-step batch says exactly what check says.
    let mut state = small(1, 10, 15);
    assert!(record(&mut state, "a", 10).is_ok());
    for (name, len) in [("a", 1), ("b", 1), ("b", 11)] {
        let alone = state.check(&id(name, 0), name, 0, len).unwrap_err();
        assert_eq!(check_batch(&state, &[(name, 0, len)]), Err(alone));
    }
}

#[test]
fn empty_batch_passes_even_at_the_limits() {
    let mut state = small(1, 10, 10);
    assert!(record(&mut state, "a", 10).is_ok());
    assert_eq!(check_batch(&state, &[]), Ok(()));
    assert_eq!(record_batch(&mut state, &[]), Ok(10));
    assert_eq!(state.step_count(), 1);
}

#[test]
fn record_batch_records_every_outcome_in_order() {
    let mut state = RunState::new(
        5,
        Limits {
            max_steps: 4,
            max_step_bytes: 10,
            max_state_bytes: 30,
        },
    );
    assert!(record(&mut state, "first", 5).is_ok());
    assert_eq!(
        record_batch(&mut state, &[("a", 0, 10), ("b", 0, 0), ("a", 1, 10)]),
        Ok(30)
    );
    assert_eq!((state.step_count(), state.size_bytes()), (4, 30));
    let ids: Vec<_> = state.memos().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, [id("first", 0), id("a", 0), id("b", 0), id("a", 1)]);
    let a1 = state.get(&id("a", 1)).expect("recorded");
    assert_eq!(
        (a1.payload.as_slice(), a1.is_error),
        (&[b'2'; 10][..], false)
    );
    assert!(state.get(&id("b", 0)).expect("recorded").is_error);
    assert_eq!(
        state.memos_from(1).map(<[_]>::len),
        Some(3),
        "the batch is the delta"
    );
}

#[test]
fn record_batch_is_all_or_nothing() {
    let mut state = small(4, 10, 25);
    assert!(record(&mut state, "first", 5).is_ok());
    let before = snapshot(&state);
    let refused: [&[(&str, u64, usize)]; 5] = [
        &[("a", 0, 10), ("b", 0, 10), ("c", 0, 1)], // state: 26 > 25
        &[("a", 0, 1), ("b", 0, 1), ("c", 0, 1), ("d", 0, 1)], // steps: 5 > 4
        &[("a", 0, 1), ("b", 0, 11)],               // output: 11 > 10
        &[("a", 0, 1), ("b", 0, 1), ("a", 0, 1)],   // repeated in the batch
        &[("a", 0, 1), ("first", 0, 1)],            // already recorded
    ];
    for batch in refused {
        let err = record_batch(&mut state, batch).unwrap_err();
        let names: Vec<_> = batch.iter().map(|s| (s.0, s.1, s.2 as u64)).collect();
        assert_eq!(
            check_batch(&state, &names),
            Err(err),
            "check_batch agrees with record_batch"
        );
        assert_eq!(snapshot(&state), before, "{batch:?} left a trace");
        assert!(!state.contains(&id("a", 0)));
    }
    // The refused batches' valid prefix still goes in afterwards, right up to the limits.
    assert_eq!(
        record_batch(&mut state, &[("a", 0, 10), ("b", 0, 10)]),
        Ok(25)
    );
    assert_eq!(record_batch(&mut state, &[("c", 0, 0)]), Ok(25));
    let err = record_batch(&mut state, &[("d", 0, 0)]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::StepLimitExceeded);
}

#[test]
fn output_exactly_filling_the_state_passes_one_more_byte_fails() {
    let mut state = RunState::new(
        10,
        Limits {
            max_steps: 10,
            max_step_bytes: 50,
            max_state_bytes: 100,
        },
    );
    assert!(record(&mut state, "a", 50).is_ok());
    assert_eq!(state.check_output(40), Ok(()));
    let err = state.check_output(41).unwrap_err();
    assert_eq!(err.kind, ErrorKind::StateTooLarge);
    assert_contains(
        &err,
        &[
            "function's output",
            "41 bytes",
            "101 bytes",
            "100 bytes",
            "max_state_bytes",
        ],
    );
    // Only the state limit applies: an output bigger than max_step_bytes is fine if the state holds it.
    let empty = RunState::<Vec<u8>>::new(
        0,
        Limits {
            max_steps: 1,
            max_step_bytes: 1,
            max_state_bytes: 100,
        },
    );
    assert_eq!(empty.check_output(100), Ok(()));
    assert_eq!(
        empty.check_output(u64::MAX).unwrap_err().kind,
        ErrorKind::StateTooLarge
    );
    assert_eq!(
        (state.step_count(), state.size_bytes()),
        (1, 60),
        "checking changes nothing"
    );
}

#[test]
fn default_limits_hold_for_batches() {
    let mut state = RunState::new(0, Limits::default());
    let first: Vec<(String, u64)> = (0..MAX_STEPS as u64 - 1).map(|i| (id("s", i), i)).collect();
    let outcomes = first
        .iter()
        .map(|(id, i)| StepOutcome {
            id,
            name: "s",
            index: *i,
            payload: Vec::new(),
            is_error: false,
        })
        .collect();
    assert_eq!(state.record_batch(outcomes), Ok(0));
    let last = MAX_STEPS as u64 - 1;
    assert_eq!(check_batch(&state, &[("s", last, 0)]), Ok(()));
    let err = check_batch(&state, &[("s", last, 0), ("s", last + 1, 0)]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::StepLimitExceeded);
    assert_contains(
        &err,
        &["\"s\"", &id("s", last + 1), "step 1001", "1000 steps"],
    );
}
