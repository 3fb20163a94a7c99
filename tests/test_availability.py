"""Capability availability (``required: true`` dependencies, the Go registry's issue #1249).

A tool is available when its agent is healthy and each of its required dependencies resolves
to an available provider, transitively; an unavailable provider is left out of resolution
like an unhealthy one. The reasons are the Go registry 3.7.1's words (the same mesh is
compared with it in tests/compat/test_availability_go.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from registry import events
from registry.api.listing import Listings
from registry.api.render import agent_info_from_log
from registry.health import Liveness
from registry.registration import from_heartbeat
from registry.resolve import find_cycle
from registry.view import UNHEALTHY, View, apply
from tests.conftest import agent_body


def required(capability: str, **constraints: Any) -> dict[str, Any]:
    return {"capability": capability, "required": True, **constraints}


MESH = [
    agent_body("b-1", "b_cap", deps=[required("c_cap")], port=9001),
    agent_body("a-1", "a_cap", deps=[required("b_cap")], port=9002),
    agent_body("d-1", "d_cap", deps=["c_cap"], port=9003),  # optional: no effect
    agent_body("e-1", "e_cap", deps=["b_cap", "a_cap"], port=9004),
    agent_body("g-1", "g_cap", tags=["y"], port=9005),
    agent_body("f-1", "f_cap", deps=[required("g_cap", tags=["x"])], port=9006),
    agent_body("h-1", "h_cap", deps=[required("g_cap", version=">=2.0")], port=9007),
]
C = agent_body("c-1", "c_cap", port=9010)


class Mesh:
    """A view fed through ``apply``, as every replica builds it."""

    def __init__(self, bodies: list[dict[str, Any]] = MESH) -> None:
        self.view = View()
        self.index = 0
        for body in bodies:
            self.upsert(body)

    def apply(self, event: events.Event) -> None:
        self.index += 1
        apply(self.view, self.index, event)

    def upsert(self, body: dict[str, Any]) -> None:
        self.apply(events.upsert(from_heartbeat(body), 1000 + self.index))

    def capabilities(self) -> dict[str, tuple[bool, str | None]]:
        return {
            cap["name"]: (cap["available"], cap.get("unavailable_reason"))
            for agent in self.view.agents.values()
            for cap in agent_info_from_log(self.view, agent)["capabilities"]
        }

    def resolved(self, agent_id: str) -> list[str]:
        return [e["agent_id"] for deps in self.view.resolution(agent_id).values() for e in deps]


def test_required_dependencies_make_a_capability_unavailable_transitively() -> None:
    mesh = Mesh()
    assert mesh.capabilities() == {
        "b_cap": (False, "required dep 'c_cap' unresolved"),
        "a_cap": (False, "required dep 'b_cap' unavailable (provider b-1 unavailable)"),
        "d_cap": (True, None),
        "e_cap": (True, None),
        "g_cap": (True, None),
        "f_cap": (False, "required dep 'g_cap' unresolved (no provider matches tags=[x])"),
        "h_cap": (False, "required dep 'g_cap' unresolved (no provider matches version >=2.0)"),
    }
    assert mesh.resolved("e-1") == ["", ""]  # an unavailable provider is no provider


def test_a_provider_arriving_or_failing_far_down_the_chain_changes_the_answers_above() -> None:
    mesh = Mesh()
    for agent in mesh.view.agents.values():
        assert not mesh.view.resolution_changed(agent.agent_id)
    mesh.upsert(C)
    assert mesh.capabilities()["a_cap"] == (True, None)
    assert mesh.resolved("e-1") == ["b-1", "a-1"]
    # HEAD /heartbeat answers 202 exactly where an answer changed (e-1 two hops above c-1).
    changed = {a for a in mesh.view.agents if a != "c-1" and mesh.view.resolution_changed(a)}
    assert changed == {"a-1", "b-1", "d-1", "e-1"}

    mesh.apply(events.health(UNHEALTHY, ["c-1"], 5000))
    assert mesh.capabilities()["b_cap"] == (
        False,
        "required dep 'c_cap' unavailable (provider c-1 unhealthy)",
    )
    assert mesh.capabilities()["a_cap"] == (
        False,
        "required dep 'b_cap' unavailable (provider b-1 unavailable)",
    )
    assert mesh.capabilities()["c_cap"] == (False, "agent unhealthy")
    assert mesh.resolved("e-1") == ["", ""]


def test_the_audit_records_an_unavailable_candidate_as_evicted_at_the_health_stage() -> None:
    mesh = Mesh()
    _, trace = mesh.view._traced("e-1", 0, mesh.view.dependencies("e-1")[0][1][0])
    health = next(s for s in trace["stages"] if s["stage"] == "health")
    assert health["evicted"] == [
        {
            "id": "b-1:b_cap_fn",
            "reason": "Unavailable",
            "details": {"reason": "required dep 'c_cap' unresolved"},
        }
    ]


def test_a_cycle_of_requirements_is_unavailable_whatever_is_asked_first() -> None:
    """Registration refuses a cycle, but two replicas may each accept one half: the answer must
    not depend on which capability a replica was asked about first."""
    cycle = [
        agent_body("x-1", "x_cap", deps=[required("y_cap")], port=9008),
        agent_body("y-1", "y_cap", deps=[required("x_cap")], port=9009),
        agent_body("z-1", "z_cap", deps=[required("x_cap")], port=9011),
    ]
    answers = []
    for order in (["x-1", "y-1", "z-1"], ["z-1", "y-1", "x-1"]):
        mesh = Mesh(cycle)
        for agent_id in order:
            mesh.view.availability(agent_id)
        answers.append(mesh.capabilities())
    assert (
        answers[0]
        == answers[1]
        == {
            "x_cap": (False, "required dep 'y_cap' unavailable (provider y-1 unavailable)"),
            "y_cap": (False, "required dep 'x_cap' unavailable (provider x-1 unavailable)"),
            "z_cap": (False, "required dep 'x_cap' unavailable (provider x-1 unavailable)"),
        }
    )


def test_snapshots_and_the_cached_listing_follow_availability() -> None:
    mesh = Mesh()
    listings = Listings()
    liveness = Liveness()

    def listed() -> dict[str, Any]:
        body = orjson.loads(asyncio.run(listings.body(mesh.view, lambda v: list(v.agents.values()),
                                                      liveness)))  # fmt: skip
        return {c["name"]: c.get("unavailable_reason", "") for a in body["agents"]
                for c in a["capabilities"]}  # fmt: skip

    assert listed()["a_cap"] == "required dep 'b_cap' unavailable (provider b-1 unavailable)"
    mesh.upsert(C)  # a-1 itself is unchanged: only its availability is
    assert listed()["a_cap"] == ""
    restored = View.from_state(mesh.view.to_state())
    assert restored.availability("a-1") == mesh.view.availability("a-1") == ("",)
    mesh.apply(events.health(UNHEALTHY, ["c-1"], 6000))
    assert listed()["b_cap"] == "required dep 'c_cap' unavailable (provider c-1 unhealthy)"
    mesh.apply(events.remove("c-1", 7000))  # b-1's dependency stays unresolved, its reason not
    assert listed()["b_cap"] == "required dep 'c_cap' unresolved"
    assert restored.availability("a-1") == ("",)


def test_registration_names_the_loop_it_would_close_by_capability() -> None:
    mesh = Mesh([agent_body("x-1", "x_cap", deps=[required("y_cap", tags=["t"])], port=9008)])
    closing = from_heartbeat(agent_body("y-1", "y_cap", deps=[required("x_cap")], port=9009))
    assert mesh.view.required_cycle(closing) == ["x_cap", "y_cap", "x_cap"]
    optional = from_heartbeat(agent_body("y-1", "y_cap", deps=["x_cap"], port=9009))
    assert mesh.view.required_cycle(optional) is None  # an optional edge is the way out
    # x-1 replacing its own requirement closes nothing.
    again = from_heartbeat(agent_body("x-1", "x_cap", deps=[required("z_cap")], port=9008))
    assert mesh.view.required_cycle(again) is None
    assert find_cycle({"b": {"c", "a"}, "a": {"b"}, "c": set()}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
