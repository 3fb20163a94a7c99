"""A removal learns whether it removed the agent from its own committed entry.

The bounded event history (EVENTS_HISTORY, default 1,000) is a window for GET /events, not a
record of outcomes: entries applied after the removal and before its handler resumes (in the
same commit batch on a single node, in the same burst of applies on a Raft follower-turned-
proposer) can push the removal's history entry out. The answer must not depend on that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from registry import events
from registry.registration import from_heartbeat
from registry.timefmt import now_ms
from tests.conftest import Api, agent_body, eventually
from tests.ports import free_port

pytestmark = pytest.mark.storages("lmdb", "postgresql")


async def test_removal_followed_by_a_write_in_the_same_batch_reports_removed(
    start_api: Callable[..., Awaitable[Api]],
) -> None:
    """EVENTS_HISTORY=1: the write committed right after the removal leaves the only history
    slot, and the removal still reports that it removed the agent."""
    api = await start_api(events_history=1)
    node = api.node
    assert await node.register(from_heartbeat(agent_body("gone-1", "date")), "127.0.0.1")
    # Both proposals are queued before the log writer runs again, so they commit as one batch
    # and both are applied before either caller resumes.
    removed, _ = await asyncio.gather(
        node.unregister("gone-1"),
        node.register(from_heartbeat(agent_body("later-1", "date")), "127.0.0.1"),
    )
    assert removed is True
    assert "gone-1" not in node.view.agents
    assert [item["agent_id"] for item in node.view.history] == ["later-1"]


async def test_removal_followed_by_a_mass_health_event_reports_removed(api: Api) -> None:
    """The default EVENTS_HISTORY (1,000), then one health event for 1,200 agents committed
    right after the removal."""
    node = api.node
    ids = [f"agent-{i}" for i in range(1201)]
    # Agents on their own hosts, as in a mesh (one address would meet REGISTRATION_RATE).
    await asyncio.gather(
        *(
            node.register(from_heartbeat(agent_body(a, "date")), f"10.0.{i // 256}.{i % 256}")
            for i, a in enumerate(ids)
        )
    )
    assert len(node.view.agents) == 1201
    removed, _ = await asyncio.gather(
        node.unregister(ids[0]), node.propose(events.health("unhealthy", ids[1:], now_ms()))
    )
    assert removed is True
    assert ids[0] not in node.view.agents
    assert all(item["event_type"] == "unhealthy" for item in node.view.history)


async def test_removal_of_an_agent_removed_concurrently_reports_not_found(api: Api) -> None:
    """Two removals of one agent: exactly one removed it (the log decides which)."""
    node = api.node
    await node.register(from_heartbeat(agent_body("twice-1", "date")), "127.0.0.1")
    outcomes = await asyncio.gather(node.unregister("twice-1"), node.unregister("twice-1"))
    assert sorted(outcomes) == [False, True]


def _raft_of_one() -> dict[str, Any]:
    """Settings for a one-member Raft cluster in this process: the Raft proposer's path
    (tick thread, apply and settle crossing to the loop), with no other process to wait for."""
    port = free_port()
    return {
        "enable_leader_election": True,
        "raft_port": port,
        "peers": (f"127.0.0.1:{port}",),
        "encryption_key": "unregister-outcome-test-key-32-bytes!",
    }


@pytest.mark.storages("lmdb")  # its cases are the LMDB log's two proposers, local and raft
@pytest.mark.parametrize("proposer", ["local", "raft"])
async def test_concurrent_deletes_over_http_all_answer_204(
    start_api: Callable[..., Awaitable[Api]], proposer: str
) -> None:
    """Many agents deleted at once with EVENTS_HISTORY=1: every DELETE that removed an agent
    answers 204, however the proposer grouped their commits and applies."""
    api = await start_api(events_history=1, **(_raft_of_one() if proposer == "raft" else {}))
    await eventually(lambda: api.node.proposer.ready()[0], timeout=10)
    ids = [f"bulk-{i}" for i in range(40)]
    for agent_id in ids:
        resp = await api.client.post("/heartbeat", json=agent_body(agent_id, "date"))
        assert resp.status == 200
    answers = await asyncio.gather(*(api.client.delete(f"/agents/{i}") for i in ids))
    assert [resp.status for resp in answers] == [204] * len(ids)
    assert api.node.view.agents == {}
