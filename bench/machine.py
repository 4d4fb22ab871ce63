"""What the numbers were measured on: the machine, the software, and the source tree."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import ROOT


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    return done.stdout.strip()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _filesystem(path: Path) -> str:
    try:
        done = subprocess.run(["df", "-PT", str(path)], capture_output=True, text=True, timeout=10, check=False)
        fields = done.stdout.splitlines()[-1].split()
        return f"{fields[0]} ({fields[1]}) mounted on {fields[-1]}"
    except (OSError, IndexError):
        return "unknown"


def _imported_from() -> dict[str, str]:
    """Where the engine under test comes from (PYTHONPATH may point at another checkout)."""
    import durably
    import durably_server

    return {"durably": str(Path(durably.__file__).parent), "durably_server": str(Path(durably_server.__file__).parent)}


def describe(workdir: Path) -> dict[str, Any]:
    changed = _git("status", "--porcelain", "--", "sdk", "service", "core_rs", "proto")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_bytes": _ram_bytes(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "sqlite": sqlite3.sqlite_version,
        "workdir": str(workdir),
        "workdir_filesystem": _filesystem(workdir),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_uncommitted_engine_files": changed.splitlines() if changed else [],
        "engine_imported_from": _imported_from(),
    }


def summary(machine: dict[str, Any]) -> str:
    ram = machine["ram_bytes"]
    ram_text = f"{ram / 2**30:.1f} GiB" if ram else "unknown RAM"
    tree = machine["git_commit"] + (" + uncommitted engine changes" if machine["git_uncommitted_engine_files"] else "")
    sources = machine["engine_imported_from"]
    if not sources["durably_server"].startswith(str(ROOT)):
        tree = f"engine from {Path(sources['durably_server']).parent} (not this tree)"
    return (
        f"{machine['nproc']} cores ({machine['cpu_model']}), {ram_text}, Linux {machine['kernel']}, "
        f"Python {machine['python']}, grpcio {machine['grpcio']}, SQLite {machine['sqlite']}; "
        f"databases on {machine['workdir_filesystem']}; tree {tree}"
    )
