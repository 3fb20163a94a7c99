"""Shared fixtures: a real node on real LMDB files, served over a real loopback socket."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from registry.api.app import build_app
from registry.config import Config, Database
from registry.node import Node
from tests import postgres as pg
from tests.processes import Registry
from tests.timing import scaled

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``CI=true`` a skip is a failure: CI installs every prerequisite (.ci/run), so a skip
    there means a test that was meant to run did not, and a green run would hide it."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a skip is a failure in CI): {reason}"


def make_config(data_dir: Path, **overrides: Any) -> Config:
    base = Config(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        data_dir=str(data_dir),
        database_path=str(data_dir / "registry.db"),
        health_check_interval=30.0,
        agent_timeout=60.0,
        instance_id="test",
    )
    return replace(base, **overrides)


class Api:
    """A started node plus an HTTP client bound to it over 127.0.0.1."""

    def __init__(self, node: Node, client: TestClient[Any, Any]) -> None:
        self.node = node
        self.client = client

    @property
    def log_index(self) -> int:
        return self.node.view.applied_index


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.storages("lmdb", "postgresql")`` (on a test or a module) runs each of its
    tests that start nodes through ``start_api`` once per storage: the same API answers from a
    node whose log is in LMDB and from a replica whose log is in PostgreSQL."""
    marker = metafunc.definition.get_closest_marker("storages")
    if marker is not None and "start_api" in metafunc.fixturenames:
        metafunc.parametrize("storage", marker.args)


@pytest.fixture
def storage(request: pytest.FixtureRequest) -> str:
    """Where ``start_api``'s nodes keep their log: lmdb unless a ``storages`` mark says more."""
    return str(getattr(request, "param", "lmdb"))


@pytest.fixture(scope="session")
def shared_postgres() -> Iterator[pg.Postgres]:
    """One server for the session's PostgreSQL-mode API tests; each test gets a database of
    its own (``start_api``), so none sees another's log and the server starts only once."""
    with pg.running() as server:
        yield server


_databases = itertools.count()


@pytest.fixture
async def start_api(
    tmp_path: Path, storage: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    started: list[tuple[Node, TestClient[Any, Any]]] = []
    databases: dict[Path, Database] = {}
    """In PostgreSQL mode, a data directory stands for a database: a node started again on
    the same directory finds the log it left, as it would on its LMDB files."""

    async def start(data_dir: Path | None = None, **overrides: Any) -> Api:
        data_dir = data_dir or tmp_path / "node"
        if storage == "postgresql":
            if data_dir not in databases:
                server: pg.Postgres = request.getfixturevalue("shared_postgres")
                databases[data_dir] = server.database(f"api_{next(_databases)}")
            overrides = {
                "database_type": "postgresql",
                "database": databases[data_dir],
                "retry_period": 0.2,
                **overrides,
            }
        node = Node.open(make_config(data_dir, **overrides))
        await node.start()
        if storage == "postgresql":
            # A replica answers writes once it has replayed the log; the health and sweep
            # tests need it to be the decider too (the only replica, it soon is).
            await eventually(lambda: node.proposer.ready()[0] and node.proposer.leading(), 10)
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(node), host="127.0.0.1"))
        await client.start_server()
        started.append((node, client))
        return Api(node, client)

    yield start
    for node, client in reversed(started):
        await client.close()
        await node.stop()


@pytest.fixture
async def api(start_api: Callable[..., Awaitable[Api]]) -> Api:
    return await start_api()


async def eventually(check: Callable[[], Any], timeout: float = 5.0, every: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds, stretched
    by the machine's TEST_TIME_SCALE (tests/timing.py)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


async def steadily(check: Callable[[], Any], duration: float, every: float = 0.1) -> None:
    """Poll ``check`` for ``duration`` seconds (stretched by TEST_TIME_SCALE) and fail the first
    time it is falsy. For what must *stay* true (a node that must never become ready, an agent
    that must never be marked unhealthy): one look right after a change cannot show that."""
    duration = scaled(duration)
    deadline = time.monotonic() + duration
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if not result:
            raise AssertionError(f"condition stopped holding within {duration}s")
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(every)


def agent_body(
    agent_id: str,
    capability: str | None = None,
    *,
    deps: list[Any] | None = None,
    port: int = 9000,
    tags: list[str] | None = None,
    version: str = "1.0.0",
    namespace: str = "default",
    **extra: Any,
) -> dict[str, Any]:
    """A POST /heartbeat body shaped like the SDK's (see reference/ in ../shared)."""
    tool: dict[str, Any] = {
        "function_name": f"{capability or 'noop'}_fn",
        "capability": capability or f"{agent_id}_cap",
        "version": version,
        "tags": tags or [],
        "kwargs": {"function_name": f"{capability or 'noop'}_fn"},
    }
    if deps is not None:
        tool["dependencies"] = [d if isinstance(d, dict) else {"capability": d} for d in deps]
    return {
        "agent_id": agent_id,
        "name": agent_id.rsplit("-", 1)[0],
        "agent_type": "mcp_agent",
        "version": "1.0.0",
        "http_host": "127.0.0.1",
        "http_port": port,
        "namespace": namespace,
        "status": "healthy",
        "runtime": "python",
        "tools": [tool],
        **extra,
    }


@pytest.fixture
def registries() -> Iterator[list[Registry]]:
    """Registry processes a test started; killed at the end whatever happened."""
    made: list[Registry] = []
    yield made
    for registry in made:
        if registry.proc is not None and registry.proc.poll() is None:
            registry.proc.kill()
            registry.proc.wait()


@pytest.fixture
def postgres() -> Iterator[pg.Postgres]:
    """A private PostgreSQL server (tests/postgres.py); skips only without its binaries."""
    with pg.running() as server:
        yield server
