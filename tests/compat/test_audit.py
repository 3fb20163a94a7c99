"""The dependency-resolution audit (``GET /events`` and ``meshctl audit``) beside the Go registry.

The same mesh goes to the Go registry binary and to ours (one node, and a 3-replica cluster
written through rotating replicas): providers that differ in tags and versions, and consumers
whose dependencies pick among them by tags (required, preferred, excluded, OR groups) and
versions, plus the schema-constrained consumers of tests/compat/test_schemas.py. Then the mesh
changes in rounds (every consumer heartbeats again unchanged; a provider leaves; it comes
back; the schema provider changes its schema), each consumer heartbeating after each change.
Every consumer's audit events (type, function, trace) must be the same in both, newest first,
and so must ``meshctl audit`` in its table, ``--explain`` and ``--json`` forms, times aside.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.compat import test_schemas as schemas_case
from tests.compat.test_llm import Target, our_urls  # noqa: F401 (fixture)
from tests.compat.test_meshctl_and_go import (  # noqa: F401 (fixtures)
    CASES,
    PROVIDERS,
    consumer_body,
    go_registry,
    mesh_cli,
    provider_body,
)
from tests.compat.test_schemas import meshctl
from tests.processes import Registry
from tests.test_cluster import all_ready, until
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

AUDITED = ("dependency_resolved", "dependency_unresolved")
TAG_PROVIDERS = {agent_id: provider_body(agent_id, v, tags, 9001 + n)
                 for n, (agent_id, v, tags) in enumerate(PROVIDERS)}  # fmt: skip
CHANGED_PC = provider_body("p-c", "1.4.0", ["slow"], 9003)
NEWCOMER = provider_body("p-d", "0.9.0", ["fast", "python"], 9004)
"""Joins late: the first provider below 1.0.0 (c-8's "<1.0.0" resolves from then on)."""
CONSUMERS = [consumer_body(i, spec) for i, (spec, _) in enumerate(CASES)] + list(
    schemas_case.CONSUMERS.values()
)


async def heartbeat_consumers(target: Target) -> None:
    for body in CONSUMERS:
        await target.post(body)


async def audit_events(target: Target, agent_id: str) -> list[dict[str, Any]]:
    """The consumer's audit events, newest first, without times and our log index."""
    params = {**target.reads, "agent_id": agent_id, "limit": "500"}
    async with target.session.get(f"{target._url()}/events", params=params) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    found = []
    for event in body["events"]:
        if event["event_type"] not in AUDITED:
            continue
        data = dict(event["data"])
        data.pop("log_index", None)
        found.append(
            {
                "event_type": event["event_type"],
                "agent_id": event["agent_id"],
                "function_name": event.get("function_name"),
                "data": data,
            }
        )
    return found


async def scenario(target: Target) -> dict[str, list[dict[str, Any]]]:
    """Every consumer's audit events after the rounds (module docstring)."""
    for body in [*TAG_PROVIDERS.values(), *schemas_case.PROVIDERS.values()]:
        await target.post(body)
    await heartbeat_consumers(target)  # registered
    await heartbeat_consumers(target)  # steady: nothing new is worth recording
    await target.post(CHANGED_PC)
    await heartbeat_consumers(target)  # p-c changed its tags and version
    await target.post(NEWCOMER)
    await target.post(schemas_case.CHANGED_PB)
    await heartbeat_consumers(target)  # an old version joined; pb changed its schema
    await target.post(TAG_PROVIDERS["p-c"])
    await heartbeat_consumers(target)  # p-c as it was
    return {body["agent_id"]: await audit_events(target, body["agent_id"]) for body in CONSUMERS}


async def meshctl_audits(target: Target, mesh_cli: Path) -> list[str]:  # noqa: F811
    """meshctl audit's views, read from the target's last URL once it has every event."""
    last = Target(target.session, target.urls[-1:], ours=False)
    wanted = await audit_events(target, "c-1")

    async def caught_up() -> bool:
        return await audit_events(last, "c-1") == wanted

    await until(caught_up)
    at = ("--registry-url", target.urls[-1])
    views = []
    for consumer in ("c-1", "c-8", "c-strict-b"):
        views.append(meshctl(mesh_cli, "audit", consumer, *at))
        views.append(meshctl(mesh_cli, "audit", consumer, "--explain", *at))
    views.append(meshctl(mesh_cli, "audit", "c-subset-person", "--dep", "0", "--explain", *at))
    views.append(meshctl(mesh_cli, "audit", "c-1", "--limit", "1", "--json", *at))
    return [re.sub(r'"log_index": \d+,?\s*', "", view) for view in views]


async def test_audit_events_and_meshctl_audit_match_the_go_registry(
    our_urls: list[str],  # noqa: F811 (the fixture imported above)
    registries: list[Registry],
    go_registry: str,  # noqa: F811
    mesh_cli: Path,  # noqa: F811
) -> None:
    timeout = aiohttp.ClientTimeout(total=scaled(30))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, registries)
        go = Target(session, [go_registry], ours=False)
        theirs = await scenario(go)
        go_views = await meshctl_audits(go, mesh_cli)
        us = Target(session, our_urls, ours=True)
        ours = await scenario(us)
        our_views = await meshctl_audits(us, mesh_cli)

    for consumer in theirs:
        assert ours[consumer] == theirs[consumer], json.dumps(
            {"consumer": consumer, "ours": ours[consumer], "go": theirs[consumer]}, indent=1
        )
    assert our_views == go_views

    # What the Go registry records (so that agreeing on nothing could not pass): every trace
    # with a real choice that differs from the last one (p-c's change and return, p-d's
    # arrival), nothing for the steady round, and the flips named.
    assert sum(map(len, theirs.values())) >= 60, {c: len(e) for c, e in theirs.items()}
    c1 = theirs["c-1"]  # tags ["fast"]: p-a and p-c qualify, p-c wins on version
    assert [e["data"]["chosen"]["agent_id"] for e in c1] == ["p-c", "p-a", "p-a", "p-c"]
    assert c1[0]["data"]["prior_chosen"] == "p-a" and "prior_chosen" not in c1[-1]["data"]
    stages = [s["stage"] for s in c1[-1]["data"]["stages"]]
    assert stages == ["health", "capability_match", "tags", "version", "schema", "tiebreaker"]
    # "<1.0.0": every candidate evicted by version until p-d (0.9.0) joins
    c8 = [e["event_type"] for e in theirs["c-8"]]
    assert c8 == ["dependency_resolved"] * 2 + ["dependency_unresolved"] * 2
    assert "(chosen flipped)" in go_views[1] and "MissingTag {missing=[fast]}" in go_views[1]
