//! The floor's ping-pong on a native gRPC stack, to size a native step path (bench/native_floor.py).
//!
//! `serve` echoes every message; `serve-commit DB` commits each message to SQLite in the daemon's
//! durability setting before it answers (a checkpointed step's shape: message in, commit, answer out);
//! `client ADDR N` drives N round trips after a warm-up; `commits DB N` times the commit alone.

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
use pb::Ping;
use pb::ping_pong_client::PingPongClient;
use pb::ping_pong_server::{PingPong, PingPongServer};

const WARM_UP: usize = 200;
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
                    tokio::task::block_in_place(|| commit(&conn, &ping.data));
                }
                if answers.send(Ok(ping)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

async fn serve(store: Option<Connection>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "pingpong: listening on {}",
        listener.local_addr().expect("address")
    );
    let store = store.map(|conn| Arc::new(Mutex::new(conn)));
    Server::builder()
        .add_service(PingPongServer::new(Echo { store }))
        .serve_with_incoming(TcpListenerStream::new(listener))
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
        _ => panic!("usage: serve | serve-commit DB | client ADDRESS N | commits DB N"),
    }
}
