"""Capability availability (``required`` dependencies) side by side with the Go registry 3.7.1.

The mesh of tests/test_availability.py (a chain a -> b -> c of required dependencies with c
missing, an optional dependency, tag and version constraints nobody meets, a consumer of the
unavailable ones) is registered with the Go registry and with ours (one node, three
replicas). In each round the heartbeat answers' ``dependencies_resolved``, every capability's
``available`` / ``unavailable_reason`` in ``GET /agents``, the HEAD answers and the audit events
of the consumers (``GET /events``) must be the same:
registered; c arrives (everything above it becomes available, and the agents whose answers
changed get 202); c leaves (DELETE: the Go registry keeps it, unhealthy, ours removes it, so
b's reason differs as docs/protocol.md says); an agent whose required dependency would
close a loop is refused with the same message, and not stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.compat.test_audit import audit_events
from tests.compat.test_llm import Target, our_urls  # noqa: F401 (fixture)
from tests.compat.test_meshctl_and_go import go_registry, mesh_cli  # noqa: F401 (fixtures)
from tests.conftest import agent_body
from tests.processes import Registry
from tests.test_availability import MESH, C
from tests.test_cluster import all_ready
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

CHANGED_BY_C = ("a-1", "b-1", "d-1", "e-1")
"""The agents whose answers c's arrival changes (the others' HEAD is not compared: the Go
registry answers 202 to more of them)."""


async def listed(target: Target) -> dict[str, Any]:
    """``(agent, capability) -> (available, unavailable_reason)`` in ``GET /agents``."""
    async with target.session.get(f"{target._url()}/agents", params=target.reads) as resp:
        assert resp.status == 200, await resp.text()
        agents = (await resp.json())["agents"] or []
    return {
        (agent["id"], cap["name"]): (cap.get("available"), cap.get("unavailable_reason"))
        for agent in agents
        for cap in agent["capabilities"]
    }


def resolved(answer: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["capability"], e["agent_id"], e["status"])
            for deps in answer.get("dependencies_resolved", {}).values() for e in deps]  # fmt: skip


async def scenario(target: Target) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for body in MESH:
        out[("registered", body["agent_id"])] = resolved(await target.post(body))
    out["listed"] = await listed(target)

    await target.post(C)
    for agent_id in CHANGED_BY_C:
        out[("c arrived", "HEAD", agent_id)] = await target.head_until(agent_id, 202)
    for body in MESH:
        if body["agent_id"] in CHANGED_BY_C:
            out[("c arrived", body["agent_id"])] = resolved(await target.post(body))
    out["listed after c arrived"] = await listed(target)

    for agent_id in ("e-1", "a-1"):  # unavailable providers evicted, then chosen
        out[("audit", agent_id)] = await audit_events(target, agent_id)
    await target.delete("c-1")
    for agent_id in CHANGED_BY_C:
        out[("c left", "HEAD", agent_id)] = await target.head_until(agent_id, 202)
    out["listed after c left"] = await listed(target)

    x = agent_body("x-1", "x_cap", deps=[{"capability": "y_cap", "required": True}], port=9008)
    y = agent_body("y-1", "y_cap", deps=[{"capability": "x_cap", "required": True}], port=9009)
    await target.post(x)
    async with target.session.post(f"{target._url()}/heartbeat", json=y) as resp:
        answer = await resp.json()
    # Go: 200 {"status": "error", "message"}; ours: 400 {"error"} (bad input is a 4xx).
    out["cycle refused"] = answer.get("message") or answer.get("error")
    out["listed after the cycle"] = sorted(a for a, _ in await listed(target) if a in "x-1 y-1")
    return out


async def test_availability_matches_the_go_registry(
    our_urls: list[str],  # noqa: F811 (the fixture imported above)
    registries: list[Registry],
    go_registry: str,  # noqa: F811
    mesh_cli: Path,  # noqa: F811
) -> None:
    timeout = aiohttp.ClientTimeout(total=scaled(30))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, registries)
        theirs = await scenario(Target(session, [go_registry], ours=False))
        ours = await scenario(Target(session, our_urls, ours=True))

    # The one difference (docs/protocol.md): Go keeps a DELETEd agent, unhealthy.
    gone = theirs["listed after c left"]
    assert gone.pop(("c-1", "c_cap")) == (False, "agent unhealthy")
    assert gone[("b-1", "b_cap")] == (
        False,
        "required dep 'c_cap' unavailable (provider c-1 unhealthy)",
    )
    gone[("b-1", "b_cap")] = (False, "required dep 'c_cap' unresolved")  # ours: c-1 is gone
    differences = [(key, ours[key], theirs[key]) for key in ours if ours[key] != theirs[key]]
    assert differences == [], "\n".join(map(str, differences))
    assert ours.keys() == theirs.keys()

    # What both answer (so that agreeing on nothing could not pass).
    assert theirs["listed"][("a-1", "a_cap")] == (
        False,
        "required dep 'b_cap' unavailable (provider b-1 unavailable)",
    )
    assert theirs["listed"][("d-1", "d_cap")] == (True, None)
    assert theirs[("c arrived", "e-1")] == [
        ("b_cap", "b-1", "available"),
        ("a_cap", "a-1", "available"),
    ]
    first = theirs[("audit", "e-1")][-1]  # oldest first: at registration, b-1 unavailable
    health = first["data"]["stages"][0]
    assert (first["event_type"], health["stage"], health["evicted"][0]["reason"]) == (
        "dependency_unresolved",
        "health",
        "Unavailable",
    ), first
    assert theirs["cycle refused"] == "required dependency cycle: x_cap → y_cap → x_cap"
    assert "y-1" not in theirs["listed after the cycle"]
    assert theirs[("registered", "e-1")] == [
        ("b_cap", "", "unresolved"),
        ("a_cap", "", "unresolved"),
    ]
