"""Assembling an engine from settings: the one place that opens and closes a store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .config import Settings
from .engine import Engine
from .store import store_for


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    store = store_for(settings)
    await store.open()
    try:
        yield Engine(
            store, workspace=settings.workspace, max_payload_bytes=settings.max_payload_bytes, agents=settings.agents
        )
    finally:
        await store.close()
