"""``/admin/entities``: the trusted entity CAs, in the replicated log (registry/trust.py), and
``/admin/rotate``, which asks agents to register again (``meshctl entity rotate``).

``GET`` answers as the Go registry does (``{"entities": [{"name", "subject", "expires"}]}``,
plus the fingerprint). ``POST`` and ``DELETE`` are ours: the Go registry has no write side
(``meshctl entity register`` writes a file to the trust directory, which registry/tls.py's
import also reads). Served on MCP_MESH_ADMIN_PORT when it is set, else on the registry port;
AUTH_TOKEN, when set, guards the writes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry import events, trust
from registry.api.keys import NODE
from registry.api.responses import fail, json_response, read_json
from registry.timefmt import now_ms


def _shown(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: entity[k] for k in ("name", "subject", "expires", "fingerprint")}


async def list_entities(request: web.Request) -> web.Response:
    entities = request.app[NODE].view.entities
    return json_response({"entities": [_shown(entities[n]) for n in sorted(entities)]})


async def register_entity(request: web.Request) -> web.Response:
    """Trust a CA: ``{"name": ..., "ca_cert": PEM, "force": false}``; 201 when new, 200 when
    already trusted as is, 409 for another certificate under the name without ``force``."""
    node = request.app[NODE]
    body = await read_json(request)
    if not isinstance(body, dict):
        fail(400, "expected a JSON object with name and ca_cert")
    name, pem, force = body.get("name"), body.get("ca_cert"), body.get("force", False)
    if not isinstance(name, str) or not isinstance(pem, str) or not isinstance(force, bool):
        fail(400, "name and ca_cert must be strings, force a boolean")
    try:
        record = trust.entity_record(name, pem, now_ms())
    except trust.InvalidEntity as exc:
        fail(400, str(exc), name)
    await node.proposer.barrier()
    current = node.view.entities.get(name)
    if current == record:
        return json_response({"entity": _shown(record)})
    if current is not None and not force:
        fail(409, f"entity {name!r} is registered with another certificate; force replaces it")
    await node.propose(events.trust_entity(record, now_ms()))
    return json_response({"entity": _shown(record)}, status=201)


async def revoke_entity(request: web.Request) -> web.Response:
    node = request.app[NODE]
    name = request.match_info["name"]
    await node.proposer.barrier()
    current = node.view.entities.get(name)
    if current is None:
        fail(404, "entity not found", name)
    committed = await node.propose(events.revoke_entity(name, current["fingerprint"], now_ms()))
    if not committed.took_effect:
        fail(409, "entity was replaced or revoked concurrently", name)
    return json_response({"revoked": name})


ENTITY_ID_MAX = 255


async def rotate(request: web.Request) -> web.Response:
    """``POST /admin/rotate[?entity_id=X]``: every healthy agent of entity X (of any entity
    without it) gets 202 at its next HEAD /heartbeat, registers again with its current
    certificate (checked against the entities trusted now), and a ``rotate`` event is
    recorded for it. Answers as the Go registry: 200 ``{"message", "affected_agents",
    "entity_id"}``; any body is ignored.

    One ``rotate`` log entry, whose apply picks the agents, so every replica marks the same
    ones; when none matches (decided after a barrier) nothing is appended."""
    node = request.app[NODE]
    entity_id = request.query.get("entity_id", "")
    if len(entity_id) > ENTITY_ID_MAX:
        fail(400, f"entity_id must be at most {ENTITY_ID_MAX} characters", entity_id[:64])
    await node.proposer.barrier()
    affected = 0
    if node.view.rotation_targets(entity_id):
        committed = await node.propose(events.rotate(entity_id, now_ms()))
        affected = sum(1 for a in node.view.agents.values() if a.rotation_index == committed.index)
    target = f"entity '{entity_id}'" if entity_id else "all agents"
    return json_response(
        {
            "message": f"Rotation triggered for {target}",
            "affected_agents": affected,
            "entity_id": entity_id,
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.post("/admin/rotate", rotate),
        web.get("/admin/entities", list_entities, allow_head=False),
        web.post("/admin/entities", register_entity),
        web.delete("/admin/entities/{name}", revoke_entity),
    ]
