"""MeshJob with the published SDK, unchanged, through three replicas behind a Service.

Two producers host the same ``task=True`` tool and a consumer submits jobs to it and waits,
all in the shape of MCP Mesh's ``examples/jobs`` (our own agents). The jobs must complete
while the leader is killed mid-job (the producer's progress batches and the consumer's polls
go to the survivors), and when the producer holding a job is killed mid-job (the leader's
sweep finds it orphaned once its health is lost, and the other producer claims the job again
and completes it). Every replica then serves the same result.

The replicas are a Raft cluster, and PostgreSQL-mode replicas on one database
(tests/pg_replicas.py), where the decider is what the leader is here: the one replica that
decides health and sweeps jobs, killed mid-job and taken over by another.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.compat.test_sdk import Agent, ServiceProxy, agents, call_tool, sdk_python
from tests.conftest import eventually
from tests.pg_replicas import Topology, topology  # noqa: F401 (fixture)
from tests.processes import Registry
from tests.test_cluster import all_ready, get_json, leader_of
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]

__all__ = ["agents", "sdk_python"]  # fixtures used here

PRODUCER = """
import asyncio

import mesh
from fastmcp import FastMCP
from mesh import MeshJob

app = FastMCP("Digest Producer")


@app.tool()
@mesh.tool(capability="compile_digest", task=True)
async def compile_digest(topic: str, parts: int, job: MeshJob = None) -> dict:
    done = []
    for i in range(parts):
        await asyncio.sleep(1)
        done.append(f"{{topic}}-part-{{i}}")
        if job is not None:
            await job.update_progress((i + 1) / parts, f"part {{i + 1}} of {{parts}}")
    result = {{"topic": topic, "parts": done, "by": "NAME"}}
    if job is not None:
        await job.complete(result)
    return result


@mesh.agent(name="NAME", http_port={port}, auto_run=True)
class DigestProducer:
    pass
"""
CONSUMER = """
import mesh
from fastmcp import FastMCP
from mesh import MeshJob

app = FastMCP("Digest Desk")


@app.tool()
@mesh.tool(capability="digest_desk", dependencies=["compile_digest"])
async def commission(topic: str, parts: int, compile_digest: MeshJob = None) -> dict:
    if compile_digest is None:
        return {{"error": "compile_digest unavailable"}}
    job = await compile_digest.submit(topic=topic, parts=parts, max_duration=120)
    return await job.wait(timeout_secs=240)


@mesh.agent(name="digest-desk", http_port={port}, auto_run=True)
class DigestDesk:
    pass
"""
PRODUCERS = ("digest-maker-a", "digest-maker-b")


def tool_result(answer: str) -> dict[str, Any] | None:
    """The dict a tool returned, from its MCP answer (an SSE ``message`` event or plain JSON);
    None for no answer, an error, or anything else."""
    data = [line[5:] for line in answer.splitlines() if line.startswith("data:")]
    try:
        message = json.loads(data[-1] if data else answer)
    except (ValueError, IndexError):
        return None
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict) or result.get("isError"):
        return None
    if isinstance(result.get("structuredContent"), dict):
        return result["structuredContent"]
    try:
        value = json.loads(result["content"][0]["text"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


async def commission(
    session: aiohttp.ClientSession, desk: Agent, topic: str, parts: int
) -> dict[str, Any] | None:
    wait = aiohttp.ClientTimeout(total=scaled(300))
    answer = await call_tool(session, desk, "commission", {"topic": topic, "parts": parts}, wait)
    return tool_result(answer)


async def job_for(session: aiohttp.ClientSession, node: Registry, topic: str) -> dict[str, Any]:
    """The job submitted for ``topic``, once a producer holds it and has reported progress."""

    async def started() -> dict[str, Any] | None:
        try:
            listing = await get_json(session, f"{node.url}/jobs?capability=compile_digest")
        except (aiohttp.ClientError, ValueError):
            return None
        for job in listing.get("jobs") or []:
            payload = job.get("submitted_payload") or {}
            if payload.get("topic") == topic and job["owner_instance_id"] and job["progress"]:
                return job
        return None

    found: dict[str, Any] = await eventually(started, timeout=90, every=0.2)
    return found


async def on_every(
    session: aiohttp.ClientSession, nodes: list[Registry], job_id: str
) -> list[dict[str, Any]]:
    """The job as each replica serves it, once every one has applied its completion."""

    async def completed() -> list[dict[str, Any]] | None:
        seen = []
        for node in nodes:
            try:
                job = await get_json(session, f"{node.url}/jobs/{job_id}")
            except (aiohttp.ClientError, ValueError):
                return None
            if job.get("status") != "completed":
                return None
            seen.append(job)
        return seen

    seen: list[dict[str, Any]] = await eventually(completed, timeout=30, every=0.2)
    return seen


def expected(topic: str, parts: int) -> list[str]:
    return [f"{topic}-part-{i}" for i in range(parts)]


async def test_sdk_jobs_complete_through_a_leader_kill_and_a_producer_kill(
    topology: Topology,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    agents: list[Agent],
    sdk_python: Path,
) -> None:
    # The SDK heartbeats every 5 s: 10 s before an agent counts as gone. The leader sweeps
    # jobs every 2 s (MeshJob's default is 5 minutes), so an orphaned job is queued again soon.
    cluster = topology(
        AGENT_TIMEOUT="10s",
        HEALTH_CHECK_INTERVAL="1s",
        MCP_MESH_SWEEP_INTERVAL="2s",
    )
    cluster.start_all()
    proxy = ServiceProxy(cluster.nodes)
    await proxy.start()
    service = Registry(tmp_path / "service", port=proxy.port)  # only its URL is used
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=scaled(10))) as s:
            await all_ready(s, cluster.nodes)
            makers = {
                name: Agent(sdk_python, PRODUCER.replace("NAME", name), service, tmp_path).start()
                for name in PRODUCERS
            }
            desk = Agent(sdk_python, CONSUMER, service, tmp_path).start()
            agents.extend([*makers.values(), desk])

            async def both_makers_serve() -> bool:
                """A warm-up job done by each producer: both registered, claiming, answering."""
                done = await commission(s, desk, "warm-up", 0)
                if done and "by" in done:
                    finished.add(done["by"])
                return finished == set(PRODUCERS)

            finished: set[str] = set()
            await eventually(both_makers_serve, timeout=180, every=0.5)

            # The leader killed while a producer works on a job.
            running = asyncio.create_task(commission(s, desk, "leader-kill", 6))
            job = await job_for(s, service, "leader-kill")
            leader = await leader_of(s, cluster.nodes)
            cluster.nodes[leader].kill()
            proxy.backends = [n for i, n in enumerate(cluster.nodes) if i != leader]
            result = await running
            assert result is not None and result["parts"] == expected("leader-kill", 6), result
            cluster.nodes[leader].start()
            seen = await on_every(s, cluster.nodes, job["id"])
            assert {json.dumps(j["result"], sort_keys=True) for j in seen} == {
                json.dumps(result, sort_keys=True)
            }
            assert [j["attempt_count"] for j in seen] == [1, 1, 1]  # no claim lost to the kill
            proxy.backends = cluster.nodes

            # The producer holding a job killed mid-job: the other one claims it again.
            running = asyncio.create_task(commission(s, desk, "producer-kill", 8))
            job = await job_for(s, service, "producer-kill")
            holder = next(n for n in PRODUCERS if job["owner_instance_id"].startswith(n + "-"))
            makers[holder].stop(signal.SIGKILL)
            result = await running
            (other,) = set(PRODUCERS) - {holder}
            assert result is not None and result["by"] == other, result
            assert result["parts"] == expected("producer-kill", 8), result
            seen = await on_every(s, cluster.nodes, job["id"])
            assert [j["attempt_count"] for j in seen] == [2, 2, 2]
            assert {j["owner_instance_id"].startswith(other + "-") for j in seen} == {True}
            assert {json.dumps(j["result"], sort_keys=True) for j in seen} == {
                json.dumps(result, sort_keys=True)
            }
    finally:
        await proxy.stop()
