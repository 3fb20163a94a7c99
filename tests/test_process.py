"""The real program as a separate process: startup, crash safety, the guide's checks."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from registry import events
from registry.store import Store, index_key
from tests.conftest import agent_body, eventually
from tests.ports import free_port
from tests.processes import CLUSTER_KEY, Registry
from tests.timing import scaled

pytestmark = pytest.mark.slow


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def register_agent(session: aiohttp.ClientSession, url: str, agent_id: int) -> bool:
    """The guide's test_registry_load.py request, verbatim in substance."""
    data = {
        "id": f"test-agent-{agent_id}",
        "capabilities": ["test"],
        "endpoint": f"http://agent-{agent_id}:8080",
    }
    async with session.post(f"{url}/api/v1/agents", json=data) as response:
        return response.status == 200


async def test_guide_load_test_and_sqlite_projection(
    tmp_path: Path, registries: list[Registry]
) -> None:
    registry = Registry(tmp_path / "data", DATABASE_TYPE="sqlite")
    registries.append(registry.start())
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(register_agent(session, registry.url, i) for i in range(100))
        )
        assert sum(results) == 100
        async with session.get(f"{registry.url}/api/v1/agents") as resp:
            assert (await resp.json())["count"] == 100
        async with session.get(f"http://127.0.0.1:{registry.metrics_port}/metrics") as resp:
            assert 'mcp_registry_agents_total{status="healthy"} 100.0' in await resp.text()
    assert registry.stop() == 0
    database = tmp_path / "data" / "registry.db"
    if shutil.which("sqlite3") is None:
        pytest.skip("sqlite3 CLI not installed (.ci/run installs it): the guide's query untested")
    query = subprocess.run(
        ["sqlite3", str(database), "SELECT agent_id, status FROM agents ORDER BY agent_id;"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = query.stdout.split()
    assert len(rows) == 100
    assert rows[0] == "test-agent-0|healthy"


async def test_kill_9_mid_load_loses_no_acknowledged_write(
    tmp_path: Path, registries: list[Registry]
) -> None:
    data = tmp_path / "data"
    registry = Registry(data, SNAPSHOT_EVERY="50")
    registries.append(registry.start())
    acknowledged: set[str] = set()
    stop = asyncio.Event()

    async def writer(worker: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while not stop.is_set():
            agent_id = f"w{worker}-{n}"
            n += 1
            body = {"id": agent_id, "capabilities": ["c"], "endpoint": "http://x:1"}
            try:
                async with session.post(f"{registry.url}/api/v1/agents", json=body) as resp:
                    if resp.status == 200:
                        acknowledged.add(agent_id)
            except aiohttp.ClientError:
                return

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(writer(w, session)) for w in range(16)]
        deadline = time.monotonic() + 20
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        registry.kill()  # mid-load: writers are still sending
        stop.set()
        await asyncio.gather(*tasks)
    assert len(acknowledged) >= 300

    restarted = Registry(data)
    registries.append(restarted.start())
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{restarted.url}/api/v1/agents") as resp,
    ):
        present = {agent["id"] for agent in (await resp.json())["agents"]}
    missing = acknowledged - present
    assert not missing, f"{len(missing)} acknowledged registrations lost"
    store = Store(str(data / "lmdb"))
    try:
        assert store.snapshot_index() > 0  # the restart really went through snapshot + tail
    finally:
        store.close()


async def ready(session: aiohttp.ClientSession, registry: Registry) -> bool:
    async with session.get(f"{registry.url}/ready") as resp:
        return resp.status == 200


async def test_a_full_raft_journal_stops_the_node_and_loses_no_acknowledged_write(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """A one-member cluster whose LMDB_MAP_SIZE the writes outgrow (a full disk, as far as the
    journal can tell): the process exits 1 at once with one line naming the index it could
    not write, and restarted with room, it holds every write it had answered 200."""
    data = tmp_path / "data"
    raft_port = str(free_port())
    cluster = {
        "ENABLE_LEADER_ELECTION": "true",
        "ENCRYPTION_KEY": CLUSTER_KEY,
        "REGISTRY_PEERS": f"127.0.0.1:{raft_port}",
        "RAFT_PORT": raft_port,
    }
    registry = Registry(data, LMDB_MAP_SIZE="256Ki", **cluster)
    registries.append(registry.start())
    acknowledged: set[str] = set()
    async with aiohttp.ClientSession() as session:
        await eventually(lambda: ready(session, registry), 10)
        for n in range(200):  # ~8 KiB each: the journal's 256 KiB fill long before
            body = agent_body(f"big-{n}", "c", padding="x" * 8000)
            try:
                async with session.post(f"{registry.url}/heartbeat", json=body) as resp:
                    if resp.status != 200:
                        break  # not committed: the node must be stopping
                    acknowledged.add(body["agent_id"])
            except aiohttp.ClientError:
                break  # the node stopped under this write
    assert registry.proc is not None
    assert registry.proc.wait(timeout=scaled(10)) == 1
    assert 0 < len(acknowledged) < 200
    lines = [line for line in registry.log_path.read_text().splitlines() if "stopping" in line]
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "critical"
    assert record["msg"].startswith(f"raft journal write failed at log index {record['index']}: ")
    assert "MDB_MAP_FULL" in record["msg"]
    assert "Traceback" not in registry.log_path.read_text()

    restarted = Registry(data, port=registry.port, LMDB_MAP_SIZE="64Mi", **cluster)
    registries.append(restarted.start())
    async with aiohttp.ClientSession() as session:
        await eventually(lambda: ready(session, restarted), 10)
        async with session.get(f"{restarted.url}/api/v1/agents") as resp:
            present = {agent["id"] for agent in (await resp.json())["agents"]}
    missing = acknowledged - present
    assert not missing, f"{len(missing)} acknowledged registrations lost"


def test_raft_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Another process holds RAFT_PORT: the node says so and stops, instead of retrying the
    bind forever with /ready at "raft not started"."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        raft_port = str(holder.getsockname()[1])
        started = time.monotonic()
        result = run_cli(
            {
                "DATA_DIR": str(tmp_path),
                "REGISTRY_PORT": str(free_port()),
                "METRICS_PORT": str(free_port()),
                "ENABLE_LEADER_ELECTION": "true",
                "ENCRYPTION_KEY": CLUSTER_KEY,
                "REGISTRY_PEERS": f"127.0.0.1:{raft_port}",
                "RAFT_PORT": raft_port,
                "LOG_LEVEL": "error",
            }
        )
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"mcp-mesh-registry: cannot serve: [Errno {errno.EADDRINUSE}] "
        f"RAFT_PORT {raft_port} cannot be bound ({os.strerror(errno.EADDRINUSE)})"
    )


def test_corrupt_record_stops_startup_naming_its_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(str(data / "lmdb"))
    store.append([(i, events.encode(events.remove(f"a-{i}", i))) for i in range(1, 6)])
    store.close()
    import lmdb

    env = lmdb.open(str(data / "lmdb"), max_dbs=4)
    log_db = env.open_db(b"log")
    with env.begin(write=True, db=log_db) as txn:
        txn.put(index_key(4), b"\x00\x01\x02garbage", db=log_db)
    env.close()
    result = run_cli({"DATA_DIR": str(data), "REGISTRY_PORT": str(free_port())})
    assert result.returncode == 1
    assert "corrupt record at log index 4" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENT_TIMEOUT", "soon"),
        ("HEALTH_CHECK_INTERVAL", "-5s"),
        ("REGISTRY_PORT", "http"),
        ("METRICS_PORT", "70000"),
        ("LOG_LEVEL", "loud"),
        ("ENABLE_LEADER_ELECTION", "maybe"),
        ("DATABASE_TYPE", "mysql"),
        ("DATABASE_URL", "postgresql://registry:port-not-a-number@db:pg/registry"),
        ("DATABASE_URL", "mysql://registry@db/registry"),  # with DATABASE_TYPE=postgresql
        ("DATABASE_PORT", "pg"),  # with DATABASE_TYPE=postgresql
        ("REGISTRY_PEERS", "no-port-here"),
        ("RAFT_FIRST_CONTACT_WAIT", "soon"),
        ("LMDB_MAP_SIZE", "8GB"),
        ("LMDB_MAP_SIZE", "1Ki"),
        ("MCP_MESH_PROXY_TIMEOUT", "0"),
        ("MCP_MESH_PROXY_TIMEOUT", "1m"),
        ("MCP_MESH_PROPAGATE_HEADERS", "authorization, *"),
        ("MCP_MESH_TLS_MODE", "on"),
        ("MCP_MESH_TLS_MODE", "strict"),  # without MCP_MESH_TLS_CERT and _KEY
        ("MCP_MESH_TLS_CERT", "/nonexistent/cert.pem"),  # with MCP_MESH_TLS_MODE=auto below
        ("MCP_MESH_TRUST_BACKEND", "k8s-secrets"),
        ("MCP_MESH_TRUST_DOMAIN", "not a domain"),
        ("MCP_MESH_ADMIN_PORT", "admin"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, name: str, value: str) -> None:
    env = {"DATA_DIR": str(tmp_path), name: value}
    if name == "MCP_MESH_TLS_CERT":
        env.update(MCP_MESH_TLS_MODE="auto", MCP_MESH_TLS_KEY="/nonexistent/key.pem")
    if name == "DATABASE_PORT" or value.startswith("mysql:"):
        env.update(DATABASE_TYPE="postgresql")
    result = run_cli(env)
    assert "port-not-a-number" not in result.stderr  # a URL's password is never echoed
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]


@pytest.mark.parametrize("key", ["", "thirty-one-bytes-are-not-enough"])
def test_cluster_mode_without_a_strong_key_is_one_line_and_exit_2(tmp_path: Path, key: str) -> None:
    """Without a key anyone reaching RAFT_PORT could join or inject: refuse to start."""
    assert len(key) in (0, 31)
    peer = f"127.0.0.1:{free_port()}"
    env = {"DATA_DIR": str(tmp_path), "ENABLE_LEADER_ELECTION": "true", "ENCRYPTION_KEY": key}
    result = run_cli({**env, "REGISTRY_PEERS": peer, "RAFT_PORT": peer.rpartition(":")[2]})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mcp-mesh-registry: ENCRYPTION_KEY is ")
    assert ("not set" if not key else "too short (31 bytes)") in lines[0]
    assert not (tmp_path / "raft").exists()  # stopped before anything was opened


def test_help_lists_every_setting() -> None:
    from registry.config import SETTINGS

    result = run_cli({}, "--help")
    assert result.returncode == 0
    for setting in SETTINGS:
        assert setting.name in result.stdout
