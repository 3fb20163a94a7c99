"""The /jobs endpoints over a real socket on one node (real LMDB), as the SDK uses them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from registry.api.jobs import render
from tests.conftest import Api, agent_body, eventually, steadily

pytestmark = pytest.mark.storages("lmdb", "postgresql")

NEW_JOB = {"capability": "render", "submitted_by": "consumer", "submitted_payload": {"n": 1}}


async def create(api: Api, **fields: Any) -> str:
    answer = await api.client.post("/jobs", json={**NEW_JOB, **fields})
    assert answer.status == 201, await answer.text()
    body = await answer.json()
    assert body["status"] == "working"
    return str(body["id"])


async def call(api: Api, method: str, path: str, status: int, **kwargs: Any) -> Any:
    answer = await api.client.request(method, path, **kwargs)
    assert answer.status == status, await answer.text()
    return await answer.json()


async def test_a_job_runs_from_submit_to_result(api: Api) -> None:
    job_id = await create(api, max_retries=2)
    claim = await call(
        api, "POST", "/jobs/claim", 200, json={"capability": "render", "instance_id": "p1"}
    )
    [claimed] = claim["claimed"]
    assert (claimed["id"], claimed["attempt_count"], claimed["claim_epoch"]) == (job_id, 1, 1)
    assert claimed["submitted_payload"] == {"n": 1}
    again = await call(
        api, "POST", "/jobs/claim", 200, json={"capability": "render", "instance_id": "p2"}
    )
    assert again == {"claimed": []}
    deltas = [{"id": job_id, "claim_epoch": 1, "progress": 0.5, "progress_message": "half"}]
    batch = await call(
        api, "POST", "/jobs/batch", 200, json={"instance_id": "p1", "deltas": deltas}
    )
    assert batch == {"accepted": 1, "rejected": []}
    done = [{"id": job_id, "claim_epoch": 1, "status": "completed", "result": {"report": "ok"}}]
    await call(api, "POST", "/jobs/batch", 200, json={"instance_id": "p1", "deltas": done})
    job = await call(api, "GET", f"/jobs/{job_id}", 200)
    assert (job["status"], job["result"], job["progress"]) == ("completed", {"report": "ok"}, 0.5)
    assert job["owner_instance_id"] == "p1"
    listed = await call(api, "GET", "/jobs?status=completed", 200)
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    await call(api, "POST", f"/jobs/{job_id}/cancel", 409)


async def test_bad_input_is_a_4xx_and_changes_nothing(api: Api) -> None:
    job_id = await create(api)
    before = api.log_index
    bad: list[tuple[str, str, Any, int]] = [
        ("POST", "/jobs", {**NEW_JOB, "submitted_payload": [1]}, 400),
        ("POST", "/jobs", {**NEW_JOB, "max_retries": -1}, 400),
        ("POST", "/jobs", {**NEW_JOB, "max_duration": 0}, 400),
        ("POST", "/jobs", {"capability": "x", "submitted_payload": {}}, 400),
        ("POST", "/jobs/batch", {"instance_id": "p", "deltas": []}, 400),
        (
            "POST",
            "/jobs/batch",
            {"instance_id": "p", "deltas": [{"id": job_id, "progress": "x"}]},
            400,
        ),
        ("POST", "/jobs/claim", {"capability": "render"}, 400),
        ("POST", f"/jobs/{job_id}/release", {"reason": "r"}, 400),
        ("POST", f"/jobs/{job_id}/release", {"instance_id": "not-owner"}, 403),
        ("POST", f"/jobs/{job_id}/events", {"type": " "}, 400),
        ("POST", "/jobs/nope/cancel", None, 404),
        ("POST", "/jobs/nope/reclaim", None, 404),
        ("GET", "/jobs?limit=0", None, 400),
        ("GET", "/jobs?status=running", None, 400),
        ("GET", "/jobs?cursor=zzz", None, 400),
        ("GET", f"/jobs/{job_id}/events?instance_id=p1", None, 400),
        ("GET", f"/jobs/{job_id}/events?after=x", None, 400),
        ("GET", "/jobs/nope", None, 404),
    ]
    for method, path, body, status in bad:
        answer = await api.client.request(method, path, json=body)
        assert answer.status == status, (method, path, await answer.text())
        assert "error" in await answer.json()
    raw = await api.client.post(
        "/jobs", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert raw.status == 400
    assert api.log_index == before


async def test_list_pages_newest_first(api: Api) -> None:
    ids = [await create(api) for _ in range(5)]
    seen: list[str] = []
    cursor = ""
    while True:
        page = await call(api, "GET", f"/jobs?limit=2{'&cursor=' + cursor if cursor else ''}", 200)
        seen += [j["id"] for j in page["jobs"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    jobs = api.node.view.jobs.jobs
    assert seen == sorted(ids, key=lambda i: (jobs[i].submitted_ms, i), reverse=True)


async def test_events_long_poll_wakes_on_a_post_and_cancel_posts_one(api: Api) -> None:
    job_id = await create(api)
    started = time.monotonic()
    poll = asyncio.ensure_future(call(api, "GET", f"/jobs/{job_id}/events?wait=30", 200))
    await asyncio.sleep(0.2)
    assert not poll.done()
    posted = await call(
        api, "POST", f"/jobs/{job_id}/events", 200, json={"type": "input", "payload": 7}
    )
    got = await poll
    assert time.monotonic() - started < 10
    assert [(e["seq"], e["type"], e["payload"]) for e in got["events"]] == [
        (posted["seq"], "input", 7)
    ]
    assert got["next_after"] == posted["seq"]
    await call(api, "POST", f"/jobs/{job_id}/cancel", 200, json={"reason": "user"})
    after = await call(
        api, "GET", f"/jobs/{job_id}/events?after={posted['seq']}&types=cancelled", 200
    )
    assert [(e["type"], e["payload"]) for e in after["events"]] == [
        ("cancelled", {"reason": "user"})
    ]
    await call(api, "POST", f"/jobs/{job_id}/events", 409, json={"type": "late"})


async def test_heartbeat_says_how_many_jobs_wait_for_the_agent(api: Api) -> None:
    await call(api, "POST", "/heartbeat", 200, json=agent_body("renderer-1", "render"))
    answer = await api.client.head("/heartbeat/renderer-1")
    assert answer.status == 200 and "X-Mesh-Pending-Jobs" not in answer.headers
    for _ in range(3):
        await create(api)
    await create(api, capability="other")
    answer = await api.client.head("/heartbeat/renderer-1")
    assert answer.headers["X-Mesh-Pending-Jobs"] == "3"


async def test_a_silent_owner_loses_its_lease_and_a_second_claim_is_fenced(
    start_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await start_api(sweep_interval=0.2)
    await call(api, "POST", "/heartbeat", 200, json=agent_body("p1", "render"))
    job_id = await create(api, max_duration=1, max_retries=1)
    await call(api, "POST", "/jobs/claim", 200, json={"capability": "render", "instance_id": "p1"})
    await eventually(lambda: api.node.view.jobs.jobs[job_id].owner is None, timeout=10)
    claim = await call(
        api, "POST", "/jobs/claim", 200, json={"capability": "render", "instance_id": "p1"}
    )
    assert claim["claimed"][0]["claim_epoch"] == 2
    stale = [{"id": job_id, "claim_epoch": 1, "status": "completed"}]
    batch = await call(api, "POST", "/jobs/batch", 200, json={"instance_id": "p1", "deltas": stale})
    assert batch["rejected"] == [{"id": job_id, "reason": "claim_superseded"}]
    fenced = await api.client.get(f"/jobs/{job_id}/events?instance_id=p1&claim_epoch=1")
    assert fenced.status == 409 and (await fenced.json())["error"] == "claim_superseded"
    # the second attempt was the last: its lease running out fails the job
    await eventually(lambda: api.node.view.jobs.jobs[job_id].terminal, timeout=10)
    job = render(api.node.view.jobs.jobs[job_id])
    assert (job["status"], job["error"]) == (
        "failed",
        "lease expired: no completion within lease window",
    )


async def test_cancel_is_forwarded_to_the_owner_agent(
    start_api: Callable[..., Awaitable[Api]],
) -> None:
    received: list[tuple[str, Any]] = []

    async def owner_cancel(request: web.Request) -> web.Response:
        received.append((request.match_info["job_id"], await request.json()))
        return web.json_response({})

    owner = web.Application()
    owner.add_routes([web.post("/jobs/{job_id}/cancel", owner_cancel)])
    server = TestServer(owner, host="127.0.0.1")
    await server.start_server()
    try:
        api = await start_api(cancel_grace=0.0)
        port = server.port
        await call(api, "POST", "/heartbeat", 200, json=agent_body("worker-1", "render", port=port))
        job_id = await create(api)
        await call(
            api,
            "POST",
            "/jobs/claim",
            200,
            json={"capability": "render", "instance_id": "worker-1"},
        )
        answer = await call(api, "POST", f"/jobs/{job_id}/cancel", 200, json={"reason": "stop"})
        assert answer == {"forwarded_to_instance_id": "worker-1", "status": "cancelled"}
        await eventually(lambda: received == [(job_id, {"reason": "stop"})])
    finally:
        await server.close()


async def test_metrics_count_jobs_by_status(api: Api) -> None:
    await create(api)
    await create(api)
    text = await (await api.client.get("/metrics")).text()
    assert 'mcp_registry_jobs_total{status="working"} 2.0' in text
    assert 'mcp_registry_jobs_total{status="completed"} 0.0' in text


async def test_only_the_owners_event_reads_extend_its_lease(
    start_api: Callable[..., Awaitable[Api]],
) -> None:
    """As in the Go registry, ``GET /jobs/{id}/events`` with the owner's instance_id and
    claim_epoch (an executor read) extends the lease; ``GET /jobs/{id}`` and observer reads of
    the events do not, so a handler that only reads its job loses it when the lease runs out."""
    api = await start_api(sweep_interval=0.1)
    await call(api, "POST", "/heartbeat", 200, json=agent_body("p1", "render"))
    job_id = await create(api, max_duration=2)
    await call(api, "POST", "/jobs/claim", 200, json={"capability": "render", "instance_id": "p1"})

    async def polled_and_owned() -> bool:
        await call(api, "GET", f"/jobs/{job_id}/events?instance_id=p1&claim_epoch=1", 200)
        await asyncio.sleep(0.2)
        return api.node.view.jobs.jobs[job_id].owner == "p1"

    await steadily(polled_and_owned, duration=5)  # 2.5 lease windows
    index = api.log_index

    async def observed() -> bool:
        await call(api, "GET", f"/jobs/{job_id}", 200)
        await call(api, "GET", f"/jobs/{job_id}/events", 200)
        return api.node.view.jobs.jobs[job_id].owner is None

    await eventually(observed, timeout=10)
    job = api.node.view.jobs.jobs[job_id]
    assert (job.status, job.attempts[-1]["end"]) == ("working", "lease_expired")
    assert api.log_index == index + 1  # only the sweep's entry: the reads wrote nothing


async def test_the_claim_gate_keeps_a_job_from_a_claimer_missing_a_required_dependency(
    api: Api,
) -> None:
    required = {"capability": "db", "required": True}
    worker = agent_body("w1", "render", deps=[required])
    await call(api, "POST", "/heartbeat", 200, json=worker)
    relaxed = agent_body("w2", "render", deps=[{"capability": "cache"}], port=9001)
    await call(api, "POST", "/heartbeat", 200, json=relaxed)
    job_id = await create(api)
    index = api.log_index
    claim = {"capability": "render", "instance_id": "w1"}
    assert await call(api, "POST", "/jobs/claim", 200, json=claim) == {"claimed": []}
    job = api.node.view.jobs.jobs[job_id]
    assert (job.owner, job.attempt_count, api.log_index) == (None, 0, index)  # no attempt burnt
    await call(api, "POST", "/heartbeat", 200, json=agent_body("db1", "db", port=9002))
    [claimed] = (await call(api, "POST", "/jobs/claim", 200, json=claim))["claimed"]
    assert claimed["id"] == job_id
    # an unresolved dependency that is not required does not gate
    other = await create(api)
    answer = await call(
        api, "POST", "/jobs/claim", 200, json={"capability": "render", "instance_id": "w2"}
    )
    assert [c["id"] for c in answer["claimed"]] == [other]


async def test_the_claim_gate_follows_required_dependencies_transitively(api: Api) -> None:
    """A claimer whose required provider is itself missing a required dependency gets no work
    (as the Go registry's gate evaluates availability through the chain)."""
    worker = agent_body("w1", "render", deps=[{"capability": "db", "required": True}])
    await call(api, "POST", "/heartbeat", 200, json=worker)
    db = agent_body("db1", "db", deps=[{"capability": "disk", "required": True}], port=9002)
    await call(api, "POST", "/heartbeat", 200, json=db)
    job_id = await create(api)
    claim = {"capability": "render", "instance_id": "w1"}
    assert await call(api, "POST", "/jobs/claim", 200, json=claim) == {"claimed": []}
    await call(api, "POST", "/heartbeat", 200, json=agent_body("disk1", "disk", port=9003))
    [claimed] = (await call(api, "POST", "/jobs/claim", 200, json=claim))["claimed"]
    assert claimed["id"] == job_id
