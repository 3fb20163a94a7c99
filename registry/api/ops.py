"""Operations endpoints: liveness, readiness, metrics and the endpoint index."""

from __future__ import annotations

import time

from aiohttp import web

from registry import __version__
from registry.api.keys import NODE
from registry.api.responses import error_body, json_response
from registry.metrics import CONTENT_TYPE
from registry.timefmt import iso_ms, now_ms

SERVICE = "mcp-mesh-registry"
ENDPOINTS = [
    "/health",
    "/ready",
    "/metrics",
    "/heartbeat",
    "/heartbeat/{agent_id}",
    "/agents",
    "/agents/{agent_id}",
    "/events",
    "/api/v1/agents",
    "/api/v1/agents/{id}",
    "/api/v1/capabilities",
]


async def health(request: web.Request) -> web.Response:
    """200 while the process serves (the liveness probe): never depends on the cluster."""
    node = request.app[NODE]
    return json_response(
        {
            "status": "healthy",
            "service": SERVICE,
            "version": __version__,
            "uptime_seconds": int(time.monotonic() - node.started_monotonic),
            "timestamp": iso_ms(now_ms()),
        }
    )


async def ready(request: web.Request) -> web.Response:
    """200 only when this node can serve consistent data (the readiness probe)."""
    node = request.app[NODE]
    ok, reason = node.proposer.ready()
    if not ok:
        return json_response(error_body("not ready", reason), status=503)
    return json_response(
        {"status": "ready", "reason": reason, "applied_index": node.view.applied_index}
    )


async def metrics(request: web.Request) -> web.Response:
    body = request.app[NODE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def root(request: web.Request) -> web.Response:
    return json_response(
        {"service": SERVICE, "version": __version__, "status": "running", "endpoints": ENDPOINTS}
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/health", health),  # GET also answers HEAD
        web.get("/ready", ready),
        web.get("/metrics", metrics),
        web.get("/", root),
    ]
