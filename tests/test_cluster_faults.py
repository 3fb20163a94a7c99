"""A write whose outcome the leader cannot know, and health decisions across a leader change:
three real registry processes, faults made with SIGSTOP and SIGKILL."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import agent_body, steadily
from tests.processes import Registry
from tests.test_cluster import (
    AGENT_TIMEOUT,
    AGENT_TIMEOUT_ENV,
    ELECTIONS,
    Cluster,
    agent_ids,
    all_ready,
    converged,
    keep_alive,
    leader_of,
    register,
    statuses,
    until,
)
from tests.timing import scaled

pytestmark = pytest.mark.slow


async def test_a_write_not_committed_in_time_is_answered_outcome_unknown(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """With its followers stopped the leader cannot commit: the write gets a 503 that says the
    outcome is unknown (the entry is in the leader's log and may still commit). Once the
    followers resume, the cluster settles on one outcome: the agent is on every node or on
    none, and stays that way.

    A long lease (election timeouts of 4-8 s, step-down after 8 s) keeps the leader leading
    while it waits for WRITE_TIMEOUT (1 s), so the 503 is the timeout's and not "no leader".
    """
    cluster = Cluster(
        tmp_path, registries, LEADER_ELECTION_LEASE_DURATION="100s", WRITE_TIMEOUT="1s"
    )
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes, timeout=40)
        leader = nodes[await leader_of(session, nodes)]
        followers = [n for n in nodes if n is not leader]
        assert await register(session, leader, "before-1")
        for node in followers:
            node.pause()
        try:
            body = {"id": "unknown-1", "capabilities": ["c"], "endpoint": "http://x:1"}
            async with session.post(f"{leader.url}/api/v1/agents", json=body) as resp:
                assert resp.status == 503
                answer = await resp.json()
        finally:
            for node in followers:
                node.resume()
        assert answer["error"] == "registry unavailable"
        assert answer["detail"] == "not committed within 1s; outcome unknown"

        await all_ready(session, nodes, timeout=40)
        await converged(session, nodes)
        outcome = {"unknown-1" in await agent_ids(session, n, linearizable=True) for n in nodes}
        assert len(outcome) == 1, "nodes disagree on whether the write happened"
        applied = outcome.pop()

        async def settled() -> bool:
            for node in nodes:
                ids = await agent_ids(session, node, linearizable=True)
                if ("unknown-1" in ids) != applied or "before-1" not in ids:
                    return False
            return True

        await steadily(settled, ELECTIONS, every=0.3)
        await converged(session, nodes)


async def follow_sdk(session: aiohttp.ClientSession, node: Registry, agent_id: str) -> None:
    """One SDK heartbeat: HEAD, and a full POST when the registry answers 410 (unknown or
    marked unhealthy), which is how an agent that was condemned comes back."""
    async with session.head(f"{node.url}/heartbeat/{agent_id}") as resp:
        if resp.status != 410:
            return
    async with session.post(f"{node.url}/heartbeat", json=agent_body(agent_id, "x")) as resp:
        assert resp.status == 200


async def test_health_across_a_leader_change(tmp_path: Path, registries: list[Registry]) -> None:
    """Heartbeats went to the old leader, which never forwards them (only followers do). The
    new leader starts its liveness clock at its election, so it condemns nobody at once: an
    agent that keeps heartbeating stays healthy, one that stopped is marked unhealthy only
    AGENT_TIMEOUT after the election, and one that comes back just as it is condemned ends
    healthy (the SDK's next heartbeat gets 410 and re-registers it)."""
    timeout = scaled(AGENT_TIMEOUT)
    cluster = Cluster(
        tmp_path, registries, AGENT_TIMEOUT=AGENT_TIMEOUT_ENV, HEALTH_CHECK_INTERVAL="200ms"
    )
    cluster.start_all()
    nodes = cluster.nodes
    steady, gone, back = "steady-1", "gone-1", "back-1"
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        old = nodes[await leader_of(session, nodes)]
        for agent_id in (steady, gone, back):
            async with session.post(f"{old.url}/heartbeat", json=agent_body(agent_id, "x")) as r:
                assert r.status == 200

        async def heartbeat_all() -> bool:
            for agent_id in (steady, gone, back):
                await keep_alive(session, old, agent_id)
            return True

        # Longer than AGENT_TIMEOUT, so neither the nodes' start nor the registrations
        # themselves still count as evidence of life on the next leader.
        await steadily(heartbeat_all, AGENT_TIMEOUT + 1, every=0.5)
        old.kill()
        killed = time.monotonic()
        survivors = [n for n in nodes if n is not old]
        leader = survivors[await leader_of(session, survivors)]
        follower = next(n for n in survivors if n is not leader)

        async def nobody_condemned_before_due() -> bool:
            await keep_alive(session, follower, steady)
            if time.monotonic() >= killed + timeout - 0.3:
                return True
            health = await statuses(session, leader)
            assert health[gone] == health[back] == "healthy", f"condemned at once: {health}"
            return False

        await until(nobody_condemned_before_due, timeout=AGENT_TIMEOUT + 10)

        async def gone_marked() -> bool:
            await keep_alive(session, follower, steady)
            health = await statuses(session, leader)
            assert health[steady] == "healthy", health
            return health[gone] == "unhealthy"

        await until(gone_marked, timeout=AGENT_TIMEOUT + 15)
        assert time.monotonic() >= killed + timeout, "condemned before its time"
        # Silent since the same moment, back-1 was condemned in the same health event; it
        # returns now, as an agent that was only slow would.
        assert await statuses(session, leader) == {
            steady: "healthy",
            gone: "unhealthy",
            back: "unhealthy",
        }

        async def back_healthy() -> bool:
            await keep_alive(session, follower, steady)
            await follow_sdk(session, leader, back)
            return (await statuses(session, leader))[back] == "healthy"

        await until(back_healthy, timeout=10)

        async def stays_so() -> bool:
            await keep_alive(session, follower, steady)
            await keep_alive(session, leader, back)
            health = await statuses(session, leader)
            return health == {steady: "healthy", gone: "unhealthy", back: "healthy"}

        await steadily(stays_so, AGENT_TIMEOUT + 1, every=0.3)
        await converged(session, survivors)
