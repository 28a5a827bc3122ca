"""Stores: where runs, steps and the journal live. Only this package speaks SQL."""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from .base import Store, Transaction
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "Transaction", "is_postgres", "store_at", "store_for"]


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def store_for(settings: Settings) -> Store:
    """The store that ``settings.db`` names (not yet opened)."""
    return store_at(settings.db, sqlite_synchronous=settings.sqlite_synchronous)


def store_at(location: str, *, sqlite_synchronous: str = "full") -> Store:
    """A ``postgresql://`` URL names the shared PostgreSQL store; anything else a SQLite file."""
    if is_postgres(location):
        from .postgres import PostgresStore  # asyncpg is imported only by those who use it

        return PostgresStore(location)
    if location.startswith("sqlite:///"):
        location = location.removeprefix("sqlite:///")
    if location == ":memory:" or location.startswith("file::memory:"):
        raise ConfigError(
            "an in-memory SQLite database cannot be the store: every process and connection must share "
            "it; give a file path"
        )
    return SQLiteStore(location, synchronous=sqlite_synchronous)
