"""A read-only SQLite copy of the view in the Go registry's own schema, at DATABASE_PATH.

With ``DATABASE_TYPE=sqlite`` the guide expects ``sqlite3 /data/registry.db "SELECT * FROM
agents;"`` to work, and ``meshui`` (MCP Mesh's dashboard) reads its event history and its live
agent diff straight from the registry's database (``DATABASE_URL``), not over HTTP. Both get
what the Go registry's database would give them: the tables of ``registry.ent_schema``, with
the agents, their capabilities, their dependency and LLM resolutions, the canonical schemas
they carry and the registry events of the view's history window.

The event log stays the source of truth in LMDB; this is a projection. It is rebuilt at
startup (and when a snapshot replaces the view) and then updated in small batches after events
are applied, from a thread of its own, so the write path never waits for SQLite. An agent's
rows are rewritten when an event names it, or when its resolution or LLM answer changed (a
provider came, went or changed health: the flush compares every agent's current answers with
the ones it last wrote, as the listings do). A flush that fails (another connection holding the
write lock past SQLite's busy timeout, say) is retried every FLUSH_INTERVAL as a rebuild of
every table until it succeeds, so the tables catch up without waiting for another event.

Where it differs from the Go registry's database: a removed agent's rows and its events are
gone at once (the Go registry keeps it as ``unhealthy`` until its purge, which then deletes the
same rows), ``registry_events`` holds only the view's history window (HISTORY_LIMIT events),
and the ``jobs`` and ``job_events`` tables exist but stay empty (meshui reads jobs over
HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from registry import ent_schema, llm
from registry.events import Event, agents_named
from registry.resolve import AVAILABLE
from registry.timefmt import iso_ms
from registry.view import View

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2
"""Seconds between flushes of changed agents (bounds how stale the projection can be)."""

AGENT_COLUMNS = (
    "agent_id",
    "agent_type",
    "runtime",
    "name",
    "version",
    "description",
    "a2a_producer",
    "a2a_consumer",
    "http_host",
    "http_port",
    "namespace",
    "status",
    "total_dependencies",
    "dependencies_resolved",
    "created_at",
    "updated_at",
    "last_full_refresh",
    "entity_id",
    "a2a_surfaces",
)
"""The ``agents`` table's columns (what ``mcp-mesh-registry inspect`` lists, too)."""

_CAPABILITY_COLUMNS = (
    "function_name, capability, version, description, input_schema, input_schema_hash, "
    "output_schema_hash, schema_warnings, llm_filter, llm_provider, tags, kwargs, "
    "dependencies, created_at, updated_at, agent_capabilities"
)
_DEPENDENCY_COLUMNS = (
    "consumer_function_name, dep_index, capability_required, tags_required, version_required, "
    "namespace_required, provider_function_name, endpoint, status, created_at, updated_at, "
    "consumer_agent_id, provider_agent_id"
)
_LLM_TOOL_COLUMNS = (
    "consumer_function_name, filter_capability, filter_tags, filter_mode, "
    "provider_function_name, provider_capability, endpoint, status, created_at, updated_at, "
    "consumer_agent_id, provider_agent_id"
)
_LLM_PROVIDER_COLUMNS = (
    "consumer_function_name, required_capability, required_tags, required_version, "
    "required_namespace, provider_function_name, endpoint, status, created_at, updated_at, "
    "consumer_agent_id, provider_agent_id"
)
_EVENT_COLUMNS = "event_type, function_name, timestamp, data, agent_events"
_OWNED = (
    ("capabilities", "agent_capabilities"),
    ("dependency_resolutions", "consumer_agent_id"),
    ("llm_tool_resolutions", "consumer_agent_id"),
    ("llm_provider_resolutions", "consumer_agent_id"),
)
"""The tables holding rows of one agent's, and the column naming it."""

Row = tuple[Any, ...]


def db_time(ms: int) -> str:
    """A time as go-sqlite3 writes a Go ``time.Time`` (``2026-12-03 11:44:18.192+00:00``)."""
    return iso_ms(ms)[:-1].replace("T", " ") + "+00:00"


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


@dataclass(slots=True)
class AgentRows:
    """Everything one agent puts in the projection besides its events."""

    agent: Row
    capabilities: list[Row] = field(default_factory=list)
    dependencies: list[Row] = field(default_factory=list)
    llm_tools: list[Row] = field(default_factory=list)
    llm_providers: list[Row] = field(default_factory=list)


def agent_rows(view: View, agent_id: str) -> AgentRows | None:
    """``agent_id``'s rows as the Go registry stores them (None: not in the view)."""
    agent = view.agents.get(agent_id)
    if agent is None:
        return None
    reg = agent.registration
    created, updated = db_time(agent.created_ms), db_time(agent.updated_ms)
    resolution = view.resolution(agent_id)
    dependencies: list[Row] = []
    for function_name, deps in view.dependencies(agent_id):
        for dep_index, (dep, item) in enumerate(
            zip(deps, resolution.get(function_name, ()), strict=False)
        ):
            available = item["status"] == AVAILABLE
            dependencies.append(
                (
                    function_name,
                    dep_index,
                    dep.capability,
                    _json(list(dep.required_tags)) if dep.required_tags else None,
                    dep.version or None,
                    dep.namespace,
                    item["function_name"] if available else None,
                    item["endpoint"] if available else None,
                    item["status"],
                    created,
                    updated,
                    agent_id,
                    item["agent_id"] if available else None,
                )
            )
    resolved = sum(1 for row in dependencies if row[8] == AVAILABLE)
    rows = AgentRows(
        (
            agent_id,
            reg.get("agent_type", "mcp_agent"),
            reg.get("runtime", "python"),
            reg.get("name", agent_id),
            reg.get("version", ""),
            reg.get("description", ""),
            bool(reg.get("a2a_producer")),
            bool(reg.get("a2a_consumer")),
            *_host_and_port(reg),
            reg.get("namespace", "default"),
            agent.status,
            len(dependencies),
            resolved,
            created,
            updated,
            updated,
            reg.get("entity_id"),
            _json(reg.get("surfaces")),
        ),
        dependencies=dependencies,
    )
    for tool in reg.get("tools") or ():
        rows.capabilities.append(
            (
                tool["function_name"],
                tool["capability"],
                tool.get("version") or "1.0.0",
                tool.get("description"),
                _json(tool.get("inputSchema")),
                tool.get("inputSchemaHash"),
                tool.get("outputSchemaHash"),
                _json(tool.get("schemaWarnings")),
                _json(tool.get("llm_filter")),
                _json(tool.get("llm_provider")),
                _json(tool.get("tags") or []),
                _json(tool.get("kwargs")),
                _json(
                    [_stored_dependency(d) for d in deps]
                    if (deps := tool.get("dependencies"))
                    else None
                ),
                created,
                updated,
                agent_id,
            )
        )
    tools, providers = llm.resolutions(reg, view.llm_answer(agent_id))
    rows.llm_tools = [
        (
            entry["function_name"],
            entry.get("filter_capability") or None,
            _json(entry.get("filter_tags")),
            entry["filter_mode"],
            entry.get("mcp_tool"),
            entry.get("provider_capability"),
            *_outcome(entry, created, updated, agent_id),
        )
        for entry in tools
    ]
    namespace = reg.get("namespace", "default")
    rows.llm_providers = [
        (
            entry["function_name"],
            entry["required_capability"],
            _json(entry.get("required_tags")),
            None,
            namespace,
            entry.get("mcp_tool"),
            *_outcome(entry, created, updated, agent_id),
        )
        for entry in providers
    ]
    return rows


def _outcome(entry: dict[str, Any], created: str, updated: str, agent_id: str) -> Row:
    """The columns both LLM resolution tables end with, from an AgentInfo resolution entry
    (``registry.llm.resolutions``): endpoint, status, times, consumer, provider."""
    return (
        entry.get("endpoint"),
        entry["status"],
        created,
        updated,
        agent_id,
        entry.get("provider_agent_id"),
    )


_DEPENDENCY_KEYS = (
    ("capability", "capability"),
    ("required", "required"),
    ("namespace", "namespace"),
    ("tags", "tags"),
    ("version", "version"),
    ("matchMode", "match_mode"),
    ("expectedSchemaHash", "expected_schema_hash"),
    ("expectedSchemaCanonical", "expected_schema_canonical"),
)
"""A declared dependency's fields, and the names the Go registry stores them under."""


def _stored_dependency(dep: dict[str, Any]) -> dict[str, Any]:
    """A dependency as the Go registry keeps it in ``capabilities.dependencies`` (meshui's
    Schemas page finds a schema's consumers by ``expected_schema_hash`` there): the fields
    given, in its names; the empty ones our normalization filled in are left out."""
    return {
        stored: dep[ours]
        for ours, stored in _DEPENDENCY_KEYS
        if dep.get(ours) not in (None, "", [])
    }


def _host_and_port(reg: dict[str, Any]) -> tuple[str | None, int | None]:
    """Where the agent listens, as the Go registry's two columns. An agent registered through
    the guide's API names a URL instead (``endpoint``); its host and port are taken from it, so
    the row says where the agent is either way."""
    explicit = reg.get("endpoint")
    if isinstance(explicit, str) and explicit:
        with contextlib.suppress(ValueError):
            url = urlsplit(explicit)
            return url.hostname, url.port
    return reg.get("http_host"), reg.get("http_port")


def event_row(item: dict[str, Any]) -> Row:
    """A history entry of the view as a ``registry_events`` row (its log index in ``data``)."""
    return (
        item["event_type"],
        item.get("function_name"),
        db_time(item["timestamp_ms"]),
        _json({**item["data"], "log_index": item["index"]}),
        item["agent_id"],
    )


@dataclass(slots=True)
class _Batch:
    """One flush's writes, computed on the event loop and written in the projection thread."""

    full: bool
    agents: list[tuple[str, AgentRows | None]]
    events: list[Row]
    cut: int
    """Events of this log index and lower are no longer (all) in the view's history window."""
    schemas: list[Row] | None
    """Every ``schema_entries`` row, when the set of schemas changed (None: it did not)."""


class SqliteProjection:
    """Mirrors the view into the Go registry's tables in the SQLite file at ``path``."""

    def __init__(self, path: str, view: View) -> None:
        self.path = path
        self.view = view
        self._dirty: set[str] = set()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-projection")
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._full = True
        self._written: dict[str, tuple[Any, str]] = {}
        """Per agent, the resolution and LLM answer digest its rows were written from."""
        self._events_upto = 0
        """The log index of the newest history entry written."""
        self._schema_hashes: tuple[str, ...] = ()
        """The schemas last written, in arrival order."""

    def on_applied(self, _index: int, event: Event) -> None:
        """State-machine listener: remember which agents to rewrite."""
        self._dirty.update(agents_named(event))
        self._wake.set()

    def on_reset(self) -> None:
        """State-machine reset listener: the whole view was replaced; rewrite every row."""
        self._full = True
        self._wake.set()

    async def start(self) -> None:
        await self._flush()  # the first flush rebuilds every table
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

    def _changed(self) -> set[str]:
        """Agents whose resolution or LLM answer is not the one their rows were written from."""
        view, written = self.view, self._written
        changed = set()
        for agent_id in view.agents:
            kept = written.get(agent_id)
            if kept is None:
                changed.add(agent_id)
                continue
            resolution = view.resolution(agent_id)
            if not (resolution is kept[0] or resolution == kept[0]) or (
                view.llm_answer(agent_id).digest != kept[1]
            ):
                changed.add(agent_id)
        return changed

    def _batch(self, full: bool, ids: set[str]) -> _Batch:
        view = self.view
        if full:
            self._written.clear()
            ids = set(view.agents)
            self._events_upto = 0
        else:
            ids = ids | self._changed()
        agents = [(agent_id, agent_rows(view, agent_id)) for agent_id in sorted(ids)]
        # An agent back in the view brings the events of its that are still in the window.
        arrived = {agent_id for agent_id, rows in agents if rows and agent_id not in self._written}
        for agent_id, _ in agents:
            if agent_id in view.agents:
                self._written[agent_id] = (
                    view.resolution(agent_id),
                    view.llm_answer(agent_id).digest,
                )
            else:
                self._written.pop(agent_id, None)
        history = view.history
        # A full window may have lost the first part of its oldest entry's events (one log
        # entry can record several); that entry's are left out, so the table never depends on
        # where the window happened to cut.
        cut = history[0]["index"] if history and len(history) == history.maxlen else 0
        events = [
            event_row(item)
            for item in history
            if item["index"] > cut
            and item["agent_id"] in view.agents
            and (item["index"] > self._events_upto or item["agent_id"] in arrived)
        ]
        if history:
            self._events_upto = max(self._events_upto, history[-1]["index"])
        return _Batch(full, agents, events, cut, self._schemas(full))

    def _schemas(self, full: bool) -> list[Row] | None:
        """The canonical schemas as rows, if they are not the ones last written (they are few,
        and an entry never changes once made: a change of hashes rewrites the table)."""
        entries = self.view.schemas.entries
        hashes = tuple(entries)
        if not full and hashes == self._schema_hashes:
            return None
        self._schema_hashes = hashes
        return [
            (e.hash, _json(e.canonical), e.runtime_origin, db_time(e.created_ms))
            for e in entries.values()
        ]

    async def _flush(self) -> None:
        """Write what changed since the last flush (everything after a reset), including
        events recorded by entries that name no agent (a rotation's); on any failure rewrite
        everything at the next try, which the loop makes after FLUSH_INTERVAL."""
        full, ids = self._full, self._dirty
        history = self.view.history
        recorded = bool(history) and history[-1]["index"] > self._events_upto
        if not full and not ids and not recorded:
            return
        self._full, self._dirty = False, set()
        try:
            batch = self._batch(full, ids)
            await asyncio.get_running_loop().run_in_executor(self._io, self._write, batch)
        except Exception as exc:  # sqlite3, OSError...: the projection must go on
            log.warning(
                "sqlite projection update failed; retrying",
                extra={"path": self.path, "error": str(exc)},
            )
            # What this batch would have written is now known only to the batch: start over.
            self._full = True
            self._wake.set()

    # -- in the projection thread --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """The projection's connection, kept only once WAL mode and the schema are set up (a
        lock held by someone else can fail either; the next flush then starts over)."""
        if self._conn is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                if not ent_schema.is_current(conn):
                    ent_schema.create(conn)
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _write(self, batch: _Batch) -> None:
        conn = self._connect()
        with conn:
            if batch.full:
                conn.execute("DELETE FROM registry_events")
                for table, _ in _OWNED:
                    conn.execute(f"DELETE FROM {table}")
                conn.execute("DELETE FROM agents")
            for agent_id, rows in batch.agents:
                if not batch.full:
                    _delete_agent(conn, agent_id, removed=rows is None)
                if rows is not None:
                    _insert_agent(conn, rows)
            conn.executemany(
                f"INSERT INTO registry_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                batch.events,
            )
            conn.execute(
                "DELETE FROM registry_events WHERE json_extract(data, '$.log_index') <= ?",
                (batch.cut,),
            )
            if batch.schemas is not None:
                conn.execute("DELETE FROM schema_entries")
                conn.executemany(
                    "INSERT INTO schema_entries (hash, canonical, runtime_origin, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    batch.schemas,
                )

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _delete_agent(conn: sqlite3.Connection, agent_id: str, removed: bool) -> None:
    for table, column in _OWNED:
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (agent_id,))
    if removed:
        conn.execute("DELETE FROM registry_events WHERE agent_events = ?", (agent_id,))
        conn.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,))


def _insert_agent(conn: sqlite3.Connection, rows: AgentRows) -> None:
    marks = ", ".join("?" * len(AGENT_COLUMNS))
    conn.execute(f"INSERT OR REPLACE INTO agents VALUES ({marks})", rows.agent)
    for table, columns, found in (
        ("capabilities", _CAPABILITY_COLUMNS, rows.capabilities),
        ("dependency_resolutions", _DEPENDENCY_COLUMNS, rows.dependencies),
        ("llm_tool_resolutions", _LLM_TOOL_COLUMNS, rows.llm_tools),
        ("llm_provider_resolutions", _LLM_PROVIDER_COLUMNS, rows.llm_providers),
    ):
        if found:
            marks = ", ".join("?" * len(found[0]))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", found)
