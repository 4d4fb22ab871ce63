"""The committed Python stubs in sdk/durably/protocol/v1/ are exactly what proto/ generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "sdk" / "durably" / "protocol" / "v1"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_generated_stubs_match_committed(tmp_path: Path) -> None:
    # protoc looks for protoc-gen-mypy on PATH: the venv's bin must come first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, f"proto/generate.py failed:\n{done.stdout}\n{done.stderr}"

    generated = _files(tmp_path / "durably" / "protocol" / "v1")
    committed = _files(COMMITTED)
    assert "api_pb2.py" in generated and "worker_pb2_grpc.py" in generated, sorted(generated)
    assert sorted(committed) == sorted(generated), (
        "sdk/durably/protocol/v1/ has missing or stale files; run `make proto`"
    )
    stale = [name for name, data in generated.items() if committed[name] != data]
    assert not stale, f"stubs out of date with proto/: {stale}; run `make proto` and commit the result"
    assert (ROOT / "sdk" / "durably" / "protocol" / "__init__.py").is_file()
