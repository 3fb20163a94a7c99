"""The two systems under test, started on loopback, and what they cost (CPU, memory).

Ours: three ``python -m registry`` processes replicating with Raft (ENCRYPTION_KEY set, every
commit fsynced on a majority), the same processes the cluster tests run, from this checkout or
from another source tree (``ours(tree=...)``: an older commit, for before/after figures).
Theirs: the Go ``mcp-mesh-registry`` from the npm package, one process on SQLite. Both are
context managers that kill every process they started, whatever happens inside. S1 also runs a
3-node etcd (benchmarks/etcd.py) as a reference Raft store.

CPU and memory come from ``/proc`` (no psutil): utime+stime of ``/proc/<pid>/stat``, with the
process's descendants (benchmarks/cpu.py: a PostgreSQL server works in its backends), and the
``VmHWM`` high-water mark of ``/proc/<pid>/status``. Each scenario starts fresh processes, so a
peak is that scenario's peak.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.cpu import Meter
from benchmarks.go_registry import ensure_go_registry
from registry.config import Config
from tests.ports import free_port
from tests.postgres import USER as PG_USER
from tests.postgres import Postgres
from tests.processes import Registry
from tests.test_cluster import Cluster

OURS = "ours"
GENERATIONS = ("0", "1", "2")
"""The collector's generations, as our servers label their GC pause metric."""
GO = "Go"
OURS_PG = "ours on PostgreSQL"
GO_PG = "Go on PostgreSQL"
GO_DATABASE = "go_registry"


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size of ``pid`` so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@dataclass
class System:
    """A running registry: the URLs a Service would spread requests over, and its processes."""

    name: str
    urls: list[str]
    pids: list[int]
    ready_path: str
    listings: tuple[str, ...]
    """The endpoints that list agents with their health (S2 watches them)."""
    cluster: Cluster | None = None
    _node_meters: list[Meter] = field(default_factory=list)
    _meter: Meter | None = None

    def mark(self) -> None:
        """Start counting CPU time for :meth:`cost` and :meth:`cpu_total`."""
        # Per node with its descendants: a PostgreSQL server's work is in its backends.
        self._node_meters = [Meter([pid]) for pid in self.pids]
        self._meter = Meter(self.pids)
        for meter in (*self._node_meters, self._meter):
            meter.mark()

    def cpu_total(self) -> float:
        """CPU seconds since :meth:`mark` summed over every server process (and descendants)."""
        assert self._meter is not None, "mark() first"
        return self._meter.seconds()

    def cost(self) -> dict[str, list[float]]:
        """CPU seconds per node since :meth:`mark`, and peak RSS per node so far."""
        meters = self._node_meters or [Meter([pid]) for pid in self.pids]  # since start
        return {
            "cpu_seconds": [round(meter.seconds(), 2) for meter in meters],
            "peak_rss_mib": [peak_rss_mib(pid) for pid in self.pids],
        }

    async def gc_pauses(self) -> list[dict[str, tuple[float, float]]] | None:
        """Per node of ours, per generation: (collections, seconds spent in them) so far, from
        its ``mcp_registry_gc_pause_seconds``; None for the Go registry and etcd. A full
        (generation 2) collection stops the whole process for a time that grows with the
        objects it holds (S2's tail latency); all of them together are CPU (S1)."""
        if self.cluster is None:
            return None
        nodes = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
            for url in self.urls:
                async with client.get(f"{url}/metrics") as resp:
                    text = await resp.text()
                counts = {g: 0.0 for g in GENERATIONS}
                seconds = dict(counts)
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        generation = sample.labels.get("generation", "")
                        if generation not in counts:
                            continue
                        if sample.name == "mcp_registry_gc_pause_seconds_count":
                            counts[generation] = sample.value
                        elif sample.name == "mcp_registry_gc_pause_seconds_sum":
                            seconds[generation] = sample.value
                nodes.append({g: (counts[g], seconds[g]) for g in GENERATIONS})
        return nodes

    async def wait_ready(self, limit: float = 30.0) -> None:
        """Poll every node's readiness path (bounded): ours /ready, Go /health."""
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as client:
            for url in self.urls:
                while not await _answers_200(client, f"{url}{self.ready_path}"):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{url} not ready within {limit} s")
                    await asyncio.sleep(0.05)


async def _answers_200(client: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with client.get(url) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


@contextmanager
def ours(tree: Path | None = None, name: str = OURS) -> Iterator[System]:
    """Our 3-replica cluster (the cluster tests' processes: Raft, ENCRYPTION_KEY, fsync).

    ``tree``: run the servers from that source tree instead (its ``registry`` and
    ``replication`` packages come first on PYTHONPATH, and PYTHONSAFEPATH keeps the working
    directory, this checkout, off sys.path; the interpreter and the installed dependencies stay
    this checkout's), e.g. a worktree of an older commit.
    """
    started: list[Registry] = []
    code = {} if tree is None else {"PYTHONPATH": str(tree.resolve()), "PYTHONSAFEPATH": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as root:
        env = {**LIFTED_LIMITS, **code}
        cluster = Cluster(Path(root), started, 3, **env)
        try:
            cluster.start_all()
            yield System(
                name,
                [node.url for node in cluster.nodes],
                [node.proc.pid for node in cluster.nodes if node.proc is not None],
                "/ready",
                ("/agents", "/api/v1/agents"),
                cluster,
            )
        finally:
            for node in started:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()


LIFTED_LIMITS = {
    "REGISTRATION_RATE": "1000000",
    "REGISTRATION_BURST": "1000000",
    "MAX_AGENTS": "1000000",
}
"""One load generator stands in for thousands of agents from one address: the per-address
limit on registration changes (registry/limits.py) is lifted, and so is MAX_AGENTS (20,000),
which S1's 20 s of new agents can pass at ~1,000/s: a 429 answered from the limit is no
registration."""

REPLICAS = 3


@contextmanager
def ours_pg(server: Postgres) -> Iterator[System]:
    """Our DATABASE_TYPE=postgresql replicas (three, no Raft) sharing ``server``'s log."""
    started: list[Registry] = []
    with tempfile.TemporaryDirectory(prefix="bench-ours-pg-") as root:
        try:
            for i in range(REPLICAS):
                env = {**server.env, **LIFTED_LIMITS, "REGISTRY_INSTANCE_ID": f"bench-{i}"}
                node = Registry(Path(root) / f"r{i}", None, **env)
                started.append(node.start())
            yield System(
                OURS_PG,
                [node.url for node in started],
                [node.proc.pid for node in started if node.proc is not None],
                "/ready",
                ("/agents", "/api/v1/agents"),
            )
        finally:
            for node in started:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()


@contextmanager
def go() -> Iterator[System | None]:
    """The Go registry on SQLite, or None (with the reason printed) when it cannot be fetched.

    Its liveness settings are set to our defaults (AGENT_TIMEOUT 60 s, checked every 30 s;
    Go's own are 20 s and 10 s) so both declare an agent unhealthy under the same rule, and
    the setup phase (registering 10,000 agents takes the Go registry tens of seconds) cannot
    age the first agents out before they start heartbeating.
    """
    with _go_replicas(GO, lambda root: [str(root / "registry.db")]) as system:
        yield system


@contextmanager
def go_pg(server: Postgres) -> Iterator[System | None]:
    """Three Go registries on one PostgreSQL database of ``server`` (MCP Mesh's own HA mode),
    or None when the Go registry cannot be fetched."""
    server.psql(f"CREATE DATABASE {GO_DATABASE} OWNER {PG_USER}")
    url = f"postgres://{PG_USER}@127.0.0.1:{server.port}/{GO_DATABASE}?sslmode=disable"
    with _go_replicas(GO_PG, lambda _: [url] * REPLICAS) as system:
        yield system


@contextmanager
def _go_replicas(name: str, databases: Callable[[Path], list[str]]) -> Iterator[System | None]:
    """One Go registry process per entry of ``databases(root)`` (its DATABASE_URL; ``root`` is
    a temporary directory for its files and logs), each on its own port with our liveness
    defaults (see :func:`go`)."""
    binaries, why_not = ensure_go_registry()
    if binaries is None:
        print(f"Go registry skipped: {why_not}", flush=True)
        yield None
        return
    defaults = Config()
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    with tempfile.TemporaryDirectory(prefix="bench-go-") as tmp:
        root = Path(tmp)
        try:
            for i, database in enumerate(databases(root)):
                port = free_port()
                env = {
                    **os.environ,
                    "PORT": str(port),
                    "HOST": "127.0.0.1",
                    "DATABASE_URL": database,
                    "DEFAULT_TIMEOUT_THRESHOLD": str(int(defaults.agent_timeout)),
                    "HEALTH_CHECK_INTERVAL": str(int(defaults.health_check_interval)),
                }
                with (root / f"go-{i}.log").open("wb") as log:
                    procs.append(
                        subprocess.Popen(
                            [str(binaries / "mcp-mesh-registry")], env=env, stdout=log, stderr=log
                        )
                    )
                urls.append(f"http://127.0.0.1:{port}")
                # Go replicas started together race on creating their tables (one wins, the
                # others exit on a duplicate type): each starts once the one before listens.
                _listening(procs[-1], port)
            yield System(name, urls, [proc.pid for proc in procs], "/health", ("/agents",))
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def _listening(proc: subprocess.Popen[bytes], port: int, limit: float = 30.0) -> None:
    """Wait (bounded) until ``proc`` accepts connections on ``port``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Go registry on port {port} exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the Go registry on port {port} did not listen within {limit} s")
