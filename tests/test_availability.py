"""Capability availability (``required: true`` dependencies, the Go registry's issue #1249).

A tool is available when its agent is healthy and each of its required dependencies resolves
to an available provider, transitively; an unavailable provider is left out of resolution
like an unhealthy one. The reasons are the Go registry 3.7.1's words (the same mesh is
compared with it in tests/compat/test_availability_go.py).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import availability, events, resolve
from registry.api.listing import Listings
from registry.api.render import agent_info_from_log
from registry.availability import find_loop
from registry.health import Liveness
from registry.registration import from_heartbeat
from registry.view import HEALTHY, UNHEALTHY, View, apply
from tests.conftest import Api, agent_body

pytestmark = pytest.mark.storages("lmdb", "postgresql")


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
    assert mesh.view.required_loop(closing) == ["x_cap", "y_cap", "x_cap"]
    optional = from_heartbeat(agent_body("y-1", "y_cap", deps=["x_cap"], port=9009))
    assert mesh.view.required_loop(optional) is None  # an optional edge is the way out
    # x-1 replacing its own requirement closes nothing.
    again = from_heartbeat(agent_body("x-1", "x_cap", deps=[required("z_cap")], port=9008))
    assert mesh.view.required_loop(again) is None
    assert find_loop({"b": {"c", "a"}, "a": {"b"}, "c": set()}) == ["a", "b", "a"]
    assert find_loop({"a": {"b"}, "b": {"c"}}) is None
    assert find_loop({"a": {"a"}}) == ["a", "a"]


# -- a loop already in the view (two replicas each accepted one half) -------------------------


def test_a_loop_already_in_the_view_refuses_only_registrations_closing_one() -> None:
    """Registration checks against one replica's view, so two replicas may each accept one half
    of a loop. Then neither half's next heartbeat, nor any registration whose own edges close
    nothing, may be refused; one closing another loop still is, named from its new edge."""
    halves = [
        agent_body("x-1", "x_cap", deps=[required("y_cap")], port=9008),
        agent_body("y-1", "y_cap", deps=[required("x_cap")], port=9009),
        agent_body("a-1", "a_cap", deps=[required("b_cap")], port=9012),
        agent_body("b-1", "b_cap", deps=[required("a_cap")], port=9013),
    ]
    mesh = Mesh(halves)  # applied as replicas apply the log: apply checks no loops
    for body in halves:
        assert mesh.view.required_loop(from_heartbeat(body)) is None
    unrelated = agent_body("z-1", "z_cap", deps=[required("x_cap")], port=9014)
    assert mesh.view.required_loop(from_heartbeat(unrelated)) is None
    mesh.upsert(unrelated)
    # The whole graph's first loop (a, b) is not this one's doing: it is named from its edge.
    mesh.upsert(agent_body("r-1", "r_cap", deps=[required("q_cap")], port=9015))
    closing = from_heartbeat(agent_body("q-1", "q_cap", deps=[required("r_cap")], port=9016))
    assert mesh.view.required_loop(closing) == ["q_cap", "r_cap", "q_cap"]
    # A second provider of x_cap declaring x-1's edge again closes the x/y loop itself.
    again = from_heartbeat(agent_body("x-2", "x_cap", deps=[required("y_cap")], port=9017))
    assert mesh.view.required_loop(again) == ["x_cap", "y_cap", "x_cap"]
    assert mesh.capabilities()["z_cap"][0] is False  # what requires a loop is unavailable


# -- size: chains longer than Python's stack, and work linear in the requirement graph --------


def chain(length: int) -> list[dict[str, Any]]:
    """c0 requires c1 requires ... c{length-1}, which requires nothing."""
    return [
        agent_body(f"c-{i}", f"c{i}", deps=[required(f"c{i + 1}")] if i + 1 < length else None)
        for i in range(length)
    ]


def test_a_chain_longer_than_the_stack_is_evaluated_and_its_loop_refused() -> None:
    length = 2 * sys.getrecursionlimit()
    mesh = Mesh(chain(length))
    assert mesh.view.availability("c-0") == ("",)
    mesh.apply(events.health(UNHEALTHY, [f"c-{length - 1}"], 9000))
    assert mesh.view.availability("c-0") == (
        "required dep 'c1' unavailable (provider c-1 unavailable)",
    )
    closing = agent_body(f"c-{length - 1}", f"c{length - 1}", deps=[required("c0")])
    loop = mesh.view.required_loop(from_heartbeat(closing))
    assert loop is not None and (loop[0], loop[-1], len(loop)) == ("c0", "c0", length + 1)


def count_matches(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """From now on, one item per requirement candidate registry.availability looks at."""
    calls: list[None] = []
    real = availability.matches

    def counted(dep: Any, provider: Any) -> bool:
        calls.append(None)
        return real(dep, provider)

    monkeypatch.setattr(availability, "matches", counted)
    return calls


def test_evaluation_work_is_linear_in_the_requirements_even_inside_a_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Layers of two providers, each requiring the next layer's capability, the last one the
    first's: a walk without memory of what it proved takes 2**layers steps."""
    layers = 24
    bodies = [
        agent_body(f"l{i}-{j}", f"l{i}", deps=[required(f"l{(i + 1) % layers}")], port=9000 + j)
        for i in range(layers)
        for j in range(2)
    ]
    mesh = Mesh(bodies)
    calls = count_matches(monkeypatch)
    mesh.apply(events.health(UNHEALTHY, ["l0-0"], 9000))  # a change: evaluated afresh
    assert {reason for agent in mesh.view.agents for reason in mesh.view.availability(agent)} == {
        f"required dep 'l{(i + 1) % layers}' unavailable (provider l{(i + 1) % layers}-0 "
        f"{'unhealthy' if (i + 1) % layers == 0 else 'unavailable'})"
        for i in range(layers)
    }
    # Each requirement looks at each of its (healthy) candidates once.
    assert 0 < len(calls) <= 2 * layers * 2


# -- the cached, incremental answers equal a reference computed afresh -------------------------

CAPS = ("a", "b", "c")


def reference_unmet(view: View) -> dict[tuple[str, str, str], str]:
    """The least fixed point by plain iteration (a different algorithm from
    registry.availability): start with every tool that requires something unavailable, make
    available what has all requirements met by available tools, until nothing changes."""
    tools: dict[tuple[str, str, str], list[resolve.Dependency]] = {}
    for agent_id, agent in view.agents.items():
        namespace = agent.registration.get("namespace") or "default"
        for tool in agent.registration.get("tools") or ():
            key = (agent_id, tool["function_name"], tool["capability"])
            tools[key] = [  # the last of two equal tools counts, as for providers
                resolve.Dependency.from_spec(spec, namespace)
                for spec in tool.get("dependencies") or ()
                if spec.get("required") is True
            ]
    tools = {key: deps for key, deps in tools.items() if deps}
    available: set[tuple[str, str, str]] = set()

    def usable(p: Any) -> bool:
        key = (p.agent_id, p.function_name, p.capability)
        return view.is_healthy(p.agent_id) and (key not in tools or key in available)

    def met(dep: Any) -> bool:
        return any(usable(p) and resolve.matches(dep, p) for p in view.providers(dep.capability))

    changed = True
    while changed:
        changed = False
        for key, deps in tools.items():
            if key not in available and view.is_healthy(key[0]) and all(map(met, deps)):
                available.add(key)
                changed = True
    unmet = {}
    for key, deps in tools.items():
        broken = [dep for dep in deps if not met(dep)]
        if broken:
            providers = view.providers(broken[0].capability)
            unmet[key] = availability.broken_edge(broken[0], providers, view.is_healthy)
    return unmet


@st.composite
def registrations(draw: st.DrawFn, agent_id: str) -> dict[str, Any]:
    tools = []
    for _ in range(draw(st.integers(1, 2))):
        deps = [
            {
                "capability": draw(st.sampled_from(CAPS)),
                "required": draw(st.booleans()),
                **draw(st.sampled_from([{}, {"tags": ["x"]}, {"version": ">=2.0"}])),
            }
            for _ in range(draw(st.integers(0, 2)))
        ]
        tools.append(
            {
                # Two tools may share a function name (even a capability too).
                "function_name": draw(st.sampled_from(["f", "g"])),
                "capability": draw(st.sampled_from(CAPS)),
                "version": draw(st.sampled_from(["1.0.0", "2.0.0"])),
                "tags": draw(st.sampled_from([[], ["x"]])),
                "dependencies": deps,
            }
        )
    return from_heartbeat({**agent_body(agent_id), "tools": tools})


AGENTS = [f"p-{i}" for i in range(4)]


@st.composite
def steps(draw: st.DrawFn) -> tuple[list[str], events.Event]:
    """Agents to ask about (filling the caches), then an event."""
    asked = draw(st.lists(st.sampled_from(AGENTS), max_size=3))
    agent_id = draw(st.sampled_from(AGENTS))
    kind = draw(st.sampled_from(["upsert", "upsert", "unhealthy", "healthy", "remove"]))
    if kind == "upsert":
        return asked, events.upsert(draw(registrations(agent_id)), 1000)
    if kind == "remove":
        return asked, events.remove(agent_id, 1000)
    status = UNHEALTHY if kind == "unhealthy" else HEALTHY
    return asked, events.health(status, [agent_id], 1000)


@settings(max_examples=1000, deadline=None)
@given(st.lists(steps(), min_size=1, max_size=25))
def test_cached_answers_equal_ones_computed_afresh(script: list[Any]) -> None:
    """After any sequence of registrations, health changes and removals, asked about in any
    order: the availability equals the reference fixed point; every cached resolution and
    availability equals those of a view rebuilt from its state (no cache); and the state
    (history, audit, what each agent was told) equals that of a replica never asked anything."""
    mesh, silent = Mesh([]), Mesh([])
    for asked, event in script:
        for agent_id in asked:
            if agent_id in mesh.view.agents:
                mesh.view.resolution(agent_id)
                mesh.view.availability(agent_id)
        mesh.apply(event)
        silent.apply(event)
        assert mesh.view.requirements_unmet() == reference_unmet(mesh.view)
        fresh = View.from_state(mesh.view.to_state())
        for agent_id in mesh.view.agents:
            assert mesh.view.resolution(agent_id) == fresh.resolution(agent_id)
            assert mesh.view.availability(agent_id) == fresh.availability(agent_id)
        assert mesh.view.digest() == silent.view.digest()


def test_two_tools_sharing_a_function_name_keep_their_own_requirements() -> None:
    """One agent's tool ``f`` for a_cap requires c_cap, another ``f`` for z_cap requires
    nothing: c_cap failing makes only a_cap unavailable, and its consumer is told."""
    both = agent_body("a-1", "a_cap")
    both["tools"] = [
        {"function_name": "f", "capability": "a_cap", "dependencies": [required("c_cap")]},
        {"function_name": "f", "capability": "z_cap"},
    ]
    mesh = Mesh([both, C, agent_body("e-1", "e_cap", deps=["a_cap", "z_cap"], port=9004)])
    assert mesh.resolved("e-1") == ["a-1", "a-1"]
    mesh.apply(events.health(UNHEALTHY, ["c-1"], 5000))
    assert mesh.view.availability("a-1") == (
        "required dep 'c_cap' unavailable (provider c-1 unhealthy)",
        "",
    )
    assert mesh.resolved("e-1") == ["", "a-1"]
    assert mesh.view.resolution_changed("e-1")


def test_a_write_reevaluates_only_what_its_change_reaches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five levels of ten providers, each requiring the level below: once evaluated, a
    registration elsewhere (even one consuming the top level) evaluates nothing again, and a
    change at the bottom re-evaluates the levels above it, not more."""
    levels, width = 5, 10
    bodies = [
        agent_body(f"l{i}-{j}", f"l{i}", deps=[required(f"l{i + 1}")] if i + 1 < levels else None)
        for i in range(levels)
        for j in range(width)
    ]
    mesh = Mesh(bodies)
    assert mesh.view.requirements_unmet() == {}
    calls = count_matches(monkeypatch)
    mesh.upsert(agent_body("top-1", "top", deps=["l0"]))
    assert (mesh.resolved("top-1"), len(calls)) == (["l0-0"], 0)
    mesh.apply(events.health(UNHEALTHY, [f"l{levels - 1}-0"], 9000))
    assert mesh.view.requirements_unmet() == {}  # nine healthy providers remain at the bottom
    # The change reaches every level above: each requirement looks at each candidate once.
    assert 0 < len(calls) <= (levels - 1) * width * width


async def test_two_halves_of_a_loop_sent_to_one_node_at_once_are_not_both_accepted(
    api: Api,
) -> None:
    x = agent_body("x-1", "x_cap", deps=[required("y_cap")], port=9008)
    y = agent_body("y-1", "y_cap", deps=[required("x_cap")], port=9009)
    answers = await asyncio.gather(*(api.client.post("/heartbeat", json=body) for body in (x, y)))
    assert sorted(answer.status for answer in answers) == [200, 400]
    assert len(api.node.view.agents) == 1
