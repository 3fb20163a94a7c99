"""The load generator: one asyncio/aiohttp client used for both registries.

Closed loop (:func:`closed_loop`: N connections, each sending its next request when the
previous one answered) measures throughput. Open loop (:func:`paced`: requests started on a
fixed schedule whether or not earlier ones answered) measures latency at a given rate, the way
thousands of agents heartbeating on their own timers load a registry; a closed loop would slow
down with the server and hide its queueing. Pure Python on purpose: wrk mishandles HEAD, and
one client for both systems keeps the comparison fair. The client shares the machine's cores
with the servers, so every phase also records the client's own CPU time: a client near one
full core per second is itself a bottleneck, and its figures are a lower bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

Request = Callable[[aiohttp.ClientSession, int], Awaitable[int]]
"""Sends request number ``n`` on the session and returns the HTTP status."""

LATE_AFTER = 0.005
"""A paced send starting this far behind its schedule counts as late (the client fell behind)."""


@dataclass
class Stats:
    """What one phase of load saw: per-request latencies, statuses, transport errors."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    late: int = 0
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0

    def record(self, status: int, latency: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(latency)

    def summary(self) -> dict[str, Any]:
        """Throughput and latency percentiles (ms) in the shape the report tables use."""
        ordered = sorted(self.latencies)

        def pct(q: float) -> float:
            if not ordered:
                return 0.0
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

        return {
            "requests": len(ordered),
            "per_second": round(len(ordered) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "errors": self.errors,
            "late_sends": self.late,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "client_cpu_seconds": round(self.client_cpu_seconds, 2),
        }


async def timed(client: aiohttp.ClientSession, request: Request, n: int, stats: Stats) -> None:
    """Send request ``n`` and record its status and latency (or a transport error)."""
    started = time.perf_counter()
    try:
        status = await request(client, n)
    except (aiohttp.ClientError, TimeoutError, OSError):
        stats.errors += 1
        return
    stats.record(status, time.perf_counter() - started)


class _HeadConnection(asyncio.Protocol):
    """One keep-alive connection answering one HEAD at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[int] | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # A HEAD answer has no body: the blank line after the headers ends it.
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        status_line, self._buffer = self._buffer[:12], self._buffer[end + 4 :]
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(int(status_line[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionResetError("server closed the connection"))


class HeadClient:
    """HEAD requests over at most ``connections`` keep-alive HTTP/1.1 connections.

    On this 2-core machine aiohttp's client spends ~233 us of CPU per HEAD in a closed loop (this
    one ~136 us), and more on an open-loop schedule: at S2's full rate it took the client's
    whole core, fell behind and measured the client. A HEAD exchange is a request line and a
    header block each way; sending the one and reading the other up to its blank line is all
    this does, for both registries alike.
    ``timeout`` bounds the exchange once a connection is free; waiting for one is part of the
    latency, so a schedule the server cannot keep up with shows as latency, not as errors.
    """

    def __init__(self, connections: int = 256, timeout: float = 10.0) -> None:
        self._slots = asyncio.Semaphore(connections)
        self._timeout = timeout
        self._idle: dict[tuple[str, int], list[_HeadConnection]] = {}
        self._opened: list[_HeadConnection] = []

    async def head(self, url: str, path: str) -> int:
        """Send ``HEAD path`` to the server at ``url``; return the status."""
        address = _address(url)
        idle = self._idle.setdefault(address, [])
        async with self._slots, asyncio.timeout(self._timeout):
            loop = asyncio.get_running_loop()
            conn = idle.pop() if idle else None
            if conn is None or conn.transport is None:
                _, conn = await loop.create_connection(_HeadConnection, *address)
                self._opened.append(conn)
            assert conn.transport is not None
            conn.answer = loop.create_future()
            conn.transport.write(
                b"HEAD %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), address[0].encode())
            )
            try:
                status = await conn.answer
            except BaseException:
                if conn.transport is not None:
                    conn.transport.close()
                raise
            idle.append(conn)
            return status

    def close(self) -> None:
        for conn in self._opened:
            if conn.transport is not None:
                conn.transport.close()


@functools.cache
def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def session(connections: int, timeout: float = 10.0) -> aiohttp.ClientSession:
    """A session for one system under test, holding at most ``connections`` connections."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def closed_loop(request: Request, connections: int, seconds: float) -> Stats:
    """``connections`` workers sending back to back for ``seconds``."""
    stats = Stats()
    counter = iter(range(1 << 62))
    async with session(connections) as client:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                await timed(client, request, next(counter), stats)

        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(connections)))
        stats.seconds = time.monotonic() - started
        stats.client_cpu_seconds = time.process_time() - cpu
    return stats


async def paced(
    request: Request,
    rate: float,
    seconds: float,
    *,
    stop: asyncio.Event | None = None,
    connections: int = 256,
    drain: float = 15.0,
) -> Stats:
    """Start ``rate`` requests a second for ``seconds`` (or until ``stop`` is set).

    Requests still unanswered ``drain`` seconds after the last send are cancelled and counted
    as errors, so a stalled server cannot hang the run.
    """
    stats = Stats()
    async with session(connections) as client:
        started, cpu = time.monotonic(), time.process_time()
        pending: set[asyncio.Task[None]] = set()
        for n in range(int(rate * seconds)):
            if stop is not None and stop.is_set():
                break
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -LATE_AFTER:
                stats.late += 1
            task = asyncio.create_task(timed(client, request, n, stats))
            pending.add(task)
            task.add_done_callback(pending.discard)
        stats.seconds = time.monotonic() - started  # the sending window, not the drain
        if pending:
            _, stalled = await asyncio.wait(pending, timeout=drain)
            for task in stalled:
                task.cancel()
                stats.errors += 1
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*stalled, return_exceptions=True)
        stats.client_cpu_seconds = time.process_time() - cpu
    return stats
