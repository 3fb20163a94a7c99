"""JSON bodies in and out, and the error shape every 4xx/5xx uses.

Errors are ``{"error": message, "detail": ..., "timestamp": ...}`` (CONTRACT.md plus the Go
registry's ErrorResponse ``timestamp``), raised as :class:`ApiError` so a handler stops at the
first bad input, before anything is proposed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import orjson
from aiohttp import web

from registry.registration import InvalidRegistration, valid_agent_id
from registry.timefmt import iso_ms, now_ms

JSON = "application/json"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def error_body(message: str, detail: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message, "timestamp": iso_ms(now_ms())}
    if detail is not None:
        body["detail"] = detail
    return body


class ApiError(Exception):
    """A request that gets a JSON error; the middleware turns it into the response."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail

    def response(self) -> web.Response:
        return json_response(error_body(self.message, self.detail), status=self.status)


def fail(status: int, message: str, detail: Any = None) -> NoReturn:
    """Stop the handler with a JSON error response."""
    raise ApiError(status, message, detail)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 400 for anything that is not JSON, 413 above the size limit."""
    raw = await request.read()
    if not raw:
        fail(400, "request body is empty: expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fail(400, "request body is not valid JSON", str(exc))


def path_agent_id(request: web.Request, name: str) -> str:
    """The agent id in the URL path segment ``name``; 400 unless it is a valid id."""
    agent_id = request.match_info[name]
    if not valid_agent_id(agent_id):
        fail(400, f"invalid {name}: expected 1-64 characters of [A-Za-z0-9_-]", agent_id)
    return agent_id


async def read_registration(
    request: web.Request, parse: Callable[[Any], dict[str, Any]], what: str
) -> dict[str, Any]:
    """The request body parsed into a normalized registration by ``parse``; 400 if invalid."""
    try:
        return parse(await read_json(request))
    except InvalidRegistration as exc:
        fail(400, f"invalid {what}: {exc}", exc.field or None)
