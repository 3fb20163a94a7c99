"""Bad input: a clear 4xx JSON error, nothing written, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api, agent_body

pytestmark = pytest.mark.storages("lmdb", "postgresql")

BAD_HEARTBEATS: list[tuple[str, Any]] = [
    ("not json", "{agent_id: nope"),
    ("empty body", ""),
    ("array", "[1, 2]"),
    ("missing agent_id", {"name": "x", "tools": []}),
    ("agent_id wrong type", {"agent_id": 7, "tools": []}),
    ("agent_id bad chars", {"agent_id": "a b/c", "tools": []}),
    ("agent_id too long", {"agent_id": "a" * 65, "tools": []}),
    ("agent_id empty", {"agent_id": "", "tools": []}),
    # The Go registry's database refuses these too (its Ent enums), with a 200 and an error.
    ("unknown runtime", {"agent_id": "a", "runtime": "rust", "tools": []}),
    ("unknown agent_type", {"agent_id": "a", "agent_type": "weird", "tools": []}),
    ("http_port string", {**agent_body("a-1", "x"), "http_port": "80"}),
    ("http_port bool", {**agent_body("a-1", "x"), "http_port": True}),
    ("http_port out of range", {**agent_body("a-1", "x"), "http_port": 70000}),
    ("tools not list", {"agent_id": "a-1", "tools": {"x": 1}}),
    ("tool missing capability", {"agent_id": "a-1", "tools": [{"function_name": "f"}]}),
    (
        "tool capability empty",
        {"agent_id": "a-1", "tools": [{"function_name": "f", "capability": ""}]},
    ),
    (
        "dependency wrong type",
        {
            "agent_id": "a-1",
            "tools": [{"function_name": "f", "capability": "c", "dependencies": ["x"]}],
        },
    ),
    (
        "dependency tag wrong type",
        {
            "agent_id": "a-1",
            "tools": [
                {
                    "function_name": "f",
                    "capability": "c",
                    "dependencies": [{"capability": "d", "tags": [1]}],
                }
            ],
        },
    ),
    (
        "required not a boolean",
        agent_body("a-1", "x", deps=[{"capability": "d", "required": "yes"}]),
    ),
    # A loop of required dependencies could never become available (the Go registry: 200 and
    # an error, with the same message).
    ("requires itself", agent_body("a-1", "x", deps=[{"capability": "x", "required": True}])),
    (
        "required loop between two tools",
        {
            "agent_id": "a-1",
            "tools": [
                {
                    "function_name": "f",
                    "capability": "c",
                    "dependencies": [{"capability": "d", "required": True}],
                },
                {
                    "function_name": "g",
                    "capability": "d",
                    "dependencies": [{"capability": "c", "required": True}],
                },
            ],
        },
    ),
    (
        "tags not strings",
        {
            "agent_id": "a-1",
            "tools": [{"function_name": "f", "capability": "c", "tags": [{"a": 1}]}],
        },
    ),
]


@pytest.mark.parametrize(("case", "body"), BAD_HEARTBEATS, ids=[c for c, _ in BAD_HEARTBEATS])
async def test_bad_heartbeat_is_400_and_writes_nothing(api: Api, case: str, body: Any) -> None:
    before = api.log_index
    if isinstance(body, str):
        resp = await api.client.post(
            "/heartbeat", data=body, headers={"Content-Type": "application/json"}
        )
    else:
        resp = await api.client.post("/heartbeat", json=body)
    assert resp.status == 400, case
    error = await resp.json()
    assert isinstance(error["error"], str) and error["error"]
    assert api.log_index == before
    assert api.node.view.agents == {}


BAD_GUIDE_BODIES: list[tuple[str, Any]] = [
    ("missing id", {"capabilities": ["test"]}),
    ("id bad chars", {"id": "../etc", "capabilities": ["test"]}),
    ("capabilities not list", {"id": "a", "capabilities": "test"}),
    ("capability not string", {"id": "a", "capabilities": [3]}),
    ("endpoint not string", {"id": "a", "endpoint": 5}),
]


@pytest.mark.parametrize(("case", "body"), BAD_GUIDE_BODIES, ids=[c for c, _ in BAD_GUIDE_BODIES])
async def test_bad_guide_registration_is_400(api: Api, case: str, body: Any) -> None:
    resp = await api.client.post("/api/v1/agents", json=body)
    assert resp.status == 400, case
    assert "error" in await resp.json()
    assert api.log_index == 0


async def test_body_over_one_mebibyte_is_413(api: Api) -> None:
    body = agent_body("big-1", "x", padding="x" * (1 << 20))
    resp = await api.client.post("/heartbeat", json=body)
    assert resp.status == 413
    assert "error" in await resp.json()
    assert api.log_index == 0


async def test_bad_path_ids_and_unknown_routes(api: Api) -> None:
    assert (await api.client.head("/heartbeat/bad%20id")).status == 400
    assert (await api.client.delete("/agents/" + "x" * 65)).status == 400
    resp = await api.client.get("/nope")
    assert resp.status == 404
    assert "error" in await resp.json()
    resp = await api.client.put("/heartbeat")
    assert resp.status == 405
    assert "error" in await resp.json()
    # Exactly the four error answers above, as /metrics exposes them (GET /metrics is a 200).
    text = await (await api.client.get("/metrics")).text()
    errors = next(
        f for f in text_string_to_metric_families(text) if f.name == "mcp_registry_errors"
    )
    assert [sample.value for sample in errors.samples if sample.name.endswith("_total")] == [4.0]
