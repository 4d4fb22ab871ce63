"""Which functions exist and which events trigger them.

Kept in memory (loaded from the store at start-up, updated when a worker registers) so
that matching an event to its functions is one dict lookup, not a table scan.
"""

from __future__ import annotations

from collections import defaultdict

from durably_server.model import FunctionSpec


class Registry:
    def __init__(self, specs: list[FunctionSpec]) -> None:
        self._specs: dict[tuple[str, str], FunctionSpec] = {}
        self._by_event: dict[str, dict[tuple[str, str], FunctionSpec]] = defaultdict(dict)
        for spec in specs:
            self.put(spec)

    def put(self, spec: FunctionSpec) -> None:
        """Add or replace a function: the latest registration of a function id wins."""
        old = self._specs.get(spec.key)
        if old is not None:
            for name in old.event_triggers:
                self._by_event[name].pop(spec.key, None)
        self._specs[spec.key] = spec
        for name in spec.event_triggers:
            self._by_event[name][spec.key] = spec

    def get(self, key: tuple[str, str]) -> FunctionSpec | None:
        return self._specs.get(key)

    def triggered_by(self, event_name: str) -> list[FunctionSpec]:
        found = self._by_event.get(event_name)
        return list(found.values()) if found else []

    def all(self, app_id: str = "") -> list[FunctionSpec]:
        return [s for s in self._specs.values() if not app_id or s.app_id == app_id]
