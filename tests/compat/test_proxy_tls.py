"""The registry proxy to agents that serve HTTPS, against ours and the Go registry 3.7.1.

An agent registered with a client certificate is listed at ``https://host:port`` (it serves
its MCP endpoint with that certificate, as the SDK does). ``/proxy`` must reach it over TLS,
presenting the registry's own certificate (MCP_MESH_TLS_CERT/KEY) and checking the agent's
chain (MCP_MESH_TLS_CA) but not its host name. Two HTTPS agent processes
(tests/compat/mcp_agent.py), each requiring a client certificate of the registry's CA: one
with a certificate of org-a (trusted), one with a certificate of org-b (trusted by neither
registry), so its handshake fails and the caller gets a 502.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.certs import CA
from tests.compat.test_meshctl_and_go import mesh_cli  # noqa: F401 (fixture)
from tests.compat.test_proxy import SSE, call
from tests.compat.test_trust_sdk import go_strict  # noqa: F401 (fixture)
from tests.ports import free_port
from tests.processes import Registry
from tests.test_cluster import until
from tests.test_trust import Pki, tls_registry
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GOOD, BAD = "tls-agent-0a1b2c3d", "bad-agent-0a1b2c3d"


@contextlib.contextmanager
def https_agent(pki: Pki, server: CA, stem: str) -> Iterator[int]:
    """An HTTPS MCP-shaped agent with a certificate of ``server``, asking for a client
    certificate of the registry's CA; its port once it accepts connections."""
    cert, key = server.issue(f"{stem}.mcp-mesh.local").write(pki.root, stem)
    port = free_port()
    args = [str(port), str(cert), str(key), str(pki.root / "server-ca.pem")]
    proc = subprocess.Popen([sys.executable, "-m", "tests.compat.mcp_agent", *args], cwd=ROOT)
    try:
        deadline = time.monotonic() + scaled(20)
        while True:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"agent {stem} not listening on {port}") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path / "pki")


def registration(agent_id: str, port: int) -> dict[str, Any]:
    tool = {"function_name": "echo", "capability": f"{agent_id}_echo", "version": "1.0.0"}
    return {"agent_id": agent_id, "name": agent_id.rsplit("-", 1)[0], "http_host": "127.0.0.1",
            "http_port": port, "tools": [tool]}  # fmt: skip


async def scenario(url: str, pki: Pki, good: int, bad: int) -> dict[str, Any]:
    """Both agents registered with org-a certificates (so with an entity), then proxied to."""
    contexts = {GOOD: pki.client(pki.org_a.agent("tls-agent"), "as-good"),
                BAD: pki.client(pki.org_a.agent("bad-agent"), "as-bad")}  # fmt: skip
    timeout = aiohttp.ClientTimeout(total=scaled(20))
    out: dict[str, Any] = {}
    for agent_id, port in ((GOOD, good), (BAD, bad)):
        connector = aiohttp.TCPConnector(ssl=contexts[agent_id])
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def registered(agent_id: str = agent_id, port: int = port) -> bool:
                try:
                    body = registration(agent_id, port)
                    async with session.post(f"{url}/heartbeat", json=body) as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False  # the Go registry still starting

            await until(registered)
            async with session.get(f"{url}/agents") as resp:
                listed = {a["id"]: a["endpoint"] for a in (await resp.json())["agents"]}
            out[f"{agent_id} listed at"] = listed.get(agent_id)
            proxied = f"{url}/proxy/127.0.0.1:{port}/mcp"
            for tool in ("echo", "peer"):
                async with session.post(proxied, json=call(tool, {"text": "hi"}), headers=SSE) as r:
                    text = await r.text()
                    if r.status == 200:
                        data = json.loads(text.split("data: ", 1)[1])
                        out[f"{agent_id} {tool}"] = data["result"]["content"][0]["text"]
                    else:
                        error = json.loads(text)["error"]
                        out[f"{agent_id} {tool}"] = (r.status, error.split(":", 1)[0])
    return out


EXPECTED = {
    f"{GOOD} listed at": "https://127.0.0.1:{good}",
    f"{GOOD} echo": "hi",
    f"{GOOD} peer": "registry",  # the registry's own certificate (Pki: CN "registry")
    f"{BAD} listed at": "https://127.0.0.1:{bad}",
    f"{BAD} echo": (502, "Failed to reach target agent"),
    f"{BAD} peer": (502, "Failed to reach target agent"),
}


def expected(good: int, bad: int) -> dict[str, Any]:
    return {k: v.format(good=good, bad=bad) if isinstance(v, str) else v
            for k, v in EXPECTED.items()}  # fmt: skip


async def test_the_proxy_reaches_an_https_agent_with_the_registry_certificate(
    tmp_path: Path, pki: Pki, registries: list[Registry]
) -> None:
    """Ours alone (no Go binaries needed): what the Go registry answers in the test below."""
    node = tls_registry(tmp_path, registries, pki.env("strict"))
    with (
        https_agent(pki, pki.org_a, "tls-agent") as good,
        https_agent(pki, pki.org_b, "bad-agent") as bad,
    ):
        assert await scenario(node.url, pki, good, bad) == expected(good, bad)


async def test_the_proxy_to_https_agents_answers_as_the_go_registry(
    tmp_path: Path,
    go_strict: tuple[str, Pki],  # noqa: F811 (the fixture imported above)
    registries: list[Registry],
) -> None:
    go_url, pki = go_strict
    ours = tls_registry(tmp_path, registries, pki.env("strict"))
    with (
        https_agent(pki, pki.org_a, "tls-agent") as good,
        https_agent(pki, pki.org_b, "bad-agent") as bad,
    ):
        theirs = await scenario(go_url, pki, good, bad)
        assert theirs == expected(good, bad)  # so that agreeing on nothing could not pass
        assert await scenario(ours.url, pki, good, bad) == theirs
