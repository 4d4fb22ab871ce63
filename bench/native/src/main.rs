//! The floor's ping-pong on a native gRPC stack, and a stand-in for durably's daemon, to size a native
//! step path (bench/native_floor.py).
//!
//! `serve` echoes every message; `serve-commit DB` commits each message to SQLite in the daemon's
//! durability setting before it answers (a checkpointed step's shape: message in, commit, answer out);
//! `client ADDR N` drives N round trips after a warm-up; `commits DB N` times the commit alone.
//!
//! `serve-steps MODEL DB RUNS N` stands in for the daemon on W2c (MODEL `checkpointing`) or W2
//! (`replay`: the article's model, an execution per step). It serves `WorkerService.Connect` to one
//! real SDK worker and sends it runs of N sequential steps one after another, committing every step
//! before it answers (`Checkpointed`, or the next `Execute`): a warm-up run, then (after printing
//! `warm`, on a line from stdin) RUNS runs, whose microseconds per step it prints; it exits at the
//! next line or the end of stdin. Nothing else of the daemon's work (leases, limits, merge, timers)
//! is there: it is the least a native daemon end would cost.
//!
//! `work ADDRESS TOKEN` is the other way round: a worker for durably's daemon whose W2c handler costs
//! nothing, to show what the daemon's end costs by itself.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming, transport::Server};

mod pb {
    tonic::include_proto!("bench");
}
#[allow(clippy::all)] // generated: proto/'s comments are not Rust doc style
mod durably {
    tonic::include_proto!("durably.protocol.v1");
}
use pb::Ping;
use pb::ping_pong_client::PingPongClient;
use pb::ping_pong_server::{PingPong, PingPongServer};

const WARM_UP: usize = 200;
/// The bench worker's checkpointed W2 function (bench/workers/functions.py).
const W2C_FUNCTION: &str = "w2-checkpointing";
static STEP: AtomicI64 = AtomicI64::new(0);

/// A step row as the daemon stores one: a table with a unique key and a second index (three b-trees).
fn open(path: &str) -> Connection {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let conn = Connection::open(path).expect("open the database");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .expect("set WAL");
    assert_eq!(mode, "wal", "{path}: could not switch to WAL");
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         CREATE TABLE steps (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, seq INTEGER NOT NULL,
             step_id TEXT NOT NULL, data BLOB NOT NULL, UNIQUE (run_id, step_id));
         CREATE INDEX steps_seq ON steps (run_id, seq);",
    )
    .expect("create the table");
    conn
}

fn commit(conn: &Connection, data: &[u8]) {
    let seq = STEP.fetch_add(1, Ordering::Relaxed);
    conn.execute_batch("BEGIN IMMEDIATE").expect("BEGIN");
    conn.execute(
        "INSERT INTO steps (run_id, seq, step_id, data) VALUES (1, ?1, ?2, ?3)",
        rusqlite::params![seq, format!("{seq:040}"), data],
    )
    .expect("INSERT");
    conn.execute_batch("COMMIT").expect("COMMIT");
}

struct Echo {
    store: Option<Arc<Mutex<Connection>>>,
}

#[tonic::async_trait]
impl PingPong for Echo {
    type StreamStream = ReceiverStream<Result<Ping, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut pings = request.into_inner();
        let (answers, stream) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(Ok(ping)) = pings.next().await {
                if let Some(store) = &store {
                    // Inline on the runtime's thread, as the daemon commits a lone step on its loop.
                    let conn = store.lock().expect("the store's lock");
                    commit(&conn, &ping.data);
                }
                if answers.send(Ok(ping)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// A loopback port, announced as the Python ping-pong server announces its own (bench/floors.py reads
/// it); accepted connections with Nagle off, as gRPC's own servers set them (tonic leaves them as accepted).
async fn listen() -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "pingpong: listening on {}",
        listener.local_addr().expect("address")
    );
    TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

async fn serve(store: Option<Connection>) {
    let store = store.map(|conn| Arc::new(Mutex::new(conn)));
    Server::builder()
        .add_service(PingPongServer::new(Echo { store }))
        .serve_with_incoming(listen().await)
        .await
        .expect("serve");
}

async fn drive(address: &str, count: usize) {
    let mut client = PingPongClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let (pings, stream) = mpsc::channel(1);
    let ping = Ping {
        data: vec![b'x'; 64],
    };
    // The first ping goes before the call is awaited: grpc.aio sends its headers with the first answer.
    pings.send(ping.clone()).await.expect("send");
    let mut pongs = client
        .stream(ReceiverStream::new(stream))
        .await
        .expect("call")
        .into_inner();
    let mut round_trip = async || {
        pongs
            .next()
            .await
            .expect("an answer")
            .expect("a good answer");
        pings.send(ping.clone()).await.expect("send");
    };
    for _ in 0..WARM_UP {
        round_trip().await;
    }
    let started = Instant::now();
    for _ in 0..count {
        round_trip().await;
    }
    println!(
        "{:.1}",
        started.elapsed().as_secs_f64() * 1e6 / count as f64
    );
}

/// The daemon's tables for what a checkpoint commits: step rows (numbered per run) and the commit counter.
fn open_steps(path: &str) -> Connection {
    let conn = open(path);
    conn.execute_batch(
        "CREATE TABLE commits (n INTEGER NOT NULL); INSERT INTO commits VALUES (0);
         CREATE TABLE runs (id INTEGER PRIMARY KEY, output BLOB NOT NULL);",
    )
    .expect("create the tables");
    conn
}

/// One transaction: the checkpoint's steps (or the run's end) and the commit counter, as the daemon's writer does.
fn commit_result(conn: &Connection, run: i64, result: &durably::ExecutionResult) -> usize {
    use durably::execution_result::Outcome;
    conn.execute_batch("BEGIN IMMEDIATE").expect("BEGIN");
    for op in &result.ops {
        assert_eq!(
            op.op,
            durably::Opcode::StepRun as i32,
            "a W2 handler only runs steps"
        );
        conn.execute(
            "INSERT INTO steps (run_id, seq, step_id, data)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = ?1), ?2, ?3)",
            rusqlite::params![run, op.id, op.data_json],
        )
        .expect("INSERT a step");
    }
    if let Some(Outcome::OutputJson(output)) = &result.outcome {
        conn.execute(
            "INSERT INTO runs (id, output) VALUES (?1, ?2)",
            rusqlite::params![run, output],
        )
        .expect("INSERT the run's end");
    }
    conn.execute_batch("UPDATE commits SET n = n + 1; COMMIT")
        .expect("COMMIT");
    result.ops.len()
}

#[derive(Clone)]
struct Daemon {
    store: Arc<Mutex<Connection>>,
    runs: usize,
    steps: usize,
    checkpointing: bool,
}

impl Daemon {
    /// The bench worker's W2 functions (bench/workers/functions.py): the same handler, two models.
    fn function(&self) -> &'static str {
        if self.checkpointing {
            W2C_FUNCTION
        } else {
            "w2-sequential"
        }
    }
}

type Inbound = Streaming<durably::WorkerMessage>;
type Outbound = mpsc::Sender<Result<durably::ExecutorMessage, Status>>;

async fn next_result(
    inbound: &mut Inbound,
    pending: &mut Vec<durably::WorkerMessage>,
) -> durably::ExecutionResult {
    use durably::worker_message::Message;
    loop {
        let message = match pending.pop() {
            Some(message) => message,
            None => inbound
                .next()
                .await
                .expect("the worker's stream ended")
                .expect("a good message"),
        };
        match message.message {
            Some(Message::Result(result)) => return result,
            Some(Message::Batch(batch)) => pending.extend(batch.messages.into_iter().rev()),
            Some(Message::Heartbeat(_)) => {}
            other => panic!("unexpected from the worker: {other:?}"),
        }
    }
}

async fn send(outbound: &Outbound, message: durably::executor_message::Message) {
    let message = durably::ExecutorMessage {
        message: Some(message),
    };
    outbound
        .send(Ok(message))
        .await
        .expect("the worker went away");
}

/// One run of `steps` sequential steps, from its first Execute to its final result: the time it took.
/// Checkpointing: one execution, each checkpoint committed and answered. Otherwise the article's
/// model: an execution per step, each sent only the newest memo (`memo_base`), named by the
/// execution that reported it (`reported_in`), as the daemon sends them.
async fn one_run(
    daemon: &Daemon,
    number: usize,
    inbound: &mut Inbound,
    outbound: &Outbound,
) -> f64 {
    use durably::execution_result::Outcome;
    use durably::executor_message::Message;
    let started = Instant::now();
    let event = durably::Event {
        id: format!("event-{number}"),
        name: "bench/w2".into(),
        data_json: format!("{{\"n\": {}}}", daemon.steps).into_bytes(),
        ts_ms: 1,
    };
    let (mut pending, mut stored, mut newest) = (Vec::new(), 0, None);
    for execution in 0.. {
        let execution_id = format!("execution-{number}-{execution}");
        let execute = durably::Execute {
            execution_id: execution_id.clone(),
            run_id: format!("run-{number}"),
            function_id: daemon.function().into(),
            event: Some(event.clone()),
            memos: newest.take().into_iter().collect(),
            memo_base: execution.max(1) - 1,
            max_attempts: 1,
            ..Default::default()
        };
        send(outbound, Message::Execute(execute)).await;
        let result = loop {
            let result = next_result(inbound, &mut pending).await;
            assert_eq!(result.execution_id, execution_id);
            stored += {
                let conn = daemon.store.lock().expect("the store's lock");
                commit_result(&conn, number as i64, &result)
            };
            if !result.partial {
                break result;
            }
            let answer = durably::Checkpointed {
                execution_id: execution_id.clone(),
                committed: true,
            };
            send(outbound, Message::Checkpointed(answer)).await;
        };
        match &result.outcome {
            Some(Outcome::Yielded(true)) if !daemon.checkpointing => {
                let [step] = &result.ops[..] else {
                    panic!("one step per execution, got {:?}", result.ops)
                };
                let reported_in = durably::memo::Outcome::ReportedIn(execution_id);
                newest = Some(durably::Memo {
                    id: step.id.clone(),
                    outcome: Some(reported_in),
                });
            }
            Some(Outcome::OutputJson(output)) => {
                let output = String::from_utf8_lossy(output).replace(' ', "");
                assert_eq!(
                    output,
                    format!("{{\"steps\":{}}}", daemon.steps),
                    "run {number}'s output"
                );
                assert_eq!(stored, daemon.steps, "steps committed in run {number}");
                return started.elapsed().as_secs_f64();
            }
            other => panic!("run {number} ended with {other:?}"),
        }
    }
    unreachable!("a run ends with its output")
}

#[tonic::async_trait]
impl durably::worker_service_server::WorkerService for Daemon {
    type ConnectStream = ReceiverStream<Result<durably::ExecutorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Inbound>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        use durably::executor_message::Message;
        let mut inbound = request.into_inner();
        let (outbound, stream) = mpsc::channel(64);
        let daemon = self.clone();
        tokio::spawn(async move {
            match inbound.next().await {
                Some(Ok(durably::WorkerMessage {
                    message: Some(durably::worker_message::Message::Register(_)),
                })) => {}
                other => panic!("expected Register first, got {other:?}"),
            }
            let registered = durably::Registered {
                worker_id: "native".into(),
                heartbeat_interval_ms: 5000,
            };
            send(&outbound, Message::Registered(registered)).await;
            one_run(&daemon, 0, &mut inbound, &outbound).await;
            println!("warm");
            wait_for_stdin().await;
            let mut micros = Vec::new();
            for number in 1..=daemon.runs {
                let seconds = one_run(&daemon, number, &mut inbound, &outbound).await;
                micros.push(format!("{:.1}", seconds * 1e6 / daemon.steps as f64));
            }
            println!("{}", micros.join(" "));
            wait_for_stdin().await;
            std::process::exit(0);
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// The driver's go (a line, or the end of stdin): it reads both processes' CPU counters meanwhile.
async fn wait_for_stdin() {
    use std::io::Write;
    std::io::stdout().flush().expect("stdout");
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
        .await
        .expect("the stdin reader")
        .expect("stdin");
}

async fn serve_steps(daemon: Daemon) {
    Server::builder()
        .add_service(durably::worker_service_server::WorkerServiceServer::new(
            daemon,
        ))
        .serve_with_incoming(listen().await)
        .await
        .expect("serve");
}

/// `work ADDRESS TOKEN`: a worker for durably's daemon that runs every W2c execution's steps with no
/// handler at all (each step's result is the time), checkpointing each and waiting for `Checkpointed`:
/// what durably's daemon costs per step when the worker costs nothing.
async fn work(address: &str, token: &str) {
    use durably::executor_message::Message as FromDaemon;
    use durably::worker_message::Message as ToDaemon;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("an address")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("a ready channel");
    let (outbound, stream) = mpsc::channel::<durably::WorkerMessage>(64);
    let to_daemon = |message| durably::WorkerMessage {
        message: Some(message),
    };
    let trigger = durably::Trigger {
        kind: Some(durably::trigger::Kind::Event("bench/w2c".into())),
        ..Default::default()
    };
    let register = durably::Register {
        app_id: "bench".into(),
        functions: vec![durably::FunctionConfig {
            id: W2C_FUNCTION.into(),
            triggers: vec![trigger],
            ..Default::default()
        }],
        capacity: 1,
        worker_name: "native".into(),
        ..Default::default()
    };
    outbound
        .send(to_daemon(ToDaemon::Register(register)))
        .await
        .expect("queue Register");
    let mut request = Request::new(ReceiverStream::new(stream));
    let bearer = format!("Bearer {token}").parse().expect("a token");
    request.metadata_mut().insert("authorization", bearer);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/durably.protocol.v1.WorkerService/Connect",
    );
    let codec =
        tonic::codec::ProstCodec::<durably::WorkerMessage, durably::ExecutorMessage>::default();
    let mut inbound = grpc
        .streaming(request, path, codec)
        .await
        .expect("Connect")
        .into_inner();
    let heartbeats = outbound.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let beat = to_daemon(ToDaemon::Heartbeat(durably::Heartbeat::default()));
            if heartbeats.send(beat).await.is_err() {
                return;
            }
        }
    });
    let mut next = async || match inbound.message().await.expect("a good message") {
        Some(durably::ExecutorMessage {
            message: Some(message),
        }) => message,
        other => panic!("the daemon ended the stream or sent nothing: {other:?}"),
    };
    let FromDaemon::Registered(_) = next().await else {
        panic!("expected Registered first")
    };
    loop {
        let FromDaemon::Execute(execute) = next().await else {
            continue;
        };
        assert!(
            execute.memos.is_empty(),
            "a fresh run only: {}",
            execute.run_id
        );
        let data = execute.event.expect("the run's event").data_json;
        let data = String::from_utf8(data).expect("UTF-8 event data");
        let steps: u64 = data
            .trim_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .expect("{\"n\": N}");
        for index in 0..steps {
            let name = if index == 0 {
                "step".to_owned()
            } else {
                format!("step:{index}")
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time");
            let op = durably::StepOp {
                op: durably::Opcode::StepRun as i32,
                id: hex::encode(<sha1::Sha1 as sha1::Digest>::digest(name.as_bytes())),
                name: "step".into(),
                index: index as i32,
                data_json: format!("{}", now.as_secs_f64()).into_bytes(),
                ..Default::default()
            };
            let checkpoint = durably::ExecutionResult {
                execution_id: execute.execution_id.clone(),
                ops: vec![op],
                partial: true,
                ..Default::default()
            };
            outbound
                .send(to_daemon(ToDaemon::Result(checkpoint)))
                .await
                .expect("send");
            match next().await {
                FromDaemon::Checkpointed(answer) => {
                    assert!(answer.committed, "step {index} not committed")
                }
                other => panic!("expected Checkpointed, got {other:?}"),
            }
        }
        let end = durably::ExecutionResult {
            execution_id: execute.execution_id,
            outcome: Some(durably::execution_result::Outcome::OutputJson(
                format!("{{\"steps\": {steps}}}").into_bytes(),
            )),
            ..Default::default()
        };
        outbound
            .send(to_daemon(ToDaemon::Result(end)))
            .await
            .expect("send");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    match args.iter().map(String::as_str).collect::<Vec<_>>()[1..] {
        ["serve"] => runtime.block_on(serve(None)),
        ["serve-commit", db] => runtime.block_on(serve(Some(open(db)))),
        [
            "serve-steps",
            model @ ("checkpointing" | "replay"),
            db,
            runs,
            steps,
        ] => runtime.block_on(serve_steps(Daemon {
            store: Arc::new(Mutex::new(open_steps(db))),
            runs: runs.parse().expect("a number of runs"),
            steps: steps.parse().expect("a number of steps"),
            checkpointing: model == "checkpointing",
        })),
        ["work", address, token] => runtime.block_on(work(address, token)),
        ["client", address, count] => {
            runtime.block_on(drive(address, count.parse().expect("a count")))
        }
        ["commits", db, count] => {
            let conn = open(db);
            let count: u32 = count.parse().expect("a count");
            let started = Instant::now();
            for _ in 0..count {
                commit(&conn, &[b'x'; 64]);
            }
            println!(
                "{:.1}",
                started.elapsed().as_secs_f64() * 1e6 / f64::from(count)
            );
        }
        _ => panic!(
            "usage: serve | serve-commit DB | serve-steps checkpointing|replay DB RUNS N | work ADDRESS TOKEN | client ADDRESS N | commits DB N"
        ),
    }
}
