"""The published MCP Mesh SDK, unchanged, against three replicas on loopback.

Installs ``mcp-mesh`` into its own virtual environment (cached in ``.venv-compat``), runs a
real provider and consumer (FastMCP tools with ``@mesh.tool``/``@mesh.agent``) registered
through *different* replicas, and calls the consumer's tool over MCP: the answer must come
from the provider through the proxy the SDK injected from our registry's resolution. The
replicas are a Raft cluster, and PostgreSQL-mode replicas on one database (tests/pg_replicas.py),
except for the leader's failover, which is Raft's own (the decider's is in
tests/compat/test_sdk_jobs.py and tests/test_postgres_replicas.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from registry.timefmt import iso_ms, now_ms
from tests.compat.fetch_errors import registry_unreachable
from tests.conftest import eventually
from tests.pg_replicas import Topology, topology  # noqa: F401 (fixture)
from tests.ports import free_port
from tests.processes import Registry
from tests.test_cluster import Cluster, all_ready, get_json, leader_of
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

SDK_VERSION = "3.8.*"
ROOT = Path(__file__).resolve().parents[2]
PROVIDER = """
from datetime import datetime

import mesh
from fastmcp import FastMCP

app = FastMCP("Date Provider")


@app.tool()
@mesh.tool(capability="date_service", tags=["system"])
def get_current_date() -> str:
    return "provider-says-" + datetime.now().isoformat(timespec="seconds")


@mesh.agent(name="date-provider", http_port={port}, auto_run=True)
class DateProvider:
    pass
"""
CONSUMER = """
import mesh
from fastmcp import FastMCP

app = FastMCP("Date Consumer")


@app.tool()
@mesh.tool(capability="greeting", dependencies=["date_service"])
async def greet(name: str = "world", date_service: mesh.McpMeshTool = None) -> str:
    if date_service is None:
        return f"Hello {{name}}! (date_service unavailable)"
    return f"Hello {{name}}! It is {{await date_service()}}"


@mesh.agent(name="date-consumer", http_port={port}, auto_run=True)
class DateConsumer:
    pass
"""


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    venv = ROOT / ".venv-compat"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    ready = venv / f".mcp-mesh-{SDK_VERSION}"
    if not ready.exists():
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"mcp-mesh=={SDK_VERSION}"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if install.returncode != 0:
            if unreachable := registry_unreachable(install.stderr):
                pytest.skip(f"PyPI unreachable ({unreachable})")
            raise AssertionError(install.stderr[-3000:])
        # Installed is not yet working: the agents' scripts import these.
        imported = subprocess.run(
            [str(python), "-c", "import mesh, fastmcp"], capture_output=True, text=True
        )
        assert imported.returncode == 0, imported.stderr[-3000:]
        ready.touch()
    return python


class Agent:
    def __init__(
        self,
        python: Path,
        source: str,
        registry: Registry,
        workdir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = env or {}
        """Extra environment (MCP_MESH_TLS_* for tests/compat/test_trust_sdk.py)."""
        self.port = free_port()
        self.script = workdir / f"agent_{self.port}.py"
        self.script.write_text(source.format(port=self.port))
        self.log = workdir / f"agent_{self.port}.log"
        self.python = python
        self.registry = registry
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Agent:
        env = {
            **os.environ,
            "MCP_MESH_REGISTRY_URL": self.registry.url,
            "MCP_MESH_HTTP_HOST": "127.0.0.1",
            "HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.python), str(self.script)],
                env=env,
                stdout=log,
                stderr=log,
                cwd=self.script.parent,
            )
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.stop(signal.SIGKILL)


async def call_tool(
    session: aiohttp.ClientSession,
    agent: Agent,
    tool: str,
    arguments: dict[str, object],
    timeout: aiohttp.ClientTimeout | None = None,
) -> str:
    """The agent's raw MCP answer to one ``tools/call`` ("" if it could not be reached)."""
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    url = f"http://127.0.0.1:{agent.port}/mcp"
    options = {} if timeout is None else {"timeout": timeout}  # None: the session's own
    try:
        async with session.post(url, json=request, headers=headers, **options) as resp:
            return await resp.text()
    except aiohttp.ClientError:
        return ""


async def call_greet(
    session: aiohttp.ClientSession, consumer: Agent, timeout: aiohttp.ClientTimeout | None = None
) -> str:
    return await call_tool(session, consumer, "greet", {"name": "Ada"}, timeout)


async def eventually_says(
    session: aiohttp.ClientSession,
    consumer: Agent,
    text: str,
    timeout: float,
    call_timeout: aiohttp.ClientTimeout | None = None,
) -> float:
    """Seconds until the consumer's answer contains ``text``; fails after ``timeout``, stretched
    by TEST_TIME_SCALE (tests/timing.py). Each call has ``call_timeout`` (None: the session's)."""
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < scaled(timeout):
        last = await call_greet(session, consumer, call_timeout)
        if text in last:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise AssertionError(f"consumer never said {text!r}; last answer: {last[-500:]}")


SDK_HEARTBEAT = 5.0
"""The SDK's heartbeat period: a dependency the consumer lost stays lost at least this long."""


async def test_sdk_agents_resolve_and_call_through_different_replicas(
    topology: Topology,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    agents: list[Agent],
    sdk_python: Path,
) -> None:
    # Twice the SDK's heartbeat period: at one period a heartbeat a moment late (forwarded to
    # the decider once a second) marks a live agent unhealthy.
    agent_timeout = 2 * SDK_HEARTBEAT
    cluster = topology(AGENT_TIMEOUT=f"{agent_timeout:g}s", HEALTH_CHECK_INTERVAL="1s")
    cluster.start_all()
    timeout = aiohttp.ClientTimeout(total=scaled(10))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, cluster.nodes)
        provider = Agent(sdk_python, PROVIDER, cluster.nodes[1], tmp_path).start()
        consumer = Agent(sdk_python, CONSUMER, cluster.nodes[2], tmp_path).start()
        agents.extend([provider, consumer])
        await eventually_says(session, consumer, "It is provider-says-", timeout=90)

        # Provider killed without a goodbye: unavailable within AGENT_TIMEOUT + interval.
        provider.stop(signal.SIGKILL)
        elapsed = await eventually_says(session, consumer, "date_service unavailable", 60)
        # + the consumer's HEAD period and slack; a loaded machine stretches all of it
        assert elapsed < scaled(agent_timeout + 1 + SDK_HEARTBEAT + 10), elapsed
        # Back, registered through another replica this time; then a graceful stop.
        provider = Agent(sdk_python, PROVIDER, cluster.nodes[0], tmp_path).start()
        agents.append(provider)
        await eventually_says(session, consumer, "It is provider-says-", timeout=90)
        provider.stop(signal.SIGTERM)
        await eventually_says(session, consumer, "date_service unavailable", timeout=30)


class ServiceProxy:
    """A ClusterIP Service stand-in on 127.0.0.1: each connection goes to a random replica
    that accepts it."""

    def __init__(self, backends: list[Registry]) -> None:
        self.backends = backends
        self.port = free_port()
        self.server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import random

        for backend in random.sample(self.backends, len(self.backends)):
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend.port)
            except OSError:
                continue
            await asyncio.gather(
                _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
            )
            return
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def heartbeat_posts(nodes: list[Registry]) -> int:
    """POST /heartbeat requests the replicas logged (writes are logged at info)."""
    count = 0
    for node in nodes:
        if node.log_path.exists():
            count += sum(
                1
                for line in node.log_path.read_text().splitlines()
                if '"method": "POST"' in line.replace('":"', '": "') and '"/heartbeat"' in line
            )
    return count


AGENT_NAMES = ("date-provider", "date-consumer")


async def heard_since(session: aiohttp.ClientSession, leader: Registry, since: str) -> bool:
    """Both agents healthy on ``leader``, which heard from each after ``since`` (RFC 3339)."""
    listing = await get_json(session, f"{leader.url}/agents")
    heard = {
        agent["name"]
        for agent in listing["agents"]
        if agent["status"] == "healthy" and agent["last_seen"] > since
    }
    return heard >= set(AGENT_NAMES)


async def unhealthy_since(
    session: aiohttp.ClientSession, node: Registry, since: str
) -> list[dict[str, object]]:
    """The agents' health losses that ``node``'s log records after ``since``."""
    found = []
    for kind in ("unhealthy", "expire"):
        listing = await get_json(session, f"{node.url}/events?type={kind}")
        found += [
            event
            for event in listing["events"]
            if event["agent_name"] in AGENT_NAMES and event["timestamp"] > since
        ]
    return found


async def test_leader_failover_under_running_agents(
    tmp_path: Path, registries: list[Registry], agents: list[Agent], sdk_python: Path
) -> None:
    """No dependency flapping and no re-registration storm while the leader is killed; agents
    reach the survivors through the Service address."""
    agent_timeout, interval = 10, 1
    cluster = Cluster(
        tmp_path,
        registries,
        AGENT_TIMEOUT=f"{agent_timeout}s",
        HEALTH_CHECK_INTERVAL=f"{interval}s",
    )
    cluster.start_all()
    proxy = ServiceProxy(cluster.nodes)
    await proxy.start()
    service = Registry(tmp_path / "service", port=proxy.port)  # only its URL is used
    try:
        client_timeout = aiohttp.ClientTimeout(total=scaled(10))
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            await all_ready(session, cluster.nodes)
            provider = Agent(sdk_python, PROVIDER, service, tmp_path).start()
            consumer = Agent(sdk_python, CONSUMER, service, tmp_path).start()
            agents.extend([provider, consumer])
            await eventually_says(session, consumer, "It is provider-says-", timeout=90)
            posts_before = heartbeat_posts(cluster.nodes)
            assert posts_before >= 2  # both agents registered: the counter sees POSTs
            leader = await leader_of(session, cluster.nodes)
            killed_ms, killed = now_ms(), time.monotonic()
            cluster.nodes[leader].kill()
            survivors = [n for i, n in enumerate(cluster.nodes) if i != leader]
            proxy.backends = survivors
            answers: list[tuple[float, str]] = []

            async def ask_consumer() -> None:
                """The consumer's answer twice a second (pacing, not synchronization)."""
                while True:
                    answer = await call_greet(session, consumer)
                    answers.append((time.monotonic(), answer))
                    await asyncio.sleep(0.5)

            asking = asyncio.create_task(ask_consumer())
            try:
                new_leader = survivors[await leader_of(session, survivors)]
                # The failover is over for the agents once the new leader (the only node that
                # decides health) hears from both later than AGENT_TIMEOUT + one health check
                # after the kill: an agent whose heartbeats had stalled across the failover
                # would have been marked unhealthy by then.
                after_timeout = iso_ms(killed_ms + (agent_timeout + interval) * 1000)
                await eventually(
                    lambda: heard_since(session, new_leader, after_timeout),
                    timeout=60,
                    every=0.5,
                )
            finally:
                asking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asking
            # Sampled more often than a lost dependency lasts: a flap cannot fall between.
            times = [killed, *(at for at, _ in answers), time.monotonic()]
            widest = max(later - earlier for earlier, later in itertools.pairwise(times))
            assert widest < SDK_HEARTBEAT, (widest, len(answers))
            assert all("It is provider-says-" in a for _, a in answers), [
                a[-120:] for _, a in answers if "It is provider-says-" not in a
            ]
            assert await unhealthy_since(session, new_leader, iso_ms(killed_ms)) == []
            posts_after = heartbeat_posts(cluster.nodes)  # the killed node's log included
            assert posts_after - posts_before <= 4, (posts_before, posts_after)
    finally:
        await proxy.stop()
