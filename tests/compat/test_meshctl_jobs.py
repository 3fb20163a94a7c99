"""The published ``meshctl``'s ``job`` and ``registry`` commands against the Go registry and ours.

``meshctl job`` has ``status`` (also ``--json``) and ``reclaim``; ``meshctl registry`` has
``status`` (also ``--json``), ``drain`` (also ``--wait``) and ``resume``. One session of them,
interleaved with the HTTP calls a producer makes, runs against the Go registry and against one node
of ours: the outputs, exit codes and HTTP answers must be equal, ids and times aside. Then drain
on three replicas (a Raft cluster, and PostgreSQL-mode replicas on one database:
tests/pg_replicas.py): a drain through one is seen by the others and by a restarted one, which is
where ours differs from Go (docs/protocol.md): Go drains only the replica that served it.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.compat.test_jobs_go import normalized
from tests.compat.test_meshctl_and_go import go_registry, mesh_cli  # noqa: F401  (fixtures)
from tests.conftest import Api
from tests.pg_replicas import Topology, topology  # noqa: F401 (fixture)
from tests.processes import Registry
from tests.test_cluster import all_ready, until

pytestmark = [pytest.mark.compat, pytest.mark.slow]

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
JOB = {"capability": "render", "submitted_by": "consumer", "submitted_payload": {"n": 1}}
MESHCTL_TIMEOUT = 60.0

Step = tuple[int, str, str]
"""One meshctl run (exit code, stdout, stderr) or one HTTP call (status, body as JSON, "")."""


async def meshctl(mesh_cli: Path, url: str, *args: str) -> Step:  # noqa: F811
    """Run meshctl without blocking the event loop (our in-process registry serves on it)."""
    proc = await asyncio.create_subprocess_exec(
        str(mesh_cli / "meshctl"),
        *args,
        "--registry-url",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), MESHCTL_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def plain(step: Step) -> Step:
    """Ids and times aside; ``--json`` output compared as data."""
    code, out, err = step
    if out.startswith("{"):
        out = json.dumps(normalized(json.loads(out)), sort_keys=True)
    return code, ISO_TIME.sub("T", UUID.sub("ID", out)), UUID.sub("ID", err)


async def session(http: aiohttp.ClientSession, mesh_cli: Path, url: str) -> list[Step]:  # noqa: F811
    steps: list[Step] = []

    async def call(method: str, path: str, body: Any = None) -> Any:
        async with http.request(method, url + path, json=body) as answer:
            payload = await answer.json(content_type=None)
        steps.append((answer.status, json.dumps(normalized(payload), sort_keys=True), ""))
        return payload

    async def ctl(*args: str) -> None:
        steps.append(plain(await meshctl(mesh_cli, url, *args)))

    claim = {"capability": "render", "instance_id": "p1"}
    job_id = (await call("POST", "/jobs", JOB))["id"]
    await ctl("job", "status", job_id)
    await call("POST", "/jobs/claim", claim)
    await ctl("job", "status", job_id)
    await ctl("job", "status", job_id, "--json")
    await ctl("job", "status", "8f2b4e6a-1c3d-4e5f-9a0b-1c2d3e4f5a6b")
    await ctl("registry", "status")
    await ctl("registry", "status", "--json")
    await ctl("registry", "drain")  # one live claim: the note
    await call("POST", "/jobs", JOB)
    await call("POST", "/jobs/claim", {**claim, "instance_id": "p2"})  # drained: no work
    await ctl("registry", "status")
    await ctl("job", "reclaim", job_id)
    await ctl("job", "status", job_id)
    await ctl("registry", "drain", "--wait", "--poll-interval", "1")  # no live claim left
    await ctl("registry", "resume")
    await call("POST", "/jobs/claim", {**claim, "instance_id": "p2"})  # the reclaimed job again
    await ctl("registry", "status", "--json")
    await ctl("job", "reclaim", "8f2b4e6a-1c3d-4e5f-9a0b-1c2d3e4f5a6b")
    await call("POST", f"/jobs/{job_id}/cancel")
    await ctl("job", "reclaim", job_id)
    await ctl("job", "status", job_id)
    await ctl("registry", "resume")
    return steps


async def test_meshctl_job_and_registry_commands_answer_as_with_the_go_registry(
    api: Api,
    go_registry: str,  # noqa: F811
    mesh_cli: Path,  # noqa: F811
) -> None:
    ours = str(api.client.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        theirs = await session(http, mesh_cli, go_registry)
        mine = await session(http, mesh_cli, ours)
    # the session covers what it means to: outputs of both kinds, errors, a drained claim
    assert any("DRAINING (new claims paused)" in out for _, out, _ in theirs)
    assert any("All jobs drained" in out for _, out, _ in theirs)
    assert any(code == 1 and "not found" in err for code, _, err in theirs)
    assert (200, '{"claimed": []}', "") in theirs
    for n, (expected, got) in enumerate(zip(theirs, mine, strict=True)):
        assert got == expected, n


async def status_lines(mesh_cli: Path, node: Registry) -> list[str]:  # noqa: F811
    code, out, err = await meshctl(mesh_cli, node.url, "registry", "status")
    assert code == 0, err
    return out.splitlines()


DRAINING = "Registry:    DRAINING (new claims paused)"
ACTIVE = "Registry:    active (normal dispatch)"


async def test_a_drain_through_one_replica_holds_on_every_replica_and_across_restarts(
    topology: Topology,  # noqa: F811
    mesh_cli: Path,  # noqa: F811
) -> None:
    cluster = topology()
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as http:
        await all_ready(http, nodes)

        async def post(node: Registry, path: str, body: Any) -> Any:
            async with http.post(node.url + path, json=body) as answer:
                assert answer.status in (200, 201), await answer.text()
                return await answer.json()

        running = (await post(nodes[0], "/jobs", JOB))["id"]

        async def claimed_by_p1() -> bool:
            # an empty claim is answered without a barrier (a claimer polls, as with Go), so
            # the second replica may not have applied the job yet: poll as an executor would
            got = await post(nodes[1], "/jobs/claim", {"capability": "render", "instance_id": "p1"})
            return [job["id"] for job in got["claimed"]] == [running]

        await until(claimed_by_p1)
        queued = (await post(nodes[2], "/jobs", JOB))["id"]
        code, out, err = await meshctl(mesh_cli, nodes[0].url, "registry", "drain")
        assert code == 0, err
        assert "Live claims: 1" in out
        # status through another replica (no waiting: its GET answers after a barrier)
        assert await status_lines(mesh_cli, nodes[1]) == [DRAINING, "Live claims: 1"]
        # a claim through the third gets no work, as the Go registry answers a drained claim
        claim = {"capability": "render", "instance_id": "p2"}
        assert await post(nodes[2], "/jobs/claim", claim) == {"claimed": []}
        # drain --wait through one replica ends when the job completes through another
        waiting = asyncio.ensure_future(
            meshctl(mesh_cli, nodes[1].url, "registry", "drain", "--wait", "--poll-interval", "1")
        )
        done = [{"id": running, "claim_epoch": 1, "status": "completed", "result": {}}]
        await post(nodes[2], "/jobs/batch", {"instance_id": "p1", "deltas": done})
        code, out, err = await waiting
        assert code == 0, err
        assert out.splitlines()[-1] == "All jobs drained — safe to upgrade/restart"
        # every replica restarted (an upgrade): still drained
        for i in range(3):
            nodes[i].kill()
            cluster.start(i)
        nodes = cluster.nodes
        await all_ready(http, nodes)
        for node in nodes:
            assert await status_lines(mesh_cli, node) == [DRAINING, "Live claims: 0"]
        assert await post(nodes[0], "/jobs/claim", claim) == {"claimed": []}
        code, out, err = await meshctl(mesh_cli, nodes[2].url, "registry", "resume")
        assert code == 0, err
        assert await status_lines(mesh_cli, nodes[0]) == [ACTIVE, "Live claims: 0"]

        async def claimed_after_resume() -> list[Any]:
            # as at the first claim: an empty one is answered without a barrier, and the
            # replica may not have applied the resume yet (in PostgreSQL mode it learns of it
            # by NOTIFY, a few milliseconds after the replica that took it answered)
            got = await post(nodes[1], "/jobs/claim", claim)
            return list(got["claimed"])

        [claimed] = await until(claimed_after_resume)
        assert (claimed["id"], claimed["attempt_count"]) == (queued, 1)
        metrics = await metric_lines(http, nodes)
        assert len(set(metrics)) == 1, metrics  # every replica counts the same
        assert "mcp_registry_job_claims_total 2.0" in metrics[0]


async def metric_lines(http: aiohttp.ClientSession, nodes: list[Registry]) -> list[str]:
    """The job counters of each node, once every node applied the last claim."""

    async def lines(node: Registry) -> str:
        async with http.get(f"http://127.0.0.1:{node.metrics_port}/metrics") as answer:
            text = await answer.text()
        return "\n".join(line for line in text.splitlines() if line.startswith("mcp_registry_job"))

    async def settled() -> list[str] | None:
        got = [await lines(node) for node in nodes]
        return got if len(set(got)) == 1 else None

    found: list[str] = await until(settled)
    return found
