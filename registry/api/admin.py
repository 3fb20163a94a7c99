"""``/admin/entities``: the trusted entity CAs, in the replicated log (registry/trust.py).

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


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/entities", list_entities, allow_head=False),
        web.post("/admin/entities", register_entity),
        web.delete("/admin/entities/{name}", revoke_entity),
    ]
