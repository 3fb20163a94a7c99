"""The agent protocol over a real socket, following the captured SDK 3.8 exchange."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from registry.events import health
from registry.timefmt import now_ms
from tests.conftest import Api, agent_body, eventually
from tests.timing import scaled

pytestmark = pytest.mark.storages("lmdb", "postgresql")

# A real exchange between SDK 3.8 agents and the Go registry (copied from shared/reference/).
REFERENCE = Path(__file__).resolve().parent / "data"


async def test_captured_sdk_exchange_is_answered_like_the_go_registry(api: Api) -> None:
    """Replay the real SDK requests; statuses and response bodies must match (timestamps aside)."""
    exchange = REFERENCE / "sdk-3.8-heartbeat-exchange.jsonl"
    lines = [json.loads(line) for line in exchange.read_text().splitlines() if line.strip()]
    assert len(lines) == 13
    for step in lines:
        method, path = step["method"], step["path"]
        if method == "POST":
            resp = await api.client.post(path, data=step["req"], headers=step["req_headers"])
        else:
            resp = await api.client.request(method, path)
        assert resp.status == step["status"], (method, path)
        if step["resp"]:
            got = await resp.json()
            want = json.loads(step["resp"])
            got.pop("timestamp"), want.pop("timestamp")
            assert got == want, (method, path)


async def test_unchanged_heartbeat_appends_nothing(api: Api) -> None:
    body = agent_body("provider-1", "date_service")
    assert (await api.client.post("/heartbeat", json=body)).status == 200
    index = api.log_index
    for _ in range(5):
        resp = await api.client.post("/heartbeat", json=body)
        assert resp.status == 200
        assert (await resp.json())["message"] == "Agent updated via heartbeat"
        assert (await api.client.head("/heartbeat/provider-1")).status == 200
    assert api.log_index == index
    changed = agent_body("provider-1", "date_service", port=9999)
    assert (await api.client.post("/heartbeat", json=changed)).status == 200
    assert api.log_index == index + 1


async def test_head_202_only_for_consumers_whose_resolution_changed(api: Api) -> None:
    await api.client.post("/heartbeat", json=agent_body("consumer-1", "greeting", deps=["date"]))
    await api.client.post("/heartbeat", json=agent_body("bystander-1", "other", deps=["weather"]))
    assert (await api.client.head("/heartbeat/consumer-1")).status == 200
    await api.client.post("/heartbeat", json=agent_body("provider-1", "date", port=9100))
    assert (await api.client.head("/heartbeat/consumer-1")).status == 202
    assert (await api.client.head("/heartbeat/bystander-1")).status == 200
    assert (await api.client.head("/heartbeat/provider-1")).status == 200
    # The consumer's full heartbeat acknowledges the new resolution; HEAD is quiet again.
    resp = await api.client.post(
        "/heartbeat", json=agent_body("consumer-1", "greeting", deps=["date"])
    )
    resolved = (await resp.json())["dependencies_resolved"]["greeting_fn"]
    assert resolved == [
        {
            "agent_id": "provider-1",
            "capability": "date",
            "endpoint": "http://127.0.0.1:9100",
            "function_name": "date_fn",
            "kwargs": {"function_name": "date_fn"},
            "status": "available",
        }
    ]
    assert (await api.client.head("/heartbeat/consumer-1")).status == 200
    # A provider endpoint change is a change for the consumer; unrelated churn is not.
    await api.client.post("/heartbeat", json=agent_body("provider-1", "date", port=9101))
    await api.client.post("/heartbeat", json=agent_body("unrelated-1", "weather_x"))
    assert (await api.client.head("/heartbeat/consumer-1")).status == 202
    assert (await api.client.head("/heartbeat/bystander-1")).status == 200


async def test_head_heartbeats_reuse_one_connection(api: Api) -> None:
    """HEAD answers carry Content-Length: 0, so a keep-alive client (aiohttp's) reuses its
    connection instead of opening one per heartbeat."""
    await api.client.post("/heartbeat", json=agent_body("steady-1", "greeting"))
    created = 0

    async def count(*_: Any) -> None:
        nonlocal created
        created += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(count)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        for path, status in [("steady-1", 200), ("nobody", 410)] * 3:
            async with session.head(api.client.make_url(f"/heartbeat/{path}")) as resp:
                assert resp.status == status
                assert resp.headers["Content-Length"] == "0"
    assert created == 1


async def test_unknown_agent_gets_410_and_delete_404(api: Api) -> None:
    assert (await api.client.head("/heartbeat/nobody")).status == 410
    resp = await api.client.delete("/agents/nobody")
    assert resp.status == 404
    assert (await resp.json())["error"] == "agent not found"


async def test_silent_agent_turns_unhealthy_then_recovers(
    start_api: Callable[..., Awaitable[Api]],
) -> None:
    """The test runs the health checks itself (the monitor's own period is an hour), each right
    after the consumer's HEAD: on a loaded machine the consumer's liveness then never races the
    timeout, only the provider's silence (waited for with a scaled deadline) decides."""
    api = await start_api(agent_timeout=scaled(1.0), health_check_interval=3600.0)
    await api.client.post("/heartbeat", json=agent_body("provider-1", "date"))
    await api.client.post("/heartbeat", json=agent_body("consumer-1", "greet", deps=["date"]))
    # Only the consumer keeps heartbeating.

    async def check_right_after_consumer_head() -> list[str]:
        assert (await api.client.head("/heartbeat/consumer-1")).status in (200, 202)
        return await api.node.monitor.check()

    assert await eventually(check_right_after_consumer_head) == ["provider-1"]
    assert api.node.view.agents["provider-1"].status == "unhealthy"
    assert api.node.view.agents["consumer-1"].status == "healthy"
    assert (await api.client.head("/heartbeat/consumer-1")).status == 202
    resp = await api.client.post(
        "/heartbeat", json=agent_body("consumer-1", "greet", deps=["date"])
    )
    assert (await resp.json())["dependencies_resolved"]["greet_fn"][0]["status"] == "unresolved"
    # The provider's HEAD gets 410 (as from the Go registry); its full heartbeat brings it back.
    assert (await api.client.head("/heartbeat/provider-1")).status == 410
    await api.client.post("/heartbeat", json=agent_body("provider-1", "date"))
    assert api.node.view.agents["provider-1"].status == "healthy"
    assert (await api.client.head("/heartbeat/consumer-1")).status == 202
    events = (await (await api.client.get("/events?agent_id=provider-1")).json())["events"]
    assert [e["event_type"] for e in events][:3] == ["register", "unhealthy", "register"]
    assert events[0]["data"]["reason"] == "recovery"
    assert events[1]["data"]["reason"] == "health_degradation"


async def test_agents_list_shape_for_meshctl(api: Api) -> None:
    await api.client.post("/heartbeat", json=agent_body("provider-1", "date", tags=["system"]))
    await api.client.post(
        "/heartbeat", json=agent_body("consumer-1", "greet", deps=["date", "weather"])
    )
    body = await (await api.client.get("/agents")).json()
    assert body["count"] == 2
    consumer = next(a for a in body["agents"] if a["id"] == "consumer-1")
    assert consumer["status"] == "healthy"
    assert consumer["endpoint"] == "http://127.0.0.1:9000"
    assert consumer["total_dependencies"] == 2
    assert consumer["dependencies_resolved"] == 1
    assert [r["status"] for r in consumer["dependency_resolutions"]] == ["available", "unresolved"]
    assert consumer["dependency_resolutions"][0]["provider_agent_id"] == "provider-1"
    provider = next(a for a in body["agents"] if a["id"] == "provider-1")
    assert provider["capabilities"][0]["name"] == "date"
    assert provider["capabilities"][0]["tags"] == ["system"]


async def test_unknown_fields_are_kept(api: Api) -> None:
    body = agent_body("provider-1", "date", future_field={"x": 1})
    body["tools"][0]["new_tool_field"] = [1, 2]
    await api.client.post("/heartbeat", json=body)
    stored = api.node.view.agents["provider-1"].registration
    assert stored["future_field"] == {"x": 1}
    assert stored["tools"][0]["new_tool_field"] == [1, 2]


async def test_events_window_newest_first_with_filters(api: Api) -> None:
    await api.client.post("/heartbeat", json=agent_body("a-1", "x"))
    await api.client.post("/heartbeat", json=agent_body("b-1", "y"))
    await api.client.delete("/agents/a-1")
    events = (await (await api.client.get("/events")).json())["events"]
    assert [(e["event_type"], e["agent_id"]) for e in events] == [
        ("unregister", "a-1"),
        ("register", "b-1"),
        ("register", "a-1"),
    ]
    only = await (await api.client.get("/events?type=register&limit=1")).json()
    assert only["count"] == 1 and only["events"][0]["agent_id"] == "b-1"
    assert (await api.client.get("/events?limit=0")).status == 400
    assert (await api.client.get("/events?type=bogus")).status == 400


async def test_agents_filtered_by_namespace_and_status(api: Api) -> None:
    for agent_id, namespace in [("a-1", "default"), ("b-1", "prod"), ("c-1", "prod")]:
        body = agent_body(agent_id, "date", namespace=namespace)
        assert (await api.client.post("/heartbeat", json=body)).status == 200
    await api.node.propose(health("unhealthy", ["c-1"], now_ms()))

    async def listed(query: str) -> list[str]:
        body = await (await api.client.get(f"/agents{query}")).json()
        assert body["count"] == len(body["agents"])
        return sorted(agent["id"] for agent in body["agents"])

    assert await listed("") == ["a-1", "b-1", "c-1"]
    assert await listed("?namespace=prod") == ["b-1", "c-1"]
    assert await listed("?namespace=default") == ["a-1"]
    assert await listed("?namespace=staging") == []
    assert await listed("?status=unhealthy") == ["c-1"]
    assert await listed("?status=healthy") == ["a-1", "b-1"]
    assert await listed("?namespace=prod&status=healthy") == ["b-1"]
    assert await listed("?namespace=default&status=unhealthy") == []


async def test_events_filtered_by_function_name(api: Api) -> None:
    """Every event this registry records is agent-level (the spec's function_name is null for
    those), so a function_name filter selects none of them, alone or with other filters."""
    await api.client.post("/heartbeat", json=agent_body("a-1", "x"))
    await api.client.delete("/agents/a-1")
    everything = await (await api.client.get("/events?agent_id=a-1")).json()
    assert everything["count"] == 2
    for query in ("function_name=x_fn", "function_name=x_fn&agent_id=a-1&type=register"):
        body = await (await api.client.get(f"/events?{query}")).json()
        assert body == {"events": [], "count": 0}, query


async def test_unhealthy_agents_expire_after_retention(start_api) -> None:  # type: ignore[no-untyped-def]
    api: Api = await start_api(agent_timeout=0.2, health_check_interval=0.05, retention=0.3)
    await api.client.post("/heartbeat", json=agent_body("gone-1", "date"))
    await eventually(lambda: "gone-1" not in api.node.view.agents)
    assert (await api.client.head("/heartbeat/gone-1")).status == 410
    events = (await (await api.client.get("/events?agent_id=gone-1")).json())["events"]
    assert [e["event_type"] for e in events] == ["expire", "unhealthy", "register"]
