"""Black-box harness: a real daemon process, real worker processes, real sockets, a temp SQLite file.

Every process is started in its own session (process group) and every signal goes to the whole group,
so nothing outlives the test that started it. Worker programs live in ``tests/workers/``; they append
one JSON line per observation to a shared log (``DURABLY_TEST_LOG``), which is how tests count handler
executions and step-body executions per run. ``DURABLY_TEST_CONTROL`` is a folder of control files
the workers wait on ("block until this file exists").

The SDK (``durably``) is imported lazily so that collecting the suite never requires it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import durably
    import grpc
    from durably.protocol.v1 import api_pb2

ROOT = Path(__file__).resolve().parents[2]
WORKERS_DIR = ROOT / "tests" / "workers"
APP_ID = "tests"
READY_LINE = re.compile(r"^durably: listening on (?P<address>\S+) \(db: (?P<db>.+)\)$")


@dataclass(frozen=True)
class WorkerSpec:
    """A worker program in tests/workers/ and the function ids it registers."""

    script: str
    functions: tuple[str, ...]


STEPS = WorkerSpec("steps.py", ("three-steps", "loop-steps", "tuple-step", "bad-output"))
ERRORS = WorkerSpec("errors.py", ("flaky-step", "always-fails", "gives-up", "flaky-handler"))
CRASH = WorkerSpec("crash.py", ("echo", "crash-between", "worker-crash"))
CAPACITY_ONE = WorkerSpec("coord_capacity.py", ("long-nap", "quick", "busy"))
CHECKPOINT = WorkerSpec("checkpoint.py", ("cp-steps", "cp-block", "cp-mixed", "cp-big"))
ENCRYPTED = WorkerSpec(
    "encrypted.py", ("enc-order", "enc-audit", "enc-notified", "enc-fails", "enc-steps-c", "enc-nap")
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, limit: int = 6000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no file)"
    return text if len(text) <= limit else "...\n" + text[-limit:]


def wait_until(check: Callable[[], Any], *, timeout: float = 10.0, what: str, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; return it. AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


async def await_until(check: Callable[[], Any], *, timeout: float = 10.0, what: str, interval: float = 0.05) -> Any:
    """Like `wait_until` for async tests; `check` may be sync or async."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(interval)


class Process:
    """A child process in its own session. Output goes to files (one pair per start) in `workdir`."""

    spawned: ClassVar[list[Process]] = []
    """Every process any harness started, for `kill_all` (the last resort at interpreter exit)."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stdout_path = workdir / f"{name}.out"
        self.stderr_path = workdir / f"{name}.err"
        self._all_stderr: list[Path] = []

    def spawn(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        self.stdout_path = self.workdir / f"{self.name}-{self.starts}.out"
        self.stderr_path = self.workdir / f"{self.name}-{self.starts}.err"
        self._all_stderr.append(self.stderr_path)
        if self not in Process.spawned:
            Process.spawned.append(self)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def _signal_group(self, sig: signal.Signals) -> None:
        # Only while the leader is not reaped: until then its pid (our group id) cannot be reused.
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill9(self) -> None:
        """SIGKILL the whole process group and reap the process (no-op once it was reaped)."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM without waiting: a graceful stop goes on while the test acts."""
        self._signal_group(signal.SIGTERM)
        self._signal_group(signal.SIGCONT)  # a paused process acts on SIGTERM only once continued

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()  # the hard way, unless it exited already
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP the whole process group: its sockets stay open but it does nothing (no heartbeats)."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the whole process group (undoes `pause`)."""
        self._signal_group(signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def all_stderr(self) -> str:
        """The stderr of every start, in order."""
        return "".join(path.read_text(encoding="utf-8", errors="replace") for path in self._all_stderr)

    def report(self) -> str:
        parts = [f"$ {' '.join(self.argv)}  (pid {self.proc.pid if self.proc else '-'}, rc {self.returncode()})"]
        for path in self._all_stderr:
            parts.append(f"--- {path.name}\n{tail(path)}")
        return "\n".join(parts)


def kill_all() -> None:
    """SIGKILL the process group of every process still running (pytest killed mid-test, etc.)."""
    for process in Process.spawned:
        process.kill9()


class Daemon(Process):
    """`python -m durably_server dev --db DB --listen 127.0.0.1:PORT` with a fixed port (restartable)."""

    def __init__(
        self, workdir: Path, *, db: Path, port: int, name: str = "daemon", extra_args: Sequence[str] = ()
    ) -> None:
        self.db = db
        self.port = port
        argv = [sys.executable, "-m", "durably_server", "dev", "--db", str(db), "--listen", self.address]
        # Retries back off in milliseconds here so that retry tests stay fast.
        argv += ["--retry-base", "20ms", "--retry-max", "200ms"]
        argv += extra_args  # e.g. "--heartbeat", "200ms", "--worker-timeout", "1s"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        super().__init__(name, argv, env=env, workdir=workdir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready_line(self) -> str | None:
        """The daemon's ready line, once it printed it (complete lines only)."""
        try:
            text = self.stdout_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        for line in text.split("\n")[:-1]:
            if line.startswith("durably: listening on"):
                return line
        return None

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait for the ready line; check it names our address and db."""
        self.spawn()

        def ready() -> str | None:
            line = self.ready_line()
            if line is None and not self.alive():
                raise RuntimeError(
                    f"daemon exited with code {self.returncode()} before it was ready\n"
                    f"stdout:\n{tail(self.stdout_path)}\nstderr:\n{tail(self.stderr_path)}"
                )
            return line

        try:
            line = wait_until(ready, timeout=timeout, what=f"the daemon's ready line on {self.address}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstderr:\n{tail(self.stderr_path)}") from None
        match = READY_LINE.match(line)
        assert match, f"ready line has the wrong shape: {line!r}"
        assert match["address"] == self.address, f"ready line names {match['address']}, expected {self.address}"
        assert Path(match["db"]).resolve() == self.db.resolve(), f"ready line names db {match['db']!r}"


class WorkerProcess(Process):
    """`python tests/workers/<script>` connected to the daemon at DURABLY_ADDRESS."""


class Harness:
    """One daemon (restartable on the same db and port), its workers, the observation log."""

    def __init__(self, workdir: Path, daemon_args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "observations.jsonl"
        self.log.touch()
        self.control = workdir / "control"
        self.control.mkdir(exist_ok=True)
        self.daemon = Daemon(workdir, db=workdir / "durably.db", port=free_port(), extra_args=daemon_args)
        self.processes: list[Process] = [self.daemon]

    @property
    def address(self) -> str:
        return self.daemon.address

    # -- processes -------------------------------------------------------------------------------

    def add_daemon(self, *, db: Path, name: str) -> Daemon:
        """Another daemon process (not started), torn down with the harness."""
        daemon = Daemon(self.workdir, db=db, port=free_port(), name=name)
        self.processes.append(daemon)
        return daemon

    def start_worker(
        self, spec: WorkerSpec, *, wait: bool = True, app_id: str = APP_ID, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        """Start a worker process (`env`: more environment variables); with `wait`, return once the
        daemon lists its functions as connected."""
        number = sum(isinstance(p, WorkerProcess) for p in self.processes) + 1
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DURABLY_ADDRESS": self.address,
            "DURABLY_TEST_APP": app_id,
            "DURABLY_TEST_LOG": str(self.log),
            "DURABLY_TEST_CONTROL": str(self.control),
            **(env or {}),
        }
        worker = WorkerProcess(
            f"worker-{Path(spec.script).stem}-{number}",
            [sys.executable, str(WORKERS_DIR / spec.script)],
            env=env,
            workdir=self.workdir,
        )
        self.processes.append(worker)
        worker.spawn()
        if wait:
            self.wait_connected(spec.functions, app_id=app_id, worker=worker)
        return worker

    def close(self) -> None:
        """Stop every process (workers first); whatever happens, each gets SIGKILL at the end."""
        for process in reversed(self.processes):
            try:
                process.stop(timeout=5)
            finally:
                process.kill9()

    def report(self) -> list[tuple[str, str]]:
        sections = [(p.name, p.report()) for p in self.processes if p.starts]
        sections.append(("observations", tail(self.log)))
        return sections

    # -- the daemon's view of workers --------------------------------------------------------------

    def connected_workers(self, app_id: str = APP_ID) -> dict[str, int] | None:
        """ListFunctions: function id -> connected workers; None while the daemon is unreachable."""
        import grpc
        from durably.protocol.v1 import api_pb2, api_pb2_grpc

        try:
            with env_channel(self.address) as channel:
                reply = api_pb2_grpc.ApiServiceStub(channel).ListFunctions(
                    api_pb2.ListFunctionsRequest(app_id=app_id), timeout=5, metadata=env_metadata()
                )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None
            raise
        return {f.id: f.connected_workers for f in reply.functions}

    def connected(self, function_id: str) -> int:
        """How many workers serve `function_id` now (0 while the daemon is unreachable)."""
        return (self.connected_workers() or {}).get(function_id, 0)

    def wait_connected(
        self,
        functions: Sequence[str],
        *,
        app_id: str = APP_ID,
        worker: Process | None = None,
        connected: bool = True,
        timeout: float = 30.0,
    ) -> None:
        """Wait until every function in `functions` has a connected worker (or, with
        `connected=False`, none)."""

        def check() -> bool:
            if worker is not None and not worker.alive():
                raise RuntimeError(f"{worker.name} exited early:\n{worker.report()}")
            listed = self.connected_workers(app_id)
            if listed is None:
                return False
            if connected:
                return all(listed.get(f, 0) >= 1 for f in functions)
            return all(listed.get(f, 0) == 0 for f in functions)

        state = "connected" if connected else "disconnected"
        wait_until(check, timeout=timeout, what=f"functions {list(functions)} {state} ({app_id})")

    # -- observations and control files ----------------------------------------------------------

    def observations(self, kind: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Complete lines of the observation log, filtered by kind and by equal fields."""
        text = self.log.read_text(encoding="utf-8")
        found = []
        for line in text.split("\n")[:-1]:
            entry = json.loads(line)
            if kind is not None and entry.get("kind") != kind:
                continue
            if all(entry.get(key) == value for key, value in match.items()):
                found.append(entry)
        return found

    def count(self, kind: str, **match: Any) -> int:
        return len(self.observations(kind, **match))

    async def until_started(self, run_id: str, step: str, timeout: float = 30.0) -> None:
        """Wait until step `step` of run `run_id` recorded that it started (it then blocks on a control file)."""
        await await_until(
            lambda: self.observations("step", run=run_id, name=step, phase="started"),
            timeout=timeout,
            what=f"step {step} of run {run_id} to start",
        )

    def release(self, name: str) -> None:
        """Create control file `name`: the worker waiting on it proceeds."""
        (self.control / name).touch()

    # -- the store, read-only ----------------------------------------------------------------------

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the daemon's SQLite file (e.g. the persisted timers)."""
        conn = sqlite3.connect(f"file:{self.daemon.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


# -- SDK helpers -------------------------------------------------------------------------------------


@asynccontextmanager
async def open_client(address: str, encryption: durably.Encryption | None = None) -> AsyncIterator[durably.Client]:
    import durably

    client = durably.Client(app_id=APP_ID, address=address, encryption=encryption)
    try:
        yield client
    finally:
        await client.close()


async def find_run(client: durably.Client, event_id: str, timeout: float = 10.0) -> durably.Run:
    """The one run the event created (polls `list_runs(event_id=...)`)."""
    runs: list[durably.Run] = await await_until(
        lambda: client.list_runs(event_id=event_id), timeout=timeout, what=f"a run for event {event_id}"
    )
    assert len(runs) == 1, f"event {event_id} has {len(runs)} runs: {[(r.id, r.function_id) for r in runs]}"
    return runs[0]


async def run_to_end(client: durably.Client, name: str, data: dict[str, Any], timeout: float = 30.0) -> durably.Run:
    """Send one event, find its run, wait until it ends; return the ended run."""
    import durably

    [event_id] = await client.send(durably.Event(name=name, data=data))
    run = await find_run(client, event_id)
    return await client.wait_for_run(run.id, timeout=timeout)


def env_metadata() -> tuple[tuple[str, str], ...]:
    """What the SDK would send: the token in $DURABLY_TOKEN, if any (tests/e2e/test_auth.py sets it)."""
    from durably.protocol.auth import auth_metadata

    return auth_metadata(os.environ.get("DURABLY_TOKEN"))


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m durably_server ARGS` run to its end, output captured (environment: this process's)."""
    argv = [sys.executable, "-m", "durably_server", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


def environ_without(name: str) -> dict[str, str]:
    """This process's environment without `name` (a CLI or daemon that must do without it)."""
    return {key: value for key, value in os.environ.items() if key != name}


def env_channel(address: str) -> grpc.Channel:
    """A raw channel as the SDK would open it: TLS if $DURABLY_TLS_CA etc. say so (tests/e2e/test_tls.py)."""
    import grpc
    from durably import TLSConfig

    tls = TLSConfig.from_env()
    return grpc.insecure_channel(address) if tls is None else grpc.secure_channel(address, tls.credentials())


def metrics(address: str) -> api_pb2.GetMetricsResponse:
    """The daemon's counters, through the raw generated stubs."""
    from durably.protocol.v1 import api_pb2, api_pb2_grpc

    with env_channel(address) as channel:
        response: api_pb2.GetMetricsResponse = api_pb2_grpc.ApiServiceStub(channel).GetMetrics(
            api_pb2.GetMetricsRequest(), timeout=10, metadata=env_metadata()
        )
        return response


def describe(run: durably.Run) -> str:
    """A run in one line, for assertion messages."""
    steps = [(s.name, s.index, str(s.status)) for s in run.steps]
    return f"run {run.id} status={run.status} output={run.output!r} error={run.error!r} steps={steps}"


async def blocked_in_step_two(harness: Harness, client: durably.Client) -> durably.Run:
    """Start a cp-block run (CHECKPOINT) and wait until its step two runs (and blocks on its control file)."""
    import durably

    [event_id] = await client.send(durably.Event(name="cp/block", data={}))
    run = await find_run(client, event_id)
    await harness.until_started(run.id, "two")
    return run


@contextmanager
def disk_full(process: Process) -> Iterator[None]:
    """While inside: `process` may not write a file past its first 4 KiB (its file-size limit, which
    Python processes hit as an error, not a signal), as on a full disk: SQLite's commits fail at once."""
    limits = resource.prlimit(process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        yield
    finally:
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, limits)
