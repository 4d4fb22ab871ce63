//! A probe of the worker stream served by tonic while durably's Python engine stays as it is.
//!
//! `Gateway` listens on a port of its own and runs tonic on one thread (a current-thread tokio
//! runtime). Every message a worker sends is queued as protobuf bytes and announced on an eventfd the
//! daemon's event loop watches (one write when the queue goes from empty to not empty); the loop takes
//! the whole queue in one call and parses the messages with the generated Python classes, and what
//! the engine answers goes back as bytes through `send`. So gRPC's HTTP/2 and framing run in Rust and
//! off the loop's thread, and the engine sees the same messages grpc.aio hands it.
//!
//! `Client` is the same for a worker: one Connect stream to a daemon, driven by tonic on a thread of
//! its own, its messages handed to the SDK's Python worker as bytes through an eventfd.
//!
//! Not a product: no TLS, no token check, no keepalive, no flow control towards Python (the queues are
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
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

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

/// Messages from tonic's thread for Python's event loop, announced on an eventfd.
struct Arrivals {
    queue: Mutex<Vec<Arrival>>,
    eventfd: i32,
}

impl Arrivals {
    fn new() -> PyResult<Self> {
        // SAFETY: plain syscall; the descriptor is checked below and owned by this struct from then on.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Arrivals {
            queue: Mutex::new(Vec::new()),
            eventfd,
        })
    }

    fn push(&self, arrival: Arrival) {
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push(arrival);
            queue.len() == 1
        };
        if was_empty {
            let one: u64 = 1;
            // SAFETY: an 8-byte write from a live u64 to the eventfd this struct owns.
            unsafe { libc::write(self.eventfd, (&raw const one).cast(), 8) };
        }
    }

    /// Every arrival since the last call, in order, for Python: (stream id, its bytes, or None once the
    /// stream has ended).
    fn take<'py>(&self, py: Python<'py>) -> Vec<(u64, Option<Bound<'py, PyBytes>>)> {
        let mut count = [0u8; 8];
        // SAFETY: an 8-byte read into a live buffer from the eventfd; EAGAIN (nothing to reset) is fine.
        unsafe { libc::read(self.eventfd, count.as_mut_ptr().cast(), 8) };
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner))
            .into_iter()
            .map(|(id, bytes)| (id, bytes.map(|bytes| PyBytes::new(py, &bytes))))
            .collect()
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        // SAFETY: the descriptor was opened by `new` and nothing else closes it.
        unsafe { libc::close(self.eventfd) };
    }
}

struct Shared {
    arrivals: Arrivals,
    streams: Mutex<HashMap<u64, Answers>>,
    next_id: AtomicU64,
}

/// Runs `serve` on a current-thread tokio runtime on a thread of its own.
fn spawn_runtime<F: Future<Output = ()> + Send + 'static>(serve: F) -> PyResult<()> {
    std::thread::Builder::new()
        .name("durably-gateway".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(serve)
        })?;
    Ok(())
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
                shared.arrivals.push((id, Some(message.encode_to_vec())));
            }
            shared.arrivals.push((id, None));
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
        let shared = Arc::new(Shared {
            arrivals: Arrivals::new()?,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let (bound, port) = std::sync::mpsc::channel();
        let service = WorkerServiceServer::new(Streams(Arc::clone(&shared)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        spawn_runtime(async move {
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
        })?;
        let port = port
            .recv()
            .map_err(|_| PyValueError::new_err("the gateway thread ended"))??;
        Ok(Gateway { shared, port })
    }

    /// The eventfd to watch: readable while messages wait for `take`.
    #[getter]
    fn fd(&self) -> i32 {
        self.shared.arrivals.eventfd
    }

    /// Every message that arrived since the last call, in order: (stream id, its bytes, or None
    /// once the stream has ended).
    fn take<'py>(&self, py: Python<'py>) -> Vec<(u64, Option<Bound<'py, PyBytes>>)> {
        self.shared.arrivals.take(py)
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

/// One worker's Connect stream to the daemon at `address`, opened at once.
#[pyclass(frozen)]
struct Client {
    arrivals: Arc<Arrivals>,
    requests: Mutex<Option<mpsc::UnboundedSender<WorkerMessage>>>,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (address, authorization=None))]
    fn new(address: &str, authorization: Option<&str>) -> PyResult<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| PyValueError::new_err(error.to_string()))?
            .tcp_nodelay(true);
        let (requests, outbound) = mpsc::unbounded_channel();
        let mut request = Request::new(UnboundedReceiverStream::new(outbound));
        if let Some(authorization) = authorization {
            let value = authorization
                .parse()
                .map_err(|_| PyValueError::new_err("authorization is not a valid header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        let arrivals = Arc::new(Arrivals::new()?);
        let inbox = Arc::clone(&arrivals);
        spawn_runtime(async move {
            if let Err(error) = stream(endpoint, request, &inbox).await {
                eprintln!("gateway client: {error}");
            }
            inbox.push((0, None));
        })?;
        Ok(Client {
            arrivals,
            requests: Mutex::new(Some(requests)),
        })
    }

    /// The eventfd to watch: readable while messages wait for `take`.
    #[getter]
    fn fd(&self) -> i32 {
        self.arrivals.eventfd
    }

    /// Every message that arrived since the last call, in order, as the gateway's `take` gives them
    /// (the stream id is always 0: one stream).
    fn take<'py>(&self, py: Python<'py>) -> Vec<(u64, Option<Bound<'py, PyBytes>>)> {
        self.arrivals.take(py)
    }

    /// Send a WorkerMessage (protobuf bytes); False once the request stream is closed.
    fn send(&self, message: &[u8]) -> PyResult<bool> {
        let message = WorkerMessage::decode(message)
            .map_err(|error| PyValueError::new_err(error.to_string()))?;
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(requests
            .as_ref()
            .is_some_and(|requests| requests.send(message).is_ok()))
    }

    /// End the request stream (the daemon then ends its side).
    fn close(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

async fn stream(
    endpoint: Endpoint,
    request: Request<UnboundedReceiverStream<WorkerMessage>>,
    inbox: &Arrivals,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut grpc = tonic::client::Grpc::new(endpoint.connect().await?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    grpc.ready().await?;
    let path = PathAndQuery::from_static("/durably.protocol.v1.WorkerService/Connect");
    let codec = tonic::codec::ProstCodec::<WorkerMessage, ExecutorMessage>::default();
    let mut inbound = grpc.streaming(request, path, codec).await?.into_inner();
    while let Some(message) = inbound.message().await? {
        inbox.push((0, Some(message.encode_to_vec())));
    }
    Ok(())
}

#[pymodule]
fn gateway_probe(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Gateway>()?;
    module.add_class::<Client>()
}
