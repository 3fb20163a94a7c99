"""The simulated agents: what they send, how they are set up, and how their health is watched.

Every agent is SDK-shaped (one tool, one dependency). The mesh is made of services of
``REPLICAS`` agents each (agents ``10g..10g+9`` provide ``svc-g``), and every agent depends on
the previous service (``svc-{g-1}``; service 0 on itself, resolved to a sibling replica): a
dependency has ``REPLICAS`` candidate providers whatever the number of agents, as in a mesh
that grows by adding services. (Resolution cost grows with the candidates per capability: with
all 10,000 agents on 50 capabilities, 200 each, every resolution costs ~1 ms in our registry;
that is a different benchmark.) Setup (registration, settling) is not measured; it only has
to finish, and it retries a few times so a busy SQLite on the Go side does not abort a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import aiohttp
import orjson

from benchmarks.systems import System
from tests.conftest import agent_body

REPLICAS = 10
SETUP_CONNECTIONS = 32
HEALTHY = "healthy"


def agent_id(prefix: str, n: int) -> str:
    return f"{prefix}-{n}"


def body(prefix: str, n: int, port: int | None = None) -> dict[str, Any]:
    """Agent ``n``'s POST /heartbeat body (a changed ``port`` makes it an update)."""
    service = n // REPLICAS
    return agent_body(
        agent_id(prefix, n),
        f"svc-{service}",
        deps=[f"svc-{max(service - 1, 0)}"],
        port=9000 + n % 50_000 if port is None else port,
    )


async def post(client: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> int:
    """POST /heartbeat; the body is read so the latency covers the whole answer."""
    async with client.post(f"{url}/heartbeat", json=payload) as resp:
        await resp.read()
        return resp.status


async def head(client: aiohttp.ClientSession, url: str, agent: str) -> int:
    async with client.head(f"{url}/heartbeat/{agent}") as resp:
        return resp.status


async def get_json(client: aiohttp.ClientSession, url: str) -> Any:
    async with client.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status}")
        return await resp.json()


async def for_each(
    items: Iterable[int],
    work: Callable[[aiohttp.ClientSession, int], Awaitable[None]],
    connections: int = SETUP_CONNECTIONS,
) -> None:
    """Run ``work`` on every item with ``connections`` concurrent workers."""
    queue = iter(items)

    async def worker(client: aiohttp.ClientSession) -> None:
        for n in queue:
            await work(client, n)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))


async def _post_until_accepted(client: aiohttp.ClientSession, url: str, payload: Any) -> None:
    attempts = 3
    for attempt in range(attempts):
        try:
            status = await post(client, url, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, why = 0, repr(exc)
        else:
            why = f"HTTP {status}"
        if status in (200, 201):
            return
        if attempt + 1 == attempts:
            raise RuntimeError(f"setup registration of {payload['agent_id']} refused: {why}")
        await asyncio.sleep(0.1 * (attempt + 1))


async def register(system: System, prefix: str, count: int) -> None:
    """Register agents ``0..count-1``, spread over the system's URLs."""

    async def one(client: aiohttp.ClientSession, n: int) -> None:
        await _post_until_accepted(client, system.urls[n % len(system.urls)], body(prefix, n))

    await for_each(range(count), one)


async def _heads(system: System, prefix: str, items: list[int]) -> dict[int, int]:
    """HEAD /heartbeat for each agent in ``items``: its status."""
    statuses: dict[int, int] = {}

    async def check(client: aiohttp.ClientSession, n: int) -> None:
        url = system.urls[n % len(system.urls)]
        statuses[n] = await head(client, url, agent_id(prefix, n))

    await for_each(items, check)
    return statuses


async def settle(system: System, prefix: str, count: int, rounds: int) -> dict[str, Any]:
    """Bring every agent to "nothing changed for you", as SDK agents would on their own.

    Agents registered before the providers they depend on (or before a provider with a
    smaller id, which wins ties) are told 202 on their next HEAD and answer with a full POST;
    that is legitimate log growth, so it happens here, before the steady phase measures growth.
    An agent told 410 is re-registered the same way, and reported: it had just registered.
    """
    gone: set[str] = set()
    reposted = 0
    told = list(range(count))
    for _ in range(rounds):
        statuses = await _heads(system, prefix, told)
        told = sorted(n for n, status in statuses.items() if status in (202, 410))
        gone |= {agent_id(prefix, n) for n, status in statuses.items() if status == 410}
        if not told:
            break
        await for_each(
            told,
            lambda client, n: _post_until_accepted(
                client, system.urls[(n + 1) % len(system.urls)], body(prefix, n)
            ),
        )
        reposted += len(told)
    return {"reposted": reposted, "unsettled": len(told), "gone": sorted(gone)}


async def watch_unhealthy(system: System, every: float, stop: asyncio.Event) -> dict[str, Any]:
    """Poll the agent listings until ``stop`` (and once more after it), rotating over the
    system's nodes and listing endpoints; collect every agent ever shown as not healthy.

    One poll at a time: the listing of 10,000 agents is itself load, and the same schedule is
    applied to both systems. Each listing is fetched and parsed in a separate process: parsing
    7 MB of JSON takes the client's event loop ~150 ms, and every request measured meanwhile
    would report that stall as the server's latency.
    """
    unhealthy: set[str] = set()
    polls = failures = 0
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")  # no copy of this process's event loop
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as fetcher:
        while True:
            last = stop.is_set()
            paths = system.listings
            url = system.urls[polls % len(system.urls)] + paths[polls % len(paths)]
            polls += 1
            try:
                unhealthy.update(await loop.run_in_executor(fetcher, not_healthy, url))
            except (OSError, ValueError, KeyError):
                failures += 1
            if last:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    return {"polls": polls, "failed_polls": failures, "unhealthy": sorted(unhealthy)}


def not_healthy(url: str) -> list[str]:
    """The ids of the agents a listing shows as not healthy (runs in the watcher's process)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        listing = orjson.loads(response.read())
    return [str(a.get("id")) for a in listing["agents"] if a.get("status") != HEALTHY]
