"""Agent liveness: soft state in memory, transitions as events.

Heartbeats are far too frequent to log (10,000 agents at one HEAD per 5 s), so the time an
agent was last heard from lives only in memory here. The monitor turns silence longer than
AGENT_TIMEOUT into one ``health`` event for all agents that went quiet in a check, which is
what the log and every replica see. An agent nobody on this node has heard from yet (after a
restart or a failover) counts as heard at the moment this node started watching, so a node
never declares healthy agents dead for lack of history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from registry import events
from registry.commit import Committed, Unavailable
from registry.timefmt import now_ms
from registry.view import HEALTHY, View

log = logging.getLogger(__name__)


class Liveness:
    """When each agent was last heard from (monotonic for timing, wall clock for display).

    With ``forward`` set (cluster mode), every id seen is also queued in an outbox that the
    replication layer drains and sends to the leader, the only node that decides health.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, forward: bool = False) -> None:
        self._clock = clock
        self.watching_since = clock()
        self._seen: dict[str, float] = {}
        self._seen_wall_ms: dict[str, int] = {}
        self.version = 0
        """Bumped whenever a last-seen time changes (lets listings reuse a rendering)."""
        self._forward = forward
        self._outbox: set[str] = set()

    def seen(self, agent_id: str) -> None:
        self._seen[agent_id] = self._clock()
        self._seen_wall_ms[agent_id] = now_ms()
        self.version += 1
        if self._forward:
            self._outbox.add(agent_id)

    def seen_many(self, agent_ids: list[str]) -> None:
        """Liveness reported by another replica (arrives at most a second late)."""
        now, wall = self._clock(), now_ms()
        for agent_id in agent_ids:
            self._seen[agent_id] = now
            self._seen_wall_ms[agent_id] = wall
        self.version += 1

    def drain_outbox(self) -> list[str]:
        batch, self._outbox = list(self._outbox), set()
        return batch

    def forget(self, agent_id: str) -> None:
        self._seen.pop(agent_id, None)
        self._seen_wall_ms.pop(agent_id, None)
        self.version += 1

    def last_seen_ms(self, agent_id: str) -> int | None:
        return self._seen_wall_ms.get(agent_id)

    def silent(self, view: View, timeout: float) -> list[str]:
        """Healthy agents not heard from for longer than ``timeout`` seconds.

        Evidence of life is the newest of: a heartbeat seen here, the moment this node started
        deciding health (so a new leader does not condemn agents for lack of history), and the
        agent's last registration event (so an agent registered through another replica is not
        condemned before that replica's liveness batch arrives).
        """
        now, wall = self._clock(), now_ms()
        since = self.watching_since
        limit_ms = timeout * 1000
        return [
            agent_id
            for agent_id, agent in view.agents.items()
            if agent.status == HEALTHY
            and now - max(self._seen.get(agent_id, since), since) > timeout
            and wall - agent.updated_ms > limit_ms
        ]


def expired(view: View, retention: float, wall_ms: int) -> list[str]:
    """Agents unhealthy for longer than ``retention`` seconds (0 keeps them forever).

    Uses the wall-clock time of the event that marked them unhealthy, which survives
    restarts and failovers; a clock jump can only move an expiry, never lose data.
    """
    if retention <= 0:
        return []
    limit = wall_ms - int(retention * 1000)
    return [
        agent_id
        for agent_id, agent in view.agents.items()
        if agent.status != HEALTHY and agent.status_ms < limit
    ]


class HealthMonitor:
    """Every HEALTH_CHECK_INTERVAL, on the leader only: agents silent for AGENT_TIMEOUT become
    unhealthy, and agents unhealthy for MCP_MESH_RETENTION are removed (``expire``), as the Go
    registry's sweep does."""

    def __init__(
        self,
        view: View,
        liveness: Liveness,
        propose: Callable[[events.Event], Awaitable[Committed]],
        leading: Callable[[], bool],
        interval: float,
        timeout: float,
        retention: float,
    ) -> None:
        self.view = view
        self.liveness = liveness
        self.propose = propose
        self.leading = leading
        self.interval = interval
        self.timeout = timeout
        self.retention = retention
        self._was_leading = False

    async def check(self) -> list[str]:
        """One evaluation; returns the agents it marked unhealthy."""
        if not self.leading():
            self._was_leading = False
            return []
        if not self._was_leading:
            # Newly leading: no liveness history yet, so start the clock now.
            self._was_leading = True
            self.liveness.watching_since = time.monotonic()
        stale = self.liveness.silent(self.view, self.timeout)
        if stale:
            await self.propose(events.health("unhealthy", stale, now_ms()))
            log.info("agents marked unhealthy", extra={"agents": stale})
        wall_ms = now_ms()
        for agent_id in expired(self.view, self.retention, wall_ms):
            await self.propose(events.remove(agent_id, wall_ms, reason="expire"))
            self.liveness.forget(agent_id)
            log.info("agent expired", extra={"agent_id": agent_id})
        return stale

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Unavailable as exc:
                log.warning("health check skipped", extra={"reason": str(exc)})
