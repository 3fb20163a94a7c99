"""Drain mode (``/admin/drain``, ``meshctl registry drain/resume/status``) and the job counts
behind the job metrics: in the pure apply, and over a real socket on one node (real LMDB).

Drain is view state, applied from a ``job_drain`` log entry, so it holds on every replica that
applied the entry and survives snapshots and restarts (tests/test_jobs_cluster.py runs it on three
processes, tests/compat/test_meshctl_jobs.py with the published meshctl).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from registry import events, jobs
from registry.api.app import build_admin_app, build_app
from registry.job_sweep import decide
from registry.view import View
from tests.conftest import Api, agent_body, eventually
from tests.test_jobs import Log, spec
from tests.test_jobs_api import call, create

CLAIM = {"capability": "render", "instance_id": "p1"}


# -- the pure apply ------------------------------------------------------------------------------


def test_a_claim_committed_after_a_drain_is_refused_and_burns_no_attempt() -> None:
    log = Log()
    log.commit(jobs.create(spec("j"), 1000))
    decided = jobs.claim(log.view.jobs.jobs["j"], "p1", 2000)  # decided before the drain
    assert log.commit(jobs.drain(True, 1500))
    assert not log.commit(decided)
    job = log.view.jobs.jobs["j"]
    assert (job.owner, job.attempt_count, job.claim_epoch, job.claimable) == (None, 0, 0, True)
    assert not log.commit(jobs.drain(True, 1600))  # already draining: no change
    assert log.commit(jobs.drain(False, 3000))
    assert log.commit(jobs.claim(log.view.jobs.jobs["j"], "p1", 3001))
    assert log.view.jobs.jobs["j"].owner == "p1"


def test_drain_and_counts_are_in_the_snapshot() -> None:
    log = Log()
    log.commit(jobs.create(spec("j"), 1000))
    log.commit(jobs.claim(log.view.jobs.jobs["j"], "p1", 2000))
    log.commit(jobs.reclaim(log.view.jobs.jobs["j"], 2500))
    log.commit(jobs.drain(True, 3000))
    restored = View.from_state(log.view.to_state())
    assert restored.jobs.draining
    assert restored.jobs.counts == log.view.jobs.counts
    assert restored.digest() == log.view.digest()
    # a snapshot written before drain mode and counts existed loads as not draining, zeros
    older = log.view.to_state()
    del older["jobs_mode"]
    loaded = View.from_state(older).jobs
    assert not loaded.draining and loaded.counts == jobs.Counts()


def test_counts_follow_claims_reclaims_and_lease_expiries() -> None:
    log = Log()
    log.commit(events.upsert(agent_body("p1", "render"), 500))
    for job_id in ("orphan", "lease", "last", "manual", "queued"):
        log.commit(jobs.create(spec(job_id, max_retries=0 if job_id == "last" else 1), 1000))
    for job_id in ("lease", "last", "manual"):
        log.commit(jobs.claim(log.view.jobs.jobs[job_id], "p1", 2000))
    log.commit(jobs.claim(log.view.jobs.jobs["orphan"], "gone", 2000))  # not an agent
    counts = log.view.jobs.counts
    assert counts.claims == 4
    log.commit(jobs.reclaim(log.view.jobs.jobs["manual"], 2100))
    log.commit(jobs.reclaim(log.view.jobs.jobs["queued"], 2100))  # no owner: nothing taken
    assert counts.reclaims == {"manual": 1, "lease_expired": 0, "orphaned": 0}
    # "lease" goes back to the queue, "last" has no retry left and fails
    actions = decide(log.view, {"lease", "last"}, 10_000, 0)
    assert [(a["id"], a.get("end") or a.get("error")) for a in actions] == [
        ("orphan", "orphaned"),
        ("lease", "lease_expired"),
        ("last", jobs.LEASE_EXPIRED),
    ]
    sweep = jobs.sweep(actions, 10_000)
    assert log.commit(sweep)
    assert counts.reclaims == {"manual": 1, "lease_expired": 1, "orphaned": 1}
    assert (counts.lease_expiries, counts.claims) == (2, 4)
    assert not log.commit(sweep)  # decided on older revisions: applies and counts nothing
    assert counts.reclaims == {"manual": 1, "lease_expired": 1, "orphaned": 1}
    assert counts.lease_expiries == 2


# -- over HTTP -----------------------------------------------------------------------------------


async def test_drain_pauses_claims_only_and_resume_gives_the_queued_job(api: Api) -> None:
    await call(api, "POST", "/heartbeat", 200, json=agent_body("p1", "render"))
    running = await create(api)
    await call(api, "POST", "/jobs/claim", 200, json=CLAIM)
    assert await call(api, "GET", "/admin/drain", 200) == {"draining": False, "live_claims": 1}
    assert await call(api, "POST", "/admin/drain", 200, data=b"ignored") == {
        "draining": True,
        "live_claims": 1,
    }
    queued = await create(api)  # submissions are still taken
    index = api.log_index
    assert await call(api, "POST", "/jobs/claim", 200, json=CLAIM) == {"claimed": []}
    assert api.log_index == index  # refused by the handler: no claim entry proposed
    job = await call(api, "GET", f"/jobs/{queued}", 200)
    assert (job["owner_instance_id"], job["attempt_count"], job["claim_epoch"]) == (None, 0, 0)
    # the heartbeat still says a job waits, as the Go registry's does while draining
    answer = await api.client.head("/heartbeat/p1")
    assert answer.headers["X-Mesh-Pending-Jobs"] == "1"
    # the running job goes on and completes
    done = [{"id": running, "claim_epoch": 1, "status": "completed", "result": {}}]
    batch = await call(api, "POST", "/jobs/batch", 200, json={"instance_id": "p1", "deltas": done})
    assert batch == {"accepted": 1, "rejected": []}
    assert await call(api, "POST", "/admin/drain", 200) == {"draining": True, "live_claims": 0}
    assert await call(api, "DELETE", "/admin/drain", 200) == {"draining": False, "live_claims": 0}
    [claimed] = (await call(api, "POST", "/jobs/claim", 200, json=CLAIM))["claimed"]
    assert (claimed["id"], claimed["attempt_count"]) == (queued, 1)
    assert await call(api, "DELETE", "/admin/drain", 200) == {"draining": False, "live_claims": 1}
    wrong = await api.client.put("/admin/drain")
    assert wrong.status == 405


async def test_a_restart_keeps_the_drain(
    start_api: Callable[..., Awaitable[Api]], tmp_path: Path
) -> None:
    first = await start_api(tmp_path / "node")
    await create(first)
    await call(first, "POST", "/admin/drain", 200)
    await first.client.close()
    await first.node.stop()
    again = await start_api(tmp_path / "node")
    assert await call(again, "GET", "/admin/drain", 200) == {"draining": True, "live_claims": 0}
    assert await call(again, "POST", "/jobs/claim", 200, json=CLAIM) == {"claimed": []}


async def test_with_an_admin_port_drain_is_served_there_only(api: Api) -> None:
    node = api.node
    node.config = replace(node.config, trust=replace(node.config.trust, admin_port=1))
    main: TestClient[object, object] = TestClient(TestServer(build_app(node), host="127.0.0.1"))
    admin: TestClient[object, object] = TestClient(
        TestServer(build_admin_app(node), host="127.0.0.1")
    )
    async with main, admin:
        assert (await main.get("/admin/drain")).status == 404
        assert (await main.post("/admin/drain")).status == 404
        answer = await admin.post("/admin/drain")
        assert answer.status == 200 and (await answer.json())["draining"] is True
    assert node.view.jobs.draining


async def test_a_token_guards_drain_and_resume(start_api: Callable[..., Awaitable[Api]]) -> None:
    api = await start_api(auth_token="s3cret")
    assert (await api.client.post("/admin/drain")).status == 401
    assert (await api.client.delete("/admin/drain")).status == 401
    assert (await api.client.get("/admin/drain")).status == 200
    assert not api.node.view.jobs.draining
    bearer = {"Authorization": "Bearer s3cret"}
    assert (await api.client.post("/admin/drain", headers=bearer)).status == 200


def samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mcp_registry_job")
    }


async def test_job_metrics_move_on_claims_expiries_reclaims_and_drain(
    start_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await start_api(sweep_interval=0.2)

    async def metrics() -> dict[str, float]:
        return samples(await (await api.client.get("/metrics")).text())

    before = await metrics()
    assert before == {
        'mcp_registry_jobs_total{status="working"}': 0.0,
        'mcp_registry_jobs_total{status="input_required"}': 0.0,
        'mcp_registry_jobs_total{status="completed"}': 0.0,
        'mcp_registry_jobs_total{status="failed"}': 0.0,
        'mcp_registry_jobs_total{status="cancelled"}': 0.0,
        "mcp_registry_job_claims_total": 0.0,
        "mcp_registry_job_lease_expiries_total": 0.0,
        'mcp_registry_job_reclaims_total{cause="lease_expired"}': 0.0,
        'mcp_registry_job_reclaims_total{cause="manual"}': 0.0,
        'mcp_registry_job_reclaims_total{cause="orphaned"}': 0.0,
        "mcp_registry_jobs_draining": 0.0,
    }
    await call(api, "POST", "/heartbeat", 200, json=agent_body("p1", "render"))
    manual = await create(api)
    await call(api, "POST", "/jobs/claim", 200, json=CLAIM)
    await call(api, "POST", f"/jobs/{manual}/reclaim", 200)  # meshctl job reclaim
    await call(api, "POST", "/jobs/claim", 200, json=CLAIM)
    await call(api, "POST", f"/jobs/{manual}/cancel", 200)
    silent = await create(api, max_duration=1)
    await call(api, "POST", "/jobs/claim", 200, json=CLAIM)
    await eventually(lambda: api.node.view.jobs.jobs[silent].owner is None, timeout=10)
    orphan = await create(api, capability="other")
    claim = {"capability": "other", "instance_id": "gone"}  # not a registered agent
    await call(api, "POST", "/jobs/claim", 200, json=claim)
    assert api.node.view.jobs.jobs[orphan].owner == "gone"
    await eventually(lambda: api.node.view.jobs.jobs[orphan].owner is None, timeout=10)
    await call(api, "POST", "/admin/drain", 200)
    after = await metrics()
    assert after["mcp_registry_job_claims_total"] == 4
    assert after["mcp_registry_job_lease_expiries_total"] == 1
    assert after['mcp_registry_job_reclaims_total{cause="manual"}'] == 1
    assert after['mcp_registry_job_reclaims_total{cause="lease_expired"}'] == 1
    assert after['mcp_registry_job_reclaims_total{cause="orphaned"}'] == 1
    assert after["mcp_registry_jobs_draining"] == 1
