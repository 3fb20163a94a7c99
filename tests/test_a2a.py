"""A2A surfaces: what is kept across heartbeats, what answers show, what is bad input."""

from __future__ import annotations

from typing import Any

import pytest

from registry import a2a, registration
from registry.registration import InvalidRegistration
from tests.conftest import Api

pytestmark = pytest.mark.storages("lmdb", "postgresql")

SURFACES = [{"path": "agents/report", "skill_id": "report"}, {"path": "/x", "skill_id": ""}]


def test_surfaces_are_kept_unless_sent_and_cleared_by_an_empty_list() -> None:
    stored = {"agent_id": "a", "surfaces": SURFACES}
    assert a2a.keep_surfaces({"agent_id": "a"}, stored)["surfaces"] == SURFACES
    assert a2a.keep_surfaces({"agent_id": "a", "surfaces": None}, stored)["surfaces"] == SURFACES
    assert a2a.keep_surfaces({"agent_id": "a", "surfaces": []}, stored)["surfaces"] == []
    assert "surfaces" not in a2a.keep_surfaces({"agent_id": "a"}, None)


def test_shown_surfaces_and_their_public_urls() -> None:
    registration = {"agent_type": "a2a", "surfaces": SURFACES}
    assert a2a.shown(registration, "") == [{"path": "agents/report", "skill_id": "report"}]
    assert a2a.shown(registration, "https://p") == [
        {
            "agent_card_url": "https://p/agents/report/.well-known/agent.json",
            "path": "agents/report",
            "public_url": "https://p/agents/report",
            "skill_id": "report",
        }
    ]
    assert a2a.listing([registration, {"surfaces": SURFACES}], "") == a2a.shown(registration, "")


@pytest.mark.parametrize(
    "bad",
    [
        {"surfaces": "x"},
        {"surfaces": [1]},
        {"surfaces": [{"path": 1}]},
        {"surfaces": [{"tags": "x"}]},
        {"a2a_producer": "yes"},
    ],
)
def test_surfaces_the_go_registry_cannot_decode_are_bad_input(bad: dict[str, Any]) -> None:
    body = {"agent_id": "x", "tools": [{"function_name": "f", "capability": "c"}], **bad}
    with pytest.raises(InvalidRegistration):
        registration.from_heartbeat(body)


async def test_heartbeats_keep_surfaces_and_get_a2a_agents_lists_them(api: Api) -> None:
    body: dict[str, Any] = {"agent_id": "r", "agent_type": "a2a", "surfaces": SURFACES,
                            "tools": [{"function_name": "f", "capability": "c"}]}  # fmt: skip
    for sent in (body, {k: v for k, v in body.items() if k != "surfaces"}):
        async with api.client.post("/heartbeat", json=sent) as resp:
            assert (await resp.json())["surfaces"] == [SURFACES[0]]
    async with api.client.get("/a2a/agents") as resp:
        assert await resp.json() == {"surfaces": [SURFACES[0]]}
    async with api.client.post("/heartbeat", json=body | {"surfaces": []}) as resp:
        assert "surfaces" not in await resp.json()
    async with api.client.get("/a2a/agents") as resp:
        assert await resp.json() == {"surfaces": []}
