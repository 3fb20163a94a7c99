"""Limits (registry/limits.py): each one hit over a real socket gives its 4xx, counts in the
metric and leaves the view and the log unchanged; one address's flood leaves others served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from registry.limits import TRACKED_ADDRESSES, Admission, Limits, Refused
from tests.conftest import Api, agent_body

pytestmark = pytest.mark.storages("lmdb", "postgresql")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_a_token_bucket_per_client_with_a_retry_after() -> None:
    clock = Clock()
    admission = Admission(Limits(registration_rate=2.0, registration_burst=3), clock)
    for _ in range(3):
        admission.check_write("10.0.0.1", new_agent=True, agents=0)
    with pytest.raises(Refused) as refused:
        admission.check_write("10.0.0.1", new_agent=True, agents=0)
    assert (refused.value.status, refused.value.reason, refused.value.retry_after) == (
        429,
        "rate",
        1,
    )
    admission.check_write("10.0.0.2", new_agent=True, agents=0)  # another client: its own bucket
    clock.now += 0.5  # one token back at 2/s
    admission.check_write("10.0.0.1", new_agent=False, agents=0)
    with pytest.raises(Refused):
        admission.check_write("10.0.0.1", new_agent=False, agents=0)


def test_tracked_addresses_are_bounded() -> None:
    admission = Admission(Limits(), Clock())
    for i in range(TRACKED_ADDRESSES + 50):
        admission.check_write(f"client-{i}", new_agent=True, agents=0)
    assert len(admission._buckets) == TRACKED_ADDRESSES
    assert (
        "client-0" not in admission._buckets
        and f"client-{TRACKED_ADDRESSES + 49}" in admission._buckets
    )


def test_agent_count_limits_new_agents_only() -> None:
    admission = Admission(Limits(agents=2), Clock())
    admission.check_write("c", new_agent=False, agents=2)  # an update of a registered agent
    with pytest.raises(Refused) as refused:
        admission.check_write("c", new_agent=True, agents=2)
    assert (refused.value.status, refused.value.reason) == (429, "agents")


async def _refused(api: Api, reason: str) -> float:
    resp = await api.client.get("/metrics")
    for line in (await resp.text()).splitlines():
        if line.startswith(f'mcp_registry_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


async def _state(api: Api) -> tuple[int, set[str]]:
    return api.log_index, set(api.node.view.agents)


StartApi = Callable[..., Awaitable[Api]]


async def test_a_body_over_the_limit_is_413_and_changes_nothing(start_api: StartApi) -> None:
    api = await start_api(limits=Limits(request_bytes=4096))
    before = await _state(api)
    big = agent_body("big-1", "cap", description="x" * 5000)
    resp = await api.client.post("/heartbeat", json=big)
    assert resp.status == 413
    assert "error" in await resp.json()
    assert await _state(api) == before
    assert await _refused(api, "body") == 1
    assert (await api.client.post("/heartbeat", json=agent_body("small-1", "cap"))).status == 200


async def test_too_many_tools_is_400_and_changes_nothing(start_api: StartApi) -> None:
    api = await start_api(limits=Limits(tools_per_agent=2))
    body = agent_body("tools-1", "cap")
    body["tools"] = [dict(body["tools"][0], function_name=f"f{i}") for i in range(3)]
    before = await _state(api)
    resp = await api.client.post("/heartbeat", json=body)
    assert resp.status == 400
    assert "MAX_TOOLS_PER_AGENT" in (await resp.json())["error"]
    assert await _state(api) == before
    assert not api.node.liveness.last_seen_ms("tools-1")  # a refused agent leaves no trace
    assert await _refused(api, "tools") == 1


async def test_a_full_registry_refuses_new_agents_but_takes_updates(start_api: StartApi) -> None:
    api = await start_api(limits=Limits(agents=2))
    for agent in ("a-1", "b-1"):
        assert (await api.client.post("/heartbeat", json=agent_body(agent, "cap"))).status == 200
    before = await _state(api)
    resp = await api.client.post("/api/v1/agents", json={"id": "c-1", "capabilities": ["x"]})
    assert resp.status == 429
    assert "MAX_AGENTS" in (await resp.json())["error"]
    assert await _state(api) == before
    changed = agent_body("a-1", "cap", version="2.0.0")
    assert (await api.client.post("/heartbeat", json=changed)).status == 200
    assert api.node.view.agents["a-1"].registration["tools"][0]["version"] == "2.0.0"
    assert await _refused(api, "agents") == 1


async def _post_from(api: Api, source: str, body: dict[str, Any]) -> tuple[int, dict[str, str]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"http://127.0.0.1:{api.client.port}/heartbeat"
        async with session.post(url, json=body) as resp:
            return resp.status, dict(resp.headers)


async def test_a_flood_from_one_address_is_429_and_leaves_others_served(
    start_api: StartApi,
) -> None:
    api = await start_api(limits=Limits(registration_rate=0.5, registration_burst=5))
    answers = [
        await _post_from(api, "127.0.0.2", agent_body(f"flood-{i}", "cap")) for i in range(40)
    ]
    statuses = [status for status, _ in answers]
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    assert all(int(headers["Retry-After"]) >= 1 for status, headers in answers if status == 429)
    assert {a for a in api.node.view.agents if a.startswith("flood")} == {
        f"flood-{i}" for i in range(5)
    }
    index = api.log_index
    # Unchanged heartbeats of the admitted agents append nothing and are never limited.
    for i in range(5):
        status, _ = await _post_from(api, "127.0.0.2", agent_body(f"flood-{i}", "cap"))
        assert status == 200
    assert api.log_index == index
    # Another address (another agent's host) is served as usual.
    status, _ = await _post_from(api, "127.0.0.3", agent_body("neighbour-1", "cap"))
    assert status == 200
    assert await _refused(api, "rate") == 35
