"""``GET /schemas`` and ``GET /schemas/{hash}``: the canonical schemas registered agents carry.

What ``meshctl list --schemas`` and ``meshctl schema diff`` read, in the Go registry's
SchemaEntriesResponse / SchemaEntryInfo shapes; the entries live in the view
(:class:`registry.schemas.SchemaStore`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry.api.keys import NODE
from registry.api.responses import fail, json_response
from registry.schemas import Entry
from registry.timefmt import iso_ms

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000


def entry_info(entry: Entry) -> dict[str, Any]:
    return {
        "canonical": entry.canonical,
        "created_at": iso_ms(entry.created_ms),
        "hash": entry.hash,
        "runtime_origin": entry.runtime_origin,
    }


def _limit(raw: str | None) -> int:
    """As the Go registry reads it: an integer, clamped to 1..1000; anything else is a 400."""
    if raw is None:
        return LIMIT_DEFAULT
    try:
        limit = int(raw)
    except ValueError:
        fail(400, "limit must be an integer", raw)
    return min(max(limit, 1), LIMIT_MAX)


async def list_schemas(request: web.Request) -> web.Response:
    limit = _limit(request.query.get("limit"))
    entries = request.app[NODE].view.schemas.newest_first()[:limit]
    return json_response({"count": len(entries), "schemas": [entry_info(e) for e in entries]})


async def get_schema(request: web.Request) -> web.Response:
    schema_hash = request.match_info["hash"]
    entry = request.app[NODE].view.schemas.entries.get(schema_hash)
    if entry is None:
        fail(404, f"schema not found: {schema_hash}")
    return json_response(entry_info(entry))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/schemas", list_schemas, allow_head=False),
        web.get("/schemas/{hash}", get_schema, allow_head=False),
    ]
