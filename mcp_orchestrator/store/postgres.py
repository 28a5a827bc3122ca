"""The shared store: one PostgreSQL database for several orchestrator nodes (asyncpg).

Transactions: a transaction function reads, decides and writes as if it were alone, exactly as
under SQLite's single writer; here many run at once (on several nodes), so a write transaction
locks what it reads before deciding on it. Rows read by key are locked as they are read (``FOR NO
KEY UPDATE``: a run, a sub-agent, a schedule), so two transactions on one run take turns while
transactions on different runs proceed in parallel. What is not a row yet is guarded by an advisory
lock on its name, taken by the caller (``Transaction.lock``): an event name (a wait registered and
an event sent at once see each other), a lease, a new schedule, the sub-agent limits (claims and
reaps take turns store-wide). Rows a node takes work from are read ``FOR UPDATE SKIP LOCKED``
(queued sub-agents, due waits, overdue runs, due schedules), so nodes never queue behind each
other's rows. Writes run ``READ COMMITTED`` (every
statement sees what committed before it, including the work of a lock just waited for); a deadlock
or a key inserted by someone else in the meantime runs the function again on a fresh transaction,
as the ``Transaction`` contract allows. Reads run ``REPEATABLE READ READ ONLY``: one consistent
snapshot.

The transaction function is synchronous (see ``store.base``) and asyncpg is not: the function runs
in a greenlet of its own on the event loop's thread, and each statement switches back to the loop
for asyncpg to run it (the bridge SQLAlchemy's asyncio support uses). A switch costs about a
microsecond, where handing each statement from a worker thread to the loop and back costs two
thread wake-ups.

Wake-ups: every write transaction that may end a wait or start or stop work sends ``NOTIFY`` on the
store's channel; quiet ones (``wake=False`` unless the function called ``tx.wake()``: heartbeats,
checkpoints that end no run) send none. It is delivered when the transaction commits, to every node
listening (one connection per process, opened when something first waits). A notification from this
process is ignored: its own commits wake its waiters at once. PostgreSQL makes transactions that notify
take turns at commit (so notifications arrive in commit order): their commits cannot be grouped, which
is why quiet ones do not notify. Other processes therefore do not see quiet commits
(``sees_quiet_commits`` is false): a page that follows everything looks again now and then.

Connections that fail: a transaction whose connection is lost before ``COMMIT`` is sent is run again
on a new connection. One lost during ``COMMIT`` may or may not have been made: the store asks the
server (``txid_status`` of the transaction id taken just before) and answers with the function's
result if it was made, runs it again if not, and raises a ``StoreError`` saying the outcome is
unknown only if the server cannot tell (nothing is retried that could be made twice).

The statements are the shared ones of ``store.sql``; this module holds how PostgreSQL spells them
(``POSTGRES``: row locks in write transactions among them), the advisory locks behind
``Transaction.lock``, and the one query of its own (``journal_after``, which must mind open
transactions' numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import greenlet

from ..errors import SchemaTooNew, StoreBusy, StoreError
from ..ids import new_id
from ..models import JournalEntry
from .common import Changes, Patience, shown_location
from .postgres_schema import CREATE_VERSION_TABLE, MIGRATIONS, SCHEMA_VERSION
from .sql import SCHEMA_VERSION_IN_USE, Dialect, Row, SQLTransaction, Statements

T = TypeVar("T")

# Transient refusals: the transaction was not made, and running it again (it reads afresh) is the remedy.
_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
# A key inserted by a concurrent transaction (the same idempotency key, event id or step): run again,
# the function then finds the row and answers as for a repeated call. A few times only: more is a bug.
_KEY_TAKEN_RETRIES = 3
_LOCK_SPACE = 0x6D63706F  # the first key of every advisory lock this store takes
_LOCK = "SELECT pg_advisory_xact_lock($1, hashtext(name)) FROM unnest($2::text[]) name"
# A gap in journal numbers younger than this may be a transaction still open (numbers are taken
# before commit): journal readers stop before it. Older gaps are rollbacks or removed runs.
_JOURNAL_SETTLE_S = 10.0
_BEGIN_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
_XID_AND_NOTIFY = "SELECT txid_current() FROM pg_notify($1, $2)"
_SERVER_SETTINGS = {"timezone": "UTC", "application_name": "mcp-orchestrator"}  # every connection's


def _count(status: str) -> int:
    """The row count of a command tag such as ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])


def _same(value: T) -> T:
    return value


POSTGRES = Dialect(
    numbered=True,
    arrays=True,
    json_object="json_build_object",
    embed_json="{}",  # the columns are json already (kept byte for byte, unlike jsonb)
    as_text="{}::text",
    empty_object="'{}'::json",
    is_true="{}",
    step_order="position",
    returning_seq=" RETURNING seq",
    row_locks=True,
    index_hints=False,
    detail_number="((detail->>'{}')::bigint)",
    reuses_numbers=False,  # identity numbers never come back
    time=_same,  # asyncpg binds a datetime to timestamptz and returns one, in the session's zone (UTC)
    read_time=_same,
    flag=bool,
)
_SQL = {writable: Statements(POSTGRES, writable=writable) for writable in (False, True)}
_JOURNAL_NUMBERS = (
    "SELECT seq, kind, stored_at > clock_timestamp() - make_interval(secs => $3) AS recent "
    "FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2"
)
_JOURNAL_ENTRIES = f"{_SQL[False].select_journal} WHERE seq = ANY($1::bigint[]) ORDER BY seq"


class PostgresTransaction(SQLTransaction):
    """The shared statements inside one PostgreSQL transaction: called in the transaction's greenlet
    (see ``_run_in_greenlet``), each statement is awaited on the event loop."""

    def __init__(self, conn: asyncpg.Connection, *, writable: bool) -> None:
        super().__init__(_SQL[writable])
        self._conn = conn
        self._writable = writable
        self._locked: set[str] = set()  # advisory locks held: taken once, kept until the end

    def _await(self, awaitable: Awaitable[T]) -> T:
        return _await_from_greenlet(awaitable)

    def _fetchval(self, sql: str, *args: Any) -> Any:
        return self._await(self._conn.fetchval(sql, *args))

    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return _count(self._await(self._conn.execute(sql, *args)))

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        return self._await(self._conn.fetchrow(sql, *args))

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._await(self._conn.fetch(sql, *args))

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self._await(self._conn.executemany(sql, rows))

    def _insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(self._fetchval(sql, *args))

    def lock(self, *names: str) -> None:
        """Advisory locks, in a write transaction only, taken in a fixed order so that two
        transactions wanting the same names cannot deadlock."""
        wanted = sorted(set(names) - self._locked)
        if self._writable and wanted:
            self._run(_LOCK, (_LOCK_SPACE, wanted))
            self._locked.update(wanted)

    def journal_after(self, seq: int, kinds: Sequence[str], limit: int) -> list[JournalEntry]:
        # Journal numbers are taken when a row is written, not when it commits: a transaction still
        # open may hold a lower number than one committed. A reader that moved its cursor past such
        # a gap would skip that entry for good, so entries are returned only up to the first gap
        # that may still be filled (one followed by rows stored less than _JOURNAL_SETTLE_S ago).
        wanted: list[int] = []
        expected = seq + 1
        for number, kind, recent in self._all(_JOURNAL_NUMBERS, (seq, limit * 4, _JOURNAL_SETTLE_S)):
            if number != expected and recent:
                break
            expected = number + 1
            if kind in kinds:
                wanted.append(number)
                if len(wanted) == limit:
                    break
        if not wanted:
            return []
        return [JournalEntry.model_validate_json(row[0]) for row in self._all(_JOURNAL_ENTRIES, (wanted,))]


class _Awaiting:
    """What a transaction's greenlet hands to the event loop: something to await for it."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable


def _await_from_greenlet(awaitable: Awaitable[T]) -> T:
    """Await on the event loop from synchronous code running in ``_run_in_greenlet``."""
    parent = greenlet.getcurrent().parent
    if parent is None:
        raise RuntimeError("a PostgreSQL transaction function ran outside its store")
    return parent.switch(_Awaiting(awaitable))


async def _run_in_greenlet(fn: Callable[[PostgresTransaction], T], tx: PostgresTransaction) -> T:
    """Run ``fn(tx)`` in a greenlet; every awaitable it hands over is awaited here, and its outcome
    (value or exception) sent back in."""
    child = greenlet.greenlet(fn)
    handed = child.switch(tx)
    while not child.dead:
        try:
            value = await handed.awaitable
        except BaseException as exc:  # into fn, which may handle it
            handed = child.throw(exc)
        else:
            handed = child.switch(value)
    return handed


class _CommitUnknown(Exception):
    """The connection was lost while COMMIT was on its way: the transaction ``xid`` may or may not
    have committed; ``result`` is what its function returned."""

    def __init__(self, xid: int, result: Any, wakes: bool) -> None:
        super().__init__(xid)
        self.xid, self.result, self.wakes = xid, result, wakes


class PostgresStore:
    """See the module docstring. ``url`` is a ``postgresql://`` connection URL; ``location`` is the
    same URL without its password (it is shown in messages)."""

    def __init__(self, url: str, *, pool_size: int = 10, retry_s: float = 60.0) -> None:
        self._url = url
        self.location = shown_location(url)
        self._pool_size = pool_size
        self._retry_s = retry_s
        self._pool: asyncpg.Pool | None = None
        self._token = new_id()  # marks this process's notifications
        self._channel = "mcp_orchestrator"
        self._changes = Changes()
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                reset=_end_transaction,
                server_settings=_SERVER_SETTINGS,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot connect to the store {self.location}: {exc}") from exc
        try:
            async with self._pool.acquire() as conn:
                schema = await self._migrate(conn)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, asyncpg.PostgresError | OSError | asyncpg.InterfaceError):
                raise StoreError(f"cannot prepare the store {self.location}: {exc}") from exc
            raise
        # One channel per schema: stores that share a database under different search paths stay apart.
        self._channel = f"mcp_orchestrator_{schema}"

    async def _migrate(self, conn: asyncpg.Connection) -> str:
        schema = await conn.fetchval("SELECT current_schema()")
        if schema is None:
            path = await conn.fetchval("SHOW search_path")
            raise StoreError(f"the store {self.location}: no schema of the search_path ({path}) exists; create it")
        async with conn.transaction():
            await conn.execute(_LOCK, _LOCK_SPACE, ["schema"])
            await conn.execute(CREATE_VERSION_TABLE)
            version = await conn.fetchval(SCHEMA_VERSION_IN_USE)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew.of(self.location, version, SCHEMA_VERSION, "database")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number - 1]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, now())", number)
        return str(schema)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def write(self, fn: Callable[[PostgresTransaction], T], *, wake: bool = True) -> T:
        return await self._run(fn, writable=True, wake=wake)

    async def read(self, fn: Callable[[PostgresTransaction], T]) -> T:
        return await self._run(fn, writable=False, wake=False)

    sees_quiet_commits = False

    @property
    def generation(self) -> int:
        return self._changes.generation

    @property
    def wake_generation(self) -> int:
        return self._changes.wakes

    async def wait_for_change(self, timeout: float, since: int | None = None, *, waking: bool = False) -> None:
        """Return after a commit by any node (this process's at once, others' waking ones by notification;
        with ``waking``, only one that may end a wait or start or stop work), or after ``timeout``; at once
        if the count has moved past ``since``."""
        if self._changes.moved(since, waking):
            return
        if self._listener is None and self._pool is not None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="postgres-listener")
        await self._changes.wait(timeout, waking)

    async def _listen(self) -> None:
        """Keep one connection listening on the channel; when it is lost, wake every waiter (they
        look again) and listen again."""
        delay = 0.1
        while True:
            lost = asyncio.get_running_loop().create_future()
            try:
                conn = await asyncpg.connect(self._url, server_settings=_SERVER_SETTINGS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.done() or lost.set_result(None))
                await conn.add_listener(self._channel, self._on_notification)
                delay = 0.1
                self._changes.seen()  # commits made while nobody listened are looked at now
                await lost
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=1))
            self._changes.seen()
            await asyncio.sleep(delay)

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._token:
            self._changes.seen()

    async def _run(self, fn: Callable[[PostgresTransaction], T], *, writable: bool, wake: bool) -> T:
        if self._pool is None:
            raise StoreError(f"the store {self.location} is not open")
        # The transaction finishes even if the caller is cancelled: its function may be midway, with
        # a connection in hand, and its outcome must be settled either way.
        task = asyncio.get_running_loop().create_task(self._with_retries(fn, writable, wake))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _with_retries(self, fn: Callable[[PostgresTransaction], T], writable: bool, wake: bool) -> T:
        patience = Patience(self._retry_s, (0.001, 0.002), most=1.0)
        key_taken = 0
        while True:
            try:
                result, wakes = await self._once(fn, writable, wake)
            except _RETRYABLE as exc:
                if patience.spent():
                    raise StoreBusy(
                        f"the store {self.location} kept refusing this write as conflicting with others "
                        f"({exc.sqlstate}); it was not made, try it again"
                    ) from exc
            except asyncpg.UniqueViolationError as exc:
                key_taken += 1
                if key_taken > _KEY_TAKEN_RETRIES:
                    raise StoreError(f"the store {self.location} failed: {exc}") from exc
            except _CommitUnknown as exc:
                # Ask the server what became of the transaction: made (answer as if nothing happened),
                # not made (run it again), or, if the server cannot tell, say so.
                outcome = await self._transaction_status(exc.xid, patience.deadline)
                if outcome == "committed":
                    self._changes.seen(wakes=exc.wakes)
                    return exc.result
                if outcome != "aborted":
                    raise StoreError(
                        f"the connection to the store {self.location} was lost while committing "
                        f"({exc.__cause__}); the write may or may not have been made: look (status, "
                        "list_runs) before repeating it"
                    ) from exc.__cause__
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, _ServerGone) as exc:
                if patience.spent():
                    raise StoreError(f"the store {self.location} cannot be reached: {exc}") from exc
                patience.at_least(0.05)
            except asyncpg.PostgresError as exc:
                raise StoreError(f"the store {self.location} failed: {exc}") from exc
            else:
                if writable:
                    self._changes.seen(wakes=wakes)
                return result
            await asyncio.sleep(patience.pause())

    async def _transaction_status(self, xid: int, deadline: float) -> str | None:
        """'committed' or 'aborted' (PostgreSQL's txid_status), or None if the server could not tell
        before ``deadline`` (a transaction whose backend is still winding down is 'in progress')."""
        assert self._pool is not None
        while True:
            try:
                async with self._pool.acquire() as conn:
                    status = await conn.fetchval("SELECT txid_status($1)", xid)
                if status != "in progress":  # None: too old to tell
                    return None if status is None else str(status)
            except Exception as exc:
                if not _connection_lost(exc):
                    return None
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    async def _once(self, fn: Callable[[PostgresTransaction], T], writable: bool, wake: bool) -> tuple[T, bool]:
        """The function's result, and whether its commit may wake waiters (it notified)."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            xid: int | None = None  # set once COMMIT may be on its way
            wakes = False
            try:
                await conn.execute(_BEGIN_WRITE if writable else _BEGIN_READ)
                tx = PostgresTransaction(conn, writable=writable)
                result = await _run_in_greenlet(fn, tx)
                wakes = writable and (wake or tx.woken)
                if wakes:  # the notification reaches every listener when (and only if) this commits
                    xid = int(await conn.fetchval(_XID_AND_NOTIFY, self._channel, self._token))
                elif writable:
                    xid = int(await conn.fetchval("SELECT txid_current()"))
                await conn.execute("COMMIT")
                return result, wakes
            except BaseException as exc:
                if _connection_lost(exc):
                    # asyncpg has usually released a lost connection already: the pool's proxy then
                    # refuses every call, terminate() too, and that error must not hide this one.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                    if xid is not None and not isinstance(exc, asyncpg.InternalClientError):
                        raise _CommitUnknown(xid, result, wakes) from exc  # (that error is raised before sending)
                    raise _ServerGone(str(exc)) from exc
                if not conn.is_closed() and conn.is_in_transaction():
                    with contextlib.suppress(Exception):
                        await conn.execute("ROLLBACK")
                raise


async def _end_transaction(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool. Every transaction ends in COMMIT or
    ROLLBACK and leaves no session state (advisory locks end with their transaction; LISTEN has a
    connection of its own), so asyncpg's default reset, a round trip on every release, is not needed."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class _ServerGone(Exception):
    """The connection failed before anything was committed: the transaction can run again."""


def _connection_lost(exc: BaseException) -> bool:
    # InternalClientError: a connection the server ended while it sat in the pool can be handed out
    # before asyncpg has noticed; its first statement then fails with "another operation is in progress".
    return isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.exceptions.OperatorInterventionError,
    ) and not isinstance(exc, asyncpg.exceptions.QueryCanceledError)
