"""The registry proxy side by side with the Go registry (npm 3.7): ``meshctl call`` and /proxy.

A real agent process (tests/compat/mcp_agent.py, MCP-shaped: JSON-RPC ``tools/call`` answered
as SSE) registers with the Go registry and with ours (one node, and a 3-replica cluster where
the agent registers through one replica and meshctl goes through another). ``meshctl call``
with its default settings (through the registry's /proxy) must print the same through both;
an SSE answer must reach the caller event by event while the agent still holds the answer open;
a budget (X-Mesh-Timeout) cut must end with the marker meshctl looks for; forwarded headers,
and the refusals (an unregistered host:port, a path outside /mcp, no path) must be the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from registry.api.proxy import TIMEOUT_MARKER
from tests.compat.test_llm import Target, our_urls  # noqa: F401 (fixture)
from tests.compat.test_meshctl_and_go import (  # noqa: F401 (fixtures)
    go_registry,
    go_registry_process,
    mesh_cli,
)
from tests.ports import free_port
from tests.processes import Registry
from tests.test_cluster import all_ready, until
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AGENT_ID = "echo-agent-5d2e9a1c"


@pytest.fixture
def agent_port() -> Iterator[int]:
    """The MCP-shaped agent, its own process on a loopback port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.compat.mcp_agent", str(port)], cwd=ROOT)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


def registration(port: int) -> dict[str, Any]:
    tools = [{"function_name": name, "capability": f"{name}_service", "version": "1.0.0"}
             for name in ("echo", "count", "headers")]  # fmt: skip
    return {"agent_id": AGENT_ID, "name": "echo-agent", "http_host": "127.0.0.1",
            "http_port": port, "tools": tools}  # fmt: skip


def meshctl_call(mesh_cli: Path, url: str, *args: str) -> tuple[int, str]:  # noqa: F811
    done = subprocess.run(
        [str(mesh_cli / "meshctl"), "call", *args, "--registry-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}  # fmt: skip


SSE = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


async def streamed(session: aiohttp.ClientSession, url: str, agent: str) -> list[str]:
    """``count`` through the proxy at ``url``: the SSE events seen before the agent releases the
    answer, then all of them."""
    async with session.post(url, json=call("count", {"n": 2}), headers=SSE) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        seen = b""
        while seen.count(b"notifications/progress") < 2:  # hangs (and times out) if buffered
            seen += await resp.content.readany()
        early = seen.decode()
        async with session.post(f"{agent}/release") as released:
            assert released.status == 200
        seen += await resp.content.read()
    return [early, seen.decode()]


async def cut(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """``count`` never released, with a one-second budget."""
    headers = {**SSE, "X-Mesh-Timeout": "1"}
    async with session.post(url, json=call("count", {"n": 1}), headers=headers) as resp:
        return resp.status, await resp.text()


async def forwarded(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """The headers the agent got, of those a caller sent (the others are each client's own)."""
    sent = {**SSE, "X-Trace-ID": "t-1", "X-Mesh-Job-Id": "j-1", "Authorization": "Bearer x",
            "Cookie": "c=1", "X-Other": "o"}  # fmt: skip
    async with session.post(url, json=call("headers", {}), headers=sent) as resp:
        text = await resp.text()
    data = json.loads(text.split("data: ", 1)[1])
    received = json.loads(data["result"]["content"][0]["text"])
    wanted = {name.lower() for name in sent} | {"x-mesh-timeout"}
    # Header names as each client spells them (Go canonicalizes X-Trace-ID to X-Trace-Id).
    return {k.lower(): v for k, v in received.items() if k.lower() in wanted}


async def refusals(session: aiohttp.ClientSession, url: str, port: int) -> list[Any]:
    out = []
    for path in ("127.0.0.1:1/mcp", f"10.1.2.3:{port}/mcp", f"127.0.0.1:{port}",
                 f"127.0.0.1:{port}/admin", f"127.0.0.1:{port}/mcpx", "127.0.0.1/mcp"):  # fmt: skip
        async with session.post(f"{url}/proxy/{path}", json=call("echo", {})) as resp:
            body = await resp.json()
            out.append((path, resp.status, body["error"]))
    return out


async def scenario(
    session: aiohttp.ClientSession,
    target: Target,
    mesh_cli: Path,  # noqa: F811 (the fixture's name)
    port: int,
) -> dict[str, Any]:
    last = target.urls[-1]

    def meshctl(*args: str) -> tuple[int, str]:
        return meshctl_call(mesh_cli, last, *args)

    await target.post(registration(port))

    async def listed() -> bool:  # meshctl reads the last node: let it apply the registration
        async with session.get(f"{last}/agents") as resp:
            return AGENT_ID in await resp.text()

    await until(listed)
    agent = f"http://127.0.0.1:{port}"
    proxied = f"{last}/proxy/127.0.0.1:{port}/mcp"
    return {
        "echo": meshctl("echo", '{"text": "hello mesh"}'),
        "by agent": meshctl(f"{AGENT_ID}:echo", '{"text": "x"}'),
        "by capability": meshctl("echo_service", '{"text": "c"}'),
        "raw": meshctl("echo", '{"text": "r"}', "--raw"),
        "by name": await _echo(session, f"{last}/proxy/echo-agent:{port}/mcp"),
        "streamed": await streamed(session, proxied, agent),
        "cut": await cut(session, proxied),
        "forwarded": await forwarded(session, proxied),
        "refused": await refusals(session, last, port),
    }


async def _echo(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.post(url, json=call("echo", {"text": "n"}), headers=SSE) as resp:
        return resp.status, await resp.text()


async def test_meshctl_call_and_the_proxy_match_the_go_registry(
    our_urls: list[str],  # noqa: F811 (the fixture imported above)
    registries: list[Registry],
    go_registry: str,  # noqa: F811
    mesh_cli: Path,  # noqa: F811
    agent_port: int,
) -> None:
    timeout = aiohttp.ClientTimeout(total=scaled(30))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, registries)

        async def up(url: str) -> bool:
            try:
                async with session.get(url) as resp:
                    return resp.status in (200, 405)
            except aiohttp.ClientError:
                return False

        await until(lambda: up(f"{go_registry}/health"))
        await until(lambda: up(f"http://127.0.0.1:{agent_port}/mcp"))
        theirs = await scenario(session, Target(session, [go_registry], ours=False), mesh_cli,
                                agent_port)  # fmt: skip
        ours = await scenario(session, Target(session, our_urls, ours=True), mesh_cli, agent_port)
        async with session.post(
            f"{our_urls[-1]}/proxy/127.0.0.1:{agent_port}/mcp", data=b"x" * (600 << 10)
        ) as resp:
            too_big = resp.status
    differences = [(key, ours[key], theirs[key]) for key in ours if ours[key] != theirs[key]]
    assert differences == [], "\n".join(map(str, differences))

    # What both answer (so that agreeing on nothing could not pass).
    assert theirs["echo"][0] == 0 and '"text": "hello mesh"' in theirs["echo"][1]
    assert theirs["by capability"][0] == 0 and '"text": "c"' in theirs["by capability"][1]
    early, whole = theirs["streamed"]
    assert "counted" not in early and whole.count("event: message") == 3
    assert TIMEOUT_MARKER not in whole
    assert theirs["cut"][0] == 200 and theirs["cut"][1].endswith(
        "\n: mesh-proxy-timeout budget=1s\n\n"
    )
    assert theirs["forwarded"] == {
        "accept": SSE["Accept"],
        "content-type": "application/json",
        "x-mesh-job-id": "j-1",
        "x-trace-id": "t-1",
    }
    assert [status for _, status, _ in theirs["refused"]] == [403, 403, 400, 400, 400, 403]
    assert "is not a registered agent" in theirs["refused"][0][2]
    assert theirs["by name"][0] == 200
    assert too_big == 413  # ours: MAX_REQUEST_BYTES (the Go registry streams any size)


PROPAGATE = " Authorization, x-tenant-*,,X-TRACE-*, x-empty"
"""MCP_MESH_PROPAGATE_HEADERS for both registries: an exact name, prefixes, an empty entry."""


async def propagated(session: aiohttp.ClientSession, url: str, port: int) -> list[list[str]]:
    """The header lines the agent got through ``url``'s proxy, of those the caller sent (the
    others are each HTTP client's own), lowercased names, sorted (Go's order is its map's)."""
    sent = [*SSE.items(), ("Authorization", "Bearer x"), ("X-Tenant-Id", "a"),
            ("X-Tenant-Id", "b"), ("X-Tenant", "not the prefix"), ("X-Trace-ID", "t-1"),
            ("X-Trace-Extra", "e"), ("X-Mesh-Job-Id", "j-1"), ("Cookie", "c=1"),
            ("X-Other", "o"), ("x-empty", "")]  # fmt: skip
    proxied = f"{url}/proxy/127.0.0.1:{port}/mcp"
    async with session.post(proxied, json=call("header_list", {}), headers=CIMultiDict(sent)) as r:
        text = await r.text()
    received = json.loads(json.loads(text.split("data: ", 1)[1])["result"]["content"][0]["text"])
    names = {name.lower() for name, _ in sent}
    return sorted([k.lower(), v] for k, v in received if k.lower() in names)


async def test_propagate_headers_forwards_what_the_go_registry_does(
    tmp_path: Path,
    registries: list[Registry],
    mesh_cli: Path,  # noqa: F811 (the fixture imported above)
    agent_port: int,
) -> None:
    """Both registries with the same MCP_MESH_PROPAGATE_HEADERS, the same call through each:
    the agent receives the same header lines (every value of a named header; a prefix is a
    prefix; ``Cookie`` and unnamed headers never)."""
    ours = Registry(tmp_path / "ours", MCP_MESH_PROPAGATE_HEADERS=PROPAGATE).start()
    registries.append(ours)
    timeout = aiohttp.ClientTimeout(total=scaled(30))
    got = []
    with go_registry_process(mesh_cli, tmp_path, MCP_MESH_PROPAGATE_HEADERS=PROPAGATE) as go_url:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await all_ready(session, [ours])
            for url in (go_url, ours.url):
                async with session.post(f"{url}/heartbeat", json=registration(agent_port)) as r:
                    assert r.status == 200, await r.text()
                got.append(await propagated(session, url, agent_port))
    theirs, mine = got
    assert theirs == [
        ["accept", SSE["Accept"]],
        ["authorization", "Bearer x"],
        ["content-type", "application/json"],
        ["x-empty", ""],
        ["x-mesh-job-id", "j-1"],
        ["x-tenant-id", "a"],
        ["x-tenant-id", "b"],
        ["x-trace-extra", "e"],
        ["x-trace-id", "t-1"],
    ]
    assert mine == theirs
