"""The embedded store: one SQLite file in WAL mode, shared by every process that opens it.

Durability: ``synchronous=FULL`` by default, so an acknowledged write survives power loss.

Concurrency: each process has one writer connection and one reader connection (aiosqlite, one
thread each). Writes from many coroutines are queued and committed together (group commit): the
writer's thread takes every queued function, runs them all in one ``BEGIN IMMEDIATE`` transaction,
commits once (one fsync for the batch) and only then answers each caller, then takes what was
queued meanwhile; a function that raises has its own writes undone and leaves the others' standing.
Other processes serialise on the file's write lock; ``busy_timeout`` and a retry with jitter make a
lock held elsewhere a wait, never a "database is locked" error for the caller (up to ``lock_wait_s``).

The files under a running server: SQLite writes on through its open file descriptors when the
database file, its ``-wal`` or its ``-shm`` is deleted or renamed over (a backup restored with
``mv``), so acknowledged writes would land in a file nobody else can see and that is gone when the
process exits, or a stale log would be applied to the file that took the path. So the store
remembers each file's (st_dev, st_ino) when it opens them and compares the paths' before every
commit (three ``stat`` calls, a few microseconds, ~1-2% of a durable checkpoint, once per batch),
before a read when the last look is older than ``_READ_LOOK_S``, and every ``_WATCH_S`` while idle.
Once a file is found gone, the store refuses every read and write with ``StoreFileGone`` (nothing it
would read is what other processes see any more), wakes its waiters so blocked calls meet that
error, and, when the database file itself went, empties its log into the file it holds open so the
log left at the path cannot be applied to whatever file takes it. PostgreSQL has no such files and
is unaffected.

The statements are the shared ones of ``store.sql``; this module holds how SQLite spells them
(``SQLITE``) and runs them (``SQLiteTransaction``, on the connection's own thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiosqlite

from ..errors import StoreBusy, StoreError, StoreFileGone
from .common import Changes, Patience
from .sql import Dialect, Row, SQLTransaction, Statements
from .sqlite_schema import migrate

T = TypeVar("T")

_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_MAX_BATCH = 128
# How often a waiting process looks for other processes' commits, by how long nothing changed:
# (quiet for at least this many seconds, look every this many seconds).
_POLL_LADDER = ((5.0, 0.05), (0.5, 0.025), (0.0, 0.005))
_OWN_MAX = 4096  # our commits the poller has yet to see, at most (beyond: others' are assumed too)
# Whether the store's files are still at their paths is looked at before every commit, before a read
# when the last look is older than this, and by a watch task this often.
_READ_LOOK_S = 0.05
_WATCH_S = 0.5
_FILES = (("", "store file"), ("-wal", "store's write-ahead log"), ("-shm", "store's shared-memory index"))

log = logging.getLogger(__name__)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


def _ts(value: datetime | None) -> str | None:
    """Times are stored as ISO 8601 text in UTC, to the microsecond: they sort as they compare."""
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


SQLITE = Dialect(
    numbered=False,
    arrays=False,
    json_object="json_object",
    embed_json="json({})",
    as_text="{}",
    empty_object="'{}'",
    is_true="{} = 1",
    step_order="rowid",
    returning_seq="",
    row_locks=False,  # one writer at a time: what a transaction read stays as it read it
    index_hints=True,
    detail_number="json_extract(detail, '$.{}')",
    reuses_numbers=True,
    time=_ts,
    read_time=datetime.fromisoformat,
    flag=int,
)
_SQL = Statements(SQLITE, writable=True)


class SQLiteTransaction(SQLTransaction):
    """The shared statements on a sqlite3 connection inside a transaction, on its own thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(_SQL)
        self._conn = conn

    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, args).rowcount

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        return self._conn.execute(sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, args).fetchall()

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, rows)

    def _insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(self._conn.execute(sql, args).lastrowid or 0)

    def lock(self, *names: str) -> None:
        """Nothing to take: the writer is single, and other processes wait for the file's write lock."""


class SQLiteStore:
    """See the module docstring. ``location`` is the database file's path."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        lock_wait_s: float = 60.0,
    ) -> None:
        self.location = str(path)
        self._synchronous = synchronous.upper()
        self._lock_wait_s = lock_wait_s
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._writing = False  # open for writes
        self._pending: deque[_Write] = deque()  # writes queued for the writer's thread
        self._pending_lock = threading.Lock()
        self._draining = False  # the writer's thread has been asked to take them (under the lock)
        self._changes = Changes()  # the commits seen: ours, and others' the poller noticed
        self._watchers = 0
        self._shm: int | None = None  # the WAL index file, read to see commits (see _version)
        self._seen: bytes | int | None = None  # the version waiters last saw
        self._own: set[int] = set()  # the transaction counts of our commits the poller has yet to see
        self._poller: asyncio.Task[None] | None = None
        self._opened: list[_Opened] = []  # the files, as they were when the store opened them
        self._looked_at = 0.0  # time.monotonic() of the last look at them
        self._gone: StoreFileGone | None = None
        self._watch: asyncio.Task[None] | None = None
        self._after_gone_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        try:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of the store {self.location}: {exc.strerror}") from exc
        created = not Path(self.location).exists()
        try:
            self._writer = await aiosqlite.connect(self.location, isolation_level=None)
            if created:  # runs hold agents' inputs and outputs: the owner's alone (SQLite gives -wal the same)
                os.chmod(self.location, 0o600)
            self._reader = await aiosqlite.connect(self.location, isolation_level=None)
            await _on_thread(self._writer, self._configure_writer)
            await _on_thread(self._reader, self._configure_reader)
        except BaseException as exc:
            await self.close()  # a connection left open keeps its thread, and the process, alive
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the store {self.location}: {exc}") from exc
            raise
        with contextlib.suppress(OSError):
            self._shm = os.open(f"{self.location}-shm", os.O_RDONLY)
        self._seen = await self._version()
        self._opened = [
            _Opened(path, what, found) for path, what in _paths(self.location) if (found := _identity(path))
        ]
        self._looked_at = time.monotonic()
        self._writing = True
        self._watch = asyncio.get_running_loop().create_task(self._watch_files(), name="sqlite-file-watch")

    async def close(self) -> None:
        """Finish the writes already queued, then close both connections."""
        for task in (self._poller, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._watch = None
        if self._writing:
            self._writing = False
            # The writer's thread runs what it is given in order: the writes queued so far (a drain asked
            # for before this) are committed and answered before this returns.
            assert self._writer is not None
            await _on_thread(self._writer, lambda conn: None)
        if self._after_gone_task is not None:
            await self._after_gone_task
        for conn in (self._writer, self._reader):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = None
        if self._shm is not None:  # after the connections: closing any descriptor of the file drops
            os.close(self._shm)  # the process's locks on it, SQLite's included
            self._shm = None

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def write(self, fn: Callable[[SQLiteTransaction], T], *, wake: bool = True) -> T:
        # A batch wakes waiters of consequences if any of its writes may (``wake`` or ``tx.wake()``);
        # other processes see every commit in the WAL index and cannot tell quiet ones: theirs wake.
        if not self._writing:
            raise StoreError(f"the store {self.location} is not open")
        self._refuse_if_gone(max_age=float("inf"))  # the writer looks again before it commits
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        # Straight to the writer's thread, with no task of our own between: a write that finds the thread
        # idle wakes it; others join the queue it drains. Writes made in the same turn of the event loop
        # still share a commit: the thread needs the interpreter lock to start, which it gets when the
        # loop next waits.
        with self._pending_lock:
            self._pending.append((fn, future, wake))
            idle, self._draining = not self._draining, True
        if idle:
            assert self._writer is not None
            _post(self._writer, self._drain)
        return await future

    async def read(self, fn: Callable[[SQLiteTransaction], T]) -> T:
        if self._reader is None:
            raise StoreError(f"the store {self.location} is not open")
        self._refuse_if_gone(max_age=_READ_LOOK_S)
        try:
            return await _on_thread(self._reader, lambda conn: self._retry_busy(conn, "BEGIN", fn))
        except sqlite3.Error as exc:
            raise _translate(exc, self.location) from exc

    sees_quiet_commits = True

    @property
    def generation(self) -> int:
        return self._changes.generation

    @property
    def wake_generation(self) -> int:
        return self._changes.wakes

    async def wait_for_change(self, timeout: float, since: int | None = None, *, waking: bool = False) -> None:
        """Return after a commit to the store by anyone (this process or another; with ``waking``, one
        that may end a wait or start or stop work), or after ``timeout``; at once if the count has moved
        past ``since``.

        Commits in this process wake waiters at once; another process's commits are seen by polling
        the WAL index's header every few milliseconds, and only while somebody waits. The header counts
        transactions, so the poller tells this process's own commits (already seen, quiet ones
        included) from others' (which may be anything: they wake).
        """
        if self._changes.moved(since, waking):
            return
        self._watchers += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_foreign_commits(), name="sqlite-poller")
        try:
            await self._changes.wait(timeout, waking)
        finally:
            self._watchers -= 1

    async def _version(self) -> bytes | int:
        """Changes with every commit by any process. The WAL index (the -shm file) starts with a
        header whose change counter each commit bumps (SQLite's documented WAL format): reading its
        48 bytes in the event loop costs a microsecond, where asking SQLite for data_version costs
        a hop to the reader's thread. The pragma remains the way when there is no -shm file."""
        if self._shm is not None:
            return os.pread(self._shm, 48, 0)
        assert self._reader is not None
        return await _on_thread(self._reader, _data_version)

    async def _poll_foreign_commits(self) -> None:
        # It starts from the version the previous poller saw last, so a commit made while no poller
        # ran (between a waiter's check and its wait) wakes the waiter at once instead of being missed.
        changed_at = time.monotonic()
        while self._reader is not None:
            current = await self._version()
            if current != self._seen:
                previous, self._seen = self._seen, current
                if self._by_others(previous, current):  # another process is busy: look often for a while
                    changed_at = time.monotonic()
                    self._changes.seen()
            if self._watchers == 0:
                return
            # Each wake-up of the loop costs CPU even with nothing to read: after a quiet spell,
            # look less often (a first change after it is seen a few milliseconds later).
            quiet_for = time.monotonic() - changed_at
            await asyncio.sleep(next(pause for after, pause in _POLL_LADDER if quiet_for >= after))

    def _by_others(self, previous: bytes | int | None, current: bytes | int) -> bool:
        """Whether a change of the version came from another process's commits, not only from ours (seen
        when committed). The WAL index header counts transactions (``iChange``, one a commit that wrote);
        our commits' counts are in ``_own``. A header that changed with no new transaction is a
        checkpoint of the log: nothing to see. Without the header (``data_version``) every change counts."""
        if not isinstance(previous, bytes) or not isinstance(current, bytes):
            return True
        before, now = _transactions(previous), _transactions(current)
        new = (now - before) & 0xFFFFFFFF
        if new > _OWN_MAX:
            self._own.clear()
            return True
        counts = [(before + i) & 0xFFFFFFFF for i in range(1, new + 1)]
        others = [count for count in counts if count not in self._own]
        # What is left is ours and still to come (claimed by a commit under way), or stale (a commit that
        # failed after its claim): only counts ahead of the header's are kept.
        self._own = {count for count in list(self._own) if 0 < (count - now) & 0xFFFFFFFF < 1 << 31}
        return bool(others)

    def _transaction_count(self) -> int | None:
        """The WAL index's transaction count (any thread), None without the index."""
        return None if self._shm is None else _transactions(os.pread(self._shm, 48, 0))

    # The files under a running server (see the module docstring).

    def _look(self) -> StoreFileGone | None:
        """Whether a file this store opened is no longer at its path (any thread; once gone, gone)."""
        if self._gone is None:
            self._looked_at = time.monotonic()
            for opened in self._opened:
                found = _identity(opened.path)
                if found != opened.identity:
                    self._gone = _gone_error(opened, found)
                    break
        return self._gone

    def _refusal(self) -> StoreFileGone:
        # A new exception each time: raising one instance again and again would grow its traceback.
        assert self._gone is not None
        return StoreFileGone(self._gone.message, **self._gone.fields)

    def _refuse_if_gone(self, max_age: float) -> None:
        """Raise ``StoreFileGone`` if a file is known gone, or found gone by a look (taken when the
        last one is older than ``max_age`` seconds)."""
        if self._gone is None and time.monotonic() - self._looked_at >= max_age:
            self._look()
        if self._gone is not None:
            self._notice_gone()
            raise self._refusal()

    def _refuse_commit_if_gone(self) -> None:
        # On the writer's thread, just before COMMIT: no write is acknowledged into a file that went.
        if self._look() is not None:
            raise self._refusal()

    def _notice_gone(self) -> None:
        """On the event loop, once: report the loss and do what follows from it."""
        if self._gone is not None and self._after_gone_task is None:
            self._after_gone_task = asyncio.get_running_loop().create_task(self._after_gone(), name="sqlite-gone")

    async def _after_gone(self) -> None:
        assert self._gone is not None
        log.error("%s", self._gone.message)
        self._changes.seen()  # blocked waits look again, and meet the refusal
        # The database file went but its log is still at the path: empty the log into the file this
        # process holds, so it is not applied to the file that takes the path (SQLite would apply it).
        database, *logs = self._opened
        if (
            self._gone.fields["path"] == database.path
            and self._writer is not None
            and logs
            and all(_identity(opened.path) == opened.identity for opened in logs)
        ):
            with contextlib.suppress(ValueError):  # the connection closed meanwhile: nothing to retire
                await _on_thread(self._writer, _retire_log)

    async def _watch_files(self) -> None:
        """Look at the files every ``_WATCH_S`` even when nobody reads or writes, so a server left
        idle reports the loss (and retires its log) soon after it happens."""
        while True:
            await asyncio.sleep(_WATCH_S)
            if time.monotonic() - self._looked_at >= _WATCH_S and self._look() is not None:
                self._notice_gone()
                return

    # Everything below runs on a connection's own thread, except the write loop.

    def _configure(self, conn: sqlite3.Connection) -> None:
        # busy_timeout lets SQLite itself wait for another process's lock; _retry_busy adds jitter
        # and a longer overall bound on top, for bursts where the built-in handler gives up.
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA foreign_keys = ON")

    def _configure_writer(self, conn: sqlite3.Connection) -> None:
        self._configure(conn)
        patience = Patience(self._lock_wait_s, (0.005, 0.05))
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or patience.spent():
                    raise
                time.sleep(patience.pause())
        if mode.lower() != "wal":
            raise StoreError(f"the store {self.location} cannot use WAL mode (got {mode!r}); use a local disk")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        self._retry_busy(conn, "BEGIN IMMEDIATE", lambda tx: migrate(conn, self.location))

    def _configure_reader(self, conn: sqlite3.Connection) -> None:
        self._configure(conn)
        conn.execute("PRAGMA query_only = ON")

    def _retry_busy(
        self,
        conn: sqlite3.Connection,
        begin: str,
        fn: Callable[[SQLiteTransaction], T],
        before_commit: Callable[[], None] | None = None,
    ) -> T:
        patience = Patience(self._lock_wait_s, (0.001, 0.02))
        while True:
            try:
                conn.execute(begin)
                try:
                    result = fn(SQLiteTransaction(conn))
                    if before_commit is not None:
                        before_commit()
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or patience.spent():
                    raise
                time.sleep(patience.pause())

    def _run_batch(
        self, conn: sqlite3.Connection, fns: list[Callable[[SQLiteTransaction], Any]]
    ) -> tuple[list[tuple[bool, Any]], bool]:
        """Each write's outcome, and whether one of them called ``tx.wake()``. Just before COMMIT, the
        transaction count the commit will have goes to ``_own``, so the poller knows it as ours."""
        # Optimistic: the whole batch in one transaction with no savepoints. Writes rarely fail
        # (the engine checks before it writes), so the two extra statements per write a savepoint
        # costs are paid only when one does: then the batch is rolled back and run again with each
        # write in its own savepoint, so one caller's error leaves the others' writes standing.
        marks: dict[str, Any] = {}

        def check() -> None:
            self._refuse_commit_if_gone()
            # The write lock is held: no other commit comes between this count and ours. A commit that
            # wrote rows wrote pages and counts one transaction; one that wrote none counts none (and the
            # next count is not ours to claim).
            before = self._transaction_count()
            if before is not None and marks["wrote"] and len(self._own) < _OWN_MAX:
                self._own.add((before + 1) & 0xFFFFFFFF)

        def all_at_once(tx: SQLiteTransaction) -> list[tuple[bool, Any]]:
            changes = conn.total_changes
            outcomes = [(True, fn(tx)) for fn in fns]
            marks.update(wrote=conn.total_changes != changes, woken=tx.woken)
            return outcomes

        def isolated(tx: SQLiteTransaction) -> list[tuple[bool, Any]]:
            outcomes: list[tuple[bool, Any]] = []
            wrote = False
            for fn in fns:
                conn.execute("SAVEPOINT one_write")
                changes = conn.total_changes
                try:
                    outcomes.append((True, fn(tx)))
                    wrote = wrote or conn.total_changes != changes  # rows of a write left standing
                except Exception as exc:
                    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                        raise  # _retry_busy runs the whole batch again
                    conn.execute("ROLLBACK TO one_write")
                    outcomes.append((False, _translate(exc, self.location)))
                conn.execute("RELEASE one_write")
            marks.update(wrote=wrote, woken=tx.woken)
            return outcomes

        try:
            outcomes = self._retry_busy(conn, "BEGIN IMMEDIATE", all_at_once, check)
        except Exception as exc:
            if len(fns) == 1:
                return [(False, _translate(exc, self.location))], False
            if isinstance(exc, StoreFileGone) or (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
                raise
            outcomes = self._retry_busy(conn, "BEGIN IMMEDIATE", isolated, check)
        return outcomes, marks["woken"]

    def _drain(self) -> None:
        """On the writer's thread: commit the queued writes, a batch at a time, answering each batch's
        callers on their event loop once it is committed, until none is left."""
        batch: list[_Write] = []
        try:
            assert self._writer is not None
            conn = self._writer._conn
            while True:
                with self._pending_lock:
                    if not self._pending:
                        self._draining = False
                        return
                    taken = [self._pending.popleft() for _ in range(min(len(self._pending), _MAX_BATCH))]
                batch = [item for item in taken if not item[1].done()]  # a caller cancelled before it began
                if batch:
                    answers = self._commit(conn, batch)
                    batch[0][1].get_loop().call_soon_threadsafe(self._answer, batch, *answers)
                    batch = []
        except BaseException as exc:  # nothing else answers these callers: fail them, let later writes start
            with self._pending_lock:
                batch += self._pending
                self._pending.clear()
                self._draining = False
            if batch:
                with contextlib.suppress(RuntimeError):  # their event loop has closed: nobody waits
                    error = [(False, _translate(exc, self.location))] * len(batch)
                    batch[0][1].get_loop().call_soon_threadsafe(self._answer, batch, error, True)
            raise

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write]) -> tuple[list[tuple[bool, Any]], bool]:
        """On the writer's thread: each write's outcome, and whether the commit wakes waiters."""
        woken = any(wake for _, _, wake in batch)
        try:
            outcomes, called = self._run_batch(conn, [fn for fn, _, _ in batch])
            return outcomes, woken or called
        except StoreFileGone:
            return [(False, self._refusal()) for _ in batch], woken
        except Exception as exc:
            return [(False, _translate(exc, self.location))] * len(batch), woken

    def _answer(self, batch: list[_Write], outcomes: list[tuple[bool, Any]], woken: bool) -> None:
        """On the event loop: a batch is committed (or failed), its callers are answered."""
        if self._gone is not None:
            self._notice_gone()
        for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # the caller gave up while its write was being committed
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._changes.seen(wakes=woken)


# A queued write: its function, its caller's future, whether it may wake waiters (see ``write``).
_Write = tuple[Callable[[SQLiteTransaction], Any], "asyncio.Future[Any]", bool]


def _transactions(header: bytes) -> int:
    """The transaction count of a WAL index header (``iChange``: SQLite's documented WAL format, a native
    32-bit integer at offset 8), which each commit that wrote adds one to."""
    return int.from_bytes(header[8:12], sys.byteorder)


def _paths(location: str) -> list[tuple[str, str]]:
    """The store's files while it is open, each with what a message calls it. SQLite puts the log
    and the index beside the file a symbolic link names; the database is looked for at the link."""
    database, real = os.path.abspath(location), os.path.realpath(location)
    return [(real + suffix if suffix else database, what) for suffix, what in _FILES]


def _identity(path: str) -> tuple[int, int] | None:
    """The (st_dev, st_ino) of the file at ``path``, None if nothing can be found there. A stat, never
    an open: closing a descriptor of the database would drop SQLite's locks on it."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class _Opened(NamedTuple):
    path: str
    what: str  # what a message calls it
    identity: tuple[int, int]  # (st_dev, st_ino)


def _gone_error(opened: _Opened, found: tuple[int, int] | None) -> StoreFileGone:
    now = "nothing is there now" if found is None else f"inode {found[1]} is there now"
    return StoreFileGone(
        f"the {opened.what} {opened.path} was removed or replaced while this server had it open "
        f"(inode {opened.identity[1]} is no longer at that path: {now}); nothing more is written to it or "
        "read from it: restart the server against the file you mean to use, and stop every server "
        "before you move, delete or restore a store's files",
        path=opened.path,
        inode=opened.identity[1],
    )


def _retire_log(conn: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the database file this connection holds and empty it."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _post(db: aiosqlite.Connection, fn: Callable[[], object]) -> None:
    """Run ``fn`` on the connection's thread, after what was handed to it before, with nobody awaiting
    it: ``fn`` answers whoever waits for it itself. (``_tx``, like ``_execute`` below, is an aiosqlite
    internal.)"""
    db._tx.put_nowait((None, fn))


async def _on_thread(db: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    # aiosqlite runs each call on the connection's own thread; handing it a whole transaction
    # makes that one hop instead of one per statement, which is most of the cost of a durable
    # checkpoint. _execute and _conn are aiosqlite internals, pinned by the dependency's range
    # and covered by the store tests.
    return await db._execute(fn, db._conn)


def _translate(exc: BaseException, location: str) -> BaseException:
    """sqlite3 errors become StoreError; everything else passes through unchanged."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
        error: StoreError = StoreBusy(
            f"the store {location} stayed locked by another process for too long; the write was not made, try it again",
        )
    else:
        error = StoreError(f"the store {location} failed: {exc}")
    error.__cause__ = exc
    return error
