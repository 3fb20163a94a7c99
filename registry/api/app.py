"""Application factories: the API app and the metrics-only app for METRICS_PORT."""

from __future__ import annotations

from aiohttp import web

from registry.api import admin, ops, protocol, v1
from registry.api.keys import LISTINGS, NODE
from registry.api.listing import Listings
from registry.api.middleware import observe
from registry.node import Node


def build_app(node: Node) -> web.Application:
    # Bodies over MAX_REQUEST_BYTES are refused with 413 before a handler sees them.
    app = web.Application(middlewares=[observe], client_max_size=node.config.limits.request_bytes)
    app[NODE] = node
    app[LISTINGS] = Listings()
    app.add_routes(ops.routes() + protocol.routes() + v1.routes())
    if not node.config.trust.admin_port:  # else only on the admin port (build_admin_app)
        app.add_routes(admin.routes())
    return app


def build_admin_app(node: Node) -> web.Application:
    """MCP_MESH_ADMIN_PORT: the admin endpoints alone, so a NetworkPolicy can keep agents off."""
    app = web.Application(middlewares=[observe], client_max_size=node.config.limits.request_bytes)
    app[NODE] = node
    app.add_routes(admin.routes())
    return app


def build_metrics_app(node: Node) -> web.Application:
    app = web.Application()
    app[NODE] = node
    app.add_routes([web.get("/metrics", ops.metrics)])
    return app
