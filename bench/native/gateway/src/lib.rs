//! A probe of the worker stream served by tonic while durably's Python engine stays as it is.
//!
//! `Gateway` listens on a port of its own and runs tonic on one thread (a current-thread tokio
//! runtime). Every message a worker sends is queued as protobuf bytes and announced on an eventfd the
//! daemon's event loop watches (one write when the queue goes from empty to not empty); the loop takes
//! the whole queue in one call and parses the messages with the generated Python classes, and what
//! the engine answers goes back as bytes through `send`. So gRPC's HTTP/2 and framing run in Rust and
//! off the loop's thread, and the engine sees the same messages grpc.aio hands it.
//!
//! Not a product: no TLS, no token, no keepalive, no flow control towards Python (the queues are
//! unbounded), no limit checks beyond tonic's. It measures what moving the transport alone would buy
//! (bench/README.md, "What limits").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming, transport::Server};

#[allow(clippy::all)] // generated: proto/'s comments are not Rust doc style
mod durably {
    tonic::include_proto!("durably.protocol.v1");
}
use durably::worker_service_server::{WorkerService, WorkerServiceServer};
use durably::{ExecutorMessage, WorkerMessage};

const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

type Answers = mpsc::UnboundedSender<Result<ExecutorMessage, Status>>;
/// A stream's id and a message it sent; `None` once it has ended.
type Arrival = (u64, Option<Vec<u8>>);

struct Shared {
    arrivals: Mutex<Vec<Arrival>>,
    eventfd: i32,
    streams: Mutex<HashMap<u64, Answers>>,
    next_id: AtomicU64,
}

impl Shared {
    fn arrive(&self, arrival: Arrival) {
        let was_empty = {
            let mut arrivals = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
            arrivals.push(arrival);
            arrivals.len() == 1
        };
        if was_empty {
            let one: u64 = 1;
            // SAFETY: an 8-byte write from a live u64 to the eventfd this struct owns.
            unsafe { libc::write(self.eventfd, (&raw const one).cast(), 8) };
        }
    }
}

struct Streams(Arc<Shared>);

#[tonic::async_trait]
impl WorkerService for Streams {
    type ConnectStream = UnboundedReceiverStream<Result<ExecutorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let (answers, outbound) = mpsc::unbounded_channel();
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        self.0
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, answers);
        let shared = Arc::clone(&self.0);
        tokio::spawn(async move {
            while let Some(Ok(message)) = inbound.next().await {
                shared.arrive((id, Some(message.encode_to_vec())));
            }
            shared.arrive((id, None));
        });
        Ok(Response::new(UnboundedReceiverStream::new(outbound)))
    }
}

/// The worker stream's server, on 127.0.0.1 and a port of its own.
#[pyclass(frozen)]
struct Gateway {
    shared: Arc<Shared>,
    #[pyo3(get)]
    port: u16,
}

#[pymethods]
impl Gateway {
    #[new]
    fn new() -> PyResult<Self> {
        // SAFETY: plain syscall; the descriptor is checked below and owned by `Shared` from then on.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::new()),
            eventfd,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let (bound, port) = std::sync::mpsc::channel();
        let service = WorkerServiceServer::new(Streams(Arc::clone(&shared)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        std::thread::Builder::new()
            .name("durably-gateway".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(listener) => listener,
                        Err(error) => return drop(bound.send(Err(error))),
                    };
                    let _ = bound.send(listener.local_addr().map(|address| address.port()));
                    let incoming = TcpListenerStream::new(listener)
                        .map(|accepted| accepted.inspect(|stream| drop(stream.set_nodelay(true))));
                    let served = Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming);
                    if let Err(error) = served.await {
                        eprintln!("gateway: {error}");
                    }
                });
            })?;
        let port = port
            .recv()
            .map_err(|_| PyValueError::new_err("the gateway thread ended"))??;
        Ok(Gateway { shared, port })
    }

    /// The eventfd to watch: readable while messages wait for `take`.
    #[getter]
    fn fd(&self) -> i32 {
        self.shared.eventfd
    }

    /// Every message that arrived since the last call, in order: (stream id, its bytes, or None
    /// once the stream has ended).
    fn take<'py>(&self, py: Python<'py>) -> Vec<(u64, Option<Bound<'py, PyBytes>>)> {
        let mut count = [0u8; 8];
        // SAFETY: an 8-byte read into a live buffer from the eventfd; EAGAIN (nothing to reset) is fine.
        unsafe { libc::read(self.shared.eventfd, count.as_mut_ptr().cast(), 8) };
        let arrivals = std::mem::take(
            &mut *self
                .shared
                .arrivals
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        arrivals
            .into_iter()
            .map(|(id, bytes)| (id, bytes.map(|bytes| PyBytes::new(py, &bytes))))
            .collect()
    }

    /// Send an ExecutorMessage (protobuf bytes) on stream `id`; False if it has gone.
    fn send(&self, id: u64, message: &[u8]) -> PyResult<bool> {
        let message = ExecutorMessage::decode(message)
            .map_err(|error| PyValueError::new_err(error.to_string()))?;
        let streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(streams
            .get(&id)
            .is_some_and(|answers| answers.send(Ok(message)).is_ok()))
    }

    /// End stream `id`: with OK if `code` is 0, else with that gRPC status code and text.
    fn close(&self, id: u64, code: i32, text: String) {
        let answers = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let (Some(answers), true) = (answers, code != 0) {
            let _ = answers.send(Err(Status::new(tonic::Code::from(code), text)));
        }
    }
}

#[pymodule]
fn gateway_probe(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Gateway>()
}
