"""Registration trust as MCP Mesh defines it: TLS modes, trusted entities, agent identity.

Without it any client that reaches the port can overwrite another agent's registration (and so
redirect its consumers) or delete it. With ``MCP_MESH_TLS_MODE``:

- ``off`` (default): plain HTTP, no identity, as before;
- ``auto``: HTTPS; a client certificate is optional, but one presented must come from a
  trusted CA and name the agent it writes for;
- ``strict``: HTTPS and every request but the probes (``/health``, ``/ready``) needs a
  trusted client certificate.

Trusted CAs are the ones in ``MCP_MESH_TLS_CA`` (this replica's configuration) and the
*entities* (organisations' CAs) in the replicated log, so one ``meshctl entity register`` or
``POST /admin/entities`` trusts a CA on every replica. An entity event carries everything
(its PEM and the fields shown) decided by the proposer; :func:`apply_trust` and
:func:`apply_revoke` are pure.

An agent's identity is the one MCP Mesh's credential providers put in its certificate: a
SPIFFE URI SAN ``spiffe://{trust-domain}/.../{agent}`` or the common name
``{agent}.{trust-domain}`` (``MCP_MESH_TRUST_DOMAIN``, default ``mcp-mesh.local``). The agent
is the SDK's agent id (``greeter-1a2b3c4d``) or its name (``greeter``): the SDK appends eight
hex digits to the name at every start, so a file certificate cannot know the suffix.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from registry.events import IF_NOT_REVOKED

MODES = ("off", "auto", "strict")
DEFAULT_TRUST_DOMAIN = "mcp-mesh.local"
ENTITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
"""Entity names as ``meshctl entity register`` accepts them (they are also file names)."""
_SDK_SUFFIX = re.compile(r"^[0-9a-f]{8}$")
PROBE_PATHS = frozenset({"/health", "/ready"})
"""Answered without a client certificate in strict mode: kubelet probes present none."""


@dataclass(frozen=True)
class TrustSettings:
    """The ``MCP_MESH_TLS_*`` / ``MCP_MESH_TRUST_*`` / ``MCP_MESH_ADMIN_PORT`` settings."""

    mode: str = "off"
    cert: str = ""
    key: str = ""
    ca: str = ""
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    trust_dir: str = ""
    admin_port: int = 0

    @property
    def tls(self) -> bool:
        return self.mode != "off"


class InvalidEntity(ValueError):
    """A CA certificate that cannot be trusted as an entity; the message says why."""


def entity_record(name: str, pem: str, now_ms: int) -> dict[str, Any]:
    """The payload of a trust event for CA ``pem`` named ``name`` (checked as ``meshctl entity
    register`` checks it: a CA certificate, valid now); raises InvalidEntity."""
    if not ENTITY_NAME.match(name):
        raise InvalidEntity(
            "entity name must be 1-255 letters, digits, '-' or '_', starting with a letter or digit"
        )
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise InvalidEntity("ca_cert is not a PEM certificate") from None
    first = certs[0]
    try:
        constraints = first.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidEntity(
            "certificate is not a CA certificate (BasicConstraints CA flag not set)"
        )
    now = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.UTC)
    if not first.not_valid_before_utc <= now <= first.not_valid_after_utc:
        raise InvalidEntity(
            f"CA certificate is not valid now (valid {first.not_valid_before_utc:%Y-%m-%d} to "
            f"{first.not_valid_after_utc:%Y-%m-%d})"
        )
    clean = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
    return {
        "name": name,
        "ca_pem": clean,
        "fingerprint": hashlib.sha256(first.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "subject": subject_text(first),
        "expires": f"{first.not_valid_after_utc:%Y-%m-%d}",
    }


def subject_text(cert: x509.Certificate) -> str:
    """``CN=...,O=...`` as meshctl and the Go registry show an entity's subject."""
    parts = [
        f"{label}={_text(a.value)}"
        for label, oid in (("CN", NameOID.COMMON_NAME), ("O", NameOID.ORGANIZATION_NAME))
        for a in cert.subject.get_attributes_for_oid(oid)
    ]
    return ",".join(parts) or cert.subject.rfc4514_string()


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode(errors="replace")


# -- the replicated state (pure) -----------------------------------------------------------------


def apply_trust(
    entities: dict[str, dict[str, Any]], revoked: dict[str, str], payload: dict[str, Any]
) -> bool:
    """Trust (or replace) the entity in ``payload``; whether anything changed.

    ``revoked`` maps the fingerprints of certificates that stopped being trusted (revoked, or
    replaced under their name) to that name. A conditional trust (:data:`IF_NOT_REVOKED`) of
    one of them is refused; an unconditional one takes it out (an operator's explicit
    registration trusts it again). Decided here, in log order, because the importing
    replica's view may be behind the revocation when it proposes.
    """
    record = {k: v for k, v in payload.items() if k != IF_NOT_REVOKED}
    name, fingerprint = record["name"], record["fingerprint"]
    if payload.get(IF_NOT_REVOKED) and fingerprint in revoked:
        return False
    current = entities.get(name)
    if current == record:
        return False
    if current is not None and current["fingerprint"] != fingerprint:
        revoked[current["fingerprint"]] = name
    revoked.pop(fingerprint, None)
    entities[name] = record
    return True


def apply_revoke(
    entities: dict[str, dict[str, Any]], revoked: dict[str, str], payload: dict[str, Any]
) -> bool:
    """Stop trusting the named entity (only the one with this fingerprint, when given: a
    revocation that raced a replacement leaves the replacement) and remember its certificate
    as revoked (see :func:`apply_trust`); whether it took effect."""
    current = entities.get(payload["name"])
    if current is None:
        return False
    fingerprint = payload.get("fingerprint")
    if fingerprint is not None and current["fingerprint"] != fingerprint:
        return False
    del entities[payload["name"]]
    revoked[current["fingerprint"]] = payload["name"]
    return True


# -- identity --------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def identity(der: bytes, trust_domain: str) -> str | None:
    """The agent a client certificate names in ``trust_domain``, or None when it names none.

    A SPIFFE URI SAN wins over the common name (SPIRE's SVIDs have no meaningful CN); a SPIFFE
    ID of another trust domain names nobody here. Cached: the same few certificates come with
    every heartbeat.
    """
    cert = x509.load_der_x509_certificate(der)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if spiffe:
        domain, _, path = spiffe[0].removeprefix("spiffe://").partition("/")
        last = path.rstrip("/").rpartition("/")[2]
        return last if domain == trust_domain and last else None
    suffix = "." + trust_domain
    for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        if isinstance(value, str) and value.endswith(suffix) and len(value) > len(suffix):
            return value[: -len(suffix)]
    return None


@lru_cache(maxsize=4096)
def issuer_entity(der: bytes) -> str:
    """The entity a (verified) client certificate belongs to: its issuer's organisation, else
    its issuer's common name, as MCP Mesh's trust backends name an entity CA."""
    issuer = x509.load_der_x509_certificate(der).issuer
    for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME):
        for attribute in issuer.get_attributes_for_oid(oid):
            return _text(attribute.value)
    return issuer.rfc4514_string()


def names_agent(who: str, agent_id: str) -> bool:
    """Whether identity ``who`` may write for ``agent_id``: the id itself, or the name the SDK
    made it from (``{name}-{8 hex digits}``)."""
    if agent_id == who:
        return True
    prefix, _, suffix = agent_id.rpartition("-")
    return prefix == who and bool(_SDK_SUFFIX.match(suffix))
