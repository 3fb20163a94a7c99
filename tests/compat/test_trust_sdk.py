"""Registration trust across three replicas (a Raft cluster, and PostgreSQL-mode replicas on
one database: tests/pg_replicas.py) with the published SDK and meshctl.

The SDK agents run with ``MCP_MESH_TLS_MODE=strict`` and file certificates made here; an
organisation's CA that no replica trusts is refused until ``meshctl entity register`` writes
it into one replica's trust directory, and then every replica trusts it (the entity went
through the log). The Go registry 3.7.1 in strict mode is asked the same questions: where it
answers differently, docs/protocol.md says so and why.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.certs import CA
from tests.compat.test_meshctl_and_go import mesh_cli
from tests.compat.test_sdk import CONSUMER, PROVIDER, Agent, agents, sdk_python
from tests.conftest import agent_body, eventually
from tests.pg_replicas import Replicated, Topology, topology
from tests.ports import free_port
from tests.processes import Registry
from tests.test_cluster import all_ready
from tests.test_trust import Pki, call, tls_registry
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]
__all__ = ["agents", "mesh_cli", "sdk_python", "topology"]  # fixtures used here


def session_for(context: ssl.SSLContext) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=scaled(10))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), timeout=timeout)


def strict_cluster(tmp_path: Path, topology: Topology, pki: Pki) -> Replicated:
    """Three strict replicas; the registry CA (which also issues the agents' certificates)
    trusted through MCP_MESH_TLS_CA; each replica its own trust directory."""
    env = pki.env("strict")
    pki.server_ca.write(pki.root / "client-ca.pem")
    cluster = topology(AGENT_TIMEOUT="5s", HEALTH_CHECK_INTERVAL="1s", **env)
    for i in range(3):
        cluster.start(i, MCP_MESH_TRUST_DIR=str(tmp_path / f"trust-n{i}"))
    for node in cluster.nodes:
        node.url = f"https://127.0.0.1:{node.port}"
    return cluster


async def test_strict_sdk_agents_and_meshctl_entities_through_three_replicas(
    tmp_path: Path,
    topology: Topology,
    agents: list[Agent],
    sdk_python: Path,
    mesh_cli: Path,
) -> None:
    pki = Pki.make(tmp_path / "pki")
    cluster = strict_cluster(tmp_path, topology, pki)
    tester = pki.client(pki.server_ca.agent("tester"), "tester")
    async with session_for(tester) as session:
        await all_ready(session, cluster.nodes)

        # No certificate: refused by every replica.
        for node in cluster.nodes:
            status, _ = await call(pki.client(None), "GET", f"{node.url}/agents")
            assert status == 403

        # The published SDK, strict, file certificates named as MCP Mesh names them.
        def sdk_env(name: str) -> dict[str, str]:
            cert, key = pki.server_ca.agent(name).write(pki.root, name)
            return {
                "MCP_MESH_TLS_MODE": "strict",
                "MCP_MESH_TLS_CERT": str(cert),
                "MCP_MESH_TLS_KEY": str(key),
                "MCP_MESH_TLS_CA": str(pki.root / "server-ca.pem"),
            }

        provider = Agent(
            sdk_python, PROVIDER, cluster.nodes[1], tmp_path, sdk_env("date-provider")
        ).start()
        consumer = Agent(
            sdk_python, CONSUMER, cluster.nodes[2], tmp_path, sdk_env("date-consumer")
        ).start()
        agents.extend([provider, consumer])
        said = await eventually_says(session, consumer, "It is provider-says-", timeout=90)
        assert said
        listed = await (await session.get(f"{cluster.nodes[0].url}/agents")).json()
        assert {a["name"] for a in listed["agents"]} >= {"date-provider", "date-consumer"}

        # A partner organisation's CA: refused until meshctl registers it on one replica.
        partner = CA.make("partner-corp")
        as_partner = pki.client(partner.agent("partner-agent"), "partner")
        body = agent_body("partner-agent-0a1b2c3d")
        for node in cluster.nodes:
            assert (await call(as_partner, "POST", f"{node.url}/heartbeat", body))[0] == 0
        registered = subprocess.run(
            [
                str(mesh_cli / "meshctl"),
                "entity",
                "register",
                "partner-corp",
                "--ca-cert",
                str(partner.write(tmp_path / "partner-ca.pem")),
                "--trust-dir",
                str(tmp_path / "trust-n0"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert registered.returncode == 0, registered.stderr
        for node in cluster.nodes:  # node 0 read the file; 1 and 2 learned it from the log

            async def trusted(node: Registry = node) -> bool:
                return (await call(as_partner, "POST", f"{node.url}/heartbeat", body))[0] == 200

            await eventually(trusted, timeout=scaled(15))
        entities = await (await session.get(f"{cluster.nodes[2].url}/admin/entities")).json()
        assert [e["name"] for e in entities["entities"]] == ["partner-corp"]
        listed_by_meshctl = subprocess.run(
            [
                str(mesh_cli / "meshctl"),
                "entity",
                "list",
                "--json",
                "--trust-dir",
                str(tmp_path / "trust-n0"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert [e["name"] for e in json.loads(listed_by_meshctl.stdout)] == ["partner-corp"]

        # meshctl entity revoke: the file goes, every replica stops trusting the CA.
        revoked = subprocess.run(
            [
                str(mesh_cli / "meshctl"),
                "entity",
                "revoke",
                "partner-corp",
                "--force",
                "--trust-dir",
                str(tmp_path / "trust-n0"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr
        for node in cluster.nodes:

            async def refused(node: Registry = node) -> bool:
                return (await call(as_partner, "GET", f"{node.url}/agents"))[0] == 0

            await eventually(refused, timeout=scaled(15))


async def eventually_says(
    session: aiohttp.ClientSession, consumer: Agent, text: str, timeout: float
) -> str:
    """The consumer's answer (over HTTPS: a strict agent serves TLS) once it contains
    ``text``; fails after ``timeout`` stretched by TEST_TIME_SCALE."""
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "greet", "arguments": {"name": "Ada"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    started, last = time.monotonic(), ""
    while time.monotonic() - started < scaled(timeout):
        try:
            async with session.post(
                f"https://127.0.0.1:{consumer.port}/mcp", json=request, headers=headers
            ) as resp:
                last = await resp.text()
        except aiohttp.ClientError as exc:
            last = str(exc)
        if text in last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"consumer never said {text!r}; last answer: {last[-500:]}")


@pytest.fixture
def go_strict(mesh_cli: Path, tmp_path: Path) -> Iterator[tuple[str, Pki]]:
    """The Go registry 3.7.1 in strict mode, entity CAs from its filestore trust directory."""
    pki = Pki.make(tmp_path / "go-pki")
    trust_dir = tmp_path / "go-trust"
    (trust_dir / "entities").mkdir(parents=True)
    pki.org_a.write(trust_dir / "entities" / "org-a.pem")
    port = free_port()
    env = {
        **os.environ,
        **pki.env("strict"),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": str(tmp_path / "go-registry.db"),
        "MCP_MESH_TRUST_BACKEND": "filestore",
        "MCP_MESH_TRUST_DIR": str(trust_dir),
    }
    with (tmp_path / "go-registry.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(mesh_cli / "mcp-mesh-registry")], env=env, stdout=log, stderr=log
        )
    try:
        yield f"https://127.0.0.1:{port}", pki
    finally:
        proc.kill()
        proc.wait()


async def test_go_registry_in_strict_mode_answers_as_docs_protocol_says(
    go_strict: tuple[str, Pki],
) -> None:
    """The differences docs/protocol.md records ("Registration trust"), measured: the Go
    registry refuses probes without a certificate, refuses an untrusted CA with a 403 rather
    than at the handshake, and lets any trusted certificate write for any agent."""
    url, pki = go_strict

    async def up() -> bool:
        return (await call(pki.client(None), "GET", f"{url}/health"))[0] == 403

    await eventually(up, timeout=scaled(20))
    as_x = pki.client(pki.org_a.agent("agent-x"), "x")
    as_untrusted = pki.client(pki.org_b.agent("agent-x"), "b")
    assert (await call(pki.client(None), "POST", f"{url}/heartbeat", agent_body("a-1")))[0] == 403
    status, body = await call(as_untrusted, "POST", f"{url}/heartbeat", agent_body("agent-x-1"))
    assert (status, body["error"]) == (403, "untrusted certificate")
    assert (await call(as_x, "POST", f"{url}/heartbeat", agent_body("agent-y-0a1b2c3d")))[0] == 200
    assert (await call(as_x, "DELETE", f"{url}/agents/agent-y-0a1b2c3d"))[0] == 204


async def test_admin_rotate_answers_as_the_go_registry(
    go_strict: tuple[str, Pki], mesh_cli: Path, tmp_path: Path, registries: list[Registry]
) -> None:
    """``POST /admin/rotate`` and ``meshctl entity rotate`` against the Go registry and ours,
    both strict, with agent-x of org-a and agent-b of org-b: the same status, body and
    meshctl output; HEAD 202 for the rotated agent until its full heartbeat in both. The one
    difference (docs/protocol.md): Go answers 202 to every agent, rotated or not."""
    go_url, pki = go_strict

    async def up() -> bool:
        return (await call(pki.client(None), "GET", f"{go_url}/health"))[0] == 403

    await eventually(up, timeout=scaled(20))
    ours = tls_registry(tmp_path, registries, pki.env("strict"))
    pki.org_b.write(tmp_path / "go-trust" / "entities" / "org-b.pem")  # Go reloads its directory
    as_x = pki.client(pki.org_a.agent("agent-x"), "x")
    as_b = pki.client(pki.org_b.agent("agent-b"), "b")
    entity = {"name": "org-b", "ca_cert": pki.org_b.pem.decode()}
    assert (await call(as_x, "POST", f"{ours.url}/admin/entities", entity))[0] == 201
    x, b = agent_body("agent-x-0a1b2c3d"), agent_body("agent-b-0a1b2c3d")
    heads: dict[str, list[int]] = {}
    for url in (go_url, ours.url):

        async def registered(url: str = url) -> bool:
            return (await call(as_b, "POST", f"{url}/heartbeat", b))[0] == 200

        await eventually(registered, timeout=scaled(15))  # org-b trusted
        assert (await call(as_x, "POST", f"{url}/heartbeat", x))[0] == 200
        answers = [
            await call(as_x, "POST", f"{url}/admin/rotate?entity_id={e}") for e in ("org-a", "nope")
        ]
        assert answers == [
            (
                200,
                {
                    "message": "Rotation triggered for entity 'org-a'",
                    "affected_agents": 1,
                    "entity_id": "org-a",
                },
            ),
            (
                200,
                {
                    "message": "Rotation triggered for entity 'nope'",
                    "affected_agents": 0,
                    "entity_id": "nope",
                },
            ),
        ], url
        head = [(await call(as_x, "HEAD", f"{url}/heartbeat/agent-x-0a1b2c3d"))[0]]
        head.append((await call(as_b, "HEAD", f"{url}/heartbeat/agent-b-0a1b2c3d"))[0])
        assert (await call(as_x, "POST", f"{url}/heartbeat", x))[0] == 200
        head.append((await call(as_x, "HEAD", f"{url}/heartbeat/agent-x-0a1b2c3d"))[0])
        heads[url] = head
    assert heads == {go_url: [202, 202, 200], ours.url: [202, 200, 200]}

    cert, key = pki.org_a.agent("operator").write(pki.root, "operator")
    env = {
        **os.environ,
        "MCP_MESH_TLS_CERT": str(cert),
        "MCP_MESH_TLS_KEY": str(key),
        "MCP_MESH_TLS_CA": str(pki.root / "server-ca.pem"),
    }
    said = []
    for url in (go_url, ours.url):
        rotated = subprocess.run(
            [str(mesh_cli / "meshctl"), "entity", "rotate", "org-b", "--registry-url", url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert rotated.returncode == 0, rotated.stderr
        said.append(rotated.stdout)
    assert said[0] == said[1] and "1 agent(s) will re-register" in said[0], said
