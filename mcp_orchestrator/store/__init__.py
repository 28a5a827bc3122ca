"""Stores: where runs, steps and the journal live. Only this package speaks SQL."""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from .base import Store, Transaction
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "Transaction", "store_for"]


def store_for(settings: Settings) -> Store:
    """The store that ``settings.db`` names (not yet opened)."""
    location = settings.db
    if location.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"{location.split('@')[-1]!r}: the PostgreSQL store is not available in this version; "
            "use a SQLite file path"
        )
    if location.startswith("sqlite:///"):
        location = location.removeprefix("sqlite:///")
    if location == ":memory:" or location.startswith("file::memory:"):
        raise ConfigError(
            "an in-memory SQLite database cannot be the store: every process and connection must share "
            "it; give a file path"
        )
    return SQLiteStore(location, synchronous=settings.sqlite_synchronous)
