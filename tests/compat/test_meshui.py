"""MCP Mesh's dashboard (``meshui``, from the same npm package) pointed at our registry, and at
the Go registry beside it, checked in headless Chromium.

meshui takes agents and their dependencies from the registry over HTTP (``/api/agents``), but
its event feed (the history backfill and the live agent diff) from the registry's database at
``DATABASE_URL``; ours is the SQLite projection in the Go registry's schema
(registry/sqlite_projection.py). meshui listens on every interface with no option to change
that, so everything here (both registries, both dashboards and the browser) runs inside a
network namespace of the test's own, with only a loopback (tests/netns.py).

A screenshot of each dashboard is left in the test's directory (``meshui-ours.png``,
``meshui-go.png``) to compare by eye.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from registry import ent_schema
from tests import netns
from tests.compat import cdp
from tests.compat.test_meshctl_and_go import go_registry_process, mesh_cli  # noqa: F401
from tests.ports import free_port
from tests.processes import Registry
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

SCHEMA = {"properties": {"day": {"type": "string"}}, "required": ["day"], "type": "object"}
SCHEMA_HASH = "sha256:" + "d" * 64
MESH: list[dict[str, Any]] = [
    {
        "agent_id": "prov-1",
        "name": "prov",
        "version": "1.2.0",
        "http_host": "127.0.0.1",
        "http_port": 9001,
        "tools": [
            {
                "function_name": "serve",
                "capability": "svc",
                "version": "1.0.0",
                "tags": ["fast"],
                "outputSchemaHash": SCHEMA_HASH,
                "outputSchemaCanonical": SCHEMA,
            }
        ],
    },
    {
        "agent_id": "cons-1",
        "name": "cons",
        "http_host": "127.0.0.1",
        "http_port": 9002,
        "tools": [
            {
                "function_name": "use",
                "capability": "usecap",
                "dependencies": [
                    {"capability": "svc", "tags": ["fast"], "expectedSchemaHash": SCHEMA_HASH},
                    {"capability": "gone"},
                ],
            }
        ],
    },
]
"""A provider publishing an output schema and a consumer with one dependency it gets (expecting
that schema) and one it does not."""

ON_THE_PAGE = [
    "Total Agents\n\n2",
    "1/2 deps resolved",
    "0/0 deps resolved",
    # The history backfill (read from the database) renders without the runtime badge that
    # the live poller's events carry: these two lines come from registry_events.
    "Agent Registered\ncons\n",
    "Agent Registered\nprov\n",
]


@pytest.fixture
def namespace() -> Iterator[str]:
    why_not = netns.why_not() or (None if cdp.binary() else "chromium is not installed")
    if why_not:
        pytest.skip(why_not)
    with netns.namespace(f"mui{os.getpid()}") as name:
        yield name


@contextmanager
def meshui(mesh_cli: Path, registry_url: str, database: Path, log: Path) -> Iterator[str]:  # noqa: F811
    """A meshui for ``registry_url`` reading ``database``; its URL once it serves its API."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": str(database)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(mesh_cli / "meshui"), "--registry-url", registry_url, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


async def until_json(session: aiohttp.ClientSession, url: str, ready: Any) -> Any:
    """GET ``url`` until its JSON satisfies ``ready`` (connection errors while starting)."""
    deadline = time.monotonic() + scaled(30)
    body: Any = None
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    body = await resp.json()
                    if ready(body):
                        return body
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never ready; last answer {body}")


def schema_of(database: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return {
            sql
            for (sql,) in db.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'sqlite_sequence'"
            )
        }


@asynccontextmanager
async def our_registry(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    node = Registry(tmp_path / "ours", DATABASE_TYPE="sqlite").start()
    try:
        yield node.url, node.data_dir / "registry.db"
    finally:
        node.stop()


async def dashboard(
    session: aiohttp.ClientSession,
    chromium: aiohttp.ClientSession,
    ui: str,
    screenshot: Path,
) -> dict[str, Any]:
    """What one meshui shows: its event history API, its agents and the rendered page."""
    history = await until_json(session, f"{ui}/api/events/history", lambda b: b["count"] >= 2)
    agents = await until_json(session, f"{ui}/api/agents", lambda b: b["count"] == 2)
    schemas = await until_json(session, f"{ui}/api/schemas", lambda b: b["count"] == 1)
    usage = await until_json(
        session, f"{ui}/api/schemas/{SCHEMA_HASH}/usage", lambda b: bool(b["providers"])
    )
    async with cdp.page(chromium, f"{ui}/") as tab:
        text = await tab.text_with(ON_THE_PAGE, timeout=scaled(30))
        await tab.screenshot(screenshot)
    return {
        "events": [
            (e["event_type"], e["agent_id"], e.get("agent_name")) for e in history["events"]
        ],
        "agents": sorted(
            (a["id"], a["status"], a["dependencies_resolved"], a["total_dependencies"])
            for a in agents["agents"]
        ),
        "schemas": [
            {k: v for k, v in item.items() if k != "created_at"} for item in schemas["schemas"]
        ],
        "usage": {
            "canonical": usage["schema"]["canonical"],
            "providers": usage["providers"],
            "consumers": usage["consumers"],
        },
        "text": text,
    }


def test_meshui_shows_our_agents_dependencies_and_events_as_for_the_go_registry(
    mesh_cli: Path,  # noqa: F811
    namespace: str,
    tmp_path: Path,
) -> None:
    async def scenario() -> dict[str, Any]:
        async with our_registry(tmp_path) as (ours, our_db), aiohttp.ClientSession() as session:
            with go_registry_process(mesh_cli, tmp_path) as go:
                for url in (ours, go):
                    for body in MESH:
                        async with session.post(f"{url}/heartbeat", json=body) as resp:
                            assert resp.status == 200, await resp.text()

                def projected() -> int:
                    with closing(sqlite3.connect(our_db)) as db:
                        return int(db.execute("SELECT COUNT(*) FROM registry_events").fetchone()[0])

                deadline = time.monotonic() + scaled(10)
                while projected() < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                go_db = tmp_path / "go-registry.db"
                seen: dict[str, Any] = {}
                async with cdp.browser(tmp_path / "chromium", tmp_path / "chromium.log") as tabs:
                    for who, registry_url, database in (("ours", ours, our_db), ("go", go, go_db)):
                        with meshui(
                            mesh_cli, registry_url, database, tmp_path / f"{who}.log"
                        ) as ui:
                            seen[who] = await dashboard(
                                session, tabs, ui, tmp_path / f"meshui-{who}.png"
                            )
                seen["schemas"] = {"ours": schema_of(our_db), "go": schema_of(go_db)}
                return seen

    seen = netns.run_inside(namespace, scenario)
    ours, go = seen["ours"], seen["go"]
    for wanted in ON_THE_PAGE:
        assert wanted in ours["text"], (wanted, ours["text"])
        assert wanted in go["text"], (wanted, go["text"])
    assert (
        ours["events"]
        == go["events"]
        == [
            ("register", "cons-1", "cons"),
            ("register", "prov-1", "prov"),
        ]
    )
    assert ours["agents"] == go["agents"]
    # The Schemas page's data, which meshui reads from the database too.
    assert ours["schemas"] == go["schemas"]
    assert ours["schemas"][0]["provider_agent_names"] == ["prov"]
    assert ours["usage"] == go["usage"]
    assert [c["agent_id"] for c in ours["usage"]["consumers"]] == ["cons-1"]
    # meshui migrated our file (column and index dropping on) and found nothing to change: it
    # holds the schema the Go registry makes for itself.
    assert seen["schemas"]["ours"] == seen["schemas"]["go"] == set(ent_schema.STATEMENTS)
