"""Application factories: the API app and the metrics-only app for METRICS_PORT."""

from __future__ import annotations

from aiohttp import web

from registry.api import a2a, admin, drain, jobs, ops, protocol, proxy, schemas, v1
from registry.api.keys import LISTINGS, NODE
from registry.api.listing import Listings
from registry.api.middleware import observe
from registry.node import Node


def build_app(node: Node) -> web.Application:
    # Bodies over MAX_REQUEST_BYTES are refused with 413 before a handler sees them.
    app = web.Application(middlewares=[observe], client_max_size=node.config.limits.request_bytes)
    app[NODE] = node
    app[LISTINGS] = Listings()
    runtime = app[jobs.RUNTIME] = jobs.JobsRuntime()
    node.machine.listeners.append(runtime.on_applied)
    app.on_cleanup.append(runtime.close)
    app.add_routes(ops.routes() + protocol.routes() + v1.routes() + jobs.routes())
    app.add_routes(schemas.routes() + a2a.routes())
    proxy.install(app)
    if not node.config.trust.admin_port:  # else only on the admin port (build_admin_app)
        app.add_routes(_admin_routes())
    return app


def build_admin_app(node: Node) -> web.Application:
    """MCP_MESH_ADMIN_PORT: the admin endpoints alone, so a NetworkPolicy can keep agents off."""
    app = web.Application(middlewares=[observe], client_max_size=node.config.limits.request_bytes)
    app[NODE] = node
    app.add_routes(_admin_routes())
    return app


def _admin_routes() -> list[web.RouteDef]:
    """Where the Go registry serves them: on the admin port when there is one, else here."""
    return admin.routes() + drain.routes()


def build_metrics_app(node: Node) -> web.Application:
    app = web.Application()
    app[NODE] = node
    app.add_routes([web.get("/metrics", ops.metrics)])
    return app
