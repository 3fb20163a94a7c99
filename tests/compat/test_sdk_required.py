"""The published SDK with ``required`` dependencies (Go #1249) against a 3-replica cluster.

A consumer requires ``date_service``, whose provider requires ``clock``. While no clock is
registered the registry lists ``date_service`` unavailable, so the consumer's required
dependency does not resolve and the SDK refuses the call itself (``dependency_unavailable``
naming ``date_service``, not ``clock``: the provider is never called). A clock provider
arriving makes the whole chain available, and its loss makes it unavailable again.
"""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from tests.compat.test_sdk import (  # noqa: F401
    SDK_HEARTBEAT,
    Agent,
    agents,
    eventually_says,
    sdk_python,
)
from tests.test_cluster import Cluster, all_ready, get_json
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

CLOCK = """
import mesh
from fastmcp import FastMCP

app = FastMCP("Clock")


@app.tool()
@mesh.tool(capability="clock")
def now() -> str:
    return "tick"


@mesh.agent(name="clock", http_port={port}, auto_run=True)
class Clock:
    pass
"""
DATE = """
import mesh
from fastmcp import FastMCP

app = FastMCP("Date Provider")


@app.tool()
@mesh.tool(capability="date_service", dependencies=[{{"capability": "clock", "required": True}}])
async def get_current_date(clock: mesh.McpMeshTool = None) -> str:
    return "provider-says-" + str(await clock())


@mesh.agent(name="date-provider", http_port={port}, auto_run=True)
class DateProvider:
    pass
"""
CONSUMER = """
import mesh
from fastmcp import FastMCP

app = FastMCP("Date Consumer")


@app.tool()
@mesh.tool(
    capability="greeting", dependencies=[{{"capability": "date_service", "required": True}}]
)
async def greet(name: str = "world", date_service: mesh.McpMeshTool = None) -> str:
    return f"Hello {{name}}! It is {{await date_service()}}"


@mesh.agent(name="date-consumer", http_port={port}, auto_run=True)
class DateConsumer:
    pass
"""
SETTLING = aiohttp.ClientTimeout(total=scaled(40))
"""A call's limit: the SDK holds a call up to about 19 s while a dependency it just learned of
settles, before refusing it."""
REFUSED = r"\"error\": \"dependency_unavailable\", \"capability\": \"date_service\""
"""The SDK's refusal, as it stands (JSON-escaped) in the MCP answer's text."""


async def date_service(session: aiohttp.ClientSession, url: str) -> tuple[bool, str]:
    listing = await get_json(session, f"{url}/agents")
    [cap] = [c for a in listing["agents"] for c in a["capabilities"] if c["name"] == "date_service"]
    return cap["available"], cap.get("unavailable_reason", "")


async def test_the_sdk_sees_a_required_chain_become_available_and_lose_it(
    tmp_path: Path,
    registries: list,
    agents: list[Agent],  # noqa: F811 (the fixture imported above)
    sdk_python: Path,  # noqa: F811
) -> None:
    # Twice the SDK's heartbeat period: at one period a heartbeat a moment late (forwarded to
    # the leader once a second) marks a live agent unhealthy.
    cluster = Cluster(
        tmp_path, registries, AGENT_TIMEOUT=f"{2 * SDK_HEARTBEAT:g}s", HEALTH_CHECK_INTERVAL="1s"
    )
    cluster.start_all()
    timeout = aiohttp.ClientTimeout(total=scaled(10))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, cluster.nodes)
        date = Agent(sdk_python, DATE, cluster.nodes[1], tmp_path).start()
        consumer = Agent(sdk_python, CONSUMER, cluster.nodes[2], tmp_path).start()
        agents.extend([date, consumer])
        await eventually_says(session, consumer, REFUSED, 90, SETTLING)
        assert await date_service(session, cluster.nodes[0].url) == (
            False,
            "required dep 'clock' unresolved",
        )

        clock = Agent(sdk_python, CLOCK, cluster.nodes[0], tmp_path).start()
        agents.append(clock)
        await eventually_says(session, consumer, "It is provider-says-tick", 90, SETTLING)
        assert await date_service(session, cluster.nodes[2].url) == (True, "")

        clock.stop(signal.SIGKILL)  # no goodbye: unhealthy after AGENT_TIMEOUT
        await eventually_says(session, consumer, REFUSED, 60, SETTLING)
        available, reason = await date_service(session, cluster.nodes[1].url)
        assert (available, reason.startswith("required dep 'clock' unavailable")) == (False, True)
