"""The daemon process: ready line, graceful SIGTERM, one daemon per db file."""

from __future__ import annotations

import durably

from .harness import CRASH, Harness, describe, find_run, open_client


async def test_sigterm_exits_zero_and_the_db_reopens(harness: Harness) -> None:
    harness.start_worker(CRASH)
    async with open_client(harness.address) as client:
        [event_id] = await client.send(durably.Event(name="demo/echo", data={"kept": True}))
        run = await find_run(client, event_id)
        assert (await client.wait_for_run(run.id, timeout=30)).status == "completed"

    assert harness.daemon.stop() == 0, harness.daemon.report()
    assert harness.daemon.db.is_file()

    harness.daemon.start()  # the lock was released; the state is still there
    async with open_client(harness.address) as client:
        again = await client.get_run(run.id)
        assert again.status == "completed" and again.output == {"echo": {"kept": True}}, describe(again)


async def test_second_daemon_on_the_same_db_refuses_to_start(harness: Harness) -> None:
    second = harness.add_daemon(db=harness.daemon.db, name="second-daemon")
    second.spawn()
    code = second.wait_exit(timeout=30)
    stderr = second.stderr()
    assert code == 1, f"second daemon exited with {code}\n{stderr}"
    assert second.ready_line() is None, second.stdout()
    assert "in use" in stderr, stderr
    assert str(harness.daemon.db) in stderr or str(harness.daemon.db.resolve()) in stderr, stderr

    # The first daemon is unharmed.
    assert harness.daemon.alive(), harness.daemon.report()
    async with open_client(harness.address) as client:
        assert await client.list_runs() == []
