"""The SQLite projection in the Go registry's schema (registry/sqlite_projection.py), on real
SQLite files: written incrementally it must hold exactly what a rebuild from the same view
holds, whatever events came, in whatever batches."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from registry import ent_schema, events
from registry.events import Event
from registry.registration import from_heartbeat
from registry.sqlite_projection import SqliteProjection
from registry.view import View, apply
from tests.conftest import agent_body
from tests.test_view_events import event_strategy

TABLES = {
    "agents": "*",
    "capabilities": "function_name, capability, version, tags, dependencies, agent_capabilities",
    "dependency_resolutions": "consumer_function_name, dep_index, capability_required, "
    "tags_required, namespace_required, provider_function_name, endpoint, status, "
    "consumer_agent_id, provider_agent_id",
    "llm_tool_resolutions": "consumer_function_name, filter_capability, filter_mode, status, "
    "consumer_agent_id, provider_agent_id",
    "llm_provider_resolutions": "consumer_function_name, required_capability, status, "
    "consumer_agent_id, provider_agent_id",
    "registry_events": "event_type, function_name, timestamp, data, agent_events",
    "schema_entries": "hash, canonical, runtime_origin, created_at",
}
"""What each table is compared on: every column but the row ids (a rebuild numbers anew)."""


def contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        return {
            table: sorted(db.execute(f"SELECT {columns} FROM {table}").fetchall(), key=repr)
            for table, columns in TABLES.items()
        }


async def _project(view: View, path: Path, batches: list[list[Event]], start: int) -> None:
    """Apply ``batches`` to ``view`` with a projection at ``path`` flushing after each."""
    projection = SqliteProjection(str(path), view)
    await projection.start()
    index = start
    for batch in batches:
        for event in batch:
            index += 1
            apply(view, index, event)
            projection.on_applied(index, event)
        await projection._flush()
    await projection.stop()


def project(view: View, path: Path, batches: list[list[Event]], start: int = 0) -> None:
    asyncio.run(_project(view, path, batches, start))


# A rotation names no agent in its payload, yet records an event for each agent it asks to
# register again: the projection must write those too.
any_event = st.one_of(
    event_strategy(),
    st.builds(lambda ts: events.rotate("", ts), st.integers(min_value=0, max_value=2**40)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(any_event, min_size=1, max_size=6), max_size=8))
def test_incremental_projection_equals_a_rebuild(batches: list[list[Event]]) -> None:
    """Every table written batch by batch equals the tables a fresh projection writes from
    the final view. Fails without the flush's scan for changed resolutions (a consumer's rows
    would keep a provider that left), without deleting a removed agent's events, or without
    trimming events that left the view's history window (the view keeps 16 here), or without
    flushing when only a rotation recorded events."""
    with tempfile.TemporaryDirectory() as scratch:
        view = View(history_limit=16)
        project(view, Path(scratch) / "incremental.db", batches)
        project(view, Path(scratch) / "rebuilt.db", [])
        incremental = contents(Path(scratch) / "incremental.db")
        rebuilt = contents(Path(scratch) / "rebuilt.db")
        assert incremental == rebuilt, {
            table: {
                "only incremental": set(rows) - set(rebuilt[table]),
                "only rebuilt": set(rebuilt[table]) - set(rows),
            }
            for table, rows in incremental.items()
            if rows != rebuilt[table]
        }
        with sqlite3.connect(Path(scratch) / "incremental.db") as db:
            assert ent_schema.is_current(db)
            assert {row[0] for row in db.execute("SELECT agent_id FROM agents")} == set(view.agents)


def test_a_consumer_s_rows_follow_its_provider(tmp_path: Path) -> None:
    """The rows Go's database would hold for a consumer with one resolvable dependency and one
    that is not; when the provider leaves, its rows and events go and the consumer's
    dependency row says unresolved."""
    view = View()
    provider = from_heartbeat(agent_body("prov-1", "date", port=9001, tags=["fast"]))
    consumer = from_heartbeat(agent_body("cons-1", "report", deps=["date", "missing"]))
    path = tmp_path / "registry.db"
    project(view, path, [[events.upsert(provider, 1000), events.upsert(consumer, 2000)]])
    with sqlite3.connect(path) as db:
        agents = db.execute(
            "SELECT agent_id, status, total_dependencies, dependencies_resolved, http_port, "
            "created_at FROM agents ORDER BY agent_id"
        ).fetchall()
        assert agents == [
            ("cons-1", "healthy", 2, 1, 9000, "1970-01-01 00:00:02.000+00:00"),
            ("prov-1", "healthy", 0, 0, 9001, "1970-01-01 00:00:01.000+00:00"),
        ]
        assert db.execute(
            "SELECT dep_index, capability_required, status, provider_agent_id, "
            "provider_function_name FROM dependency_resolutions ORDER BY dep_index"
        ).fetchall() == [
            (0, "date", "available", "prov-1", "date_fn"),
            (1, "missing", "unresolved", None, None),
        ]
        assert db.execute(
            "SELECT capability, tags FROM capabilities WHERE agent_capabilities = 'prov-1'"
        ).fetchall() == [("date", '["fast"]')]
        assert db.execute(
            "SELECT event_type, agent_events, json_extract(data, '$.log_index') "
            "FROM registry_events ORDER BY id"
        ).fetchall() == [("register", "prov-1", 1), ("register", "cons-1", 2)]
    project(view, path, [[events.remove("prov-1", 3000)]], start=2)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT agent_id, dependencies_resolved FROM agents").fetchall() == [
            ("cons-1", 0)
        ]
        assert db.execute(
            "SELECT status, provider_agent_id FROM dependency_resolutions WHERE dep_index = 0"
        ).fetchall() == [("unresolved", None)]
        assert db.execute("SELECT DISTINCT agent_events FROM registry_events").fetchall() == [
            ("cons-1",)
        ]
        assert db.execute("SELECT COUNT(*) FROM capabilities").fetchone() == (1,)


def test_a_projection_file_of_another_shape_is_replaced(tmp_path: Path) -> None:
    """A file written by an older version of ours (an ``agents`` table of its own shape) gets
    the Go registry's schema and the view's rows at the first flush."""
    path = tmp_path / "registry.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE agents (id TEXT PRIMARY KEY, status TEXT NOT NULL)")
        db.execute("INSERT INTO agents VALUES ('stale', 'healthy')")
    view = View()
    body = from_heartbeat(agent_body("fresh-1", "date"))
    project(view, path, [[events.upsert(body, 1000)]])
    with sqlite3.connect(path) as db:
        assert ent_schema.is_current(db)
        assert db.execute("SELECT agent_id FROM agents").fetchall() == [("fresh-1",)]
        assert db.execute("SELECT id, type FROM ent_types ORDER BY id").fetchall() == [
            (n + 1, table) for n, table in enumerate(ent_schema.TABLES)
        ]
        first_capability = db.execute("SELECT id FROM capabilities").fetchone()[0]
        assert first_capability == (1 << 32) + 1  # Ent's range for its second type


def test_schema_entries_follow_the_schemas_agents_carry(tmp_path: Path) -> None:
    """A canonical schema an agent registers is a ``schema_entries`` row (meshui's Schemas
    page reads them there) until no agent carries it any more."""
    canonical = {"properties": {"id": {"type": "string"}}, "required": ["id"], "type": "object"}
    schema_hash = "sha256:" + "9" * 64
    body = agent_body("prov-1", "date")
    body["tools"][0] |= {"outputSchemaHash": schema_hash, "outputSchemaCanonical": canonical}
    view = View()
    path = tmp_path / "registry.db"
    project(view, path, [[events.upsert(from_heartbeat(body), 1000)]])
    with sqlite3.connect(path) as db:
        assert db.execute(
            "SELECT hash, canonical, runtime_origin FROM schema_entries"
        ).fetchall() == [
            (
                schema_hash,
                '{"properties":{"id":{"type":"string"}},"required":["id"],"type":"object"}',
                "python",
            )
        ]
        assert db.execute("SELECT output_schema_hash FROM capabilities").fetchall() == [
            (schema_hash,)
        ]
    project(view, path, [[events.remove("prov-1", 2000)]], start=1)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM schema_entries").fetchone() == (0,)
