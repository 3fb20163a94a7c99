"""The chaos client's outcomes on real sockets: what it records must be what can have happened.

aiohttp retries an idempotent request (DELETE) on a new connection when a kept-alive one
breaks. A replica that carried out a delete and died before answering therefore shows the
client a refused connection on the retry: recording that as a failure would tell the checker
the delete never happened (a chaos run reported exactly that as a linearizability violation).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from jepsen_like import job_checkers, jobs
from jepsen_like.client import Recorder, _invoke
from jepsen_like.history import (
    DELETE,
    FAIL,
    INFO,
    JOB_BATCH,
    JOB_CANCEL,
    JOB_CLAIM,
    JOB_CREATE,
    JOB_READ,
    OK,
    WRITE,
    operations,
    read_events,
)
from jepsen_like.recorder import never_applied
from tests.ports import free_port
from tests.postgres import Postgres
from tests.processes import Registry
from tests.timing import scaled


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


async def test_the_job_clients_record_what_a_real_registry_answered(tmp_path: Path) -> None:
    """Against one registry process with a 1 s sweep: a job created, claimed by A, A stalls,
    the lease runs out and B reclaims it (epoch 2), A's late progress is recorded as
    ``claim_superseded``, B completes it, a read sees it completed and a cancel finds it
    terminal; the final listing has B's result, and every job checker passes the history."""
    node = Registry(tmp_path / "r", MCP_MESH_SWEEP_INTERVAL="1s").start()
    record = Recorder(tmp_path / "history.jsonl")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            urls = [node.url]
            submit = jobs.JobClient(session, record, 300, urls)
            spec = {"capability": "jc0", "max_duration": jobs.LEASE_S, "max_retries": 3}
            body = {**spec, "submitted_by": "s", "submitted_payload": {"token": "t"}}
            created, job_id = await submit.call(JOB_CREATE, "t", spec, 0, "POST", "/jobs", body)
            assert created == OK
            for process, agent in ((400, "jw0"), (401, "jw1")):  # healthy owners: only the
                # lease can end their claims
                await _invoke(session, record, process, WRITE, agent, "127.0.0.1:9", node.url, "n0")
            a = jobs.Producer(jobs.JobClient(session, record, 200, urls), "jw0")
            b = jobs.Producer(jobs.JobClient(session, record, 201, urls), "jw1")
            step = jobs.ProduceStep(0, "jc0", jobs.PROGRESS, 0.5, 0.0)
            await a.act(step)
            assert a.held is not None and a.held.epoch == 1
            deadline = time.monotonic() + scaled(20)
            while b.held is None and time.monotonic() < deadline:
                await b.act(step)  # claims until the sweep has taken the job back from A
                await asyncio.sleep(0.1)
            assert b.held is not None and b.held.epoch == 2
            await a.act(step)  # A's progress, one epoch late
            assert a.held is None
            await b.act(jobs.ProduceStep(0, "jc0", jobs.COMPLETE, 0.0, 0.0))
            assert b.held is None
            path = f"/jobs/{job_id}"
            await submit.call(
                JOB_READ, "t", None, 0, "GET", path + "?consistency=linearizable", None
            )
            await submit.call(JOB_CANCEL, "t", None, 0, "POST", path + "/cancel", {})
            final = await jobs.final_jobs(session, urls)
    finally:
        node.stop()
    record.out.close()
    ops = operations(read_events(tmp_path / "history.jsonl"))
    answers = [(o.f, o.process, o.result if o.f != JOB_CLAIM else bool(o.result)) for o in ops]
    assert answers[0] == (JOB_CREATE, 300, job_id)
    assert all(o.outcome == OK for o in ops)
    assert (JOB_BATCH, 200, "claim_superseded") in answers
    assert answers[-3:] == [
        (JOB_BATCH, 201, "accepted"),
        (JOB_READ, 300, {**ops[-2].result, "status": "completed"}),
        (JOB_CANCEL, 300, "terminal"),
    ]
    result = ops[-3].value["result"]
    assert (
        final["n0"] is not None and final["n0"]["t"]["result"] == result == ops[-2].result["result"]
    )
    assert final["n0"]["t"]["epoch"] == 2
    assert job_checkers.lost_jobs(ops, final)["valid"]
    assert job_checkers.overlapping_claims(ops, 10 * 10**9, 4 * 10**9)["valid"]
    assert job_checkers.completed_results(ops, final)["checked"] == 1
    assert job_checkers.completed_results(ops, final)["valid"]
    assert job_checkers.terminal_stays(ops, final)["valid"]


async def test_postgresql_refusals_that_never_applied_are_failures_the_rest_unknown(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    """A PostgreSQL-mode replica whose database is down refuses a write before queueing it
    ("database ... unreachable"): the client records a definite failure, which the checkers
    then hold the registry to. Outcome-unknown answers of either mode stay unknown."""
    node = Registry(tmp_path / "r", **postgres.env, WRITE_TIMEOUT="3s")
    registries.append(node.start())
    record = Recorder(tmp_path / "history.jsonl")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:
            async with session.get(f"{node.url}/ready") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        await _invoke(session, record, 0, WRITE, "k", "h:1", node.url, "n0", "v1")
        await asyncio.to_thread(postgres.stop, "immediate")
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:  # until the replica has noticed
            async with session.get(f"{node.url}/ready") as resp:
                if "unreachable" in await resp.text():
                    break
            await asyncio.sleep(0.1)
        await _invoke(session, record, 0, WRITE, "k", "h:2", node.url, "n0", "v1")
    record.out.close()
    completions = [o for o in _outcomes(tmp_path / "history.jsonl") if o[1] != "invoke"]
    assert completions == [(WRITE, OK), (WRITE, FAIL)]
    assert never_applied("log append failed (duplicate key); not committed")
    assert never_applied("no reachable leader (this node cannot reach a majority)")
    for unknown in (
        "not committed within 5s; outcome unknown",  # Raft's
        "append not confirmed (connection lost); outcome unknown",
        "committed at index 7, applied here by a snapshot; outcome unknown",
    ):
        assert not never_applied(unknown), unknown
