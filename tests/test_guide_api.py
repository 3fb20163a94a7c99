"""The deployment guide's REST API and ops endpoints over a real socket."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry, Histogram

from registry.gc_pauses import GcPauses
from tests.conftest import Api, agent_body

pytestmark = pytest.mark.storages("lmdb", "postgresql")


async def test_guide_registration_roundtrip(api: Api) -> None:
    body = {"id": "test-agent-1", "capabilities": ["test"], "endpoint": "http://agent-1:8080"}
    resp = await api.client.post("/api/v1/agents", json=body)
    assert resp.status == 200
    stored = await resp.json()
    assert stored["id"] == "test-agent-1"
    assert stored["endpoint"] == "http://agent-1:8080"
    assert [c["name"] for c in stored["capabilities"]] == ["test"]
    got = await (await api.client.get("/api/v1/agents/test-agent-1")).json()
    assert got["id"] == "test-agent-1"
    listing = await (await api.client.get("/api/v1/agents")).json()
    assert listing["count"] == 1
    # One population: the guide's agents are visible to the agent protocol and resolvable.
    assert (await (await api.client.get("/agents")).json())["count"] == 1
    consumer = await api.client.post("/heartbeat", json=agent_body("c-1", "x", deps=["test"]))
    resolved = (await consumer.json())["dependencies_resolved"]["x_fn"][0]
    assert resolved["agent_id"] == "test-agent-1"
    assert resolved["endpoint"] == "http://agent-1:8080"
    resp = await api.client.delete("/api/v1/agents/test-agent-1")
    assert resp.status == 200
    assert (await api.client.get("/api/v1/agents/test-agent-1")).status == 404
    assert (await api.client.delete("/api/v1/agents/test-agent-1")).status == 404


async def test_capabilities_filters(api: Api) -> None:
    await api.client.post("/heartbeat", json=agent_body("p-1", "date", tags=["system", "time"]))
    await api.client.post("/heartbeat", json=agent_body("p-2", "date", tags=["fast"]))
    await api.client.post("/heartbeat", json=agent_body("p-3", "weather", tags=["fast"]))
    caps = await (await api.client.get("/api/v1/capabilities")).json()
    assert [c["name"] for c in caps["capabilities"]] == ["date", "weather"]
    by_name = await (await api.client.get("/api/v1/capabilities?name=date")).json()
    assert [p["agent_id"] for p in by_name["capabilities"][0]["providers"]] == ["p-1", "p-2"]
    by_tag = await (await api.client.get("/api/v1/capabilities?tag=fast")).json()
    assert {(c["name"], p["agent_id"]) for c in by_tag["capabilities"] for p in c["providers"]} == {
        ("date", "p-2"),
        ("weather", "p-3"),
    }


async def test_ops_endpoints(api: Api) -> None:
    health = await api.client.get("/health")
    assert health.status == 200
    body = await health.json()
    assert body["status"] == "healthy" and body["service"] == "mcp-mesh-registry"
    assert {"version", "uptime_seconds", "timestamp"} <= body.keys()
    assert (await api.client.head("/health")).status == 200
    assert (await api.client.get("/ready")).status == 200
    root = await (await api.client.get("/")).json()
    assert "/heartbeat" in root["endpoints"]
    await api.client.post("/heartbeat", json=agent_body("p-1", "date"))
    gc.collect()
    text = await (await api.client.get("/metrics")).text()
    for name in (
        'mcp_registry_agents_total{status="healthy"} 1.0',
        "mcp_registry_requests_total{",
        "mcp_registry_errors_total",
        "mcp_registry_request_duration_seconds_bucket",
        "mcp_registry_log_index 1.0",
        "mcp_registry_snapshot_index",
        "mcp_registry_events_appended_total 1.0",
        'mcp_registry_gc_pause_seconds_count{generation="2"}',
        "process_resident_memory_bytes",
        'python_gc_collections_total{generation="2"}',
    ):
        assert name in text, name


async def test_requests_are_counted_per_route_and_status_and_each_gets_its_own_id(
    api: Api,
) -> None:
    ids = set()
    for _ in range(3):
        response = await api.client.get("/api/v1/agents/nobody")
        assert response.status == 404
        ids.add(response.headers["X-Request-Id"])
    response = await api.client.get("/health", headers={"X-Request-Id": "from-the-caller"})
    assert response.headers["X-Request-Id"] == "from-the-caller"
    assert len(ids) == 3 and all(len(i) == 16 for i in ids)
    text = await (await api.client.get("/metrics")).text()
    samples = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith(("mcp_registry_requests_total", "mcp_registry_errors_total"))
    }
    route = 'method="GET",route="/api/v1/agents/{id}"'
    assert samples[f'mcp_registry_requests_total{{{route},status="404"}}'] == 3
    assert samples['mcp_registry_requests_total{method="GET",route="/health",status="200"}'] == 1
    assert samples["mcp_registry_errors_total"] == 3


def test_gc_pauses_are_timed_while_installed_only() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(Histogram("pause", "", ["generation"], registry=registry))

    def full_collections() -> float | None:
        return registry.get_sample_value("pause_count", {"generation": "2"})

    pauses.install()
    pauses.install()  # once only
    try:
        gc.collect()
        assert full_collections() == 1
    finally:
        pauses.remove()
    gc.collect()
    assert full_collections() == 1


async def test_auth_token_protects_api_v1_writes(start_api) -> None:  # type: ignore[no-untyped-def]
    api: Api = await start_api(auth_token="s3cret")
    body = {"id": "a-1", "capabilities": ["x"]}
    resp = await api.client.post("/api/v1/agents", json=body)
    assert resp.status == 401
    assert "error" in await resp.json()
    wrong = {"Authorization": "Bearer nope"}
    assert (await api.client.post("/api/v1/agents", json=body, headers=wrong)).status == 401
    assert api.log_index == 0
    good = {"Authorization": "Bearer s3cret"}
    assert (await api.client.post("/api/v1/agents", json=body, headers=good)).status == 200
    assert (await api.client.delete("/api/v1/agents/a-1")).status == 401
    # Reads and the agent protocol stay open: SDK agents send no token.
    assert (await api.client.get("/api/v1/agents")).status == 200
    assert (await api.client.post("/heartbeat", json=agent_body("p-1", "x"))).status == 200
