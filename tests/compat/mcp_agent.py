"""A small MCP-shaped agent for proxy tests: ``python -m tests.compat.mcp_agent PORT``, or
``... PORT CERT KEY CLIENT_CA`` to serve HTTPS (as an SDK agent with a certificate does) and
require a client certificate issued by CLIENT_CA.

It answers JSON-RPC ``tools/call`` on ``POST /mcp`` the way FastMCP's streamable HTTP transport
does for ``Accept: application/json, text/event-stream`` (one SSE ``message`` event with the
result), and, with ``Accept: application/json`` only, as a plain JSON body. Tools:

- ``echo {text}``: the text back as MCP text content;
- ``count {n}``: ``n`` progress notifications, then the result, each as its own SSE event;
  the result waits for the next ``POST /release`` (so a test can see events arrive while the
  answer is still open, and a timeout cut it);
- ``headers``: the request headers it received, as JSON text (one value per name);
- ``header_list``: every ``[name, value]`` header line it received, in order, as JSON text;
- ``peer``: the common name of the client certificate the caller presented (HTTPS only).

``GET /mcp`` answers 405 (no server-initiated stream), as FastMCP's stateless mode does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
from typing import Any

from aiohttp import web

PENDING = web.AppKey("pending", list[asyncio.Event])
TOOLS = ("echo", "count", "headers", "header_list", "peer")


def _result(call_id: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id,
            "result": {"content": [{"type": "text", "text": text}], "isError": False}}  # fmt: skip


def _event(message: dict[str, Any]) -> bytes:
    return f"event: message\ndata: {json.dumps(message)}\n\n".encode()


async def mcp(request: web.Request) -> web.StreamResponse:
    call = await request.json()
    params = call.get("params") or {}
    name, args = params.get("name"), params.get("arguments") or {}
    if call.get("method") != "tools/call" or name not in TOOLS:
        error = {"code": -32601, "message": f"unknown: {call.get('method')} {name}"}
        return web.json_response({"jsonrpc": "2.0", "id": call.get("id"), "error": error})
    if name == "headers":
        text = json.dumps(dict(request.headers), sort_keys=True)
    elif name == "header_list":
        text = json.dumps([[k, v] for k, v in request.headers.items()])
    elif name == "peer":
        text = _peer_common_name(request)
    else:
        text = str(args.get("text", "")) if name == "echo" else f"counted {args.get('n', 0)}"
    if "text/event-stream" not in request.headers.get("Accept", ""):
        return web.json_response(_result(call.get("id"), text))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if name == "count":
        for i in range(int(args.get("n", 0))):
            progress = {"progressToken": 1, "progress": i + 1}
            note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": progress}
            await response.write(_event(note))
        held = asyncio.Event()
        request.app[PENDING].append(held)
        await held.wait()
    with contextlib.suppress(ConnectionResetError):  # a caller that gave up (a budget cut)
        await response.write(_event(_result(call.get("id"), text)))
        await response.write_eof()
    return response


async def release(request: web.Request) -> web.Response:
    for held in request.app[PENDING]:
        held.set()
    request.app[PENDING].clear()
    return web.Response(text="released")


async def no_stream(request: web.Request) -> web.Response:
    return web.json_response({"error": "no server-initiated stream"}, status=405)


def app() -> web.Application:
    application = web.Application()
    application[PENDING] = []
    application.add_routes(
        [web.post("/mcp", mcp), web.get("/mcp", no_stream), web.post("/release", release)]
    )
    return application


def _peer_common_name(request: web.Request) -> str:
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _server_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


if __name__ == "__main__":
    tls = _server_context(*sys.argv[2:5]) if len(sys.argv) == 5 else None
    web.run_app(app(), host="127.0.0.1", port=int(sys.argv[1]), ssl_context=tls, print=None)
