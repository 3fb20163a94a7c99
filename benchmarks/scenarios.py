"""S1-S6 of issue 7. Each returns a dict: what was measured, the target, and whether it held.

``Scale`` shrinks every scenario for the CI smoke run (seconds instead of minutes); the
figures in RESULTS.md come from the full scale.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.failover import trial
from benchmarks.load import Stats, closed_loop, paced
from benchmarks.systems import System, go, ours, peak_rss_mib
from registry import events, registration
from registry.commit import StateMachine
from registry.store import Store
from registry.view import View
from tests.conftest import agent_body
from tests.processes import free_port

Result = dict[str, Any]


@dataclass(frozen=True)
class Scale:
    seconds: float = 20.0
    connections: int = 64
    heartbeat_agents: int = 10_000
    discovery_agents: int = 2_000
    failover_trials: int = 10
    recovery_events: int = 100_000

    @classmethod
    def smoke(cls) -> Scale:
        return cls(2.0, 8, 200, 100, 2, 2_000)


def _body(agent_id: str, port: int = 9000) -> dict[str, Any]:
    """An SDK-shaped registration: one tool, one dependency."""
    n = int(agent_id.rsplit("-", 1)[-1]) if agent_id[-1].isdigit() else 0
    return agent_body(agent_id, f"cap-{n % 50}", deps=[f"cap-{(n + 1) % 50}"], port=port)


async def _register(system: System, prefix: str, count: int, connections: int) -> None:
    """Register ``count`` agents, spread over the system's URLs (not measured)."""
    ids = iter(range(count))

    async def one(client: aiohttp.ClientSession, worker: int) -> None:
        for n in ids:
            url = system.urls[(worker + n) % len(system.urls)]
            async with client.post(f"{url}/heartbeat", json=_body(f"{prefix}-{n}")) as resp:
                if resp.status not in (200, 201):
                    raise RuntimeError(f"registration refused: {resp.status} {await resp.text()}")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        await asyncio.gather(*(one(client, w) for w in range(connections)))


def _ratio(ours_rate: float, theirs: Result | None, target: float) -> Result:
    if theirs is None or not theirs.get("per_second"):
        return {"ratio": None, "target_ratio": target, "met": None}
    ratio = round(ours_rate / float(theirs["per_second"]), 2)
    return {"ratio": ratio, "target_ratio": target, "met": ratio >= target}


# -- S1 -------------------------------------------------------------------------------------


async def _registrations(system: System, scale: Scale, tag: str) -> Result:
    def request(client: aiohttp.ClientSession, n: int) -> Any:
        async def send() -> int:
            url = system.urls[n % len(system.urls)]
            async with client.post(f"{url}/heartbeat", json=_body(f"{tag}-{n}")) as resp:
                await resp.read()
                return resp.status

        return send()

    system.mark()
    stats = await closed_loop(request, scale.connections, scale.seconds)
    return {**stats.summary(), **system.cost()}


async def s1_registration(scale: Scale) -> Result:
    with ours() as mine:
        await _wait_ready(mine)
        our = await _registrations(mine, scale, "s1")
    with go() as theirs_system:
        theirs = await _registrations(theirs_system, scale, "s1") if theirs_system else None
    return {
        "name": "S1 registration (POST /heartbeat, new agents, 1 tool + 1 dependency)",
        "connections": scale.connections,
        "ours": our,
        "go": theirs,
        **_ratio(float(our["per_second"]), theirs, 5.0),
    }


# -- S2 + S6 --------------------------------------------------------------------------------


async def s2_heartbeats(scale: Scale) -> Result:
    """N agents: HEAD every 5 s each and a full POST every 30 s each, spread over the
    replicas, paced; then what the log grew by and whether anyone was declared unhealthy."""
    agents = scale.heartbeat_agents
    with ours() as mine:
        await _wait_ready(mine)
        await _register(mine, "s2", agents, 32)
        before = await _cluster(mine.urls[0])

        def head(client: aiohttp.ClientSession, n: int) -> Any:
            async def send() -> int:
                url = mine.urls[n % len(mine.urls)]
                async with client.head(f"{url}/heartbeat/s2-{n % agents}") as resp:
                    return resp.status

            return send()

        def post(client: aiohttp.ClientSession, n: int) -> Any:
            async def send() -> int:
                url = mine.urls[(n + 1) % len(mine.urls)]
                body = _body(f"s2-{(n * 7919) % agents}")
                async with client.post(f"{url}/heartbeat", json=body) as resp:
                    await resp.read()
                    return resp.status

            return send()

        mine.mark()
        heads, posts = await asyncio.gather(
            paced(head, agents / 5, scale.seconds), paced(post, agents / 30, scale.seconds)
        )
        after = await _cluster(mine.urls[0])
        listing = await _get_json(f"{mine.urls[1]}/api/v1/agents")
        unhealthy = sum(1 for a in listing["agents"] if a.get("status") != "healthy")
        gone = heads.statuses.get(410, 0)
        cost = mine.cost()
    growth = (after["applied_index"] - before["applied_index"]) / heads.seconds
    head_summary, post_summary = heads.summary(), posts.summary()
    return {
        "name": f"S2 steady heartbeats ({agents} agents: HEAD every 5 s, POST every 30 s)",
        "head": head_summary,
        "post": post_summary,
        "false_unhealthy": unhealthy + gone,
        "log_growth_per_second": round(growth, 2),
        **cost,
        "target": "p99 < 20 ms, zero false unhealthy, log growth ~0/s",
        "met": float(head_summary["p99_ms"]) < 20  # type: ignore[arg-type]
        and float(post_summary["p99_ms"]) < 20  # type: ignore[arg-type]
        and unhealthy + gone == 0
        and growth < 1.0,
        "s6_peak_rss_mib": cost["peak_rss_mib"],
        "s6_met": max(cost["peak_rss_mib"]) < 256,
    }


# -- S3 -------------------------------------------------------------------------------------


async def _discovery(system: System, scale: Scale, path: str) -> Result:
    def request(client: aiohttp.ClientSession, n: int) -> Any:
        async def send() -> int:
            async with client.get(f"{system.urls[n % len(system.urls)]}{path}") as resp:
                await resp.read()
                return resp.status

        return send()

    system.mark()
    stats = await closed_loop(request, min(scale.connections, 16), scale.seconds)
    return {**stats.summary(), **system.cost()}


async def s3_discovery(scale: Scale) -> Result:
    agents = scale.discovery_agents
    with ours() as mine:
        await _wait_ready(mine)
        await _register(mine, "s3", agents, 32)
        agents_ours = await _discovery(mine, scale, "/agents")
        api_ours = await _discovery(mine, scale, "/api/v1/agents")
    with go() as theirs_system:
        agents_go = None
        if theirs_system is not None:
            await _register(theirs_system, "s3", agents, 16)
            agents_go = await _discovery(theirs_system, scale, "/agents")
    return {
        "name": f"S3 discovery (GET /agents, GET /api/v1/agents; {agents} agents)",
        "ours_agents": agents_ours,
        "ours_api_v1_agents": api_ours,
        "go_agents": agents_go,
        **_ratio(float(agents_ours["per_second"]), agents_go, 20.0),
    }


# -- S4 -------------------------------------------------------------------------------------


async def s4_failover(scale: Scale) -> Result:
    """Leader SIGKILL under heartbeat load -> first accepted write; median of N trials."""
    agents = max(scale.heartbeat_agents // 10, 100)
    with ours() as mine:
        assert mine.cluster is not None
        await _wait_ready(mine)
        await _register(mine, "s4", agents, 16)
        stop = asyncio.Event()

        def head(client: aiohttp.ClientSession, n: int) -> Any:
            async def send() -> int:
                url = mine.urls[n % len(mine.urls)]
                async with client.head(f"{url}/heartbeat/s4-{n % agents}") as resp:
                    return resp.status

            return send()

        async def background() -> Stats:
            total = Stats()
            while not stop.is_set():
                total = await paced(head, agents / 5, 1.0)
            return total

        load = asyncio.create_task(background())
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as client:
            times = [await trial(client, mine.cluster, n) for n in range(scale.failover_trials)]
        stop.set()
        await load
    median = statistics.median(times)
    return {
        "name": f"S4 failover under load (HEAD {agents // 5}/s): leader SIGKILL -> first write",
        "trials_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "target": "median < 2 s",
        "met": median < 2.0,
    }


# -- S5 -------------------------------------------------------------------------------------


def _build_log(data_dir: Path, count: int) -> None:
    """A single node's data directory holding ``count`` events, written by the node's own
    storage and state machine (snapshots every SNAPSHOT_EVERY, as the node writes them),
    without going through HTTP: 100,000 POSTs would measure the write path, not recovery."""
    store = Store(str(data_dir / "lmdb"))
    machine = StateMachine(store, View(history_limit=1000), 10_000)
    io = ThreadPoolExecutor(max_workers=1)
    agents = max(count // 10, 1)

    async def build() -> None:
        for start in range(1, count + 1, 1000):
            chunk = []
            for index in range(start, min(start + 1000, count + 1)):
                body = registration.from_heartbeat(_body(f"s5-{index % agents}", 9000 + index))
                chunk.append((index, events.upsert(body, 1_700_000_000_000 + index)))
            store.append([(index, events.encode(event)) for index, event in chunk])
            for index, event in chunk:
                machine.apply(index, event)
            if machine.snapshot_due():
                await machine.snapshot(io)

    try:
        asyncio.run(build())
    finally:
        io.shutdown()
        store.close()


def s5_recovery(scale: Scale) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-s5-") as root:
        _build_log(Path(root), scale.recovery_events)
        port = free_port()
        env = {
            **os.environ,
            "REGISTRY_HOST": "127.0.0.1",
            "REGISTRY_PORT": str(port),
            "METRICS_PORT": str(free_port()),
            "DATA_DIR": root,
            "DATABASE_PATH": str(Path(root) / "registry.db"),
        }
        times, rss = [], 0.0
        for _ in range(3):
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "registry"], env=env, stderr=subprocess.DEVNULL
            )
            try:
                times.append(_ready_after(port, started))
                rss = peak_rss_mib(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=20)
    median = statistics.median(times)
    return {
        "name": f"S5 recovery: restart with {scale.recovery_events} events -> /ready",
        "trials_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "peak_rss_mib": rss,
        "target": "< 5 s",
        "met": median < 5.0,
    }


# -- helpers --------------------------------------------------------------------------------


def _ready_after(port: int, started: float, limit: float = 60.0) -> float:
    while time.monotonic() - started < limit:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"not ready within {limit} s")


async def _get_json(url: str) -> Any:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
        client.get(url) as resp,
    ):
        return await resp.json()


async def _cluster(url: str) -> Any:
    return await _get_json(f"{url}/api/v1/cluster?consistency=linearizable")


async def _wait_ready(system: System, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as client:
        for url in system.urls:
            while True:
                try:
                    async with client.get(f"{url}/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} not ready within {limit} s")
                await asyncio.sleep(0.05)
