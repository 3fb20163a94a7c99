"""MeshJobs on three real registry processes: one owner per claim, jobs outlive the leader."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.processes import Registry
from tests.test_cluster import Cluster, all_ready, converged, leader_of, until

pytestmark = pytest.mark.slow

ROUNDS = 10


async def post(session: aiohttp.ClientSession, node: Registry, path: str, body: Any) -> Any:
    async with session.post(f"{node.url}{path}", json=body) as answer:
        assert answer.status in (200, 201), await answer.text()
        return await answer.json()


async def get(session: aiohttp.ClientSession, node: Registry, path: str) -> Any:
    async with session.get(f"{node.url}{path}") as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def test_racing_claims_through_two_replicas_give_one_owner_and_jobs_survive_the_leader(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        owners: dict[str, str] = {}
        for i in range(ROUNDS):
            job = {"capability": "race", "submitted_by": "c", "submitted_payload": {"i": i}}
            created = await post(session, nodes[0], "/jobs", job)
            claims = await asyncio.gather(
                post(session, nodes[1], "/jobs/claim", {"capability": "race", "instance_id": "a"}),
                post(session, nodes[2], "/jobs/claim", {"capability": "race", "instance_id": "b"}),
            )
            won = [(who, c["claimed"]) for who, c in zip("ab", claims, strict=True) if c["claimed"]]
            assert len(won) == 1, claims  # exactly one of the two racing claims got the job
            who, [claimed] = won[0]
            assert (claimed["id"], claimed["claim_epoch"]) == (created["id"], 1)
            owners[created["id"]] = who
        await converged(session, nodes)
        for node in nodes:  # every replica names the same owner, epoch 1
            for job_id, who in owners.items():
                job = await get(session, node, f"/jobs/{job_id}")
                assert (job["owner_instance_id"], job["claim_epoch"]) == (who, 1)

        leader = await leader_of(session, nodes)
        nodes[leader].kill()
        survivors = [n for i, n in enumerate(nodes) if i != leader]
        job_id, who = next(iter(owners.items()))
        done = {
            "instance_id": who,
            "deltas": [
                {"id": job_id, "claim_epoch": 1, "status": "completed", "result": {"ok": 1}}
            ],
        }

        async def completed() -> bool:
            try:
                async with session.post(f"{survivors[0].url}/jobs/batch", json=done) as answer:
                    return answer.status == 200 and (await answer.json())["accepted"] == 1
            except aiohttp.ClientError:
                return False

        await until(completed, timeout=20)
        restarted = cluster.start(leader)
        await all_ready(session, cluster.nodes)
        await converged(session, cluster.nodes)
        for node in [*survivors, restarted]:
            job = await get(session, node, f"/jobs/{job_id}")
            assert (job["status"], job["result"], job["owner_instance_id"]) == (
                "completed",
                {"ok": 1},
                who,
            )
            listed = await get(session, node, "/jobs?capability=race&limit=200")
            assert {j["id"] for j in listed["jobs"]} == set(owners)
