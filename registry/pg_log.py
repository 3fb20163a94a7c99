"""The event log in a PostgreSQL table, shared by every replica (DATABASE_TYPE=postgresql).

Tables (``registry/pg_schema.py``):

- ``mesh_registry_log(idx bigint primary key, record bytea)``: ``record`` is exactly the
  record :func:`registry.events.encode` writes to LMDB, its CRC-32 first, checked by
  :func:`registry.events.decode` on every read.
- ``mesh_registry_head``: one row, ``idx`` (the last index handed out), ``term`` (the decider's
  fencing term, ``registry/pg_decider.py``) and ``decider`` (its instance id, for display).

Appends are serialized by that one row: an append is a single statement (:data:`APPEND`, run
outside any explicit transaction, so it is its own) that first does ``UPDATE mesh_registry_head
SET idx = idx + n``, whose row lock is held until the statement's implicit COMMIT, so the next
append cannot take its indices before the previous one is committed and visible. A sequence
would let index 5 commit before 4 and a reader skip 4 for ever; ``max(idx) + 1`` under
``pg_advisory_xact_lock`` would serialize too, but the row also carries the term, so
allocating the indices and checking a decision's term is one step. Being one statement, the
lock is never held while the server waits for the client: a replica paused mid-append
(SIGSTOP, a frozen VM) cannot stop the others' writes.

Writes are group-committed like :class:`registry.commit.LocalLog`: proposals queue up while an
append is in flight and go into the next one together (decisions, which carry a term, in an
append of their own). A write is acknowledged only after the append returned *and* this
replica applied it (read your own write); the append returning means durable as the server's
``synchronous_commit`` promises: with the default ``on``, flushed to the primary's WAL (and
to synchronous standbys if the server has any); with ``off``, a server crash may lose the
last few hundred milliseconds of acknowledged writes. An error the server reports for the
statement means it rolled back ("not committed"); a lost connection, a timeout or the server
shutting down gives a 503 "outcome unknown", never success.

The log only grows. A replica that finds it shorter than what it applied, or the entry at its
applied index changed (a server restored from a backup, a failover to a standby that lacked
the last commits, ``synchronous_commit=off`` after a crash), stops with both named instead of
applying a different history on top of its view; restarted, it replays the log as it now is.

Every replica applies the table in index order with the same :class:`StateMachine.apply`,
woken by NOTIFY on ``mesh_registry_log`` (sent inside each append transaction, so delivered
on commit), by its own commits, and by a poll every :data:`POLL_SECONDS` as the fallback.

Threads: everything runs on the asyncio loop. Connections: a writer and a reader per replica
(asyncpg runs one query at a time per connection), plus the decider's in ``pg_decider``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from registry import events, pg_snapshots
from registry.commit import Committed, StateMachine, Unavailable
from registry.config import Config
from registry.events import CorruptRecord, Event
from registry.health import Liveness
from registry.pg_decider import Decider
from registry.pg_schema import DB_ERRORS, connect, drop_when_idle, ensure_schema, reason
from registry.store import snapshot_record

log = logging.getLogger(__name__)

CHANNEL = "mesh_registry_log"
LIVENESS_CHANNEL = "mesh_registry_liveness"
"""Agent ids a replica heard from, sent once a second for the decider (soft state: a NOTIFY,
never a log entry, as heartbeats must not grow the log)."""
POLL_SECONDS = 1.0
"""Longest a replica goes without looking for new entries when no NOTIFY arrives."""
PAGE = 500
"""Most entries fetched per query while catching up."""
PAGE_BYTES = 4 << 20
"""Records fetched per query stop once they reach this many bytes (always one past the entry
already applied, however large, so a round always makes progress): 500 entries near the
request body limit would otherwise be a quarter GiB in one answer."""
MAX_BATCH = 512
"""Most proposals in one append statement."""
MAX_BATCH_BYTES = 4 << 20
"""Records in one append stop at this many bytes (a first one is always taken): the statement
and its parameters are held whole by both sides until it commits."""
NOTIFY_BYTES = 7000
"""Largest liveness payload (PostgreSQL's NOTIFY limit is 8000 bytes)."""
BACKOFF = (0.1, 1.0)
"""First and longest wait between attempts to reach the database: writes come back within
about a second of the database (with 5 s here the chaos harness's pg-kill then pg-pause went
14 s without an acknowledged write), and one attempt a second per replica is no load on a
server that is down."""
READER_IDLE = 10.0
"""Seconds without a query after which the server ends the reader's session (the reader
queries at least every :data:`POLL_SECONDS`; ``pg_schema.drop_when_idle`` says why)."""
APPEND = """/* mesh-registry append */
WITH head AS (
    UPDATE mesh_registry_head SET idx = idx + cardinality($1::bytea[])
    WHERE $2::bigint IS NULL OR term = $2
    RETURNING idx
), appended AS (
    INSERT INTO mesh_registry_log (idx, record)
    SELECT head.idx - cardinality($1::bytea[]) + entry.n, entry.record
    FROM head, unnest($1::bytea[]) WITH ORDINALITY AS entry(record, n)
)
SELECT idx, pg_notify('mesh_registry_log', idx::text)::text FROM head
"""
"""One append: the indices, the term check (``$2``, NULL for ordinary writes), the rows and the
NOTIFY in one statement. No row comes back when the term is not the current one."""
READ = """
SELECT head.idx AS head, head.decider, entry.idx, entry.record
FROM mesh_registry_head AS head
LEFT JOIN LATERAL (
    SELECT idx, record FROM (
        SELECT idx, record, sum(octet_length(record)) OVER (ORDER BY idx) AS upto
        FROM (
            SELECT idx, record FROM mesh_registry_log WHERE idx >= $1 ORDER BY idx LIMIT $2
        ) AS page
    ) AS sized
    WHERE upto - octet_length(record) < $3 OR idx <= $1 + 1
) AS entry ON true
ORDER BY entry.idx
"""
"""One page of the log from ``$1`` on (at most ``$2`` entries, ending with the first that
reaches ``$3`` bytes, but always the one after ``$1``, however large), with the head and the
decider read in the same statement (so from the same snapshot): one row with a NULL entry
when there is none."""
UNCERTAIN_SQLSTATE = ("08", "57", "58", "XX")
"""Classes of server errors that may arrive after a statement's commit (connection exception,
operator intervention such as a shutdown, system error, internal error): outcome unknown."""


@dataclass(slots=True)
class _Pending:
    record: bytes
    term: int | None
    future: asyncio.Future[Committed]


class _NotCommitted(Unavailable):
    """The append transaction certainly did not commit (failed before COMMIT was sent)."""


class PgLog:
    """registry.commit.Proposer over the shared PostgreSQL table."""

    def __init__(
        self,
        config: Config,
        machine: StateMachine,
        liveness: Liveness,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.config = config
        self.machine = machine
        self.liveness = liveness
        self._on_fatal = on_fatal
        self._pending: deque[_Pending] = deque()
        self._wake_writer = asyncio.Event()
        self._wake_reader = asyncio.Event()
        self._progress = asyncio.Event()
        self._waiters: dict[int, _Pending] = {}
        self._in_flight: dict[int, bool] | None = None
        """While an append is in flight, what the reader applied meanwhile (index: took
        effect): the append's own entries may be applied before its answer arrives."""
        self._last_record: bytes | None = b""
        """The record at the applied index, to see the database's log change under us (None
        just after a snapshot's install, until the reader has read it)."""
        self._snapshot_index = 0
        """The newest snapshot's index known here (the decider writes the next one)."""
        self._connected = asyncio.Event()
        """Set while both connections are up and the tables exist."""
        self._reason = "connecting to the database"
        self._head = 0
        self._caught_up = False
        self._rounds_started = 0
        self._rounds_done = 0
        self._decider_id = ""
        self._synchronous_commit = ""
        self._task: asyncio.Task[None] | None = None
        self.decider = Decider(config, self.caught_up_to, self._connected, on_fatal)

    # -- Proposer -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts connecting in the background: an unreachable database is a readiness reason,
        never a failed start."""
        self._task = asyncio.create_task(self._run(), name="pg-log")
        await self.decider.start()

    async def stop(self) -> None:
        await self.decider.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def ready(self) -> tuple[bool, str]:
        if not self._connected.is_set():
            return False, self._reason
        if not self._caught_up:
            return False, (
                f"catching up with the database log (applied {self.machine.view.applied_index}"
                f" of {self._head})"
            )
        return True, "postgresql log"

    def leading(self) -> bool:
        return self.decider.term is not None

    def leader(self) -> str:
        return self.config.instance_id if self.leading() else self._decider_id

    async def remove_member(self, member: str) -> None:
        raise ValueError("replicas share the PostgreSQL log: there are no members to remove")

    def status(self) -> dict[str, Any]:
        view = self.machine.view
        return {
            "mode": "postgresql",
            "node_id": self.config.instance_id,
            "role": "decider" if self.leading() else "replica",
            "term": self.decider.term or 0,
            "leader": self.leader(),
            "members": [{"id": self.config.instance_id, "state": "self", "connected": True}],
            "database": self.config.database.describe(),
            "connected": self._connected.is_set(),
            "synchronous_commit": self._synchronous_commit,
            "commit_index": self._head,
            "applied_index": view.applied_index,
        }

    async def propose(self, event: Event) -> Committed:
        return await self._submit(events.encode(event), None)

    async def decide(self, event: Event) -> Committed:
        """Propose a decision only the decider may make (health, expiry, job sweeps): it
        carries this replica's term, and the append refuses it once a newer decider exists."""
        term = self.decider.term
        if term is None:
            raise Unavailable("this replica is not the decider")
        return await self._submit(events.encode(event), term)

    async def barrier(self) -> None:
        """Read the log's head and apply up to it: a reader round that starts after now."""
        if not self._connected.is_set():
            raise Unavailable(self._reason)
        target = self._rounds_started + 1
        deadline = time.monotonic() + self.config.write_timeout
        while self._rounds_done < target:
            self._wake_reader.set()
            await self._wait_progress(deadline, "could not read the database log's head")

    async def caught_up_to(self, index: int) -> None:
        """Return once ``index`` is applied here (the decider before it decides anything)."""
        deadline = time.monotonic() + self.config.write_timeout
        while self.machine.view.applied_index < index:
            self._wake_reader.set()
            await self._wait_progress(deadline, f"log index {index} not applied in time")

    async def _wait_progress(self, deadline: float, reason: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Unavailable(reason)
        progress = self._progress
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), remaining)

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _submit(self, record: bytes, term: int | None) -> Committed:
        if not self._connected.is_set():
            raise Unavailable(self._reason)
        future: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(record, term, future))
        self._wake_writer.set()
        try:
            return await asyncio.wait_for(future, self.config.write_timeout)
        except TimeoutError:
            raise Unavailable(
                f"not confirmed within {self.config.write_timeout:g}s; outcome unknown"
            ) from None

    # -- the session: connect, then write and read until a connection fails --------------------

    async def _run(self) -> None:
        backoff = BACKOFF[0]
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except DB_ERRORS as exc:
                why = f"database {self.config.database.describe()} unreachable: {reason(exc)}"
                if self._connected.is_set() or why != self._reason:
                    log.warning("postgresql log unavailable; retrying", extra={"reason": why})
                self._reason = why
            except Exception as exc:  # a damaged log, or a bug: stop the node, do not linger
                if not isinstance(exc, CorruptRecord):  # which was logged where it was found
                    log.critical("postgresql log failed; stopping", exc_info=exc)
                self._reason = f"stopped: {exc}"
                self._on_fatal(exc)
                return
            finally:
                self._connected.clear()
                self._caught_up = False
                self._fail_all(_NotCommitted("database connection lost; not committed"))
            if time.monotonic() - started > BACKOFF[1]:
                backoff = BACKOFF[0]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF[1])

    async def _session(self) -> None:
        timeout = self.config.write_timeout
        writer = await connect(self.config, timeout, "writer")
        try:
            reader = await connect(self.config, timeout, "reader")
            try:
                await drop_when_idle(reader, READER_IDLE, timeout)
                await ensure_schema(writer, timeout)
                await reader.add_listener(CHANNEL, self._notified)
                await reader.add_listener(LIVENESS_CHANNEL, self._liveness_in)
                self._head = await reader.fetchval("SELECT idx FROM mesh_registry_head")
                self._snapshot_index = await pg_snapshots.newest_index(reader, timeout)
                # What an acknowledgement promises (module docstring), said where it is decided.
                self._synchronous_commit = await writer.fetchval("SHOW synchronous_commit")
                self._connected.set()
                log.info(
                    "postgresql log connected",
                    extra={"head": self._head, "synchronous_commit": self._synchronous_commit},
                )
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._write(writer))
                    group.create_task(self._read(reader))
            finally:
                reader.terminate()
        except BaseExceptionGroup as group:  # the writer's or the reader's failure
            raise _most_serious(group) from None
        finally:
            writer.terminate()

    def _notified(self, *_: object) -> None:
        self._wake_reader.set()

    def _liveness_in(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.liveness.seen_many(payload.split(","))

    def _fail_all(self, error: Unavailable) -> None:
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(error)

    # -- writer ---------------------------------------------------------------------------------

    async def _write(self, conn: asyncpg.Connection) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._pending:
                await self._append(conn, self._take_batch())

    def _take_batch(self) -> list[_Pending]:
        """Queued proposals with the first one's term (None: ordinary writes), in order."""
        term = self._pending[0].term
        batch: list[_Pending] = []
        size = 0
        while self._pending and self._pending[0].term == term and len(batch) < MAX_BATCH:
            if batch and size + len(self._pending[0].record) > MAX_BATCH_BYTES:
                break
            pending = self._pending.popleft()
            if not pending.future.done():  # timed out while queued: never sent
                batch.append(pending)
                size += len(pending.record)
        return batch

    async def _append(self, conn: asyncpg.Connection, batch: list[_Pending]) -> None:
        """One append for ``batch``; a connection failure ends the session (re-raised)."""
        if not batch:
            return
        term = batch[0].term
        self._in_flight = {}
        try:
            head = await conn.fetchval(
                APPEND,
                [pending.record for pending in batch],
                term,
                timeout=self.config.write_timeout,
            )
        except (*DB_ERRORS, asyncio.CancelledError) as exc:
            why = reason(exc)
            error: Unavailable = Unavailable(f"append not confirmed ({why}); outcome unknown")
            if isinstance(exc, asyncpg.PostgresError) and not exc.sqlstate.startswith(
                UNCERTAIN_SQLSTATE
            ):
                error = _NotCommitted(f"log append failed ({why}); not committed")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            raise
        finally:
            applied, self._in_flight = self._in_flight, None
        if head is None:
            self._fenced(term, batch)
            return
        first = head - len(batch) + 1
        for index, pending in enumerate(batch, first):
            if index in applied:
                if not pending.future.done():
                    pending.future.set_result(Committed(index, applied[index]))
            elif index <= self.machine.view.applied_index:  # passed by a snapshot's install
                if not pending.future.done():
                    pending.future.set_exception(_by_snapshot(index))
            else:
                self._waiters[index] = pending
        self._wake_reader.set()

    def _fenced(self, term: int | None, batch: list[_Pending]) -> None:
        log.warning("decision refused: a newer decider exists", extra={"term": term})
        self.decider.superseded(term)
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(
                    Unavailable(f"decision of term {term} refused: a newer decider exists")
                )

    # -- reader ---------------------------------------------------------------------------------

    async def _read(self, conn: asyncpg.Connection) -> None:
        # A round cut short by a lost connection never finished: barriers waiting for it are
        # answered by this session's first round instead.
        self._rounds_done = self._rounds_started
        last_liveness = time.monotonic()
        while True:
            self._rounds_started += 1
            await self._catch_up(conn)
            self._rounds_done += 1
            self._progressed()
            if (
                self.leading()
                and self.machine.view.applied_index - self._snapshot_index
                >= self.machine.snapshot_every
            ):
                await self._snapshot(conn)
            if time.monotonic() - last_liveness >= POLL_SECONDS:
                last_liveness = time.monotonic()
                await self._forward_liveness(conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_reader.wait(), POLL_SECONDS)
            self._wake_reader.clear()

    async def _catch_up(self, conn: asyncpg.Connection) -> None:
        """Apply every entry up to the head (and any committed since), a page per round trip
        (:data:`READ`), first checking that the log still holds what this replica applied
        (module docstring). A replica starting, or one the compaction left behind, installs
        the newest snapshot."""
        timeout = self.config.write_timeout
        view = self.machine.view
        fast_start = view.applied_index == 0
        while True:
            applied = view.applied_index
            page = await conn.fetch(READ, max(applied, 1), PAGE + 1, PAGE_BYTES, timeout=timeout)
            self._head, self._decider_id = page[0]["head"], page[0]["decider"]
            if self._head < applied:
                self._diverged(f"the database log ends at {self._head}")
            if fast_start and self._head > 0:
                fast_start = False
                await self._install_newest(conn, 0)  # when there is a snapshot
                if view.applied_index:
                    continue
            rows = [(row["idx"], bytes(row["record"])) for row in page if row["idx"] is not None]
            if applied and rows and rows[0][0] == applied:
                if self._last_record is not None and rows[0][1] != self._last_record:
                    self._diverged(f"the database log's entry {applied} is not the one applied")
                self._last_record = rows[0][1]  # known again after a snapshot's install
                rows = rows[1:]
            elif applied and await pg_snapshots.newest_index(conn, timeout) < applied:
                # compaction only removes entries a kept snapshot covers
                self._diverged(f"the database log has no entry {applied}")
            if (rows and rows[0][0] > applied + 1) or (not rows and self._head > applied):
                await self._install_newest(conn, applied + 1)
                continue
            for index, record in rows:
                self._apply(index, record)
            if view.applied_index >= self._head:
                break
        self._caught_up = view.applied_index >= self._head

    async def _install_newest(self, conn: asyncpg.Connection, needed: int) -> None:
        """Replace the view with the newest snapshot, which must cover index ``needed`` (0: any
        snapshot, and none is fine)."""
        found = await pg_snapshots.newest(conn, self.config.write_timeout)
        if found is None or found[0] < needed:
            if needed == 0:
                return
            log.critical("gap in the database log; stopping", extra={"index": needed})
            raise CorruptRecord(needed, "missing from the database log, and no snapshot covers it")
        index, record = found
        # Decoded in a thread, so the loop goes on serving reads; only this reader applies,
        # so nothing is applied in between.
        built = await asyncio.to_thread(self.machine.build, index, record)
        self.machine.install(index, record, built)
        self._last_record = None
        self._snapshot_index = max(self._snapshot_index, index)
        # This replica's own writes the snapshot covers were committed, but whether each took
        # effect is in the snapshot's history only: say so rather than guess.
        for waiting in [i for i in self._waiters if i <= index]:
            pending = self._waiters.pop(waiting)
            if not pending.future.done():
                pending.future.set_exception(_by_snapshot(waiting))

    async def _snapshot(self, conn: asyncpg.Connection) -> None:
        """The decider's snapshot of the view as of its applied index (pg_snapshots): the
        state is captured here on the loop, packed in a thread."""
        view = self.machine.view
        index = view.applied_index
        state = view.to_state()
        record = await asyncio.to_thread(snapshot_record, state)
        await pg_snapshots.write(conn, index, record, self.config.write_timeout)
        self._snapshot_index = index
        log.info("snapshot written", extra={"index": index})

    def _diverged(self, what: str) -> None:
        """The database's log is not the one this replica applied: stop (a restart replays
        the log as it is now) rather than build on a view that history no longer has."""
        index = self.machine.view.applied_index
        log.critical("the database log went back; stopping", extra={"index": index, "what": what})
        raise CorruptRecord(
            index,
            f"{what}, but this replica applied up to {index} from it (a restore, a failover "
            "or synchronous_commit=off lost entries)",
        )

    def _apply(self, index: int, record: bytes) -> None:
        expected = self.machine.view.applied_index + 1
        if index != expected:
            # Appends commit in index order (the head row's lock), so this is a deleted row.
            log.critical("gap in the database log; stopping", extra={"index": expected})
            raise CorruptRecord(expected, f"missing from the database log (next is {index})")
        try:
            event = events.decode(record, index)
        except CorruptRecord:
            log.critical("corrupt record in the database log; stopping", extra={"index": index})
            raise
        pending = self._waiters.get(index)
        if pending is not None and pending.record != record:
            # Our append committed at this index, and the database now holds another entry
            # there: it lost a commit (a failover, synchronous_commit=off).
            self._diverged(f"the database log's entry {index} is not the one this replica wrote")
        took_effect = self.machine.apply(index, event)
        self._last_record = record
        if self._in_flight is not None:
            self._in_flight[index] = took_effect
        self._waiters.pop(index, None)
        if pending is not None and not pending.future.done():
            pending.future.set_result(Committed(index, took_effect))

    async def _forward_liveness(self, conn: asyncpg.Connection) -> None:
        """Tell every replica (the decider among them) which agents this one heard from."""
        chunk: list[str] = []
        size = 0
        for agent_id in self.liveness.drain_outbox():
            if size + len(agent_id) + 1 > NOTIFY_BYTES:
                await conn.execute("SELECT pg_notify($1, $2)", LIVENESS_CHANNEL, ",".join(chunk))
                chunk, size = [], 0
            chunk.append(agent_id)
            size += len(agent_id) + 1
        if chunk:
            await conn.execute("SELECT pg_notify($1, $2)", LIVENESS_CHANNEL, ",".join(chunk))


def _by_snapshot(index: int) -> Unavailable:
    """A write of this replica's that committed at ``index`` but was applied here as part of
    a snapshot: whether it took effect is in the snapshot's history only."""
    return Unavailable(f"committed at index {index}, applied here by a snapshot; outcome unknown")


def _most_serious(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What ends a session whose tasks failed: anything but a connection failure first (a
    damaged log stops the node even if the other task lost its connection meanwhile)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        else:
            leaves.append(exc)
    return next((exc for exc in leaves if not isinstance(exc, DB_ERRORS)), leaves[0])
