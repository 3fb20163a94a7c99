"""Bounds that keep one client from exhausting the registry, checked before anything is written.

The SDK sends no credentials, so any client reaching the port can register. Without bounds a
loop of new registrations fills memory and the volume of every replica (each one is a log entry
on a majority). Each bound has a default far above what a real mesh needs, an environment
variable, a reason label on ``mcp_registry_refused_total`` and its own 4xx JSON error:

- request body (``MAX_REQUEST_BYTES``, 512 KiB; SDK registrations are a few KiB): 413;
- tools per agent (``MAX_TOOLS_PER_AGENT``, 500): 400;
- registered agents (``MAX_AGENTS``, 20,000; a node holds 10,000 in under 200 MiB): 429 for a
  new agent once the registry holds that many (updates of registered agents still go through);
- registrations that write to the log (a new agent or a changed registration), per client
  address (``REGISTRATION_RATE`` per second, bursts of ``REGISTRATION_BURST``): 429 with
  ``Retry-After``. Unchanged heartbeats append nothing and are never limited, so the log of
  every replica grows at most this fast per address however hard one client tries.

MeshJobs are bounded the same way: jobs held (``MAX_JOBS``, 100,000; terminal ones count until
retention removes them): 429 for a new job; events posted to one job (``MAX_JOB_EVENTS``,
10,000): 429. A job's payload, result and events are each bounded by the request body limit.

The agent count is read from this replica's view, so a burst of concurrent new registrations
across replicas can overshoot it by the number in flight; it bounds memory, not an exact quota.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TRACKED_ADDRESSES = 10_000
"""Client addresses whose rate is tracked; the least recently seen is forgotten first."""


@dataclass(frozen=True)
class Limits:
    request_bytes: int = 512 << 10
    tools_per_agent: int = 500
    agents: int = 20_000
    registration_rate: float = 100.0
    registration_burst: int = 200
    jobs: int = 100_000
    job_events: int = 10_000


class Refused(Exception):
    """A registration over a bound: ``status`` and message for the client, ``reason`` for the
    metric, ``retry_after`` seconds when waiting helps."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class Admission:
    """Decides whether a registration may be written; keeps a token bucket per client."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check_shape(self, agent: dict[str, Any]) -> None:
        """Bounds on the registration itself, whoever sends it."""
        tools = len(agent.get("tools") or ())
        if tools > self.limits.tools_per_agent:
            raise Refused(
                400,
                "tools",
                f"registration has {tools} tools; at most {self.limits.tools_per_agent} "
                "(MAX_TOOLS_PER_AGENT)",
            )

    def check_write(self, client: str, new_agent: bool, agents: int) -> None:
        """A registration that will append to the log: room for a new agent, and the client's
        rate. Called only for writes, so a refused one has consumed nothing but a token."""
        if new_agent and agents >= self.limits.agents:
            raise Refused(
                429,
                "agents",
                f"the registry holds {agents} agents, its limit (MAX_AGENTS); "
                "remove agents or raise the limit",
            )
        self._take(client)

    def _take(self, client: str) -> None:
        rate, burst = self.limits.registration_rate, float(self.limits.registration_burst)
        now = self.clock()
        tokens, last = self._buckets.pop(client, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / rate)
            raise Refused(
                429,
                "rate",
                f"more than {rate:g} registration changes per second from {client} "
                "(REGISTRATION_RATE); retry later",
                retry_after=max(1, wait),
            )
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > TRACKED_ADDRESSES:
            self._buckets.popitem(last=False)
