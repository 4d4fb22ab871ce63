//! Micro-benchmarks of the pure-Rust core, with no extra crates:
//! `cargo run --release --example bench_core` (add `-- --quick` for a smoke run).
//!
//! Each case runs a number of rounds; the inputs of a round (ids, payloads, states) are built before its
//! clock starts, and the figure printed is the median round's time per operation, so one slow round (a
//! page fault, a context switch) does not move it. The Python-side comparison is in `bench/`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use _core::ids::{StepIdCounter, hash_step_id, pre_hash_id};
use _core::limits::Limits;
use _core::state::{RunState, StepCheck};

const STEPS: usize = 1000;
const KIB: usize = 1024;

fn id(name: &str, index: u64) -> String {
    hash_step_id(&pre_hash_id(name, index))
}

/// Times `rounds` rounds of `ops` operations each: `setup` builds a round's input and `run`'s output is
/// dropped off the clock; only `run` is timed. Prints and returns the median ns per operation.
fn bench<T, R>(
    label: &str,
    rounds: usize,
    ops: usize,
    mut setup: impl FnMut() -> T,
    mut run: impl FnMut(T) -> R,
) -> f64 {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let input = setup();
            let start = Instant::now();
            let output = black_box(run(black_box(input)));
            let elapsed = start.elapsed();
            drop(output); // off the clock, like the setup
            elapsed
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let ns_per_op = median.as_nanos() as f64 / ops as f64;
    println!(
        "{label:<56} {ns_per_op:>10.1} ns/op   ({ops} ops/round, {rounds} rounds, median {:.3} ms/round)",
        median.as_secs_f64() * 1e3
    );
    ns_per_op
}

/// A state of `STEPS` steps named `s`, each with a `len`-byte payload, within the default limits.
fn full_state(len: usize) -> RunState<Vec<u8>> {
    let mut state = RunState::new(0, Limits::default());
    for i in 0..STEPS as u64 {
        state
            .record(&id("s", i), "s", i, vec![b'x'; len], false)
            .expect("within the default limits");
    }
    state
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 31 };
    println!(
        "durably core micro-benchmarks (release: {}, {rounds} rounds per case)\n",
        !cfg!(debug_assertions)
    );

    // Step ids: the executor checks every reported id against the hash of its name and index.
    let hashes = 100_000;
    bench(
        "hash_step_id(pre_hash_id(name, i)), 100,000 ids",
        rounds,
        hashes,
        || (),
        |()| {
            let mut last = String::new();
            for i in 0..hashes as u64 {
                last = hash_step_id(&pre_hash_id(black_box("send-email"), i));
            }
            last
        },
    );
    bench(
        "StepIdCounter::next on one repeated name, 100,000 uses",
        rounds,
        hashes,
        StepIdCounter::new,
        |mut counter| {
            let mut last = (String::new(), 0);
            for _ in 0..hashes {
                last = counter.next(black_box("send-email"));
            }
            last
        },
    );

    // Recording: ids and payloads are made off the clock, so this times check + insert only.
    bench(
        "RunState::record, 1,000 steps of 1 KiB",
        rounds,
        STEPS,
        || {
            let steps: Vec<(String, u64, Vec<u8>)> = (0..STEPS as u64)
                .map(|i| (id("s", i), i, vec![b'x'; KIB]))
                .collect();
            (RunState::new(0, Limits::default()), steps)
        },
        |(mut state, steps)| {
            for (id, i, payload) in steps {
                state
                    .record(&id, "s", i, payload, false)
                    .expect("within limits");
            }
            state
        },
    );

    // Memo deltas: what the executor ships a worker after each step. Each call takes the last memo and
    // materialises it as the Python layer does (one `(id, payload, is_error)` per memo).
    let state = full_state(KIB);
    let last = state.step_count() - 1;
    bench(
        "memos_from(len - 1) on a 1,000-step state, 1,000 calls",
        rounds,
        STEPS,
        || (),
        |()| {
            let mut shipped = 0;
            for _ in 0..STEPS {
                let delta: Vec<(&str, &[u8], bool)> = state
                    .memos_from(black_box(last))
                    .expect("in range")
                    .iter()
                    .map(|m| (m.id.as_str(), m.payload.as_slice(), m.is_error))
                    .collect();
                shipped += black_box(delta).len();
            }
            shipped
        },
    );
    // The same with the whole state each time, for scale: what shipping memos() every step costs.
    bench(
        "memos() (all 1,000) on a 1,000-step state, 1,000 calls",
        rounds,
        STEPS,
        || (),
        |()| {
            let mut shipped = 0;
            for _ in 0..STEPS {
                let all: Vec<(&str, &[u8], bool)> = black_box(&state)
                    .memos()
                    .iter()
                    .map(|m| (m.id.as_str(), m.payload.as_slice(), m.is_error))
                    .collect();
                shipped += black_box(all).len();
            }
            shipped
        },
    );

    // A batch of 1,000 new outcomes against an empty state: every id hashed, every limit summed.
    let ids: Vec<String> = (0..STEPS as u64).map(|i| id("s", i)).collect();
    let batch: Vec<StepCheck<'_>> = ids
        .iter()
        .zip(0..)
        .map(|(id, index)| StepCheck {
            id,
            name: "s",
            index,
            payload_size: KIB as u64,
        })
        .collect();
    let empty = RunState::<Vec<u8>>::new(0, Limits::default());
    bench(
        "check_batch of 1,000 items (per item)",
        rounds,
        STEPS,
        || (),
        |()| empty.check_batch(black_box(&batch)).expect("within limits"),
    );
    // And a one-item batch against a full-but-one state: the per-step cost, independent of the state.
    let mut nearly_full = RunState::<Vec<u8>>::new(0, Limits::default());
    for (i, id) in ids.iter().take(STEPS - 1).enumerate() {
        nearly_full
            .record(id, "s", i as u64, vec![b'x'; KIB], false)
            .expect("within limits");
    }
    bench(
        "check_batch of 1 item on a 999-step state, 1,000 calls",
        rounds,
        STEPS,
        || (),
        |()| {
            for _ in 0..STEPS {
                nearly_full
                    .check_batch(black_box(&batch[STEPS - 1..]))
                    .expect("within limits");
            }
        },
    );
}
