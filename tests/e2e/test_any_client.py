"""Any gRPC client works: stubs generated straight from proto/, no SDK involved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .harness import ROOT, STEPS, Harness

WORKERS = [STEPS]

# Runs in a fresh interpreter whose `durably` package is the freshly generated one (the tmp folder
# comes first on PYTHONPATH and holds a regular package, so the SDK cannot shadow it).
RAW_CLIENT = r"""
import json, sys
import grpc
import durably
from durably.protocol.v1 import api_pb2, api_pb2_grpc, common_pb2

address, generated = sys.argv[1], sys.argv[2]
for module in (durably, api_pb2, api_pb2_grpc, common_pb2):
    assert module.__file__.startswith(generated), f"{module.__name__} imported from {module.__file__}"

with grpc.insecure_channel(address) as channel:
    api = api_pb2_grpc.ApiServiceStub(channel)
    event = common_pb2.Event(name="demo/run", data_json=json.dumps({"from": "raw stubs"}).encode())
    sent = api.SendEvents(api_pb2.SendEventsRequest(events=[event]), timeout=10)
    [run_id] = sent.run_ids
    waited = api.WaitForRun(api_pb2.WaitForRunRequest(run_id=run_id, timeout_ms=30000), timeout=40).run
    got = api.GetRun(api_pb2.GetRunRequest(run_id=run_id), timeout=10).run
    listed = api.ListRuns(api_pb2.ListRunsRequest(event_id=sent.ids[0]), timeout=10).runs
print(json.dumps({
    "ids": list(sent.ids),
    "run_ids": list(sent.run_ids),
    "waited_status": api_pb2.RunStatus.Name(waited.status),
    "status": api_pb2.RunStatus.Name(got.status),
    "event_id": got.event_id,
    "function_id": got.function_id,
    "output": json.loads(got.output_json),
    "steps": [[s.name, api_pb2.StepStatus.Name(s.status), json.loads(s.output_json)] for s in got.steps],
    "listed": [r.id for r in listed],
}))
"""


def _generate_stubs(out: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for package in ("durably", "durably/protocol", "durably/protocol/v1"):
        (out / package / "__init__.py").touch()


def test_plain_grpc_stubs_send_an_event_and_read_the_run(cluster: Harness, tmp_path: Path) -> None:
    generated = tmp_path / "generated"
    generated.mkdir()
    _generate_stubs(generated)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(generated)
    done = subprocess.run(
        [sys.executable, "-s", "-c", RAW_CLIENT, cluster.address, str(generated)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
    )
    assert done.returncode == 0, f"raw gRPC client failed:\n{done.stderr}"
    result = json.loads(done.stdout)

    [event_id] = result["ids"]
    assert event_id and len(result["run_ids"]) == 1
    assert result["waited_status"] == "RUN_STATUS_COMPLETED"
    assert result["status"] == "RUN_STATUS_COMPLETED"
    assert result["event_id"] == event_id and result["function_id"] == "three-steps"
    assert result["output"] == {"result1": {"value": "A"}, "result2": {"value": "B"}, "result3": {"value": "C"}}
    assert result["steps"] == [
        ["step-one", "STEP_STATUS_COMPLETED", {"value": "A"}],
        ["step-two", "STEP_STATUS_COMPLETED", {"value": "B"}],
        ["step-three", "STEP_STATUS_COMPLETED", {"value": "C"}],
    ]
    assert result["listed"] == result["run_ids"]
    [handler, *_] = cluster.observations("handler", run=result["run_ids"][0])
    assert handler["event"]["data"] == {"from": "raw stubs"}
