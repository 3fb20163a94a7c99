"""``GET /a2a/agents``: the A2A surfaces of registered ``a2a`` agents (registry/a2a.py)."""

from __future__ import annotations

from aiohttp import web

from registry import a2a
from registry.api.keys import NODE
from registry.api.responses import json_response


async def list_a2a_agents(request: web.Request) -> web.Response:
    node = request.app[NODE]
    registrations = (agent.registration for agent in node.view.agents.values())
    return json_response({"surfaces": a2a.listing(registrations, node.config.public_url_prefix)})


def routes() -> list[web.RouteDef]:
    return [web.get("/a2a/agents", list_a2a_agents, allow_head=False)]
