"""Single-node mode when its storage misbehaves: a full LMDB map, a locked SQLite projection."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import Api, agent_body, eventually

TINY_MAP = 64 << 10
"""Room for a few dozen registrations in the log (LMDB's own pages take the rest)."""


async def test_full_lmdb_map_answers_503_applies_nothing_and_keeps_serving_reads(
    start_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await start_api(lmdb_map_size=TINY_MAP)  # LMDB_MAP_SIZE=64Ki
    assert api.node.store.map_size == TINY_MAP
    registered: list[str] = []
    for n in range(500):
        state = (api.log_index, api.node.view.digest(), api.node.store.last_index())
        resp = await api.client.post("/heartbeat", json=agent_body(f"filler-{n}", "date"))
        if resp.status != 200:
            break
        registered.append(f"filler-{n}")
    else:
        pytest.fail("a 64 KiB map never filled up")
    assert resp.status == 503
    error = await resp.json()
    assert error["error"] == "registry unavailable"
    assert "storage full" in error["detail"] and str(TINY_MAP) in error["detail"]
    assert registered, "the map was full before the first write"
    # Nothing of the refused write reached the log or the view.
    assert (api.log_index, api.node.view.digest(), api.node.store.last_index()) == state
    assert f"filler-{len(registered)}" not in api.node.view.agents
    # The node keeps answering reads from the view it has; the same write is refused again.
    listing = await (await api.client.get("/agents")).json()
    assert sorted(a["id"] for a in listing["agents"]) == sorted(registered)
    assert (await api.client.head(f"/heartbeat/{registered[0]}")).status == 200
    assert (await api.client.get("/health")).status == 200
    assert (await api.client.get(f"/api/v1/agents/{registered[-1]}")).status == 200
    again = await api.client.post(
        "/heartbeat", json=agent_body(f"filler-{len(registered)}", "date")
    )
    assert again.status == 503
    assert (api.log_index, api.node.view.digest(), api.node.store.last_index()) == state


def projected(path: str) -> set[str] | None:
    """The agent ids in the SQLite projection, read the way an operator would; None while
    there is no ``agents`` table yet."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        try:
            return {row[0] for row in conn.execute("SELECT agent_id FROM agents")}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise


async def test_sqlite_projection_lock_held_past_busy_timeout_then_catches_up(
    start_api: Callable[..., Awaitable[Api]], caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds the projection's write lock longer than SQLite's busy
    timeout: writes still commit (the write path never waits for SQLite), the projection's
    update fails, and once the lock is released it catches up without any further write."""
    api = await start_api(database_type="sqlite")
    path = api.node.config.database_path
    await api.client.post("/heartbeat", json=agent_body("early-1", "date"))
    await eventually(lambda: projected(path) == {"early-1"})
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # the write lock, as a long-running writer holds it
        for agent_id in ("late-1", "late-2"):
            resp = await api.client.post("/heartbeat", json=agent_body(agent_id, "date"))
            assert resp.status == 200
        assert (await api.client.delete("/agents/early-1")).status == 204
        assert set(api.node.view.agents) == {"late-1", "late-2"}

        def update_failed() -> bool:
            return any("sqlite projection update failed" in r.getMessage() for r in caplog.records)

        await eventually(update_failed, timeout=20)
        assert projected(path) == {"early-1"}  # readers still see the last flushed state
    finally:
        locker.rollback()
        locker.close()
    await eventually(lambda: projected(path) == {"late-1", "late-2"}, timeout=10)


async def test_sqlite_projection_locked_at_startup_is_built_once_released(
    start_api: Callable[..., Awaitable[Api]], tmp_path: Path
) -> None:
    """The projection's first connection and rebuild meet a held lock: the node still starts
    and serves writes, and the table is created and filled once the lock is released."""
    path = tmp_path / "registry.db"
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        api = await start_api(database_type="sqlite", database_path=str(path))
        resp = await api.client.post("/heartbeat", json=agent_body("after-1", "date"))
        assert resp.status == 200
    finally:
        locker.rollback()
        locker.close()
    await eventually(lambda: projected(str(path)) == {"after-1"}, timeout=10)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
