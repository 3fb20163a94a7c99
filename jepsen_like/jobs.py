"""The MeshJob workload: submitters and producers working on jobs through random replicas.

Submitters create jobs (each with a *token* in its ``submitted_payload``: the history's key for
the job, known before the registry names the job's id), cancel some of the jobs they created,
and read them linearizably. Producers work in pairs, as two instances of one agent would: every
round each instance of the pair acts at once, through a different replica; an instance without
a job claims one of the pair's capability, so whenever both are free their claims race for the
same queue head through two replicas. An instance holding a job reports progress (a batch that
renews the lease), completes it with a result naming itself and its claim epoch, fails it, or
*stalls*: stops renewing for longer than the lease, so the leader's sweep takes the job back and
another instance reclaims it, and the staller's next batch meets the newer claim. Every delta
carries the claim epoch it was claimed with (the SDK's fencing). Producers are registered agents
kept alive by heartbeaters (in client.py), so a claim ends by its lease, not by the sweep finding
an unknown owner.

Jobs get a short lease (``LEASE_S``, their ``max_duration``) and the replicas sweep every second
(``MCP_MESH_SWEEP_INTERVAL`` in run.py), so leases expire and jobs are reclaimed many times in a
run. Every choice (operation, capability, replica, pause, value) is drawn from a generator seeded
from the run's seed, the same number of draws whatever the cluster answers; which of the drawn
operations a producer carries out depends on whether it holds a job, so a seed replays the
choices, and the operations where the answers repeat.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from jepsen_like.history import (
    FAIL,
    INFO,
    INVOKE,
    JOB_BATCH,
    JOB_CANCEL,
    JOB_CLAIM,
    JOB_CREATE,
    JOB_READ,
    OK,
    Event,
)
from jepsen_like.recorder import Recorder, refusal

CAPABILITIES = ("jc0", "jc1")
LEASE_S = 2
"""Every job's ``max_duration``: the lease a claim or a progress batch gives, in seconds."""
MAX_RETRIES = 3
"""Claims beyond the first a job allows before an expired lease fails it."""
STALL_S = (2.5, 4.0)
"""How long a stalling producer stops renewing: past the lease, within the agent timeout."""
RECENT = 10
"""Cancels and reads pick among a submitter's most recently created jobs (mostly still live)."""
PROGRESS, COMPLETE, FAILURE, STALL = "progress", "complete", "fail", "stall"
TERMINAL_STATUS = {COMPLETE: "completed", FAILURE: "failed"}
CANCEL_ANSWERS = {200: "cancelled", 404: "absent", 409: "terminal"}
"""A cancel's answer: done, no such job, already terminal (the last two after a barrier)."""


@dataclass(frozen=True)
class SubmitStep:
    """A submitter's next operation: create, or cancel / read one of its recent jobs."""

    f: str
    capability: str
    pick: float
    """Which recent job a cancel or read is about: a fraction into them, newest first."""
    node: int
    pause: float


def submitter_steps(replicas: int, rng: random.Random) -> Iterator[SubmitStep]:
    while True:
        f = rng.choices([JOB_CREATE, JOB_CANCEL, JOB_READ], weights=[6, 1, 3])[0]
        capability = rng.choice(CAPABILITIES)
        yield SubmitStep(
            f, capability, rng.random(), rng.randrange(replicas), rng.uniform(0.05, 0.2)
        )


@dataclass(frozen=True)
class ProduceStep:
    """One instance's part of a round: the claim it makes when free, what it does with a job
    it holds."""

    node: int
    capability: str
    action: str
    progress: float
    stall: float


def producer_steps(
    replicas: int, rng: random.Random
) -> Iterator[tuple[ProduceStep, ProduceStep, float]]:
    """A pair's rounds: both instances on one capability, through two different replicas."""
    while True:
        capability = rng.choice(CAPABILITIES)
        first = rng.randrange(replicas)
        second = (first + 1 + rng.randrange(replicas - 1)) % replicas
        steps = [
            ProduceStep(
                node,
                capability,
                rng.choices([PROGRESS, COMPLETE, FAILURE, STALL], weights=[10, 4, 1, 1])[0],
                round(rng.random(), 3),
                rng.uniform(*STALL_S),
            )
            for node in (first, second)
        ]
        yield steps[0], steps[1], rng.uniform(0.05, 0.15)


@dataclass(frozen=True)
class Held:
    token: str
    id: str
    epoch: int


class JobClient:
    """One history process's job operations: each invocation and outcome recorded."""

    def __init__(
        self, session: aiohttp.ClientSession, record: Recorder, process: int, urls: list[str]
    ) -> None:
        self.session = session
        self.record = record
        self.process = process
        self.urls = urls

    async def call(
        self, f: str, key: str, value: Any, node: int, method: str, path: str, body: Any
    ) -> tuple[str, Any]:
        """One request; (outcome, result) as recorded. A refused connection means nothing was
        sent (every job write is a POST, which aiohttp does not retry); a timeout leaves a
        write unknown; a read that did not answer changed nothing."""
        where = f"n{node}"
        self.record(Event(INVOKE, self.process, f, key, time.monotonic_ns(), value, where))
        outcome, result = INFO, None
        write = method == "POST"
        try:
            async with self.session.request(method, self.urls[node] + path, json=body) as resp:
                answered = await _answer(f, resp)
                if answered is not None:
                    outcome, result = OK, answered.result
                else:
                    outcome = await refusal(resp) if write else FAIL
        except aiohttp.ClientConnectorError:
            outcome = FAIL
        except (TimeoutError, aiohttp.ClientError):
            outcome = INFO if write else FAIL
        self.record(Event(outcome, self.process, f, key, time.monotonic_ns(), result, where))
        return outcome, result


@dataclass(frozen=True)
class _Answered:
    result: Any


async def _answer(f: str, resp: aiohttp.ClientResponse) -> _Answered | None:
    """The result of an answer that says what happened; None for an error answer."""
    status = resp.status
    if f == JOB_CREATE and status == 201:
        return _Answered((await resp.json())["id"])
    if f == JOB_CLAIM and status == 200:
        claimed = (await resp.json())["claimed"]
        if not claimed:
            return _Answered(None)
        job = claimed[0]
        return _Answered(
            {
                "token": job["submitted_payload"].get("token"),
                "id": job["id"],
                "epoch": job["claim_epoch"],
                "max_duration": job["max_duration"],
            }
        )
    if f == JOB_BATCH and status == 200:
        rejected = (await resp.json())["rejected"]
        return _Answered(rejected[0]["reason"] if rejected else "accepted")
    if f == JOB_CANCEL and status in CANCEL_ANSWERS:
        return _Answered(CANCEL_ANSWERS[status])
    if f == JOB_READ and status == 404:
        return _Answered(None)
    if f == JOB_READ and status == 200:
        job = await resp.json()
        return _Answered(
            {
                "status": job["status"],
                "result": job["result"],
                "error": job["error"],
                "owner": job["owner_instance_id"],
                "epoch": job["claim_epoch"],
            }
        )
    return None


async def submitter(client: JobClient, stop: asyncio.Event, rng: random.Random, tag: str) -> None:
    known: list[tuple[str, str]] = []  # (token, id) of acknowledged creates, oldest first
    for n, step in enumerate(submitter_steps(len(client.urls), rng)):
        if stop.is_set():
            return
        if step.f == JOB_CREATE or not known:
            token = f"{tag}-{n}"
            spec = {
                "capability": step.capability,
                "max_duration": LEASE_S,
                "max_retries": MAX_RETRIES,
            }
            body = {**spec, "submitted_by": tag, "submitted_payload": {"token": token}}
            outcome, job_id = await client.call(
                JOB_CREATE, token, spec, step.node, "POST", "/jobs", body
            )
            if outcome == OK:
                known.append((token, job_id))
        else:
            recent = known[-RECENT:]
            token, job_id = recent[-1 - int(step.pick * len(recent))]
            if step.f == JOB_CANCEL:
                path, method, body = f"/jobs/{job_id}/cancel", "POST", {"reason": "jepsen"}
            else:
                path, method, body = f"/jobs/{job_id}?consistency=linearizable", "GET", None
            await client.call(step.f, token, None, step.node, method, path, body)
        await asyncio.sleep(step.pause)


class Producer:
    """One instance of a producer pair: the job it holds and until when it stalls."""

    def __init__(self, client: JobClient, instance: str) -> None:
        self.client = client
        self.instance = instance
        self.held: Held | None = None
        self.stalled_until = 0.0
        self.rounds = 0

    async def act(self, step: ProduceStep) -> None:
        self.rounds += 1
        if time.monotonic() < self.stalled_until:
            return
        if self.held is None:
            await self._claim(step)
        elif step.action == STALL:
            self.stalled_until = time.monotonic() + step.stall
        else:
            await self._batch(self.held, step)

    async def _claim(self, step: ProduceStep) -> None:
        body = {"capability": step.capability, "instance_id": self.instance}
        outcome, got = await self.client.call(
            JOB_CLAIM,
            step.capability,
            {"instance": self.instance},
            step.node,
            "POST",
            "/jobs/claim",
            body,
        )
        if outcome == OK and got is not None:
            self.held = Held(got["token"], got["id"], got["epoch"])

    async def _batch(self, job: Held, step: ProduceStep) -> None:
        status = TERMINAL_STATUS.get(step.action)
        result = error = None
        delta: dict[str, Any] = {"id": job.id, "claim_epoch": job.epoch}
        if status is None:
            delta.update(progress=step.progress, progress_message=f"round {self.rounds}")
        elif status == "completed":
            result = {"by": self.instance, "epoch": job.epoch, "round": self.rounds}
            delta.update(status=status, result=result)
        else:
            error = f"jepsen: {self.instance} failed epoch {job.epoch} in round {self.rounds}"
            delta.update(status=status, error=error)
        value = {
            "instance": self.instance,
            "epoch": job.epoch,
            "status": status,
            "result": result,
            "error": error,
        }
        body = {"instance_id": self.instance, "deltas": [delta]}
        outcome, answer = await self.client.call(
            JOB_BATCH, job.token, value, step.node, "POST", "/jobs/batch", body
        )
        # Done with the job once it is certainly over for this instance: completed or failed by
        # it, or its delta rejected (another claim, or terminal). An unknown outcome, or a
        # refusal, leaves it held: the next round tries again with the same epoch.
        if outcome == OK and (answer != "accepted" or status is not None):
            self.held = None


async def producer_pair(
    pair: tuple[Producer, Producer],
    registered: list[asyncio.Event],
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Rounds of both instances at once, once their agents are registered."""
    while not all(e.is_set() for e in registered) and not stop.is_set():
        await asyncio.sleep(0.1)
    for first, second, pause in producer_steps(len(pair[0].client.urls), rng):
        if stop.is_set():
            return
        await asyncio.gather(pair[0].act(first), pair[1].act(second))
        await asyncio.sleep(pause)


async def final_jobs(
    session: aiohttp.ClientSession, urls: list[str]
) -> dict[str, dict[str, Any] | None]:
    """What every replica holds at the end, by token (``None`` for a replica that did not
    answer every page): each job's id, status, result, error, owner and claim epoch."""
    held: dict[str, dict[str, Any] | None] = {}
    for i, url in enumerate(urls):
        held[f"n{i}"] = None
        for _ in range(3):
            try:
                held[f"n{i}"] = await _list_all(session, url)
                break
            except (TimeoutError, aiohttp.ClientError, KeyError):
                await asyncio.sleep(1)
    return held


async def _list_all(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    cursor = ""
    while True:
        query = f"?limit=200&cursor={cursor}" if cursor else "?limit=200"
        async with session.get(f"{url}/jobs{query}") as resp:
            if resp.status != 200:
                raise aiohttp.ClientError(f"GET /jobs answered {resp.status}")
            page = await resp.json()
        for job in page["jobs"]:
            token = (job["submitted_payload"] or {}).get("token", job["id"])
            jobs[token] = {
                "id": job["id"],
                "status": job["status"],
                "result": job["result"],
                "error": job["error"],
                "owner": job["owner_instance_id"],
                "epoch": job["claim_epoch"],
                "attempts": job["attempt_count"],
            }
        cursor = page["next_cursor"] or ""
        if not cursor:
            return jobs
