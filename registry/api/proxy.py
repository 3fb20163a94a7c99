"""``/proxy/{host:port}/mcp...``: MCP calls relayed to registered agents (``meshctl call``).

On Kubernetes agents' ports are not exposed, so ``meshctl call`` sends its JSON-RPC request to
the registry, which forwards it, as the Go registry's proxy does (ent_handlers.go):

- only to an agent of this replica's view (any status) whose HTTP port is the one asked for and
  whose host, agent id or name is the host asked for (the host first), dialled at the host and
  port it registered: never an arbitrary URL (403 otherwise), and only ``/mcp`` paths (400);
- over HTTPS to an agent registered with a client certificate (its listed ``https://``
  endpoint), presenting MCP_MESH_TLS_CERT/KEY and checking the agent's certificate chain
  (:class:`registry.tls.ProxyTLS`); without those files such a call is a 500, as Go answers;
- ``GET`` and ``POST``; the body within MAX_REQUEST_BYTES (413 above, before anything is sent);
  ``Content-Type``, ``Accept``, the trace headers and the mesh's ``X-Mesh-*`` headers forwarded
  (:data:`FORWARDED`), and those MCP_MESH_PROPAGATE_HEADERS names (:func:`outgoing_headers`);
  nothing else (``Authorization``, ``Cookie``: an agent is not the registry's caller's audience);
- the answer is relayed as it arrives (SSE events reach the caller as the agent sends them),
  headers and status as the agent sent them, bytes unchanged (no decompression);
- bounded: connecting within :data:`CONNECT_SECONDS`, the whole exchange within ``X-Mesh-Timeout``
  seconds (1-600) or MCP_MESH_PROXY_TIMEOUT; an SSE answer cut by that budget ends with the
  comment ``: mesh-proxy-timeout budget=<N>s`` meshctl looks for; an agent that cannot be reached
  is a 502; redirects are not followed (they could point anywhere).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from registry.api.keys import NODE
from registry.api.responses import fail
from registry.registration import scheme
from registry.tls import ProxyTLS, ProxyTLSError
from registry.view import View

CONNECT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 600
FORWARDED = (
    "Content-Type",
    "Accept",
    "X-Trace-ID",
    "X-Parent-Span",
    "X-Mesh-Timeout",
    "X-Mesh-Job-Id",
    "X-Mesh-Calling-Job-Id",
    "X-Mesh-Calling-Claim-Epoch",
)
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Transfer-Encoding",
        "Content-Length",
        "Upgrade",
        "TE",
        "Trailer",
    )
)
"""Headers that describe one connection, not the answer: aiohttp writes its own."""
NEVER_PROPAGATED = frozenset({name.lower() for name in FORWARDED} | HOP_BY_HOP | {"host"})
"""Not forwarded again by MCP_MESH_PROPAGATE_HEADERS: the fixed ones are already, one value
each; connection headers and ``Host`` are the client's own."""
TIMEOUT_MARKER = "mesh-proxy-timeout"
CLIENT = web.AppKey("proxy_client", aiohttp.ClientSession)
TLS = web.AppKey("proxy_tls", ProxyTLS)


def registered_target(view: View, host_port: str) -> str | None:
    """``scheme://host:port`` to dial for the ``host_port`` asked for, or None unless a
    registered agent answers there (module docstring). Pure: reads the view only."""
    host, sep, port_text = host_port.partition(":")
    if not sep or not port_text.isdigit() or ":" in port_text or int(port_text) <= 0:
        return None
    port = int(port_text)
    candidates = [
        reg
        for agent in view.agents.values()
        if (reg := agent.registration).get("http_port") == port and reg.get("http_host")
    ]
    for by_host in (True, False):
        for reg in candidates:
            if (reg["http_host"] == host) if by_host else host in (reg["agent_id"], reg["name"]):
                return f"{scheme(reg)}://{reg['http_host']}:{port}"
    return None


def propagated(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether MCP_MESH_PROPAGATE_HEADERS ``patterns`` (lowercased; ``x-*``: a prefix) name the
    header ``name``."""
    lower = name.lower()
    return (
        any(lower.startswith(p[:-1]) if p.endswith("*") else lower == p for p in patterns)
        and lower not in NEVER_PROPAGATED
    )


def outgoing_headers(incoming: Any, patterns: tuple[str, ...]) -> CIMultiDict[str]:
    """The headers a relayed call carries: each :data:`FORWARDED` one the caller sent (its
    first value), then every value of each other header ``patterns`` name, as the Go registry
    forwards them. Pure: ``incoming`` is the caller's (multi-valued) headers."""
    out: CIMultiDict[str] = CIMultiDict(
        (name, incoming[name]) for name in FORWARDED if name in incoming
    )
    for name, value in incoming.items():
        if patterns and propagated(name, patterns):
            out.add(name, value)
    return out


def _budget(request: web.Request, default: float) -> float:
    raw = request.headers.get("X-Mesh-Timeout", "")
    if raw.isdigit() and int(raw) > 0:
        return float(min(int(raw), MAX_TIMEOUT_SECONDS))
    return default


async def relay(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    target = request.match_info["target"]
    host_port, slash, rest = target.partition("/")
    if not slash:
        fail(
            400,
            "Invalid target format: missing path. Expected format: {host}:{port}/mcp/{path}",
            target,
        )
    path = f"/{rest}"
    if path != "/mcp" and not path.startswith("/mcp/"):
        fail(400, "Only /mcp/* paths are allowed for proxying", path)
    base = registered_target(node.view, host_port)
    if base is None:
        fail(403, f"Target host '{host_port}' is not a registered agent", host_port)
    tls: ssl.SSLContext | bool = True  # plain http: unused
    if base.startswith("https:"):
        try:
            tls = request.app[TLS].context()
        except ProxyTLSError as exc:
            fail(500, str(exc), base)
    body = await request.read() if request.method == "POST" else None  # 413 above the limit
    headers = outgoing_headers(request.headers, node.config.propagate_headers)
    budget = _budget(request, node.config.proxy_timeout)
    url = f"{base}{path}"
    if request.query_string:
        url += f"?{request.query_string}"
    timeout = aiohttp.ClientTimeout(total=budget, sock_connect=min(budget, CONNECT_SECONDS))
    try:
        upstream = await request.app[CLIENT].request(
            request.method,
            url,
            data=body,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            ssl=tls,
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        fail(502, f"Failed to reach target agent: {exc or type(exc).__name__}", url)
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        await response.prepare(request)
        sse = upstream.content_type == "text/event-stream"
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except TimeoutError:
            if sse:  # the caller cannot get a status any more; SSE has comments for this
                await response.write(f"\n: {TIMEOUT_MARKER} budget={budget:g}s\n\n".encode())
        except aiohttp.ClientError:
            pass  # the agent went away mid-answer: the caller sees the answer end early
        await response.write_eof()
    return response


async def _client(app: web.Application) -> AsyncIterator[None]:
    """One connection pool for every relayed call; bytes are relayed as sent (no gzip undone)."""
    node = app[NODE]
    app[TLS] = ProxyTLS(node.config.trust, node.view)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        app[CLIENT] = session
        yield


def install(app: web.Application) -> None:
    app.cleanup_ctx.append(_client)
    app.add_routes(routes())


def routes() -> list[web.RouteDef]:
    return [
        web.post("/proxy/{target:.*}", relay),
        web.get("/proxy/{target:.*}", relay, allow_head=False),
    ]
