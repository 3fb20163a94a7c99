"""Which registered agent a /proxy target names (registry/api/proxy.py), and the client TLS
context it dials ``https://`` agents with (registry/tls.py)."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import pytest
from multidict import CIMultiDict

from registry import config, events
from registry.api.proxy import outgoing_headers, propagated, registered_target
from registry.registration import from_heartbeat
from registry.tls import ProxyTLS, ProxyTLSError
from registry.trust import TrustSettings
from registry.view import View, apply
from tests.certs import CA


def test_only_registered_agents_ports_are_targets_the_host_before_ids_and_names() -> None:
    view = View()
    bodies = [
        {"agent_id": "a-1", "name": "worker", "http_host": "10.0.0.5", "http_port": 8080},
        {"agent_id": "b-1", "name": "other", "http_host": "a-1", "http_port": 8080},
        {"agent_id": "c-1", "name": "c", "http_host": "", "http_port": 9000},
        {
            "agent_id": "d-1",
            "name": "d",
            "http_host": "10.0.0.6",
            "http_port": 9443,
            "entity_id": "org-a",
        },
    ]
    for index, body in enumerate(bodies, start=1):
        apply(view, index, events.upsert(from_heartbeat(body), 1000))
    assert registered_target(view, "10.0.0.5:8080") == "http://10.0.0.5:8080"
    assert registered_target(view, "a-1:8080") == "http://a-1:8080"  # b-1's host, not a-1's id
    assert registered_target(view, "worker:8080") == "http://10.0.0.5:8080"  # by name: its host
    assert registered_target(view, "10.0.0.5:8081") is None
    assert registered_target(view, "10.0.0.9:8080") is None
    assert registered_target(view, "c-1:9000") == "http://0.0.0.0:9000"  # no host: the default
    assert registered_target(view, "d-1:9443") == "https://10.0.0.6:9443"  # registered with a cert
    for malformed in ("10.0.0.5", "10.0.0.5:", "10.0.0.5:x", "10.0.0.5:0", "h:1:2"):
        assert registered_target(view, malformed) is None


def test_https_targets_need_the_tls_files_and_a_rotation_half_written_keeps_the_last(
    tmp_path: Path,
) -> None:
    """ProxyTLS: no client certificate (or no CA to check agents with) is Go's 500 message;
    files that cannot be used are too, unless a context was built from them before."""
    view = View()
    with pytest.raises(ProxyTLSError, match="missing required TLS environment variables"):
        ProxyTLS(TrustSettings(), view).context()
    ca = CA.make("mesh")
    cert, key = ca.issue("registry").write(tmp_path, "registry")
    settings = TrustSettings(mode="strict", cert=str(cert), key=str(key))
    with pytest.raises(ProxyTLSError, match="missing required"):  # nothing to verify agents by
        ProxyTLS(settings, view).context()
    broken = TrustSettings(mode="strict", cert=str(cert), key=str(cert), ca=str(ca.write(
        tmp_path / "ca.pem")))  # fmt: skip
    with pytest.raises(ProxyTLSError) as refused:
        ProxyTLS(broken, view).context()
    assert str(refused.value) == "Proxy TLS misconfiguration"  # no paths or OS errors said
    proxy_tls = ProxyTLS(replace(broken, key=str(key)), view)
    context = proxy_tls.context()
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    assert proxy_tls.context() is context  # cached while the files stay as they are
    key.write_text("half written")
    assert proxy_tls.context() is context
    ca.issue("registry").write(tmp_path, "registry")  # the rotation completed
    assert proxy_tls.context() is not context


def test_propagated_headers_are_the_fixed_ones_and_those_the_setting_names() -> None:
    """MCP_MESH_PROPAGATE_HEADERS adds exact names and prefixes (case-insensitive) to the fixed
    list, every value of each; never connection headers or Host, never a fixed one twice."""
    patterns = config.load({"MCP_MESH_PROPAGATE_HEADERS": " Authorization,x-tenant-*,, X-Trace-*"})
    assert patterns.propagate_headers == ("authorization", "x-tenant-*", "x-trace-*")
    incoming = CIMultiDict(
        [
            ("Content-Type", "application/json"),
            ("authorization", "Bearer t"),
            ("X-Tenant-Id", "a"),
            ("X-Tenant-Id", "b"),
            ("X-Tenant", "no: the prefix is x-tenant-"),
            ("X-Trace-ID", "t-1"),
            ("X-Trace-Extra", "e"),
            ("Cookie", "c=1"),
            ("Connection", "keep-alive"),
            ("Host", "registry"),
        ]
    )
    assert list(outgoing_headers(incoming, patterns.propagate_headers).items()) == [
        ("Content-Type", "application/json"),
        ("X-Trace-ID", "t-1"),
        ("authorization", "Bearer t"),
        ("X-Tenant-Id", "a"),
        ("X-Tenant-Id", "b"),
        ("X-Trace-Extra", "e"),
    ]
    assert list(outgoing_headers(incoming, ()).items()) == [
        ("Content-Type", "application/json"),
        ("X-Trace-ID", "t-1"),
    ]
    assert propagated("Connection", ("c*",)) is False
    for empty_prefix in ("*", "a,*", " * "):
        with pytest.raises(config.ConfigError, match="MCP_MESH_PROPAGATE_HEADERS"):
            config.load({"MCP_MESH_PROPAGATE_HEADERS": empty_prefix})
