"""Processes for the benchmarks: a real daemon, real worker processes, the daemon's counters, memory.

Every child runs in its own session (process group); stopping one sends SIGTERM to its group, then
SIGKILL after a grace period, so nothing outlives the benchmark that started it. Output goes to files
in the benchmark's work folder (shown when something fails). The daemon listens on an ephemeral
loopback port: ``serve --listen 127.0.0.1:0`` prints the port it got in its ready line.

The driver (this process) talks to the daemon with plain generated stubs over a synchronous channel:
it sends events, blocks in ``WaitForRun`` (the daemon answers when the run ends, no polling) and reads
``GetMetrics`` counters. It stays idle while a workload runs, so it takes no CPU from the engine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import grpc
from durably.protocol.auth import auth_metadata
from durably.protocol.v1 import api_pb2, api_pb2_grpc, common_pb2
from durably_server.store.database import READER_NAME
from durably_server.store.writer import THREAD_NAME as WRITER_NAME

from bench.progress import say

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
APP_ID = "bench"
READY_LINE = re.compile(r"^durably: listening on (?P<address>\S+) \(db: (?P<db>.+)\)$")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark could not run as designed (a process died, a run failed, a wait timed out)."""


class BenchTimeout(BenchError):
    """Something did not happen within its time bound."""


class RunFailed(BenchError):
    """A run ended in failure; the message is the run's error."""


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something other than None/False; BenchError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise BenchTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, limit: int = 3000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no output)"
    return text if len(text) <= limit else "...\n" + text[-limit:]


# ---- memory ----------------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident set size now (VmRSS)."""
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb * 1024


def peak_rss_bytes(pid: int) -> int | None:
    """Peak resident set size (VmHWM) since the process started or since :func:`reset_peak_rss`."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb * 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/PID/clear_refs``), so the peak of a
    measurement excludes start-up and warm-up. False where the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process, all threads (``/proc/PID/stat``; 10 ms resolution)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return _stat_cpu(text)


def _stat_cpu(stat: str) -> float:
    """utime + stime of a ``/proc/.../stat`` line, in seconds."""
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces; it ends at the last ')'
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


THREAD_GROUPS = {WRITER_NAME: "writer", READER_NAME: "readers"}
"""The daemon's threads by the names it gives them (store/writer.py, store/database.py); its event loop is the
main thread; everything else (gRPC's event engine, its poller, timers) counts as "gRPC and other"."""
LOOP, OTHER = "event loop", "gRPC and other"
THREAD_KINDS = (LOOP, *THREAD_GROUPS.values(), OTHER)


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU time of the process's threads, summed by kind (`THREAD_GROUPS`); threads that
    ended are not counted (the daemon's last as long as it does)."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        kind = LOOP if tid == str(pid) else THREAD_GROUPS.get(name, OTHER)
        out[kind] = out.get(kind, 0.0) + _stat_cpu(text)
    return out


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds used so far: the daemon, all workers together, and the daemon by kind of thread."""

    daemon: float
    workers: float
    daemon_threads: dict[str, float]


# ---- processes -------------------------------------------------------------------------------


class Process:
    """A child process in its own session; stdout/stderr go to files in ``workdir``."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.stdout_path = workdir / f"{name}.out"
        self.stderr_path = workdir / f"{name}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
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
        if self.proc is None:
            raise BenchError(f"{self.name} was never started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            rc = None if self.proc is None else self.proc.returncode
            raise BenchError(f"{self.name} exited (code {rc}):\n{tail(self.stderr_path)}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL what is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._signal(signal.SIGKILL)  # anything it left behind in its group

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


TOKEN = secrets.token_hex(16)
"""The token of this bench's daemons (``durably serve`` requires one; its workers and driver send it)."""


class Daemon(Process):
    """``durably serve --db DB --listen 127.0.0.1:0``; :attr:`address` is known once it is ready. ``module``
    is the program that takes durably's command line (another one wraps the daemon, as a probe does)."""

    def __init__(self, workdir: Path, db: Path, name: str = "daemon", module: str = "durably_server") -> None:
        argv = [PYTHON, "-m", module, "serve", "--db", str(db), "--listen", "127.0.0.1:0"]
        super().__init__(name, argv, workdir, {"DURABLY_TOKEN": TOKEN})
        self.db = db
        self.address = ""

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()

        def ready() -> str | None:
            text = self.stdout_path.read_text(encoding="utf-8", errors="replace")
            for line in text.split("\n")[:-1]:
                match = READY_LINE.match(line)
                if match:
                    return match["address"]
            self.check_alive()
            return None

        self.address = wait_until(ready, timeout=timeout, what=f"{self.name}'s ready line")


class Worker(Process):
    """A worker program from ``bench/workers`` (``python -m bench.workers.NAME``)."""

    def __init__(self, workdir: Path, module: str, address: str, name: str, env: dict[str, str] | None = None) -> None:
        argv = [PYTHON, "-m", f"bench.workers.{module}"]
        super().__init__(name, argv, workdir, {"DURABLY_ADDRESS": address, "DURABLY_TOKEN": TOKEN, **(env or {})})


# ---- talking to the daemon -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metrics:
    """``GetMetrics`` counters (since the daemon started); subtract two snapshots for a delta."""

    events_received: int = 0
    runs_created: int = 0
    executions_dispatched: int = 0
    memos_sent: int = 0
    memo_bytes_sent: int = 0
    steps_recorded: int = 0
    commits: int = 0
    runs_completed: int = 0
    runs_failed: int = 0
    result_bytes_received: int = 0

    def __sub__(self, other: Metrics) -> Metrics:
        return Metrics(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    @property
    def runs_ended(self) -> int:
        return self.runs_completed + self.runs_failed


@dataclass(frozen=True, slots=True)
class RunView:
    """What a benchmark needs of a run: status, timings and the decoded step outputs."""

    id: str
    status: str
    created_ms: int
    started_ms: int
    ended_ms: int
    error: str
    output: Any
    step_outputs: list[Any]


_STATUS = {v: k.removeprefix("RUN_STATUS_").lower() for k, v in api_pb2.RunStatus.items()}


def _view(run: api_pb2.Run) -> RunView:
    error = f"{run.error.name}: {run.error.message}" if run.HasField("error") else ""
    outputs = [json.loads(step.output_json) if step.output_json else None for step in run.steps]
    return RunView(
        id=run.id,
        status=_STATUS.get(run.status, str(run.status)),
        created_ms=run.created_at_ms,
        started_ms=run.started_at_ms,
        ended_ms=run.ended_at_ms,
        error=error,
        output=json.loads(run.output_json) if run.output_json else None,
        step_outputs=outputs,
    )


class Api:
    """A synchronous ApiService client for the driver."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = api_pb2_grpc.ApiServiceStub(self._channel)
        self._metadata = auth_metadata(TOKEN)

    def close(self) -> None:
        self._channel.close()

    def send(self, name: str, datas: Sequence[dict[str, Any]], batch: int = 2000) -> list[str]:
        """Send one event per item of ``datas`` (in batches of ``batch``); the ids of the runs they created."""
        run_ids: list[str] = []
        for start in range(0, len(datas), batch):
            events = [
                common_pb2.Event(name=name, data_json=json.dumps(data).encode())
                for data in datas[start : start + batch]
            ]
            reply = self._stub.SendEvents(api_pb2.SendEventsRequest(events=events), timeout=60, metadata=self._metadata)
            run_ids.extend(reply.run_ids)
        return run_ids

    def wait_for_run(self, run_id: str, timeout: float) -> RunView:
        """Block until the run ends (BenchError if it has not after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchTimeout(f"run {run_id} has not ended after {timeout:g} s")
            wait_ms = max(1, int(min(remaining, 600) * 1000))
            reply = self._stub.WaitForRun(
                api_pb2.WaitForRunRequest(run_id=run_id, timeout_ms=wait_ms),
                timeout=wait_ms / 1000 + 30,
                metadata=self._metadata,
            )
            view = _view(reply.run)
            if view.status in ("completed", "failed", "cancelled"):
                return view

    def get_run(self, run_id: str) -> RunView:
        return _view(self._stub.GetRun(api_pb2.GetRunRequest(run_id=run_id), timeout=60, metadata=self._metadata).run)

    def list_runs(self, function_id: str, status: str, cap: int = 1_000_000) -> list[RunView]:
        """Runs of ``function_id`` with ``status``, newest first, without steps (ListRuns pages of 1000)."""
        wanted = api_pb2.RunStatus.Value("RUN_STATUS_" + status.upper())
        runs: list[RunView] = []
        token = ""
        while len(runs) < cap:
            page = min(1000, cap - len(runs))
            reply = self._stub.ListRuns(
                api_pb2.ListRunsRequest(function_id=function_id, status=wanted, limit=page, page_token=token),
                timeout=60,
                metadata=self._metadata,
            )
            runs.extend(_view(run) for run in reply.runs)
            token = reply.next_page_token
            if not token:
                break
        return runs

    def connected(self, app_id: str = APP_ID) -> dict[str, int]:
        reply = self._stub.ListFunctions(
            api_pb2.ListFunctionsRequest(app_id=app_id), timeout=10, metadata=self._metadata
        )
        return {f.id: f.connected_workers for f in reply.functions}

    def metrics(self) -> Metrics:
        reply = self._stub.GetMetrics(api_pb2.GetMetricsRequest(), timeout=10, metadata=self._metadata)
        # A counter the engine under test does not have yet reads as 0 (an older checkout, see README).
        return Metrics(**{f.name: getattr(reply, f.name, 0) for f in fields(Metrics)})


# ---- one daemon and its workers ------------------------------------------------------------------


@dataclass
class Peaks:
    """Peak RSS (bytes) of the daemon and of the busiest worker over a measured stretch."""

    daemon: int | None
    worker: int | None
    daemon_base: int | None
    worker_base: int | None


PYSPY_DIR = "BENCH_PYSPY_DIR"
"""When set (by ``python -m bench.profile``), every cluster runs ``py-spy record`` on its processes."""
PYSPY_GIL = "BENCH_PYSPY_GIL"
"""When set to 1, py-spy samples only the thread holding the GIL (``--gil``)."""


class Profilers:
    """``py-spy record`` attached to the daemon and the workers (only for ``python -m bench.profile``)."""

    def __init__(self, out_dir: Path, name: str, processes: Sequence[Process]) -> None:
        spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
        out_dir.mkdir(parents=True, exist_ok=True)
        gil = ["--gil"] if os.environ.get(PYSPY_GIL) == "1" else []
        self._procs = [
            subprocess.Popen(
                [spy, "record", "--pid", str(p.pid), "--format", "raw", "--rate", "250", "--nonblocking", *gil,
                 "--output", str(out_dir / f"{name}.{p.name}.txt")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for p in processes
        ]  # fmt: skip

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


class Cluster:
    """A fresh daemon on its own SQLite file plus ``workers`` worker processes, for one workload."""

    def __init__(self, workdir: Path, name: str, worker_module: str = "functions", workers: int = 1) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(self.workdir, self.workdir / "durably.db")
        self.worker_module = worker_module
        self.worker_count = workers
        self.workers: list[Process] = []
        self._api: Api | None = None
        self._profilers: Profilers | None = None
        self.idle_daemon_rss: int | None = None
        """The daemon's RSS once its workers are connected, before any run: the engine's own baseline."""

    @property
    def api(self) -> Api:
        if self._api is None:
            raise BenchError("the cluster is not started")
        return self._api

    def start(self, functions: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.daemon.start()
        self._api = Api(self.daemon.address)
        for n in range(self.worker_count):
            worker = self._worker(f"worker-{n + 1}", env)
            worker.spawn()
            self.workers.append(worker)

        def connected() -> bool:
            for worker in self.workers:
                worker.check_alive()
            listed = self.api.connected()
            return all(listed.get(f, 0) >= self.worker_count for f in functions)

        wait_until(connected, timeout=30, what=f"workers serving {list(functions)}", interval=0.05)
        self.idle_daemon_rss = rss_bytes(self.daemon.pid)
        if spy_dir := os.environ.get(PYSPY_DIR):
            self._profilers = Profilers(Path(spy_dir), self.workdir.name, [self.daemon, *self.workers])

    def _worker(self, name: str, env: dict[str, str] | None) -> Process:
        """A worker process for this daemon (a subclass may run another program)."""
        return Worker(self.workdir, self.worker_module, self.daemon.address, name, env)

    def check_alive(self) -> None:
        self.daemon.check_alive()
        for worker in self.workers:
            worker.check_alive()

    def cpu(self) -> CpuMark:
        """CPU seconds used so far by the daemon (also by kind of thread) and by all workers together."""
        daemon = cpu_seconds(self.daemon.pid) or 0.0
        workers = sum(cpu_seconds(w.pid) or 0.0 for w in self.workers)
        return CpuMark(daemon, workers, thread_cpu_seconds(self.daemon.pid))

    def reset_peaks(self) -> Peaks:
        """Start a new peak-RSS window (after warm-up); returns the RSS at its start."""
        reset_peak_rss(self.daemon.pid)
        for worker in self.workers:
            reset_peak_rss(worker.pid)
        worker_rss = [rss_bytes(w.pid) for w in self.workers]
        known = [r for r in worker_rss if r is not None]
        return Peaks(None, None, rss_bytes(self.daemon.pid), max(known) if known else None)

    def peaks(self, base: Peaks) -> Peaks:
        worker_peaks = [peak_rss_bytes(w.pid) for w in self.workers]
        known = [p for p in worker_peaks if p is not None]
        return Peaks(peak_rss_bytes(self.daemon.pid), max(known) if known else None, base.daemon_base, base.worker_base)

    def stop(self) -> None:
        if self._profilers is not None:
            self._profilers.stop()
            self._profilers = None
        if self._api is not None:
            self._api.close()
            self._api = None
        for worker in self.workers:
            worker.stop(timeout=10)
        self.daemon.stop(timeout=15)

    def describe_failure(self) -> str:
        parts = [f"--- {p.name} stderr\n{tail(p.stderr_path)}" for p in [self.daemon, *self.workers]]
        return "\n".join(parts)


@contextmanager
def cluster(
    workdir: Path,
    name: str,
    functions: Sequence[str],
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """A started :class:`Cluster`, stopped on exit whatever happens."""
    say(f"{name}: starting a fresh daemon and {workers} worker(s)")
    group = Cluster(workdir, name, workers=workers)
    try:
        group.start(functions, env)
        yield group
    finally:
        group.stop()
