"""Stores: where runs, steps and the journal live. Only this package speaks SQL."""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from .base import Store, Transaction
from .common import shown_location
from .sqlite import SQLiteStore

__all__ = [
    "SQLiteStore",
    "Store",
    "Transaction",
    "absolute_location",
    "is_postgres",
    "shown_location",
    "sqlite_path",
    "store_at",
    "store_for",
]


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def sqlite_path(location: str) -> Path | None:
    """The SQLite file a location names (None: a PostgreSQL URL)."""
    return None if is_postgres(location) else Path(location.removeprefix("sqlite:///"))


def absolute_location(location: str) -> str:
    """The location as another directory's process must be given it: a SQLite path made absolute."""
    path = sqlite_path(location)
    return location if path is None else str(path.absolute())


def store_for(settings: Settings) -> Store:
    """The store that ``settings.db`` names (not yet opened)."""
    return store_at(settings.db, sqlite_synchronous=settings.sqlite_synchronous)


def store_at(location: str, *, sqlite_synchronous: str = "full") -> Store:
    """A ``postgresql://`` URL names the shared PostgreSQL store; anything else a SQLite file."""
    if is_postgres(location):
        from .postgres import PostgresStore  # asyncpg is imported only by those who use it

        return PostgresStore(location)
    location = str(sqlite_path(location))
    if location == ":memory:" or location.startswith("file::memory:"):
        raise ConfigError(
            "an in-memory SQLite database cannot be the store: every process and connection must share "
            "it; give a file path"
        )
    return SQLiteStore(location, synchronous=sqlite_synchronous)
