"""A read-only SQLite copy of the agents, for operators who follow the deployment guide.

With ``DATABASE_TYPE=sqlite`` the guide expects ``sqlite3 /data/registry.db "SELECT * FROM
agents;"`` to work. The event log stays the source of truth in LMDB; this module only mirrors
the view's agents into an ``agents`` table at DATABASE_PATH. It is rebuilt at startup and then
updated in small batches after events are applied, from a thread of its own, so the write path
never waits for SQLite. A flush that fails (another connection holding the write lock past
SQLite's busy timeout, say) keeps what it could not write and is retried every FLUSH_INTERVAL
until it succeeds, so the table catches up without waiting for another event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from registry.events import Event
from registry.registration import endpoint
from registry.timefmt import iso_ms
from registry.view import View

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2
"""Seconds between flushes of changed agents (bounds how stale the projection can be)."""

COLUMNS = (
    "id",
    "name",
    "namespace",
    "agent_type",
    "runtime",
    "version",
    "status",
    "endpoint",
    "capabilities",
    "created_at",
    "updated_at",
    "registration",
)
"""The ``agents`` table, one row per agent (also what ``mcp-mesh-registry inspect`` lists)."""
_PLACEHOLDERS = ",".join("?" * len(COLUMNS))
_SCHEMA = "CREATE TABLE IF NOT EXISTS agents ({})".format(
    ", ".join(f"{c} TEXT PRIMARY KEY" if c == "id" else f"{c} TEXT NOT NULL" for c in COLUMNS)
)

Row = tuple[Any, ...]


def agent_row(view: View, agent_id: str) -> Row | None:
    agent = view.agents.get(agent_id)
    if agent is None:
        return None
    reg = agent.registration
    return (
        agent_id,
        reg.get("name", agent_id),
        reg.get("namespace", "default"),
        reg.get("agent_type", "mcp_agent"),
        reg.get("runtime", "python"),
        reg.get("version", ""),
        agent.status,
        endpoint(reg),
        ",".join(tool["capability"] for tool in reg.get("tools") or ()),
        iso_ms(agent.created_ms),
        iso_ms(agent.updated_ms),
        orjson.dumps(reg).decode(),
    )


class SqliteProjection:
    """Mirrors ``view.agents`` into the ``agents`` table of the SQLite file at ``path``."""

    def __init__(self, path: str, view: View) -> None:
        self.path = path
        self.view = view
        self._dirty: set[str] = set()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-projection")
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._full = True

    def on_applied(self, _index: int, event: Event) -> None:
        """State-machine listener: remember which agents to rewrite."""
        payload = event.payload
        if "agent" in payload:
            self._dirty.add(payload["agent"]["agent_id"])
        elif "agent_id" in payload:
            self._dirty.add(payload["agent_id"])
        else:
            self._dirty.update(payload.get("agent_ids", ()))
        self._wake.set()

    def on_reset(self) -> None:
        """State-machine reset listener: the whole view was replaced; rewrite every row."""
        self._full = True
        self._wake.set()

    async def start(self) -> None:
        await self._flush()  # the first flush rebuilds the whole table
        self._task = asyncio.create_task(self._run(), name="sqlite-projection")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush()
        await asyncio.get_running_loop().run_in_executor(self._io, self._close)
        self._io.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            await asyncio.sleep(FLUSH_INTERVAL)

    async def _flush(self) -> None:
        """Write what changed since the last flush (everything after a reset); on failure keep
        it pending and wake the loop, which retries after FLUSH_INTERVAL."""
        full, ids = self._full, self._dirty
        if not full and not ids:
            return
        self._full, self._dirty = False, set()
        loop = asyncio.get_running_loop()
        try:
            if full:
                everyone = list(self.view.agents)
                rows = [row for agent_id in everyone if (row := agent_row(self.view, agent_id))]
                await loop.run_in_executor(self._io, self._rebuild, rows)
            else:
                changes = [(agent_id, agent_row(self.view, agent_id)) for agent_id in ids]
                await loop.run_in_executor(self._io, self._write, changes)
        except sqlite3.Error as exc:
            log.warning(
                "sqlite projection update failed; retrying",
                extra={"path": self.path, "error": str(exc)},
            )
            self._full = self._full or full
            self._dirty |= ids
            self._wake.set()

    # -- in the projection thread --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """The projection's connection, kept only once WAL mode and the table are set up (a
        lock held by someone else can fail either; the next flush then starts over)."""
        if self._conn is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SCHEMA)
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _rebuild(self, rows: list[Row]) -> None:
        conn = self._connect()
        with conn:
            conn.execute("DELETE FROM agents")
            conn.executemany(f"INSERT INTO agents VALUES ({_PLACEHOLDERS})", rows)

    def _write(self, changes: list[tuple[str, Row | None]]) -> None:
        conn = self._connect()
        with conn:
            for agent_id, row in changes:
                if row is None:
                    conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
                else:
                    conn.execute(f"INSERT OR REPLACE INTO agents VALUES ({_PLACEHOLDERS})", row)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
