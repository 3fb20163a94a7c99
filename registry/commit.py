"""The write path: "propose an event, get it back committed".

Handlers and the health monitor only ever call :meth:`Proposer.propose`; it returns once the
event is durable and applied to this node's view, so a handler that then reads the view sees
its own write, together with what applying it did (:class:`Committed`): by the time the
handler resumes, later entries may already be applied too. Single-node mode implements it
here with :class:`LocalLog`; cluster mode implements the same protocol with Raft in the
``replication`` package.

:class:`StateMachine` is the one place committed events meet the view; it also keeps
snapshots and tells listeners (the SQLite projection) what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from registry import events
from registry.events import Event
from registry.store import Store, decode_snapshot
from registry.view import View, apply

log = logging.getLogger(__name__)

Listener = Callable[[int, Event], None]
ResetListener = Callable[[], None]


class Unavailable(Exception):
    """The registry cannot commit writes right now (answered with 503 and this reason)."""


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed event: its log index and whether applying it changed the view (False for a
    removal of an agent that was already gone, see :func:`registry.view.apply`)."""

    index: int
    took_effect: bool


class Proposer(Protocol):
    """Commits events. ``propose`` returns once the event is applied locally."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def propose(self, event: Event) -> Committed: ...

    async def barrier(self) -> None:
        """Return once everything committed before the call is applied locally (for
        linearizable reads); raises Unavailable when that cannot be established."""
        ...

    def ready(self) -> tuple[bool, str]:
        """Whether this node can serve consistent data, and why not."""
        ...

    def leading(self) -> bool:
        """Whether this node decides time-driven state (health checks, expiry)."""
        ...

    def leader(self) -> str:
        """The current leader's identity, or "" when none is known."""
        ...

    def status(self) -> dict[str, Any]:
        """Cluster state for ``GET /api/v1/cluster``."""
        ...

    async def remove_member(self, member: str) -> None:
        """Remove a departed member; KeyError if unknown, ValueError if refused."""
        ...


class StateMachine:
    """Applies committed events to the view, snapshots it, and notifies listeners.

    ``store`` is None in PostgreSQL mode: the log and (later) its snapshots live in the
    database, and a replica keeps no local files, so it never snapshots here.
    """

    def __init__(self, store: Store | None, view: View, snapshot_every: int) -> None:
        self._store = store
        self.view = view
        self.snapshot_every = snapshot_every
        self.snapshot_index = store.snapshot_index() if store is not None else 0
        self.events_applied = 0
        self.listeners: list[Listener] = []
        self.reset_listeners: list[ResetListener] = []

    @property
    def store(self) -> Store:
        """The local LMDB store (LMDB and Raft modes only)."""
        if self._store is None:
            raise RuntimeError("this node keeps no local store (DATABASE_TYPE=postgresql)")
        return self._store

    def apply(self, index: int, event: Event) -> bool:
        """Apply a committed event; whether it took effect (see :func:`registry.view.apply`)."""
        took_effect = apply(self.view, index, event)
        self.events_applied += 1
        for listener in self.listeners:
            listener(index, event)
        return took_effect

    def build(self, index: int, record: bytes) -> View:
        """The view in snapshot ``record``, built apart from the current one: a caller may run
        this in a thread (a large snapshot takes long to decode), then :meth:`install` it."""
        limit = self.view.history.maxlen or 0
        return view_from_snapshot(index, decode_snapshot(index, record), limit)

    def install(self, index: int, record: bytes, built: View | None = None) -> None:
        """Replace the view with a snapshot received from the leader (a node too far behind),
        or with ``built``, the view :meth:`build` made of it.

        The record is kept as this node's own newest snapshot so a restart starts from it
        (in PostgreSQL mode it already is one: the database's).
        """
        installed = built if built is not None else self.build(index, record)
        if self._store is not None:
            self._store.put_snapshot_record(index, record)
        self.snapshot_index = index
        self.view.replace(installed)
        for listener in self.reset_listeners:
            listener()
        log.info("snapshot installed", extra={"index": index})

    def snapshot_due(self) -> bool:
        if self._store is None:
            return False
        return self.view.applied_index - self.snapshot_index >= self.snapshot_every

    async def snapshot(self, io: ThreadPoolExecutor) -> None:
        """Store the view as of its applied index.

        The state is captured on the event loop (apply never mutates what it captures: it
        replaces registrations and resolutions instead), then packed and written in ``io``.
        """
        index = self.view.applied_index
        state = self.view.to_state()
        await asyncio.get_running_loop().run_in_executor(io, self.store.put_snapshot, index, state)
        self.snapshot_index = index
        log.info("snapshot written", extra={"index": index})


def view_from_snapshot(index: int, state: Any, history_limit: int) -> View:
    """The view in a decoded snapshot at ``index``, keeping ``history_limit`` events for
    GET /events (the setting may have changed since the snapshot was written)."""
    try:
        view = View.from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise events.CorruptRecord(index, f"unreadable snapshot ({exc})") from None
    if view.history.maxlen != history_limit:
        view.history = deque(view.history, maxlen=history_limit)
    return view


def restore_view(store: Store, history_limit: int) -> View:
    """Rebuild the view: newest snapshot, then replay of the log after it.

    Raises :class:`registry.events.CorruptRecord` naming the first record that cannot be
    trusted, so a damaged log stops startup instead of serving a wrong view.
    """
    snapshot = store.latest_snapshot()
    if snapshot is None:
        view = View(history_limit=history_limit)
    else:
        view = view_from_snapshot(*snapshot, history_limit)
    for index, record in store.entries(view.applied_index + 1):
        apply(view, index, events.decode(record, index))
    return view


class LocalLog:
    """Single-node proposer: group commit into the LMDB log, then apply.

    Proposals queue up while the previous batch is being written; each batch is one LMDB
    transaction and one fsync, so throughput grows with concurrency instead of being capped
    at one fsync per write.
    """

    def __init__(self, machine: StateMachine, node_id: str) -> None:
        self.machine = machine
        self.node_id = node_id
        self._queue: asyncio.Queue[tuple[Event, asyncio.Future[Committed]]] = asyncio.Queue()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmdb-writer")
        self._task: asyncio.Task[None] | None = None
        # After a restore the log is empty and the view starts at the backup's index.
        self._next_index = max(machine.store.last_index(), machine.view.applied_index) + 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="local-log-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._io.shutdown(wait=True)

    def ready(self) -> tuple[bool, str]:
        if self._task is None or self._task.done():
            return False, "log writer not running"
        return True, "single node"

    async def barrier(self) -> None:
        """A single node's view is always current: nothing to wait for."""

    def leading(self) -> bool:
        return True

    def leader(self) -> str:
        return self.node_id

    async def remove_member(self, member: str) -> None:
        raise ValueError("a single-node registry has no other members")

    def status(self) -> dict[str, Any]:
        view = self.machine.view
        return {
            "mode": "single-node",
            "node_id": self.node_id,
            "role": "leader",
            "term": 0,
            "leader": self.node_id,
            "members": [{"id": self.node_id, "state": "self", "connected": True}],
            "commit_index": view.applied_index,
            "applied_index": view.applied_index,
            "log_size": self.machine.store.entry_count(),
        }

    async def propose(self, event: Event) -> Committed:
        if self._task is None or self._task.done():
            raise Unavailable("log writer not running")
        future: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        await self._queue.put((event, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            first = self._next_index
            records = [(first + i, events.encode(event)) for i, (event, _) in enumerate(batch)]
            try:
                await loop.run_in_executor(self._io, self.machine.store.append, records)
            except Exception as exc:
                log.exception("log append failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Unavailable(f"log append failed: {exc}"))
                continue
            self._next_index += len(batch)
            for (index, _), (event, future) in zip(records, batch, strict=True):
                took_effect = self.machine.apply(index, event)
                if not future.done():
                    future.set_result(Committed(index, took_effect))
            if self.machine.snapshot_due():
                await self.machine.snapshot(self._io)
