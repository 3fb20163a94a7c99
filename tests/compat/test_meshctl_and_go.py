"""Side by side with MCP Mesh's own Go registry, from the same npm package as ``meshctl``.

The same agents are registered with our three replicas (a Raft cluster, and PostgreSQL-mode
replicas on one database: tests/pg_replicas.py) and with the Go registry; the dependency
resolutions (tag operators, OR groups, version constraints) and what ``meshctl`` shows must be
the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.go_registry import ensure_go_registry
from tests.pg_replicas import Topology, topology  # noqa: F401 (fixture)
from tests.ports import free_port
from tests.test_cluster import all_ready
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]


PROVIDERS = [
    ("p-a", "1.0.0", ["fast", "python"]),
    ("p-b", "2.1.0", ["slow", "typescript"]),
    ("p-c", "1.5.0", ["fast", "typescript", "gpu"]),
]
# (dependency spec, the provider it must resolve to; "" = unresolved)
CASES: list[tuple[dict[str, Any], str]] = [
    ({}, "p-b"),
    ({"tags": ["fast"]}, "p-c"),
    ({"tags": ["+python"]}, "p-a"),
    ({"tags": ["-typescript"]}, "p-a"),
    ({"tags": [["python", "gpu"]]}, "p-c"),
    ({"version": ">=2.0.0"}, "p-b"),
    ({"version": "~1.0.0"}, "p-a"),
    ({"version": "^1.0.0", "tags": ["fast"]}, "p-c"),
    ({"version": "<1.0.0"}, ""),
    ({"tags": ["fast", "-gpu"]}, "p-a"),
    ({"version": "1.5.0 || 2.1.0"}, "p-b"),
    ({"tags": ["+gpu", "fast"]}, "p-c"),
    ({"version": ">=1.0.0, <2.0.0", "tags": ["+python"]}, "p-a"),
    ({"tags": ["nonexistent"]}, ""),
]


@pytest.fixture(scope="session")
def mesh_cli() -> Path:
    """``meshctl`` and the Go ``mcp-mesh-registry`` from the published npm package."""
    binaries, why_not = ensure_go_registry()
    if binaries is None:
        pytest.skip(why_not)
    return binaries


@pytest.fixture
def go_registry(mesh_cli: Path, tmp_path: Path) -> Iterator[str]:
    with go_registry_process(mesh_cli, tmp_path) as url:
        yield url


@contextlib.contextmanager
def go_registry_process(mesh_cli: Path, tmp_path: Path, **extra: str) -> Iterator[str]:
    """The Go registry on 127.0.0.1 with its SQLite file at ``tmp_path/go-registry.db`` (and
    the ``extra`` environment); its URL once it answers /health."""
    port = free_port()
    env = {
        **os.environ,
        **extra,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": str(tmp_path / "go-registry.db"),
    }
    with (tmp_path / "go-registry.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(mesh_cli / "mcp-mesh-registry")], env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(url, proc)
        yield url
    finally:
        proc.kill()
        proc.wait()


def _wait_for_health(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the Go registry answers /health (each test used to wait for it on its own)."""
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the Go registry exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the Go registry at {url} did not answer /health")


def provider_body(agent_id: str, version: str, tags: list[str], port: int) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "name": agent_id,
        "http_host": "127.0.0.1",
        "http_port": port,
        "tools": [
            {"function_name": "serve", "capability": "svc", "version": version, "tags": tags}
        ],
    }


def consumer_body(i: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "agent_id": f"c-{i}",
        "name": f"c-{i}",
        "http_host": "127.0.0.1",
        "http_port": 9100 + i,
        "tools": [
            {
                "function_name": "use",
                "capability": f"use-{i}",
                "dependencies": [{"capability": "svc", **spec}],
            }
        ],
    }


async def register_all(session: aiohttp.ClientSession, url: str) -> list[str]:
    """Register providers then consumers; the provider each consumer got, in CASES order."""
    for n, (agent_id, version, tags) in enumerate(PROVIDERS):
        async with session.post(
            f"{url}/heartbeat", json=provider_body(agent_id, version, tags, 9001 + n)
        ) as resp:
            assert resp.status == 200, await resp.text()
    chosen = []
    for i, (spec, _) in enumerate(CASES):
        async with session.post(f"{url}/heartbeat", json=consumer_body(i, spec)) as resp:
            assert resp.status == 200, await resp.text()
            chosen.append((await resp.json())["dependencies_resolved"]["use"][0]["agent_id"])
    return chosen


def meshctl_json(mesh_cli: Path, url: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(mesh_cli / "meshctl"), "list", "--json", "--registry-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    agents = json.loads(out.stdout)["agents"]
    volatile = ("last_seen", "last_heartbeat", "created_at", "uptime", "age", "start_time")
    return sorted(
        ({k: v for k, v in agent.items() if k not in volatile} for agent in agents),
        key=lambda agent: agent["id"],
    )


async def test_resolution_and_meshctl_match_the_go_registry(
    topology: Topology,  # noqa: F811 (the fixture imported above)
    go_registry: str,
    mesh_cli: Path,
) -> None:
    cluster = topology()
    cluster.start_all()
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes)

        ours = await register_all(session, cluster.nodes[1].url)
        theirs = await register_all(session, go_registry)
    expected = [want for _, want in CASES]
    assert theirs == expected, "the table's expectations disagree with the Go registry"
    assert ours == expected
    our_view = meshctl_json(mesh_cli, cluster.nodes[2].url)
    go_view = meshctl_json(mesh_cli, go_registry)
    assert [a["id"] for a in our_view] == [a["id"] for a in go_view]
    differences = [
        (ours_agent["id"], key, ours_agent.get(key), go_agent.get(key))
        for ours_agent, go_agent in zip(our_view, go_view, strict=True)
        for key in sorted(ours_agent.keys() | go_agent.keys())
        if ours_agent.get(key) != go_agent.get(key)
    ]
    assert differences == [], "\n".join(map(str, differences))
    assert meshctl_status(mesh_cli, cluster.nodes[0].url) == meshctl_status(mesh_cli, go_registry)


def meshctl_status(mesh_cli: Path, url: str) -> list[str]:
    """``meshctl status`` output without colours, times and the registry's own address."""
    out = subprocess.run(
        [str(mesh_cli / "meshctl"), "status", "--registry-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)
    lines = [
        line.rstrip()
        for line in plain.splitlines()
        if not re.search(r"Last Seen|Created|Registry|ago\)|\d{4}-\d{2}-\d{2}", line)
    ]
    assert any("c-0" in line for line in lines) and any("p-b" in line for line in lines)
    return lines
