"""The agent protocol the published MCP Mesh SDK and meshctl speak (CONTRACT.md).

``POST /heartbeat`` is registration and full heartbeat at once. It appends an event only when
something a replica must know changed: the registration itself, the agent's health, or what
its dependencies and LLM functions (``llm_tools``, ``llm_providers``) resolve to since it was
last told (so the agent's next HEAD can be exact).
An unchanged heartbeat only refreshes in-memory liveness.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry import a2a, registration
from registry.api.identity import check_agent
from registry.api.jobs import pending_jobs
from registry.api.keys import LISTINGS, NODE
from registry.api.responses import JSON, fail, json_response, path_agent_id, read_registration
from registry.timefmt import iso_ms, now_ms
from registry.view import HEALTHY, Agent, View

EVENT_TYPES = (
    "register",
    "heartbeat",
    "expire",
    "update",
    "unregister",
    "unhealthy",
    "rotate",
    "dependency_resolved",
    "dependency_unresolved",
)
EVENTS_LIMIT_DEFAULT = 50
EVENTS_LIMIT_MAX = 500


async def heartbeat(request: web.Request) -> web.Response:
    node = request.app[NODE]
    agent = await read_registration(request, registration.from_heartbeat, "registration")
    agent_id = agent["agent_id"]
    check_agent(request, agent_id, agent)
    view = node.view
    known = view.agents.get(agent_id)
    agent = a2a.keep_surfaces(agent, known.registration if known is not None else None)
    new = await node.register(agent, request.remote or "")
    stored = view.agents.get(agent_id)
    resolved = stored.delivered if stored is not None else view.resolution(agent_id)
    answer = view.llm_answer(agent_id)
    body: dict[str, Any] = {"agent_id": agent_id, "dependencies_resolved": resolved}
    if answer.providers:  # as in the Go registry: the key only when something resolved
        body["llm_providers"] = answer.providers
    body["llm_tools"] = answer.tools
    body["message"] = "Agent registered via heartbeat" if new else "Agent updated via heartbeat"
    body["status"] = "success"
    if stored is not None and (
        surfaces := a2a.shown(stored.registration, node.config.public_url_prefix)
    ):
        body["surfaces"] = surfaces
    body["timestamp"] = iso_ms(now_ms())
    return json_response(body)


def _head(status: int, pending_jobs: int = 0) -> web.Response:
    """An answer to HEAD /heartbeat with an explicit ``Content-Length: 0``.

    aiohttp leaves the length out of HEAD answers, and clients that then cannot tell where the
    answer ends (aiohttp's own, for one) close the connection: every heartbeat of every agent
    became a new TCP connection, most of the cost of a HEAD on both sides.
    """
    headers = {"Content-Length": "0"}
    if pending_jobs:  # as in the Go registry: absent when there is no pending work
        headers["X-Mesh-Pending-Jobs"] = str(pending_jobs)
    return web.Response(status=status, headers=headers)


async def heartbeat_check(request: web.Request) -> web.Response:
    """HEAD /heartbeat/{id}: 200 unchanged, 202 send a full POST, 410 unknown or unhealthy,
    503 trouble."""
    node = request.app[NODE]
    agent_id = path_agent_id(request, "agent_id")
    check_agent(request, agent_id)
    ok, _ = node.proposer.ready()
    if not ok:
        return _head(503)
    agent = node.view.agents.get(agent_id)
    if agent is None:
        return _head(410)
    # As in the Go registry, an agent marked unhealthy gets 410: the SDK then re-registers with a
    # full POST, which is what records its recovery in the log for every replica.
    if agent.status != HEALTHY:
        return _head(410)
    node.liveness.seen(agent_id)
    pending = pending_jobs(node.view, agent_id)
    if node.view.needs_full_heartbeat(agent_id):
        return _head(202, pending)
    return _head(200, pending)


async def list_agents(request: web.Request) -> web.Response:
    node = request.app[NODE]
    view = node.view
    namespace = request.query.get("namespace")
    status = request.query.get("status")
    listings = request.app[LISTINGS]
    if namespace is None and status is None:
        body = await listings.everyone(view, node.liveness)
        return web.Response(body=body, content_type=JSON)

    def select(view: View) -> list[Agent]:
        return [
            agent
            for agent in view.agents.values()
            if (namespace is None or agent.registration.get("namespace") == namespace)
            and (status is None or agent.status == status)
        ]

    body = await listings.body(view, select, node.liveness)
    return web.Response(body=body, content_type=JSON)


async def unregister(request: web.Request) -> web.Response:
    node = request.app[NODE]
    agent_id = path_agent_id(request, "agent_id")
    check_agent(request, agent_id)
    if not await node.unregister(agent_id):
        fail(404, "agent not found", agent_id)
    return web.Response(status=204)


def _limit(raw: str | None) -> int:
    if raw is None:
        return EVENTS_LIMIT_DEFAULT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= EVENTS_LIMIT_MAX:
        fail(400, f"limit must be an integer from 1 to {EVENTS_LIMIT_MAX}", raw)
    return limit


async def list_events(request: web.Request) -> web.Response:
    """Newest-first registry events: a window on the log, kept in the view's history."""
    node = request.app[NODE]
    query = request.query
    event_type = query.get("type")
    if event_type is not None and event_type not in EVENT_TYPES:
        fail(400, f"type must be one of {', '.join(EVENT_TYPES)}", event_type)
    agent_id = query.get("agent_id")
    if agent_id is not None and not registration.valid_agent_id(agent_id):
        fail(400, "invalid agent_id: expected 1-64 characters of [A-Za-z0-9_-]", agent_id)
    function_name = query.get("function_name")
    limit = _limit(query.get("limit"))
    selected: list[dict[str, Any]] = []
    for item in reversed(node.view.history):
        if event_type is not None and item["event_type"] != event_type:
            continue
        if agent_id is not None and item["agent_id"] != agent_id:
            continue
        if function_name is not None and item.get("function_name") != function_name:
            continue
        shown = {
            "event_type": item["event_type"],
            "agent_id": item["agent_id"],
            "agent_name": item["agent_name"],
            "timestamp": iso_ms(item["timestamp_ms"]),
            "data": {**item["data"], "log_index": item["index"]},
        }
        if "function_name" in item:  # the audit's events name the consumer's function
            shown["function_name"] = item["function_name"]
        selected.append(shown)
        if len(selected) >= limit:
            break
    return json_response({"events": selected, "count": len(selected)})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/heartbeat", heartbeat),
        web.head("/heartbeat/{agent_id}", heartbeat_check),
        web.get("/agents", list_agents, allow_head=False),
        web.delete("/agents/{agent_id}", unregister),
        web.get("/events", list_events, allow_head=False),
    ]
