"""The same job sequences against MCP Mesh's Go registry 3.7 and ours: equal answers.

Ids and times differ by nature and are normalized away; error bodies are compared by status
(their wording is ours, docs/protocol.md). Time-driven sweeps are not exercised here (the Go
registry sweeps every MCP_MESH_SWEEP_INTERVAL; tests/test_jobs_api.py covers ours).

Ours is one node, and three replicas (a Raft cluster, and PostgreSQL-mode replicas on one
database: tests/compat/test_llm.py's ``our_urls``) taking the sequence's requests in turn, so
that a claim, a batch or a release reaches another replica than the job's submission did.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from tests.compat.test_llm import our_urls  # noqa: F401 (fixture)
from tests.compat.test_meshctl_and_go import go_registry, mesh_cli  # noqa: F401  (fixtures)
from tests.processes import Registry
from tests.test_cluster import all_ready

pytestmark = [pytest.mark.compat, pytest.mark.slow]

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMES = {"submitted_at", "lease_expires_at", "last_heartbeat_at", "created_at", "timestamp"}

J = "{J}"
SEQUENCE: list[tuple[str, str, Any]] = [
    ("POST", "/jobs", {"capability": "c1", "submitted_by": "s", "submitted_payload": {"a": 1}}),
    ("GET", f"/jobs/{J}", None),
    ("POST", "/jobs/claim", {"capability": "c1", "instance_id": "p1"}),
    ("POST", "/jobs/claim", {"capability": "c1", "instance_id": "p2"}),
    (
        "POST",
        "/jobs/batch",
        {
            "instance_id": "p1",
            "deltas": [
                {"id": J, "claim_epoch": 1, "progress": 0.5, "recv_cursor": {"k": 3}},
                {"id": "nope"},
                {"id": J, "claim_epoch": 7},
            ],
        },
    ),
    ("POST", "/jobs/batch", {"instance_id": "p2", "deltas": [{"id": J}]}),
    ("POST", "/jobs/batch", {"instance_id": "p1", "deltas": [{"id": J, "status": "bogus"}]}),
    ("POST", f"/jobs/{J}/events", {"type": "tick", "payload": [1, 2]}),
    ("POST", f"/jobs/{J}/events", {"type": "  "}),
    ("GET", f"/jobs/{J}/events?after=0", None),
    ("GET", f"/jobs/{J}/events?instance_id=p1", None),
    ("GET", f"/jobs/{J}/events?instance_id=p2&claim_epoch=1", None),
    ("GET", f"/jobs/{J}/events?instance_id=p1&claim_epoch=1", None),
    ("POST", f"/jobs/{J}/reclaim", None),
    ("GET", f"/jobs/{J}", None),
    ("POST", f"/jobs/{J}/release", {"instance_id": "p1"}),
    ("POST", "/jobs/claim", {"capability": "c1", "instance_id": "p1"}),
    ("POST", f"/jobs/{J}/release", {"instance_id": "p1", "reason": "boom"}),
    ("GET", f"/jobs/{J}", None),
    ("POST", f"/jobs/{J}/cancel", None),
    ("POST", f"/jobs/{J}/events", {"type": "x"}),
    (
        "POST",
        "/jobs",
        {
            "capability": "c2",
            "submitted_by": "s",
            "submitted_payload": {},
            "owner_instance_id": "pin",
        },
    ),
    ("POST", "/jobs/claim", {"capability": "c2", "instance_id": "p9"}),
    (
        "POST",
        "/jobs/batch",
        {"instance_id": "pin", "deltas": [{"id": J, "progress": 0.25, "status": "input_required"}]},
    ),
    ("POST", f"/jobs/{J}/cancel", {"reason": "user"}),
    ("GET", f"/jobs/{J}/events", None),
    ("GET", f"/jobs/{J}", None),
    ("POST", f"/jobs/{J}/reclaim", None),
    ("POST", "/jobs/batch", {"instance_id": "pin", "deltas": [{"id": J, "claim_epoch": 0}]}),
    ("GET", "/jobs?status=failed,cancelled", None),
    ("GET", "/jobs?limit=1&capability=c1", None),
    ("GET", "/jobs?status=running", None),
    ("GET", "/jobs?limit=0", None),
    ("POST", "/jobs", {"capability": "", "submitted_by": "s", "submitted_payload": {}}),
    ("POST", "/jobs", {"capability": "c", "submitted_payload": {}}),
    ("POST", "/jobs", {"capability": "c", "submitted_by": "s"}),
    (
        "POST",
        "/jobs",
        {"capability": "c", "submitted_by": "s", "submitted_payload": {}, "max_retries": -1},
    ),
    ("POST", "/jobs", {"capability": "c", "submitted_by": "s", "submitted_payload": [1]}),
    ("GET", "/jobs/unknown", None),
    ("POST", "/jobs/unknown/cancel", None),
    ("POST", "/jobs/unknown/release", {"instance_id": "p"}),
    ("GET", "/jobs/unknown/events", None),
    ("POST", "/jobs/batch", {"instance_id": "p", "deltas": []}),
    ("POST", "/jobs/claim", {"capability": "c"}),
]


def normalized(body: Any) -> Any:
    if isinstance(body, dict):
        return {
            k: (
                "T"
                if k in TIMES and v is not None
                else "C"
                if k == "next_cursor" and v
                else normalized(v)
            )
            for k, v in body.items()
        }
    if isinstance(body, list):
        return [normalized(v) for v in body]
    if isinstance(body, str):
        return UUID.sub("ID", body)
    return body


def fill(value: Any, job_id: str) -> Any:
    if isinstance(value, str):
        return value.replace(J, job_id)
    if isinstance(value, dict):
        return {k: fill(v, job_id) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, job_id) for v in value]
    return value


async def run(
    session: aiohttp.ClientSession, urls: list[str], reads: str = ""
) -> list[tuple[int, Any]]:
    """SEQUENCE's answers, its requests sent to ``urls`` in turn; ``reads`` is a query added
    to each GET (ours: a replica's reads reflect every acknowledged write only when asked)."""
    answers: list[tuple[int, Any]] = []
    job_id = ""
    for step, (method, path, body) in enumerate(SEQUENCE):
        url = urls[step % len(urls)] + fill(path, job_id)
        if method == "GET" and reads:
            url += ("&" if "?" in url else "?") + reads
        async with session.request(method, url, json=fill(body, job_id)) as answer:
            payload = await answer.json(content_type=None)
        if method == "POST" and path == "/jobs" and answer.status == 201:
            job_id = payload["id"]
        answers.append((answer.status, normalized(payload) if answer.status < 400 else None))
    return answers


async def test_job_sequences_answer_as_the_go_registry_does(
    our_urls: list[str],  # noqa: F811 (the fixture imported above)
    registries: list[Registry],
    go_registry: str,  # noqa: F811
) -> None:
    async with aiohttp.ClientSession() as session:
        await all_ready(session, registries)
        theirs = await run(session, [go_registry])
        mine = await run(session, our_urls, "consistency=linearizable")
    for step, (expected, got) in enumerate(zip(theirs, mine, strict=True)):
        assert got == expected, (step, SEQUENCE[step][:2])
