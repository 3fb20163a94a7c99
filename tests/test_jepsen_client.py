"""The chaos client's outcomes on real sockets: what it records must be what can have happened.

aiohttp retries an idempotent request (DELETE) on a new connection when a kept-alive one
breaks. A replica that carried out a delete and died before answering therefore shows the
client a refused connection on the retry: recording that as a failure would tell the checker
the delete never happened (a chaos run reported exactly that as a linearizability violation).
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from aiohttp import web

from jepsen_like.client import Recorder, _invoke
from jepsen_like.history import DELETE, FAIL, INFO, OK, WRITE
from tests.processes import free_port


async def _dying_server(port: int, carried_out: list[str]) -> web.AppRunner:
    """Answers the first request normally; on a DELETE it records it, stops listening and
    drops the connection without an answer (a replica killed right after applying it)."""
    sites: list[web.TCPSite] = []

    async def delete(request: web.Request) -> web.StreamResponse:
        carried_out.append(request.path)
        await sites[0].stop()
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def post(_request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.delete("/api/v1/agents/{id}", delete), web.post("/heartbeat", post)])
    runner = web.AppRunner(app)
    await runner.setup()
    sites.append(web.TCPSite(runner, "127.0.0.1", port))
    await sites[0].start()
    return runner


def _outcomes(path: Path) -> list[tuple[str, str]]:
    return [(e["f"], e["type"]) for e in map(json.loads, path.read_text().splitlines())]


async def test_a_delete_carried_out_before_the_replica_died_is_unknown_not_failed(
    tmp_path: Path,
) -> None:
    port = free_port()
    carried_out: list[str] = []
    runner = await _dying_server(port, carried_out)
    record = Recorder(tmp_path / "history.jsonl")
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            # A write first, so the delete goes out on a kept-alive connection.
            await _invoke(session, record, 0, WRITE, "k", "h:1", url, "n0", "heartbeat")
            await _invoke(session, record, 0, DELETE, "k", None, url, "n0")
            await _invoke(session, record, 0, WRITE, "k", "h:2", url, "n0", "heartbeat")
    finally:
        await runner.cleanup()
    record.out.close()
    assert carried_out == ["/api/v1/agents/k"]
    outcomes = _outcomes(tmp_path / "history.jsonl")
    completions = [o for o in outcomes if o[1] != "invoke"]
    # The write before: ok; the delete (carried out, then no answer): unknown; the write after
    # (connection refused, nothing sent): a definite failure.
    assert completions == [(WRITE, OK), (DELETE, INFO), (WRITE, FAIL)]
