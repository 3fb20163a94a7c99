"""The load generator: one asyncio/aiohttp client used for both registries.

Closed loop (``closed_loop``: N connections each sending its next request when the previous
answered) measures throughput; paced (``paced``: requests started on a fixed schedule,
whether or not earlier ones answered) measures latency at a given rate, the way thousands
of agents heartbeating on their own timers load a registry. Pure Python on purpose: wrk
mishandles HEAD, and the same client for both systems keeps the comparison fair.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

Request = Callable[[aiohttp.ClientSession, int], Awaitable[int]]
"""Sends request number ``n`` and returns the HTTP status."""


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    late: int = 0
    seconds: float = 0.0

    def record(self, status: int, latency: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(latency)

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

        return {
            "requests": len(ordered),
            "per_second": round(len(ordered) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50) if ordered else 0.0,
            "p99_ms": pct(0.99) if ordered else 0.0,
            "errors": self.errors,
            "late_sends": self.late,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


async def _timed(session: aiohttp.ClientSession, request: Request, n: int, stats: Stats) -> None:
    started = time.perf_counter()
    try:
        status = await request(session, n)
    except (aiohttp.ClientError, TimeoutError):
        stats.errors += 1
        return
    stats.record(status, time.perf_counter() - started)


def session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def closed_loop(request: Request, connections: int, seconds: float) -> Stats:
    stats = Stats()
    counter = iter(range(1 << 62))
    async with session(connections) as client:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                await _timed(client, request, next(counter), stats)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        stats.seconds = time.monotonic() - started
    return stats


async def paced(request: Request, rate: float, seconds: float, connections: int = 256) -> Stats:
    """Start ``rate`` requests a second for ``seconds``; a send more than 5 ms behind its
    schedule counts as late (the client, not the server, could not keep up)."""
    stats = Stats()
    async with session(connections) as client:
        started = time.monotonic()
        total = int(rate * seconds)
        pending: set[asyncio.Task[None]] = set()
        for n in range(total):
            due = started + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                stats.late += 1
            task = asyncio.create_task(_timed(client, request, n, stats))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=15)
        stats.seconds = time.monotonic() - started
    return stats
