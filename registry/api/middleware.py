"""Per-request plumbing: request id, JSON errors, access log line, request metrics.

Every response, including aiohttp's own 404/405/413, leaves as JSON; an unexpected exception
is logged with its traceback and answered 500 (a bug by definition: bad input is a 4xx).
Every response says which log index it reflects (``X-Registry-Applied-Index``), who leads
(``X-Registry-Leader``) and, from a node that is not ready, that it may be stale
(``X-Registry-Stale: true``). ``?consistency=linearizable`` on a read first waits for a
barrier (a read index confirmed by a majority), so the answer reflects every write acknowledged
before it.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from registry.api.identity import require_certificate
from registry.api.keys import NODE
from registry.api.responses import ApiError, error_body, json_response
from registry.availability import RequiredLoop
from registry.commit import Unavailable
from registry.limits import Refused

log = logging.getLogger("registry.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ID_PREFIX = secrets.token_hex(4)
_ids = itertools.count(1)


def _request_id() -> str:
    """16 hex digits, unique per process and random across processes. A counter instead of a
    uuid4 per request: at thousands of heartbeats a second that was 3% of a HEAD's cost."""
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFF:08x}"


def _route(request: web.Request) -> str:
    """The route template (``/agents/{agent_id}``), so metrics labels stay bounded."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


def _authorize(request: web.Request, token: str) -> None:
    """With AUTH_TOKEN set, /api/v1 and /admin writes need ``Authorization: Bearer``."""
    if not token or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if not request.path.startswith(("/api/v1/", "/admin/")):
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), token.encode()):
        raise ApiError(401, "missing or wrong bearer token (AUTH_TOKEN is set)")


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request.headers.get("X-Request-Id") or _request_id()
    node = request.app[NODE]
    try:
        require_certificate(request, node.config.trust)
        _authorize(request, node.config.auth_token)
        if request.query.get("consistency") == "linearizable" and request.method in ("GET", "HEAD"):
            await node.proposer.barrier()
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except RequiredLoop as exc:  # 400 where the Go registry answers 200 {"status": "error"}
        response = json_response(error_body(str(exc)), status=400)
    except Refused as exc:
        node.metrics.refused.labels(exc.reason).inc()
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        response = json_response(error_body(exc.message), status=exc.status, headers=headers)
    except Unavailable as exc:
        response = json_response(error_body("registry unavailable", str(exc)), status=503)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            node.metrics.refused.labels("body").inc()
        response = json_response(error_body(exc.reason, exc.text), status=exc.status)
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id})
        response = json_response(error_body("internal error", request_id), status=500)
    elapsed = time.perf_counter() - started
    route = _route(request)
    node.metrics.observe_request(request.method, route, response.status, elapsed)
    response.headers["X-Request-Id"] = request_id
    response.headers["X-Registry-Applied-Index"] = str(node.view.applied_index)
    response.headers["X-Registry-Leader"] = node.proposer.leader()
    if not node.proposer.ready()[0]:
        response.headers["X-Registry-Stale"] = "true"
    # Writes and errors at info; reads (mostly HEAD heartbeats at thousands a second) at debug.
    quiet = request.method in ("GET", "HEAD") and response.status < 400
    level = logging.DEBUG if quiet else logging.INFO
    if not log.isEnabledFor(level):
        return response
    log.log(
        level,
        "request",
        extra={
            "request_id": request_id,
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": response.status,
            "latency_ms": round(elapsed * 1000, 3),
        },
    )
    return response
