"""The SQLite store: one writer thread that group-commits, a small pool of readers."""

from durably_server.store.database import Store, StoreLockedError, StoreOpenError

__all__ = ["Store", "StoreLockedError", "StoreOpenError"]
