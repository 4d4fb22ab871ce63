"""Unit tests of the SDK: no daemon. Makes ``import durably`` work from a checkout without an install."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("durably") is None:  # pragma: no cover - depends on how the venv was set up
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk"))
