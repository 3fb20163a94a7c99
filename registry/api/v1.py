"""The deployment guide's REST API under ``/api/v1`` (operators, scripts, the guide's load test).

Agents registered here join the same population as SDK agents: the body is normalized into a
registration and goes through the same event, view and renderer.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from registry import backup, registration
from registry.api.identity import check_agent
from registry.api.keys import LISTINGS, NODE
from registry.api.render import agent_info, provider_info
from registry.api.responses import JSON, fail, json_response, path_agent_id, read_registration
from registry.store import snapshot_record
from registry.timefmt import iso_ms, now_ms


async def create_agent(request: web.Request) -> web.Response:
    node = request.app[NODE]
    agent = await read_registration(request, registration.from_guide, "agent")
    agent_id = agent["agent_id"]
    check_agent(request, agent_id, agent)
    await node.register(agent, request.remote or "")
    stored = node.view.agents.get(agent_id)
    if stored is None:  # removed by a concurrent DELETE after our write committed
        fail(409, "agent was removed concurrently", agent_id)
    return json_response(agent_info(node.view, stored, node.liveness))


async def list_agents(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await request.app[LISTINGS].everyone(node.view, node.liveness)
    return web.Response(body=body, content_type=JSON)


async def get_agent(request: web.Request) -> web.Response:
    node = request.app[NODE]
    agent = node.view.agents.get(path_agent_id(request, "id"))
    if agent is None:
        fail(404, "agent not found", request.match_info["id"])
    return json_response(agent_info(node.view, agent, node.liveness))


async def delete_agent(request: web.Request) -> web.Response:
    node = request.app[NODE]
    agent_id = path_agent_id(request, "id")
    check_agent(request, agent_id)
    if not await node.unregister(agent_id):
        fail(404, "agent not found", agent_id)
    return json_response({"deleted": agent_id})


async def list_capabilities(request: web.Request) -> web.Response:
    """Each capability with its providers; ``?name=`` and ``?tag=`` narrow the list."""
    node = request.app[NODE]
    name = request.query.get("name")
    tag = request.query.get("tag")
    result = []
    for capability, providers in sorted(node.view.capabilities().items()):
        if name is not None and capability != name:
            continue
        chosen = [p for p in providers if tag is None or tag in p.tags]
        if chosen:
            result.append(
                {
                    "name": capability,
                    "providers": [provider_info(p, node.view) for p in chosen],
                }
            )
    return json_response({"capabilities": result, "count": len(result)})


async def cluster(request: web.Request) -> web.Response:
    """Node id, role, term, leader, members, commit and applied index, log size, and a digest
    of the view (equal on replicas that applied the same log)."""
    node = request.app[NODE]
    return json_response({**node.proposer.status(), "view_digest": node.view.digest()})


async def remove_member(request: web.Request) -> web.Response:
    """Remove a departed member (after a scale-down); refused if it would cost the quorum."""
    member = request.match_info["member"]
    try:
        await request.app[NODE].proposer.remove_member(member)
    except KeyError:
        fail(404, "no such cluster member", member)
    except ValueError as exc:
        fail(409, str(exc), member)
    return json_response({"removed": member})


async def create_backup(request: web.Request) -> web.Response:
    """The view as a backup file, after a barrier: it holds every write acknowledged before
    the request, from any replica. POST because it is an admin action (AUTH_TOKEN applies)."""
    node = request.app[NODE]
    await node.proposer.barrier()
    view = node.view
    index, agents, state = view.applied_index, len(view.agents), view.to_state()
    # The captured state is never mutated by later applies; pack it off the event loop.
    record = await asyncio.get_running_loop().run_in_executor(None, snapshot_record, state)
    body = backup.encode(index, record, node.config.instance_id, agents, iso_ms(now_ms()))
    return web.Response(
        body=body,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="registry-{index}.backup"',
            "X-Registry-Backup-Index": str(index),
        },
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/agents", list_agents, allow_head=False),
        web.post("/api/v1/agents", create_agent),
        web.get("/api/v1/agents/{id}", get_agent, allow_head=False),
        web.delete("/api/v1/agents/{id}", delete_agent),
        web.get("/api/v1/capabilities", list_capabilities, allow_head=False),
        web.get("/api/v1/cluster", cluster, allow_head=False),
        web.delete("/api/v1/cluster/members/{member}", remove_member),
        web.post("/api/v1/backup", create_backup),
    ]
