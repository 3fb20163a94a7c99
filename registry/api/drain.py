"""``/admin/drain``: drain mode, as ``meshctl registry drain/resume/status`` drive it.

The Go registry's routes and bodies: ``POST`` turns drain on, ``DELETE`` turns it off, ``GET``
reports; each answers 200 ``{"draining", "live_claims"}`` (live claims: live jobs with an owner)
and ignores any body. While draining a claim gets ``claimed: []``; submissions, batches, events,
releases and reads go on, so running jobs finish.

Unlike Go's in-memory per-replica flag, drain mode is a log entry (``job_drain``) applied into
the view: one command drains every replica, and a restart or a new leader keeps it. A write
answers once its entry is applied here; a status read waits for a barrier first, so through any
replica it reports a drain acknowledged through another (``meshctl registry drain --wait`` gives
up the moment it reads "not draining"). Served with the other admin endpoints
(MCP_MESH_ADMIN_PORT when set); AUTH_TOKEN, when set, guards the writes.
"""

from __future__ import annotations

from aiohttp import web

from registry import jobs
from registry.api.keys import NODE
from registry.api.responses import json_response
from registry.node import Node
from registry.timefmt import now_ms


def _state(node: Node) -> web.Response:
    state = node.view.jobs
    return json_response({"draining": state.draining, "live_claims": state.live_claims()})


async def start_drain(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.propose(jobs.drain(True, now_ms()))
    return _state(node)


async def stop_drain(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.propose(jobs.drain(False, now_ms()))
    return _state(node)


async def drain_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    await node.proposer.barrier()
    return _state(node)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/admin/drain", start_drain),
        web.delete("/admin/drain", stop_drain),
        web.get("/admin/drain", drain_status, allow_head=False),
    ]
