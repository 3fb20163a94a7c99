"""The ``agents`` table of DATABASE_TYPE=postgresql: one row per agent, for plain SQL.

The guide's Troubleshooting section runs ``CREATE INDEX idx_agents_capability ON
agents(capability)`` and ``idx_agents_last_seen ON agents(last_seen)`` in psql, and operators
of a shared database inspect it with SQL. The event log (``registry/pg_log.py``) is the truth;
this table is a projection of the view, columns (``registry/pg_schema.py``): ``id``, ``name``,
``capability`` (the agent's capabilities, an array: an agent offers several), ``status``,
``last_seen``, ``endpoint``, ``namespace`` and ``registration`` (the registration as JSON).

Only the decider writes it (one writer for every replica's identical view), in small batches
after the entries naming an agent are applied, and ``last_seen`` every
:data:`LAST_SEEN_SECONDS` from the heartbeats every replica forwards to the decider. Each
write records the log index it reflects in ``mesh_registry_projection`` and is skipped when the
table already reflects a later one (a deposed decider that has not noticed yet cannot roll it
back). A new decider, or a failed write, rewrites the whole table.

Not the Go registry's own tables (``agent_id``, ``capabilities``...): those have no
``capability`` or ``last_seen`` column on ``agents``, so the guide's commands fail on them,
and meshui, which migrates the database it opens to its own schema, is pointed at the
registry's SQLite projection in the other modes instead (k8s/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
import orjson

from registry.config import Config
from registry.events import Event, agents_named
from registry.health import Liveness
from registry.pg_schema import DB_ERRORS, connect, reason
from registry.registration import endpoint
from registry.view import View

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2
"""Seconds between writes of changed agents (bounds how stale the table is)."""
LAST_SEEN_SECONDS = 5.0
"""How often the decider refreshes ``last_seen`` (heartbeats are not log entries)."""

UPSERT = """
INSERT INTO agents (id, name, capability, status, last_seen, endpoint, namespace, registration)
SELECT id, name, ARRAY(SELECT jsonb_array_elements_text(capability::jsonb)), status,
       to_timestamp(seen_ms / 1000.0), endpoint, namespace, registration::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
            $7::text[], $8::text[])
    AS row(id, name, capability, status, seen_ms, endpoint, namespace, registration)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, capability = excluded.capability,
    status = excluded.status, last_seen = excluded.last_seen, endpoint = excluded.endpoint,
    namespace = excluded.namespace, registration = excluded.registration
"""
"""Rows in columns (one array per column; a row's capabilities as a JSON array, since
``unnest`` would flatten an array of arrays)."""


class PgProjection:
    """Mirrors the view into ``agents`` while ``leading()`` (this replica decides)."""

    def __init__(
        self,
        config: Config,
        view: View,
        liveness: Liveness,
        leading: Callable[[], bool],
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.config = config
        self._on_fatal = on_fatal
        self.view = view
        self.liveness = liveness
        self._leading = leading
        self._dirty: set[str] = set()
        self._full = True
        self._seen: dict[str, int] = {}
        """Per agent, the ``last_seen`` (ms) last written."""
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def on_applied(self, _index: int, event: Event) -> None:
        """State-machine listener: remember which agents to rewrite."""
        self._dirty.update(agents_named(event))
        self._wake.set()

    def on_reset(self) -> None:
        self._full = True
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-projection")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._disconnect()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LAST_SEEN_SECONDS)
            self._wake.clear()
            if not self._leading():
                self._disconnect()
                self._full = True  # whoever decided meanwhile wrote what it saw
                continue
            try:
                await self._flush()
            except DB_ERRORS as exc:
                log.warning(
                    "agents projection update failed; retrying", extra={"reason": reason(exc)}
                )
                self._disconnect()
                self._full = True
                self._wake.set()
            except Exception as exc:  # tables not as expected, or a bug: stop, not go stale
                log.critical("agents projection failed; stopping", exc_info=exc)
                self._on_fatal(exc)
                return
            await asyncio.sleep(FLUSH_INTERVAL)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    def _rows(self, ids: set[str]) -> tuple[list[list[object]], list[str]]:
        """The rows of ``ids`` still in the view, as columns for :data:`UPSERT`, and the ids
        that are gone."""
        columns: list[list[object]] = [[] for _ in range(8)]
        gone = []
        for agent_id in sorted(ids):
            agent = self.view.agents.get(agent_id)
            if agent is None:
                gone.append(agent_id)
                self._seen.pop(agent_id, None)
                continue
            reg = agent.registration
            seen = max(self.liveness.last_seen_ms(agent_id) or 0, agent.updated_ms)
            self._seen[agent_id] = seen
            capabilities = sorted({tool["capability"] for tool in reg.get("tools") or ()})
            values = (
                agent_id,
                reg.get("name", agent_id),
                orjson.dumps(capabilities).decode(),
                agent.status,
                seen,
                endpoint(reg),
                reg.get("namespace", "default"),
                orjson.dumps(reg).decode(),
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        return columns, gone

    def _seen_changed(self) -> set[str]:
        """Agents whose newest heartbeat is a second or more past the ``last_seen`` written."""
        return {
            agent_id
            for agent_id, agent in self.view.agents.items()
            if max(self.liveness.last_seen_ms(agent_id) or 0, agent.updated_ms)
            >= self._seen.get(agent_id, 0) + 1000
        }

    async def _flush(self) -> None:
        full, dirty = self._full, self._dirty
        self._full, self._dirty = False, set()
        try:
            await self._write(full, dirty)
        except BaseException:
            self._full = True  # what this batch held is known only to it: start over
            raise

    async def _write(self, full: bool, dirty: set[str]) -> None:
        timeout = self.config.write_timeout
        if self._conn is None:
            self._conn = await connect(self.config, timeout, "projection")
        conn = self._conn
        if full:
            self._seen.clear()
            dirty = set(self.view.agents)
        ids = dirty | self._seen_changed()
        applied = self.view.applied_index
        if not ids and not full:
            return
        columns, gone = self._rows(ids)
        async with conn.transaction():
            reflected = await conn.fetchval(
                "SELECT idx FROM mesh_registry_projection FOR UPDATE", timeout=timeout
            )
            if reflected > applied:  # a newer decider wrote a later view: leave it
                self._full = True
                return
            if full:
                await conn.execute("DELETE FROM agents", timeout=timeout)
            elif gone:
                await conn.execute("DELETE FROM agents WHERE id = ANY($1)", gone, timeout=timeout)
            await conn.execute(UPSERT, *columns, timeout=timeout)
            await conn.execute(
                "UPDATE mesh_registry_projection SET idx = $1", applied, timeout=timeout
            )
