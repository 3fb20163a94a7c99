"""A2A surfaces side by side with the Go registry (npm 3.7): heartbeat answers and GET /a2a/agents.

The same registrations go to the Go registry binary and to ours (one node, and a 3-replica
cluster written and read through different replicas), with MCP_MESH_PUBLIC_URL_PREFIX unset and
set: ``a2a`` agents with surfaces (one without a leading slash, ones without a path or a skill
id), a plain agent with surfaces, an ``a2a`` agent without any; heartbeats that leave surfaces
out (kept), send ``[]`` (cleared), change the agent type; a DELETE. Every heartbeat answer's
``surfaces`` and every listing must be identical, except for the differences docs/protocol.md
lists (the agent type a heartbeat turns back to the default, the DELETE), asserted here as each
registry answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.compat.test_llm import Target, our_urls  # noqa: F401 (fixture)
from tests.compat.test_meshctl_and_go import go_registry, mesh_cli  # noqa: F401 (fixtures)
from tests.processes import Registry
from tests.test_cluster import all_ready
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

PREFIX = "https://agents.example.com/"


@pytest.fixture(autouse=True, params=["no prefix", "prefix"])
def public_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """MCP_MESH_PUBLIC_URL_PREFIX for both registries (each reads it from its environment)."""
    prefix = PREFIX if request.param == "prefix" else ""
    saved = os.environ.get("MCP_MESH_PUBLIC_URL_PREFIX")
    os.environ["MCP_MESH_PUBLIC_URL_PREFIX"] = prefix
    yield prefix
    if saved is None:
        del os.environ["MCP_MESH_PUBLIC_URL_PREFIX"]
    else:
        os.environ["MCP_MESH_PUBLIC_URL_PREFIX"] = saved


def surface(path: str | None, skill_id: str | None, **more: Any) -> dict[str, Any]:
    return {"path": path, "skill_id": skill_id, **more}


TOOLS = [{"function_name": "report", "capability": "report"}]
REPORTER = {
    "agent_id": "zz-reporter",
    "agent_type": "a2a",
    "a2a_producer": True,
    "http_host": "127.0.0.1",
    "http_port": 9301,
    "tools": TOOLS,
    "surfaces": [
        surface("/agents/report", "generate-report", name="Report", description="Long form",
                input_modes=["text/plain"], output_modes=["application/json"], tags=["docs"]),
        surface("agents/summary", "summarize"),  # no leading slash
        surface("", "no-path"),
        surface("/agents/anonymous", None),
    ],
}  # fmt: skip
SECOND = {"agent_id": "aa-second", "agent_type": "a2a", "tools": TOOLS,
          "surfaces": [surface("/agents/second", "second")]}  # fmt: skip
PLAIN = {"agent_id": "mm-plain", "tools": TOOLS, "surfaces": [surface("/agents/plain", "plain")]}
BARE = {"agent_id": "nn-bare", "agent_type": "a2a", "tools": TOOLS}
STEPS: list[tuple[str, dict[str, Any] | str]] = [
    ("reporter", REPORTER),
    ("second", SECOND),
    ("plain", PLAIN),
    ("bare", BARE),
    ("reporter leaves surfaces out", {k: v for k, v in REPORTER.items() if k != "surfaces"}),
    ("second sends null", {**SECOND, "surfaces": None}),
    ("reporter clears", {**REPORTER, "surfaces": []}),
    ("reporter again", REPORTER),
    ("second turns plain", {**SECOND, "agent_type": "mcp_agent"}),
    ("second back", SECOND),
    ("delete second", "aa-second"),
]


async def scenario(target: Target) -> list[tuple[str, Any, Any]]:
    """Per step: the heartbeat answer's ``surfaces`` (None: absent) and the listing."""
    seen = []
    for name, step in STEPS:
        if isinstance(step, str):
            await target.delete(step)
            answered = None
        else:
            answered = (await target.post(step)).get("surfaces")
        async with target.session.get(f"{target._url()}/a2a/agents", params=target.reads) as resp:
            assert resp.status == 200, await resp.text()
            listed = await resp.json()
        seen.append((name, answered, listed))
    return seen


async def test_a2a_surfaces_match_the_go_registry(
    public_prefix: str,
    our_urls: list[str],  # noqa: F811 (the fixture imported above)
    registries: list[Registry],
    go_registry: str,  # noqa: F811
) -> None:
    timeout = aiohttp.ClientTimeout(total=scaled(30))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, registries)

        theirs = await scenario(Target(session, [go_registry], ours=False))
        ours = await scenario(Target(session, our_urls, ours=True))
    known = {"second turns plain", "delete second"}
    differences = [(mine, go) for mine, go in zip(ours, theirs, strict=True) if mine != go]
    assert {mine[0] for mine, _ in differences} <= known, differences

    # What both answer (so that agreeing on nothing could not pass).
    def urls(path: str) -> dict[str, str]:
        if not public_prefix:
            return {}
        public = PREFIX.rstrip("/") + path
        return {"agent_card_url": f"{public}/.well-known/agent.json", "public_url": public}

    reporter = [
        {"path": "/agents/report", "skill_id": "generate-report", **urls("/agents/report")},
        {"path": "agents/summary", "skill_id": "summarize", **urls("/agents/summary")},
    ]
    second = [{"path": "/agents/second", "skill_id": "second", **urls("/agents/second")}]
    steps = {name: (answered, listed["surfaces"]) for name, answered, listed in theirs}
    assert steps["reporter"] == (reporter, reporter)
    assert steps["second"] == (second, reporter + second)
    assert steps["plain"][0] == [
        {"path": "/agents/plain", "skill_id": "plain", **urls("/agents/plain")}
    ]
    assert steps["plain"][1] == steps["bare"][1] == reporter + second  # a2a agents only
    assert steps["bare"][0] is None
    assert steps["reporter leaves surfaces out"] == (reporter, reporter + second)  # kept
    assert steps["second sends null"] == (second, reporter + second)
    assert steps["reporter clears"] == (None, second)
    assert steps["reporter again"] == (reporter, reporter + second)  # the mesh's order
    assert steps["second back"] == (second, reporter + second)
    # A heartbeat back to the default agent type: the Go registry keeps the stored "a2a" (it
    # never overwrites a field with its default on a heartbeat) and lists the surfaces; ours
    # takes the registration as sent.
    ours_steps = {name: (answered, listed["surfaces"]) for name, answered, listed in ours}
    assert steps["second turns plain"] == (second, reporter + second)
    assert ours_steps["second turns plain"] == (second, reporter)
    # DELETE: the Go registry keeps the agent (unhealthy) until its sweep, and lists its
    # surfaces; ours removes it at once.
    assert steps["delete second"][1] == reporter + second
    assert ours_steps["delete second"][1] == reporter
