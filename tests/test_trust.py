"""Registration trust (registry/trust.py, registry/tls.py): TLS modes, agent identity from the
client certificate, entity CAs in the log, certificate reload. Certificates are made here with
``cryptography`` (tests/certs.py); registries are real processes on loopback."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from registry import events, trust
from registry.commit import Committed
from registry.timefmt import now_ms
from registry.tls import TrustDirImport
from registry.view import View, apply
from tests.certs import CA, TRUST_DOMAIN, Leaf
from tests.conftest import agent_body, eventually
from tests.processes import Registry
from tests.test_cluster import Cluster, all_ready, converged
from tests.timing import scaled

pytestmark = pytest.mark.storages("lmdb", "postgresql")

# -- identity and the pure state -----------------------------------------------------------------


def der(leaf: Leaf) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    return cert.public_bytes(serialization.Encoding.DER)


def test_identity_is_the_cn_in_the_trust_domain_or_the_spiffe_id() -> None:
    ca = CA.make("org-a")
    assert trust.identity(der(ca.agent("greeter")), TRUST_DOMAIN) == "greeter"
    assert trust.identity(der(ca.agent("greeter", "other.domain")), TRUST_DOMAIN) is None
    assert trust.identity(der(ca.issue("greeter")), TRUST_DOMAIN) is None  # no domain
    spiffe = ca.issue("ignored.mcp-mesh.local", uris=(f"spiffe://{TRUST_DOMAIN}/agent/greeter",))
    assert trust.identity(der(spiffe), TRUST_DOMAIN) == "greeter"  # the SAN wins over the CN
    foreign = ca.issue("greeter.mcp-mesh.local", uris=("spiffe://elsewhere/agent/greeter",))
    assert trust.identity(der(foreign), TRUST_DOMAIN) is None


def test_an_identity_names_its_agent_id_or_the_sdk_ids_made_from_it() -> None:
    assert trust.names_agent("greeter", "greeter")
    assert trust.names_agent("greeter", "greeter-1a2b3c4d")
    assert trust.names_agent("greeter-1a2b3c4d", "greeter-1a2b3c4d")
    assert not trust.names_agent("greeter", "greeter-evil")
    assert not trust.names_agent("greeter", "greeter-1a2b3c4d-x")
    assert not trust.names_agent("greet", "greeter-1a2b3c4d")
    assert not trust.names_agent("greeter", "mailer-1a2b3c4d")


def test_entity_records_are_checked_as_meshctl_checks_them() -> None:
    ca = CA.make("org-a")
    record = trust.entity_record("org-a", ca.pem.decode(), now_ms())
    assert record["subject"] == "CN=org-a CA,O=org-a" and len(record["fingerprint"]) == 64
    leaf = ca.agent("x")
    for name, pem, why in [
        ("bad name!", ca.pem.decode(), "entity name"),
        ("org-a", "not a pem", "not a PEM"),
        ("org-a", leaf.cert_pem.decode(), "not a CA"),
    ]:
        with pytest.raises(trust.InvalidEntity, match=why):
            trust.entity_record(name, pem, now_ms())
    with pytest.raises(trust.InvalidEntity, match="not valid now"):
        trust.entity_record("org-a", ca.pem.decode(), 4_000_000_000_000)


def test_entity_events_apply_purely_and_survive_a_snapshot() -> None:
    a, b = CA.make("org-a"), CA.make("org-b")
    rec_a = trust.entity_record("org", a.pem.decode(), now_ms())
    rec_b = trust.entity_record("org", b.pem.decode(), now_ms())
    view = View()
    assert apply(view, 1, events.trust_entity(rec_a, 1))
    assert not apply(view, 2, events.trust_entity(rec_a, 2))  # already trusted as is
    assert apply(view, 3, events.trust_entity(rec_b, 3))  # replaced
    # A revocation decided against the replaced certificate does not revoke the replacement.
    assert not apply(view, 4, events.revoke_entity("org", rec_a["fingerprint"], 4))
    assert view.entities == {"org": rec_b}
    restored = View.from_state(view.to_state())
    assert restored.entities == view.entities and restored.digest() == view.digest()
    assert apply(view, 5, events.revoke_entity("org", rec_b["fingerprint"], 5))
    assert view.entities == {} and view.digest() != restored.digest()
    encoded = events.decode(events.encode(events.trust_entity(rec_a, 6)), 6)
    assert encoded.kind == events.TRUST_ENTITY and encoded.payload == rec_a


def test_a_revoked_or_replaced_certificate_is_trusted_again_only_unconditionally() -> None:
    """A trust directory file found at start (``if_not_revoked``) cannot undo a revocation or a
    replacement; an explicit registration can, and then a later conditional trust is a no-op
    only because the entity is already trusted as is."""
    a, b = CA.make("org-a"), CA.make("org-b")
    rec_a = trust.entity_record("org", a.pem.decode(), now_ms())
    rec_b = trust.entity_record("org", b.pem.decode(), now_ms())
    view = View()
    assert apply(view, 1, events.trust_entity(rec_a, 1, if_not_revoked=True))  # never revoked
    assert view.entities == {"org": rec_a}  # the flag is not stored
    assert apply(view, 2, events.revoke_entity("org", rec_a["fingerprint"], 2))
    assert not apply(view, 3, events.trust_entity(rec_a, 3, if_not_revoked=True))
    assert view.entities == {}
    restored = View.from_state(view.to_state())
    assert not apply(restored, 4, events.trust_entity(rec_a, 4, if_not_revoked=True))
    assert apply(view, 4, events.trust_entity(rec_a, 4))  # POST /admin/entities
    assert view.revoked_entities == {}
    assert apply(view, 5, events.trust_entity(rec_b, 5))  # replaced with force
    assert view.revoked_entities == {rec_a["fingerprint"]: "org"}
    assert not apply(view, 6, events.trust_entity(rec_a, 6, if_not_revoked=True))
    assert view.entities == {"org": rec_b}


async def test_trust_dir_files_found_at_start_do_not_undo_a_revocation(tmp_path: Path) -> None:
    """A file left in the directory after its entity was revoked is not trusted again by the
    import of a restarted process; the same file written anew while it runs is."""
    view = View()

    async def propose(event: events.Event) -> Committed:
        index = view.applied_index + 1
        return Committed(index, apply(view, index, event))

    org_b = CA.make("org-b")
    org_b.write(tmp_path / "org-b.pem")
    await TrustDirImport(tmp_path, view, propose).scan()
    assert list(view.entities) == ["org-b"]
    await propose(events.revoke_entity("org-b", view.entities["org-b"]["fingerprint"], now_ms()))

    restarted = TrustDirImport(tmp_path, view, propose)
    await restarted.scan()
    await restarted.scan()
    assert view.entities == {}
    (tmp_path / "org-b.pem").unlink()
    await restarted.scan()
    assert view.entities == {}  # nothing to revoke: it was not trusted
    org_b.write(tmp_path / "org-b.pem")
    await restarted.scan()
    assert list(view.entities) == ["org-b"]


def test_a_rotation_asks_the_healthy_agents_of_its_entity_for_a_full_heartbeat() -> None:
    """Chosen at apply (so every replica marks the same agents), kept in snapshots, recorded
    as ``rotate`` events; the agent's next full heartbeat (an upsert) clears it."""
    view = View()
    for index, (agent_id, entity) in enumerate(
        [("a-1", "org-a"), ("a-2", "org-a"), ("b-1", "org-b"), ("plain", None)], start=1
    ):
        body = agent_body(agent_id)
        if entity:
            body["entity_id"] = entity
        apply(view, index, events.upsert(body, index))
    apply(view, 5, events.health("unhealthy", ["a-2"], 5))
    assert not any(view.needs_full_heartbeat(a) for a in view.agents)
    assert view.rotation_targets("org-a") == ["a-1"]  # a-2 is unhealthy

    assert apply(view, 6, events.rotate("org-a", 6))
    assert [a for a in view.agents if view.needs_full_heartbeat(a)] == ["a-1"]
    rotated = [e for e in view.history if e["event_type"] == "rotate"]
    assert [(e["agent_id"], e["index"], e["data"]) for e in rotated] == [
        (
            "a-1",
            6,
            {"agent_id": "a-1", "name": "a", "entity_id": "org-a", "reason": "cert_rotation"},
        )
    ]
    restored = View.from_state(view.to_state())
    assert restored.needs_full_heartbeat("a-1") and restored.digest() == view.digest()
    assert not apply(view, 7, events.rotate("org-c", 7))  # nobody: no change

    assert apply(view, 8, events.rotate("", 8))  # every healthy agent
    assert sorted(a for a in view.agents if view.needs_full_heartbeat(a)) == ["a-1", "b-1", "plain"]
    body = agent_body("a-1")
    body["entity_id"] = "org-a"
    apply(view, 9, events.upsert(body, 9))
    assert not view.needs_full_heartbeat("a-1") and view.needs_full_heartbeat("b-1")


# -- real processes ------------------------------------------------------------------------------


@dataclass
class Pki:
    """A registry CA and server certificate, two organisations' CAs, and files for them."""

    root: Path
    server_ca: CA
    org_a: CA
    org_b: CA

    @classmethod
    def make(cls, root: Path) -> Pki:
        root.mkdir(parents=True, exist_ok=True)
        pki = cls(root, CA.make("registry"), CA.make("org-a"), CA.make("org-b"))
        pki.server_ca.issue("registry").write(root, "server")
        pki.server_ca.write(root / "server-ca.pem")
        return pki

    def env(self, mode: str, **extra: str) -> dict[str, str]:
        """Registry settings: the server certificate; org-a trusted through MCP_MESH_TLS_CA."""
        self.org_a.write(self.root / "client-ca.pem")
        return {
            "MCP_MESH_TLS_MODE": mode,
            "MCP_MESH_TLS_CERT": str(self.root / "server.pem"),
            "MCP_MESH_TLS_KEY": str(self.root / "server-key.pem"),
            "MCP_MESH_TLS_CA": str(self.root / "client-ca.pem"),
            **extra,
        }

    def client(self, leaf: Leaf | None, stem: str = "client") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.root / "server-ca.pem"))
        if leaf is not None:
            context.load_cert_chain(*leaf.write(self.root, stem))
        return context


def tls_registry(tmp_path: Path, registries: list[Registry], env: dict[str, str]) -> Registry:
    node = Registry(tmp_path / "data", **env)
    node.url = f"https://127.0.0.1:{node.port}"
    registries.append(node.start())
    return node


async def call(
    context: ssl.SSLContext | None, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    """``(status, JSON body or None)``; ``(0, error text)`` when the TLS handshake fails."""
    timeout = aiohttp.ClientTimeout(total=scaled(10))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=body, ssl=context or False) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, await resp.json(content_type=None) if text else None
            except ValueError:
                return resp.status, text
    except (aiohttp.ClientConnectionError, ssl.SSLError) as exc:
        return 0, str(exc)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path / "pki")


@pytest.fixture
async def strict(tmp_path: Path, pki: Pki, registries: list[Registry]) -> AsyncIterator[Registry]:
    node = tls_registry(tmp_path, registries, pki.env("strict"))
    yield node


@pytest.mark.slow
async def test_strict_needs_a_certificate_but_probes_and_metrics_do_not(
    pki: Pki, strict: Registry
) -> None:
    anonymous = pki.client(None)
    status, body = await call(anonymous, "POST", f"{strict.url}/heartbeat", agent_body("x-1"))
    assert status == 403 and body["error"].startswith("client certificate required")
    assert (await call(anonymous, "GET", f"{strict.url}/agents"))[0] == 403
    assert (await call(anonymous, "GET", f"{strict.url}/health"))[0] == 200
    assert (await call(anonymous, "GET", f"{strict.url}/ready"))[0] == 200
    metrics = f"http://127.0.0.1:{strict.metrics_port}/metrics"
    assert (await call(None, "GET", metrics))[0] == 200  # plain HTTP, as Prometheus scrapes
    # Plain HTTP on the registry port gets nowhere.
    assert (await call(None, "GET", f"http://127.0.0.1:{strict.port}/agents"))[0] in (0, 400)
    # Nothing was written: a trusted client sees no agent.
    status, body = await call(pki.client(pki.org_a.agent("x")), "GET", f"{strict.url}/agents")
    assert status == 200 and body["count"] == 0


@pytest.mark.slow
async def test_a_certificate_for_x_cannot_register_heartbeat_or_delete_y(
    pki: Pki, strict: Registry
) -> None:
    as_x = pki.client(pki.org_a.agent("agent-x"), "x")
    as_y = pki.client(pki.org_a.agent("agent-y"), "y")
    url = strict.url
    assert (await call(as_y, "POST", f"{url}/heartbeat", agent_body("agent-y-0a1b2c3d")))[0] == 200
    assert (await call(as_x, "POST", f"{url}/heartbeat", agent_body("agent-x-0a1b2c3d")))[0] == 200
    before = (await call(as_y, "GET", f"{url}/api/v1/cluster"))[1]

    hijack = agent_body("agent-y-0a1b2c3d", port=6666)
    for method, path, body in [
        ("POST", "/heartbeat", hijack),
        ("HEAD", "/heartbeat/agent-y-0a1b2c3d", None),
        ("DELETE", "/agents/agent-y-0a1b2c3d", None),
        ("POST", "/api/v1/agents", {"id": "agent-y-0a1b2c3d", "capabilities": ["c"]}),
        ("DELETE", "/api/v1/agents/agent-y-0a1b2c3d", None),
    ]:
        status, answer = await call(as_x, method, f"{url}{path}", body)
        assert status == 403, (method, path, status, answer)
        if method != "HEAD":
            assert "may not write for agent 'agent-y-0a1b2c3d'" in answer["error"]
    # A certificate outside the trust domain names nobody.
    stranger = pki.client(pki.org_a.issue("agent-y-0a1b2c3d.elsewhere"), "stranger")
    status, answer = await call(stranger, "DELETE", f"{url}/agents/agent-y-0a1b2c3d")
    assert status == 403 and "names no agent of trust domain" in answer["error"]

    after = (await call(as_y, "GET", f"{url}/api/v1/cluster"))[1]
    assert (after["view_digest"], after["applied_index"]) == (
        before["view_digest"],
        before["applied_index"],
    )  # nothing was written
    assert (await call(as_y, "DELETE", f"{url}/agents/agent-y-0a1b2c3d"))[0] == 204


@pytest.mark.slow
async def test_auto_accepts_no_certificate_but_checks_one_presented(
    tmp_path: Path, pki: Pki, registries: list[Registry]
) -> None:
    node = tls_registry(tmp_path, registries, pki.env("auto"))
    anonymous = pki.client(None)
    assert (await call(anonymous, "POST", f"{node.url}/heartbeat", agent_body("a-0a1b2c3d")))[
        0
    ] == 200
    as_x = pki.client(pki.org_a.agent("x"), "x")
    assert (await call(as_x, "DELETE", f"{node.url}/agents/a-0a1b2c3d"))[0] == 403
    untrusted = pki.client(pki.org_b.agent("a"), "b")
    status, why = await call(untrusted, "GET", f"{node.url}/agents")
    assert status == 0, why  # refused at the handshake: org-b is not trusted


@pytest.mark.slow
async def test_an_untrusted_ca_is_trusted_after_registering_it_and_refused_after_revoking(
    pki: Pki, strict: Registry
) -> None:
    admin = pki.client(pki.org_a.agent("operator"), "operator")
    as_b = pki.client(pki.org_b.agent("partner"), "partner")
    register = agent_body("partner-0a1b2c3d")
    status, why = await call(as_b, "POST", f"{strict.url}/heartbeat", register)
    assert status == 0, why

    pem = pki.org_b.pem.decode()
    entities = f"{strict.url}/admin/entities"
    assert (await call(admin, "POST", entities, {"name": "bad name", "ca_cert": pem}))[0] == 400
    leaf_pem = pki.org_b.agent("p").cert_pem.decode()
    assert (await call(admin, "POST", entities, {"name": "org-b", "ca_cert": leaf_pem}))[0] == 400
    status, body = await call(admin, "POST", entities, {"name": "org-b", "ca_cert": pem})
    assert status == 201 and body["entity"]["subject"] == "CN=org-b CA,O=org-b"
    assert (await call(admin, "POST", entities, {"name": "org-b", "ca_cert": pem}))[0] == 200
    other = pki.org_a.pem.decode()
    assert (await call(admin, "POST", entities, {"name": "org-b", "ca_cert": other}))[0] == 409
    status, listed = await call(admin, "GET", entities)
    assert [e["name"] for e in listed["entities"]] == ["org-b"]

    async def partner_registers() -> bool:
        return (await call(as_b, "POST", f"{strict.url}/heartbeat", register))[0] == 200

    await eventually(partner_registers, timeout=scaled(10))

    assert (await call(admin, "DELETE", f"{entities}/org-b"))[0] == 200
    assert (await call(admin, "DELETE", f"{entities}/org-b"))[0] == 404

    async def partner_refused() -> bool:
        return (await call(as_b, "GET", f"{strict.url}/agents"))[0] == 0

    await eventually(partner_refused, timeout=scaled(10))


@pytest.mark.slow
async def test_an_entity_revoked_through_the_api_stays_revoked_across_a_restart(
    tmp_path: Path, pki: Pki, registries: list[Registry]
) -> None:
    """The trust directory still holds the revoked CA's file (meshctl wrote it; the operator
    revoked through the admin API): a restart does not trust it again, and the handshake of
    its agents stays refused. org-c, written while the registry was down and never revoked, is
    imported by the same first scan (files are proposed in name order), so seeing it trusted
    means org-b's file was looked at."""
    entities_dir = tmp_path / "trust" / "entities"
    entities_dir.mkdir(parents=True)
    pki.org_b.write(entities_dir / "org-b.pem")
    node = tls_registry(
        tmp_path, registries, pki.env("strict", MCP_MESH_TRUST_DIR=str(tmp_path / "trust"))
    )
    admin = pki.client(pki.org_a.agent("operator"), "operator")
    as_b = pki.client(pki.org_b.agent("partner"), "partner")
    entities = f"{node.url}/admin/entities"

    async def listed() -> list[str]:
        status, body = await call(admin, "GET", entities)
        assert status == 200, body
        return [e["name"] for e in body["entities"]]

    await eventually(lambda: _has(listed(), "org-b"), timeout=scaled(10))

    async def partner_served() -> bool:
        return (await call(as_b, "GET", f"{node.url}/agents"))[0] == 200

    await eventually(partner_served, timeout=scaled(10))  # the context follows the view
    assert (await call(admin, "DELETE", f"{entities}/org-b"))[0] == 200

    assert node.stop() == 0
    org_c = CA.make("org-c")
    org_c.write(entities_dir / "org-c.pem")
    node.start()
    await eventually(lambda: _has(listed(), "org-c"), timeout=scaled(10))
    assert await listed() == ["org-c"]
    assert (await call(as_b, "GET", f"{node.url}/agents"))[0] == 0  # refused at the handshake
    assert "org-b.pem not imported: its certificate was revoked" in node.log()
    # An explicit registration trusts it again.
    status, _ = await call(
        admin, "POST", entities, {"name": "org-b", "ca_cert": pki.org_b.pem.decode()}
    )
    assert status == 201
    await eventually(lambda: _has(listed(), "org-b"), timeout=scaled(10))


@pytest.mark.slow
async def test_admin_rotate_sends_the_agents_of_an_entity_to_register_again(
    tmp_path: Path, pki: Pki, registries: list[Registry]
) -> None:
    """``POST /admin/rotate[?entity_id=]`` as ``meshctl entity rotate`` sends it: the Go
    registry's answer, HEAD 202 for the chosen agents only until their next full heartbeat,
    a ``rotate`` event each; no match or bad input appends nothing."""
    node = tls_registry(tmp_path, registries, pki.env("auto"))
    as_a = pki.client(pki.org_a.agent("greeter"), "greeter")
    plain = pki.client(None)
    greeter, other = agent_body("greeter-0a1b2c3d"), agent_body("other-0a1b2c3d")
    assert (await call(as_a, "POST", f"{node.url}/heartbeat", greeter))[0] == 200
    assert (await call(plain, "POST", f"{node.url}/heartbeat", other))[0] == 200

    async def head(context: ssl.SSLContext, agent_id: str) -> int:
        return (await call(context, "HEAD", f"{node.url}/heartbeat/{agent_id}"))[0]

    async def index() -> int:
        return int((await call(plain, "GET", f"{node.url}/api/v1/cluster"))[1]["applied_index"])

    rotate = f"{node.url}/admin/rotate"
    before = await index()
    for query, why in [("?entity_id=" + "x" * 256, "at most 255")]:
        status, body = await call(plain, "POST", rotate + query)
        assert status == 400 and why in body["error"], body
    assert await call(plain, "POST", rotate + "?entity_id=nobody") == (
        200,
        {
            "message": "Rotation triggered for entity 'nobody'",
            "affected_agents": 0,
            "entity_id": "nobody",
        },
    )
    assert await index() == before  # nothing appended

    assert await call(plain, "POST", rotate + "?entity_id=org-a", {"ignored": True}) == (
        200,
        {
            "message": "Rotation triggered for entity 'org-a'",
            "affected_agents": 1,
            "entity_id": "org-a",
        },
    )
    assert (await head(as_a, "greeter-0a1b2c3d"), await head(plain, "other-0a1b2c3d")) == (202, 200)
    assert await head(as_a, "greeter-0a1b2c3d") == 202  # until it sends a full heartbeat
    status, listed = await call(plain, "GET", f"{node.url}/events?type=rotate")
    assert [
        (e["agent_id"], e["data"]["entity_id"], e["data"]["reason"]) for e in listed["events"]
    ] == [("greeter-0a1b2c3d", "org-a", "cert_rotation")]
    assert (await call(as_a, "POST", f"{node.url}/heartbeat", greeter))[0] == 200
    assert await head(as_a, "greeter-0a1b2c3d") == 200

    status, body = await call(plain, "POST", rotate)
    assert (status, body["affected_agents"], body["message"]) == (
        200,
        2,
        "Rotation triggered for all agents",
    )
    assert (await head(as_a, "greeter-0a1b2c3d"), await head(plain, "other-0a1b2c3d")) == (202, 202)


@pytest.mark.slow
async def test_a_rotation_through_one_replica_reaches_the_others(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """The rotation is a log entry: asked through one replica, the agent heartbeating against
    another gets 202 there, and a full heartbeat through a third clears it everywhere."""
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    a, b, c = cluster.nodes
    timeout = aiohttp.ClientTimeout(total=scaled(10))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, cluster.nodes)
        body = agent_body("greeter-0a1b2c3d")
        async with session.post(f"{a.url}/heartbeat", json=body) as resp:
            assert resp.status == 200
        async with session.post(f"{b.url}/admin/rotate") as resp:
            assert (resp.status, (await resp.json())["affected_agents"]) == (200, 1)

        async def head(node: Registry) -> int:
            async with session.head(f"{node.url}/heartbeat/greeter-0a1b2c3d") as resp:
                return resp.status

        await eventually(lambda: _is(head(c), 202), timeout=scaled(10))
        async with session.post(f"{c.url}/heartbeat", json=body) as resp:
            assert resp.status == 200
        await converged(session, cluster.nodes)
        assert [await head(n) for n in cluster.nodes] == [200, 200, 200]


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _has(names: Awaitable[list[str]], name: str) -> bool:
    return name in await names


@pytest.mark.slow
async def test_certificates_are_reloaded_when_their_files_change(
    pki: Pki, strict: Registry
) -> None:
    """cert-manager rotates the Secret's files; the next connection gets the new certificate
    without a restart (and a new CA in MCP_MESH_TLS_CA is trusted)."""

    async def served_serial() -> int:
        from cryptography import x509

        reader_context = pki.client(pki.org_a.agent("x"), "x")
        import asyncio

        _, writer = await asyncio.open_connection("127.0.0.1", strict.port, ssl=reader_context)
        ssl_object = writer.get_extra_info("ssl_object")
        serial = x509.load_der_x509_certificate(ssl_object.getpeercert(True)).serial_number
        writer.close()
        return int(serial)

    before = await served_serial()
    rotated = pki.server_ca.issue("registry")
    rotated.write(pki.root, "server")
    from cryptography import x509

    new_serial = x509.load_pem_x509_certificate(rotated.cert_pem).serial_number
    assert new_serial != before

    async def serves_new() -> bool:
        return await served_serial() == new_serial

    await eventually(serves_new, timeout=scaled(10))
    # The client CA file changes too: org-b trusted instead of org-a.
    pki.org_b.write(pki.root / "client-ca.pem")
    as_b = pki.client(pki.org_b.agent("b"), "b")

    async def org_b_trusted() -> bool:
        return (await call(as_b, "GET", f"{strict.url}/agents"))[0] == 200

    await eventually(org_b_trusted, timeout=scaled(10))
    assert (await call(pki.client(pki.org_a.agent("x"), "x"), "GET", f"{strict.url}/agents"))[
        0
    ] == 0
    assert strict.proc is not None and strict.proc.poll() is None  # the same process throughout
