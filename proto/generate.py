"""Regenerate the Python stubs of the protocol into the SDK.

The stubs are committed so that installing the SDK needs no protoc; a test runs this
script into a temporary folder and compares, so they cannot drift from `proto/`.

Usage: python proto/generate.py [OUT_DIR]   (default: sdk/)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "sdk"
PACKAGE = Path("durably/protocol/v1")


def generate(out: Path) -> list[Path]:
    """Write the pb2, grpc and .pyi modules for every .proto under PACKAGE into `out`."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    target = out / PACKAGE
    if target.exists():
        for old in target.glob("*_pb2*"):
            old.unlink()
    target.mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *protos,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for package in (out / "durably/protocol", target):
        (package / "__init__.py").touch()
    return sorted(target.glob("*"))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    if not shutil.which("protoc-gen-mypy") and not Path(sys.executable).with_name("protoc-gen-mypy").exists():
        raise SystemExit("protoc-gen-mypy not found: install the dev extras (mypy-protobuf)")
    for path in generate(out):
        print(path.relative_to(out))


if __name__ == "__main__":
    main()
