"""Who a request comes from, by its client certificate (registry/trust.py).

The handshake has already checked that a presented certificate chains to a trusted CA; what is
left is strict mode's "no certificate, no service" and, on every agent write (registration,
heartbeat, deletion), that the certificate names the agent written for. Both answer 403 JSON
before anything is proposed.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry import trust
from registry.api.keys import NODE
from registry.api.responses import fail


def peer_certificate(request: web.Request) -> bytes | None:
    """The client certificate (DER) of the request's connection, if it presented one."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der


def require_certificate(request: web.Request, settings: trust.TrustSettings) -> None:
    """In strict mode, every request but the probes needs a client certificate."""
    if settings.mode != "strict" or request.path in trust.PROBE_PATHS:
        return
    if peer_certificate(request) is None:
        fail(403, "client certificate required (MCP_MESH_TLS_MODE=strict)")


def check_agent(
    request: web.Request, agent_id: str, registration: dict[str, Any] | None = None
) -> None:
    """403 unless the request may write for ``agent_id``: a certificate presented must name
    the agent, and an agent registered with a certificate is written for only with one from
    the same entity (its CA's organisation, as the Go registry's ``entity_id``).

    ``registration``, when given, is stamped with the entity (or unstamped: a body cannot
    claim one), which also makes its endpoint ``https://`` (registry/registration.py)."""
    node = request.app[NODE]
    settings = node.config.trust
    der = peer_certificate(request) if settings.tls else None
    entity = None
    if der is not None:
        domain = settings.trust_domain
        who = trust.identity(der, domain)
        if who is None:
            fail(
                403,
                f"client certificate names no agent of trust domain {domain} (expected CN "
                f"{{agent}}.{domain} or a URI SAN spiffe://{domain}/.../{{agent}})",
                agent_id,
            )
        if not trust.names_agent(who, agent_id):
            fail(403, f"client certificate identity {who!r} may not write for agent {agent_id!r}")
        entity = trust.issuer_entity(der)
    known = node.view.agents.get(agent_id)
    owner = known.registration.get("entity_id") if known is not None else None
    if owner and owner != entity:
        fail(403, "entity_id mismatch: agent owned by another entity", agent_id)
    if registration is not None:
        registration.pop("entity_id", None)
        if entity:
            registration["entity_id"] = entity
