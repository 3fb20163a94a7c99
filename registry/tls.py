"""HTTPS for the registry port: contexts that follow their files and the trusted entities.

cert-manager rotates the certificate by replacing the Secret's files; an entity registered on
any replica reaches this one through the log. Both must take effect without a restart, so the
listener's context never changes: its SNI callback (called for every handshake, with or
without SNI) hands each new connection the current context, rebuilt whenever the files'
stat or the view's entities change. A rebuild that fails (a rotation caught between writing
the certificate and its key) keeps the previous context and is retried on the next tick.

Client certificates are requested but optional at the handshake in auto and strict mode
alike, so kubelet's HTTPS probes (which present none) complete it; strict mode refuses every
other request without one (registry/api/identity.py). A certificate that is presented must
chain to a trusted CA or the handshake fails. When a CA stops being trusted, open connections
are closed so that clients reconnect and are verified against the new set.

:class:`TrustDirImport` is what makes ``meshctl entity register`` work: meshctl writes the
CA to ``$MCP_MESH_TRUST_DIR/entities/{name}.pem``; the replica that sees the file appear,
change or go proposes the entity's trust or revocation, and every replica applies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from registry import events, trust
from registry.commit import Committed
from registry.config import ConfigError
from registry.timefmt import now_ms
from registry.view import View

log = logging.getLogger(__name__)

RELOAD_SECONDS = 1.0
"""How often the certificate files, the entities and the trust directory are checked."""


def _stat(path: str) -> tuple[Any, ...]:
    try:
        st = os.stat(path)  # follows the ..data symlink of a Secret volume
    except OSError as exc:
        return (path, exc.errno)
    return (path, st.st_ino, st.st_mtime_ns, st.st_size)


def _inputs(settings: trust.TrustSettings, view: View) -> tuple[Any, ...]:
    """What a context is built from: the files' stat and the trusted entities (a change of
    either means a rebuild)."""
    files = [settings.cert, settings.key, settings.ca]
    entities = sorted((n, e["fingerprint"]) for n, e in view.entities.items())
    return (tuple(_stat(f) for f in files if f), tuple(entities))


def _trust_authorities(
    context: ssl.SSLContext, settings: trust.TrustSettings, view: View
) -> list[str]:
    """Make ``context`` verify peers against the CAs this registry trusts for agents (the
    trusted entities' and MCP_MESH_TLS_CA's); their PEM texts."""
    # An entity CA may be an intermediate: trusting it must not need its root.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    authorities = [e["ca_pem"] for e in view.entities.values()]
    if settings.ca:
        authorities.append(Path(settings.ca).read_text())
    for pem in authorities:
        context.load_verify_locations(cadata=pem)
    return authorities


def check_files(settings: trust.TrustSettings) -> None:
    """ConfigError unless the certificate, key and CA files make a server context (run before
    anything starts, so a wrong path is one line and exit 2)."""
    if not settings.tls:
        return
    for name, path in (
        ("MCP_MESH_TLS_CERT", settings.cert),
        ("MCP_MESH_TLS_KEY", settings.key),
        ("MCP_MESH_TLS_CA", settings.ca),
    ):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{name}={path!r} cannot be read")
    ServerTLS(settings, View())


class ServerTLS:
    """The server context of the registry (and admin) port; raises ConfigError at startup
    when the configured files cannot be used."""

    def __init__(self, settings: trust.TrustSettings, view: View) -> None:
        self.settings = settings
        self.view = view
        self.servers: list[web.Server] = []
        """Servers whose connections are closed when a CA stops being trusted."""
        self._stamp = self._stamp_now()
        try:
            self._current, self._trusted = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"MCP_MESH_TLS_CERT/MCP_MESH_TLS_KEY/MCP_MESH_TLS_CA cannot be used: {exc}"
            ) from None
        self._failure = ""
        self.context = self._current
        self.context.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject, _name: str | None, _base: ssl.SSLContext) -> None:
        sslobj.context = self._current

    def _stamp_now(self) -> tuple[Any, ...]:
        return _inputs(self.settings, self.view)

    def _build(self) -> tuple[ssl.SSLContext, frozenset[str]]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.settings.cert, self.settings.key)
        context.verify_mode = ssl.CERT_OPTIONAL
        pems = _trust_authorities(context, self.settings, self.view)
        return context, frozenset(hashlib.sha256(p.encode()).hexdigest() for p in pems)

    def refresh(self) -> bool:
        """Rebuild the context if its inputs changed; whether the new one is in use."""
        stamp = self._stamp_now()
        if stamp == self._stamp:
            return False
        try:
            context, trusted = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            if str(exc) != self._failure:
                self._failure = str(exc)
                log.warning("TLS files not reloaded (keeping the previous ones): %s", exc)
            return False
        self._failure = ""
        lost = self._trusted - trusted
        self._current, self._trusted, self._stamp = context, trusted, stamp
        log.info("TLS context reloaded", extra={"trusted_cas": len(trusted)})
        if lost:
            for server in self.servers:
                for connection in server.connections:
                    connection.force_close()
        return True


class ProxyTLSError(Exception):
    """The proxy cannot dial an ``https://`` agent: the TLS files are missing or unusable."""


class ProxyTLS:
    """The client context ``/proxy`` dials ``https://`` agents with (agents registered with a
    client certificate serve TLS on their port), as the Go registry's proxy does: it presents
    MCP_MESH_TLS_CERT/KEY (the registry's own certificate) as its client certificate and
    verifies the agent's chain but not its host name (agents' certificates name 127.0.0.1 or
    a service name, while the registry dials the pod's registered address; that the target is
    a registered agent is checked before dialling). Ours verifies against the trusted
    entities' CAs as well as MCP_MESH_TLS_CA (Go: MCP_MESH_TLS_CA only), the same set the
    listener trusts for those agents' client certificates. Rebuilt when the files or the
    entities change; a rebuild that fails keeps the previous context (a rotation caught
    half-written), and with none to keep the call is refused (500, as Go)."""

    MISSING = (
        "Proxy TLS misconfiguration: missing required TLS environment variables for HTTPS proxy"
    )
    UNUSABLE = "Proxy TLS misconfiguration"

    def __init__(self, settings: trust.TrustSettings, view: View) -> None:
        self.settings = settings
        self.view = view
        self._stamp: tuple[Any, ...] | None = None
        self._context: ssl.SSLContext | None = None
        self._failure = ""

    def context(self) -> ssl.SSLContext:
        """The current client context; raises ProxyTLSError (its message is the answer)."""
        settings = self.settings
        if not (settings.cert and settings.key and (settings.ca or self.view.entities)):
            raise ProxyTLSError(self.MISSING)
        stamp = _inputs(settings, self.view)
        if stamp != self._stamp:
            try:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_cert_chain(settings.cert, settings.key)
                _trust_authorities(context, settings, self.view)
            except (OSError, ssl.SSLError, ValueError) as exc:
                if str(exc) != self._failure:  # once per cause, not once per call
                    self._failure = str(exc)
                    log.warning("proxy TLS files not usable: %s", exc)
                if self._context is None:
                    raise ProxyTLSError(self.UNUSABLE) from None
            else:
                self._context, self._stamp, self._failure = context, stamp, ""
        assert self._context is not None
        return self._context


class TrustDirImport:
    """Entities from ``MCP_MESH_TRUST_DIR/entities/*.pem`` (where meshctl writes them) into the
    log. Only changes this process saw are proposed: a replica whose directory is empty at
    start revokes nothing; a file that goes away revokes the entity it had added.

    A file already there at start is imported only if its certificate was never revoked or
    replaced (``if_not_revoked``, decided by the log's apply): it may be a copy left behind on
    this replica's disk after an operator revoked the entity through the admin API or on
    another replica, and a restart must not trust it again. A file that appears or changes
    while the process runs is an operator's act (``meshctl entity register``) and is trusted
    as written."""

    def __init__(
        self,
        directory: Path,
        view: View,
        propose: Callable[[events.Event], Awaitable[Committed]],
    ) -> None:
        self.directory = directory
        self.view = view
        self.propose = propose
        self._seen: dict[str, str] = {}
        self._fingerprints: dict[str, str] = {}
        self._at_start: dict[str, str] | None = None
        """The files' texts at the first scan (until each changes or goes)."""

    def _files(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for path in sorted(self.directory.glob("*.pem")):
            with contextlib.suppress(OSError):
                found[path.stem] = path.read_text()
        return found

    async def scan(self) -> None:
        found = self._files()
        if self._at_start is None:
            self._at_start = dict(found)
        for name, text in found.items():
            if self._seen.get(name) == text:
                continue
            try:
                record = trust.entity_record(name, text, now_ms())
            except trust.InvalidEntity as exc:
                log.warning("trust directory file %s.pem ignored: %s", name, exc)
                self._seen[name] = text
                continue
            if self.view.entities.get(name) != record:
                stale = self._at_start.get(name) == text
                event = events.trust_entity(record, now_ms(), if_not_revoked=stale)
                if (await self.propose(event)).took_effect:
                    log.info("entity trusted from the trust directory", extra={"entity": name})
                else:
                    log.warning(
                        "trust directory file %s.pem not imported: its certificate was revoked "
                        "or replaced; POST /admin/entities, or writing the file anew while "
                        "the registry runs, trusts it again",
                        name,
                    )
            self._seen[name] = text
            self._fingerprints[name] = record["fingerprint"]
        for name in [n for n in self._at_start if found.get(n) != self._at_start[n]]:
            del self._at_start[name]
        for name in [n for n in self._seen if n not in found]:
            fingerprint = self._fingerprints.get(name)
            current = self.view.entities.get(name)
            if fingerprint is not None and current and current["fingerprint"] == fingerprint:
                await self.propose(events.revoke_entity(name, fingerprint, now_ms()))
                log.info("entity revoked from the trust directory", extra={"entity": name})
            self._seen.pop(name)
            self._fingerprints.pop(name, None)


async def watch(tls: ServerTLS | None, imports: TrustDirImport | None) -> None:
    """Keep the TLS context and the imported entities current until cancelled."""
    while True:
        await asyncio.sleep(RELOAD_SECONDS)
        if imports is not None:
            try:
                await imports.scan()
            except Exception as exc:  # the log unavailable, say: the next tick retries
                log.warning("trust directory not imported yet: %s", exc)
        if tls is not None:
            tls.refresh()
