"""Fixtures of the black-box suite (tests/e2e): real daemon and worker processes, torn down always.

* ``harness``: a fresh daemon (own temp db, own fixed port) for one test; the test starts workers.
  Extra ``durably dev`` flags for it come from the ``daemon_args`` fixture (none by default; a test
  sets them with ``@pytest.mark.parametrize("daemon_args", [("--heartbeat", "200ms")])``).
* ``cluster``: one daemon per test module, with the workers the module names in ``WORKERS``
  (a list of ``e2e.harness.WorkerSpec``) already connected.
* ``client``: an async ``durably.Client`` bound to the module's ``cluster``.
* ``clock``: a faked wall clock the test moves, for every process the test starts.

When a test fails, the report gets the daemon's and the workers' stderr and the observation log.
"""

from __future__ import annotations

import atexit
import signal
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import pytest
from e2e.faked_clock import Clock, environment
from e2e.harness import Harness, kill_all, open_client

if TYPE_CHECKING:
    import durably

_LIVE: list[Harness] = []


def pytest_configure(config: pytest.Config) -> None:
    # Never leave a daemon or worker behind: at exit, and when pytest itself gets SIGTERM (a CI
    # cancel, `timeout`), which would otherwise end the interpreter without running any teardown.
    atexit.register(kill_all)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, frame: FrameType | None) -> None:
    kill_all()
    pytest.exit("pytest got SIGTERM; every daemon and worker was killed", returncode=128 + signum)


def _running(workdir: Path, daemon_args: Sequence[str] = ()) -> Iterator[Harness]:
    harness = Harness(workdir, daemon_args)
    _LIVE.append(harness)
    try:
        harness.daemon.start()
        yield harness
    finally:
        _LIVE.remove(harness)
        harness.close()


@pytest.fixture
def daemon_args() -> tuple[str, ...]:
    """Extra command-line flags for the ``harness`` daemon (parametrize this name to set them)."""
    return ()


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A wall clock the test moves: every daemon and worker the test starts reads it (e2e/faked_clock.py).
    Ask for it before ``harness`` (from ``daemon_args``) so that the harness's daemon reads it too."""
    clock = Clock(tmp_path / "clock-offset")
    for name, value in environment(clock).items():
        monkeypatch.setenv(name, value)
    return clock


@pytest.fixture
def harness(tmp_path: Path, daemon_args: tuple[str, ...]) -> Iterator[Harness]:
    """A daemon of this test's own; no workers yet."""
    yield from _running(tmp_path / "cluster", daemon_args)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The module's daemon with the module's ``WORKERS`` connected."""
    for harness in _running(tmp_path_factory.mktemp("cluster")):
        for spec in getattr(request.module, "WORKERS", ()):
            harness.start_worker(spec)
        yield harness


@pytest.fixture
async def client(cluster: Harness) -> AsyncIterator[durably.Client]:
    assert cluster.daemon.alive(), f"the module's daemon died:\n{cluster.daemon.report()}"
    async with open_client(cluster.address) as client:
        yield client


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed and report.when in ("setup", "call"):
        for harness in _LIVE:
            for title, text in harness.report():
                report.sections.append((f"durably {title}", text))
    return report
