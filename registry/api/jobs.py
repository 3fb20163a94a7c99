"""The MeshJob endpoints (``/jobs*``), with the Go registry's paths, bodies and status codes.

Every write reads the job in this node's view, decides the transition with registry/jobs.py
(which also says what the answer will be), and proposes it naming the job's revision. A refused
proposal means the job moved on first (a racing claim through another replica, a lease sweep):
the view is then newer and the handler decides again, a few times at most. An answer that depends
on the job's state being absent or not this caller's (404, 403, 409, an empty claim is not one)
is only given after a barrier, so a replica that has not yet applied a job created or claimed
through another replica never denies it. Bad input is answered 400 before anything is proposed.

Reads are served from this node's view like every other read (``?consistency=linearizable``
waits for a barrier first). ``GET /jobs/{id}/events?wait=`` long-polls: it waits for the view to
apply an event naming the job, not on a timer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import heapq
import logging
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from registry import jobs
from registry.api.keys import NODE
from registry.api.responses import fail, json_response, read_json
from registry.events import Event
from registry.jobs import Job, Refusal
from registry.node import Node
from registry.timefmt import now_ms
from registry.view import View

log = logging.getLogger(__name__)

ATTEMPTS = 8
"""Proposals per request before a 503 (the Go registry's claimMaxAttempts)."""
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 200
EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX = 100, 500
WAIT_MAX = 60
PENDING_CAP = 100
"""X-Mesh-Pending-Jobs is capped at 100 (the OpenAPI schema's maximum)."""
CANCEL_FORWARD_TIMEOUT = 5.0


class JobsRuntime:
    """The endpoints' in-memory side: long polls waiting for their job to change (woken by a
    state-machine listener), and cancel forwards still in flight (cancelled at shutdown)."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Event] = {}
        self.forwards: set[asyncio.Task[None]] = set()

    def on_applied(self, _index: int, event: Event) -> None:
        for job_id in jobs.touched(event):
            waiter = self._waiting.pop(job_id, None)
            if waiter is not None:
                waiter.set()

    async def wait(self, job_id: str, timeout: float) -> None:
        waiter = self._waiting.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout)

    def forward(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self.forwards.add(task)
        task.add_done_callback(self.forwards.discard)

    async def close(self, _app: web.Application) -> None:
        for task in list(self.forwards):
            task.cancel()
        await asyncio.gather(*self.forwards, return_exceptions=True)


RUNTIME = web.AppKey("jobs_runtime", JobsRuntime)


# -- input ---------------------------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        fail(400, "Invalid JSON payload: expected a JSON object")
    return body


def _typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``body[name]`` when absent, null or of ``kind`` (bools are not numbers); else 400."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        fail(400, f"Invalid JSON payload: {name} must be {what}", name)
    if not isinstance(value, kind):
        fail(400, f"Invalid JSON payload: {name} must be {what}", name)
    return value


def _required_str(body: dict[str, Any], name: str) -> str:
    value = _typed(body, name, str, "a string")
    if not value or not value.strip():
        fail(400, f"{name} is required")
    return str(value)


def _int_query(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        fail(400, f"Invalid format for parameter {name}: expected an integer", raw)


def _path_job(request: web.Request) -> str:
    return request.match_info["job_id"]


# -- rendering -----------------------------------------------------------------------------------


def _seconds(ms: int | None) -> int | None:
    return None if ms is None else ms // 1000


def render(job: Job) -> dict[str, Any]:
    """The Go registry's Job (times in Unix seconds; recv_cursor null until one is recorded)."""
    return {
        "attempt_count": job.attempt_count,
        "capability": job.capability,
        "claim_epoch": job.claim_epoch,
        "error": job.error,
        "id": job.id,
        "last_heartbeat_at": _seconds(job.last_heartbeat_ms),
        "lease_expires_at": _seconds(job.lease_expires_ms),
        "max_duration": job.max_duration,
        "max_retries": job.max_retries,
        "owner_instance_id": job.owner,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "recv_cursor": job.recv_cursor or None,
        "result": job.result,
        "status": job.status,
        "submitted_at": job.submitted_ms // 1000,
        "submitted_by": job.submitted_by,
        "submitted_payload": job.submitted_payload,
        "total_deadline": job.total_deadline,
    }


def _render_event(job_id: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "created_at": item["created_ms"] // 1000,
        "job_id": job_id,
        "payload": item["payload"],
        "posted_by": item["posted_by"],
        "seq": item["seq"],
        "trace_context": item["trace_context"],
        "type": item["type"],
    }


# -- the decide / propose loop -------------------------------------------------------------------

Decision = tuple[Event, Any]


async def _commit(node: Node, job_id: str, decide: Callable[[Job | None], Decision]) -> Any:
    """Decide on the job as this view has it and propose; what ``decide`` said the answer is,
    once its event took effect. A refusal by the job's state is answered only after a barrier."""
    barriered = False
    for _ in range(ATTEMPTS):
        try:
            event, outcome = decide(node.view.jobs.get(job_id))
        except Refusal as refusal:
            if not barriered:
                await node.proposer.barrier()
                barriered = True
                continue
            message = f"job not found: {job_id}" if refusal.status == 404 else refusal.message
            fail(refusal.status, message)
        committed = await node.propose(event)
        if committed.took_effect:
            return outcome
    fail(503, "job changed concurrently too often; retry")


async def _job(node: Node, job_id: str) -> Job:
    """The job, after a barrier if this view does not have it yet; 404 when there is none."""
    job = node.view.jobs.get(job_id)
    if job is None:
        await node.proposer.barrier()
        job = node.view.jobs.get(job_id)
    if job is None:
        fail(404, f"job not found: {job_id}")
    return job


# -- handlers ------------------------------------------------------------------------------------


async def create_job(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await _body(request)
    capability = _typed(body, "capability", str, "a string")
    submitted_by = _typed(body, "submitted_by", str, "a string")
    payload = _typed(body, "submitted_payload", dict, "an object")
    max_retries = _typed(body, "max_retries", int, "an integer")
    max_duration = _typed(body, "max_duration", int, "an integer")
    total_deadline = _typed(body, "total_deadline", int, "an integer")
    owner = _typed(body, "owner_instance_id", str, "a string")
    if not capability:
        fail(400, "capability is required")
    if not submitted_by:
        fail(400, "submitted_by is required")
    if payload is None:
        fail(400, "submitted_payload is required")
    if max_retries is not None and max_retries < 0:
        fail(400, "max_retries must be non-negative")
    if max_duration is not None and max_duration < 1:
        fail(400, "max_duration must be positive")
    held, limit = len(node.view.jobs), node.config.limits.jobs
    if held >= limit:
        node.metrics.refused.labels("jobs").inc()
        fail(429, f"the registry holds {held} jobs, its limit (MAX_JOBS); retry later")
    spec = {
        "id": str(uuid.uuid4()),
        "capability": capability,
        "submitted_by": submitted_by,
        "submitted_payload": payload,
        "max_retries": 1 if max_retries is None else max_retries,
        "max_duration": max_duration,
        "total_deadline": total_deadline,
        "owner": owner or None,
    }
    await node.propose(jobs.create(spec, now_ms()))
    return json_response(
        {"id": spec["id"], "owner_instance_id": spec["owner"], "status": jobs.WORKING}, 201
    )


def _list_cursor(raw: str) -> tuple[int, str]:
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        when, _, job_id = decoded.partition(":")
        if not job_id:
            raise ValueError
        return int(when), job_id
    except binascii.Error as exc:
        fail(400, f"ListJobs: invalid cursor: decode base64: {exc}")
    except ValueError:  # UnicodeDecodeError included
        fail(400, "ListJobs: invalid cursor: malformed cursor payload")


def _encode_cursor(job: Job) -> str:
    raw = f"{job.submitted_ms}:{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def list_jobs(request: web.Request) -> web.Response:
    """GET /jobs: newest first by (submitted_at, id), filtered, in keyset pages."""
    node = request.app[NODE]
    query = request.query
    limit = _int_query(request, "limit")
    limit = LIST_LIMIT_DEFAULT if limit is None and "limit" not in query else limit or 0
    if not 1 <= limit <= LIST_LIMIT_MAX:
        fail(400, f"limit must be in [1, {LIST_LIMIT_MAX}], got {limit}")
    statuses: set[str] = set()
    for token in (query.get("status") or "").split(","):
        token = token.strip()
        if not token:
            continue
        if token not in jobs.STATUSES:
            fail(400, f'invalid status "{token}": must be one of {",".join(jobs.STATUSES)}')
        statuses.add(token)
    owner = (query.get("owner_instance_id") or "").strip()
    capability = (query.get("capability") or "").strip()
    since = _int_query(request, "submitted_since") or 0
    cursor = (query.get("cursor") or "").strip()
    after = _list_cursor(cursor) if cursor else None
    # The page and one more (is there a next page?), not every job sorted: heapq keeps only
    # limit + 1 of them while it scans.
    selected = heapq.nlargest(
        limit + 1,
        (
            job
            for job in node.view.jobs.jobs.values()
            if (not statuses or job.status in statuses)
            and (not owner or job.owner == owner)
            and (not capability or job.capability == capability)
            and (since <= 0 or job.submitted_ms >= since * 1000)
            and (after is None or (job.submitted_ms, job.id) < after)
        ),
        key=lambda j: (j.submitted_ms, j.id),
    )
    page = selected[:limit]
    next_cursor = _encode_cursor(page[-1]) if len(selected) > limit else None
    return json_response({"jobs": [render(job) for job in page], "next_cursor": next_cursor})


async def get_job(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return json_response(render(await _job(node, _path_job(request))))


_DELTA_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "claim_epoch": (int, "an integer"),
    "status": (str, "a string"),
    "progress": ((int, float), "a number"),
    "progress_message": (str, "a string"),
    "result": (dict, "an object"),
    "error": (str, "a string"),
    "recv_cursor": (dict, "an object of integers"),
}


def _delta(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        fail(400, "Invalid JSON payload: every delta must be an object")
    job_id = raw.get("id")
    if not isinstance(job_id, str) or not job_id:
        fail(400, "every delta requires a non-empty id")
    delta: dict[str, Any] = {"id": job_id}
    for name, (kind, what) in _DELTA_FIELDS.items():
        value = _typed(raw, name, kind, what)
        if value is not None:
            delta[name] = value
    cursor = delta.get("recv_cursor", {})
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in cursor.values()):
        fail(400, "Invalid JSON payload: recv_cursor must be an object of integers")
    return delta


async def submit_batch(request: web.Request) -> web.Response:
    """POST /jobs/batch: the owner's deltas, each accepted or rejected with Go's reason."""
    node = request.app[NODE]
    body = await _body(request)
    instance_id = _typed(body, "instance_id", str, "a string")
    raw = _typed(body, "deltas", list, "an array")
    if not instance_id:
        fail(400, "instance_id is required")
    if not raw:
        fail(400, "deltas must not be empty")
    deltas = [_delta(d) for d in raw]
    barriered = False
    for _ in range(ATTEMPTS):
        ts = now_ms()
        rejected = jobs.decide_batch(node.view.jobs, instance_id, deltas, ts)
        if rejected and not barriered:
            # A rejection may only mean this view has not applied the claim yet.
            await node.proposer.barrier()
            barriered = True
            continue
        if len(rejected) < len(deltas):
            committed = await node.propose(jobs.batch(node.view.jobs, instance_id, deltas, ts))
            if not committed.took_effect:
                continue
        return json_response(
            {
                "accepted": len(deltas) - len(rejected),
                "rejected": [{"id": i, "reason": r} for i, r in rejected],
            }
        )
    fail(503, "jobs changed concurrently too often; retry")


def _claim_gate_open(view: View, instance_id: str, capability: str) -> bool:
    """Go's claim gate (issue #1249): an agent whose tool for ``capability`` has its
    ``required`` dependencies unmet (transitively, registry.availability) gets no work, so a
    topological outage burns no attempt. As in the Go registry the claimer's own recorded
    health is not asked (it is polling, so alive); a claimer that is not a registered provider
    of the capability is not gated."""
    agent = view.agents.get(instance_id)
    if agent is None:
        return True
    tools = agent.registration.get("tools") or ()
    return not any(
        unmet and tool.get("capability") == capability
        for tool, unmet in zip(tools, view.availability(instance_id), strict=True)
    )


async def claim_jobs(request: web.Request) -> web.Response:
    """POST /jobs/claim: the oldest claimable job of the capability, or ``claimed: []`` (none
    queued, the claim gate closed, or the registry draining)."""
    node = request.app[NODE]
    body = await _body(request)
    capability = _typed(body, "capability", str, "a string")
    instance_id = _typed(body, "instance_id", str, "a string")
    if not capability:
        fail(400, "capability is required")
    if not instance_id:
        fail(400, "instance_id is required")
    view = node.view
    if not _claim_gate_open(view, instance_id, capability):
        return json_response({"claimed": []})
    for _ in range(ATTEMPTS):
        # Drained (registry/api/drain.py): no work, the job stays queued and no attempt is
        # burnt; apply refuses a claim committed after the drain, so the next round stops.
        job = None if view.jobs.draining else view.jobs.next_claimable(capability)
        if job is None:
            return json_response({"claimed": []})
        ts = now_ms()
        claimed = {
            "attempt_count": job.attempt_count + 1,
            "claim_epoch": job.claim_epoch + 1,
            "id": job.id,
            "lease_expires_at": (ts + job.lease_window_ms()) // 1000,
            "max_duration": job.max_duration,
            "recv_cursor": dict(job.recv_cursor) if job.recv_cursor else None,
            "submitted_payload": job.submitted_payload,
        }
        committed = await node.propose(jobs.claim(job, instance_id, ts))
        if committed.took_effect:
            return json_response({"claimed": [claimed]})
    return json_response({"claimed": []})


async def release_job(request: web.Request) -> web.Response:
    node = request.app[NODE]
    job_id = _path_job(request)
    body = await _body(request)
    instance_id = (_typed(body, "instance_id", str, "a string") or "").strip()
    reason = _typed(body, "reason", str, "a string") or ""
    if not instance_id:
        fail(400, "instance_id is required")

    def decide(job: Job | None) -> Decision:
        job = jobs.check_release(job, instance_id)
        status = job.status if job.within_budget else jobs.FAILED
        answer = {"attempt_count": job.attempt_count, "status": status}
        return jobs.release(job, instance_id, reason, now_ms()), answer

    return json_response(await _commit(node, job_id, decide))


async def cancel_job(request: web.Request) -> web.Response:
    """POST /jobs/{id}/cancel: cancelled at once, a ``cancelled`` event for a handler parked on
    recv_event, and after the grace the cancel forwarded to the owner (best effort)."""
    node = request.app[NODE]
    job_id = _path_job(request)
    reason = ""
    if request.content_length:
        body = await _body(request)
        reason = _typed(body, "reason", str, "a string") or ""

    def decide(job: Job | None) -> Decision:
        job = jobs.check_live(job)
        return jobs.cancel(job, reason, None, now_ms()), job.owner

    owner = await _commit(node, job_id, decide)
    if node.config.cancel_grace > 0:
        await asyncio.sleep(node.config.cancel_grace)
    if owner is not None:
        request.app[RUNTIME].forward(_forward_cancel(node, owner, job_id, reason))
    return json_response({"forwarded_to_instance_id": owner, "status": jobs.CANCELLED})


async def _forward_cancel(node: Node, owner: str, job_id: str, reason: str) -> None:
    """POST the cancel to the owner agent's own /jobs/{id}/cancel, as the Go registry does."""
    agent = node.view.agents.get(owner)
    host = agent.registration.get("http_host") if agent else None
    port = agent.registration.get("http_port") if agent else None
    if not host or not port:
        log.info("cancel forward skipped: owner has no HTTP endpoint", extra={"job_id": job_id})
        return
    url = f"http://{host}:{port}/jobs/{job_id}/cancel"
    timeout = aiohttp.ClientTimeout(total=CANCEL_FORWARD_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json={"reason": reason} if reason else None) as answer,
        ):
            await answer.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("cancel forward failed", extra={"job_id": job_id, "error": str(exc)})


async def reclaim_job(request: web.Request) -> web.Response:
    node = request.app[NODE]
    job_id = _path_job(request)

    def decide(job: Job | None) -> Decision:
        job = jobs.check_live(job)
        answer = {
            "claim_epoch": job.claim_epoch,
            "previous_owner_instance_id": job.owner,
            "status": jobs.WORKING,
        }
        return jobs.reclaim(job, now_ms()), answer

    return json_response(await _commit(node, job_id, decide))


async def post_event(request: web.Request) -> web.Response:
    node = request.app[NODE]
    job_id = _path_job(request)
    body = await _body(request)
    kind = (_typed(body, "type", str, "a string") or "").strip()
    trace = _typed(body, "trace_context", dict, "an object")
    if not kind:
        fail(400, "type is required")
    item = {"type": kind, "payload": body.get("payload"), "trace_context": trace}
    limit = node.config.limits.job_events

    def decide(job: Job | None) -> Decision:
        job = jobs.check_live(job)
        if len(job.events) >= limit:
            raise Refusal(429, f"job has {len(job.events)} events, the limit (MAX_JOB_EVENTS)")
        ts = now_ms()
        answer = {"created_at": ts // 1000, "job_id": job.id, "seq": job.next_seq}
        return jobs.post(job, item, ts), answer

    return json_response(await _commit(node, job_id, decide))


def _poll_lease(job: Job, now: int, stale_timeout: float) -> int:
    """An executor poll's lease: a fresh window, capped where the sweep would reap the job."""
    lease = now + job.lease_window_ms()
    if job.total_deadline is not None:
        return min(lease, job.total_deadline * 1000)
    if stale_timeout > 0:
        effective = max(stale_timeout, float(job.max_duration or 0))
        return min(lease, job.submitted_ms + int(effective * 1000))
    return lease


async def _executor_read(node: Node, job_id: str, instance_id: str, epoch: int) -> None:
    """Fence a superseded owner (409 claim_superseded) and extend a live owner's lease.

    The lease is extended once less than half its window is left, not on every poll: a handler
    long-polling its events then appends one entry per half window instead of one per poll."""
    job = await _job(node, job_id)
    if job.terminal:
        return
    if job.owner != instance_id or job.claim_epoch != epoch:
        await node.proposer.barrier()
        job = await _job(node, job_id)
        if not job.terminal and (job.owner != instance_id or job.claim_epoch != epoch):
            fail(409, jobs.CLAIM_SUPERSEDED)
        return
    now = now_ms()
    lease = _poll_lease(job, now, node.config.job_stale_timeout)
    current = job.lease_expires_ms or 0
    if lease > current and current - now < job.lease_window_ms() // 2:
        await node.propose(jobs.extend(job, lease, now))


async def list_events(request: web.Request) -> web.Response:
    """GET /jobs/{id}/events: events after the cursor, optionally long-polled (``wait``)."""
    node = request.app[NODE]
    job_id = _path_job(request)
    instance_id = request.query.get("instance_id") or ""
    epoch = _int_query(request, "claim_epoch")
    after = max(_int_query(request, "after") or 0, 0)
    wait = min(max(_int_query(request, "wait") or 0, 0), WAIT_MAX)
    limit = _int_query(request, "limit") or 0
    limit = min(limit, EVENTS_LIMIT_MAX) if limit > 0 else EVENTS_LIMIT_DEFAULT
    types = {t.strip() for t in (request.query.get("types") or "").split(",") if t.strip()}
    if bool(instance_id) != (epoch is not None):
        fail(
            400,
            "instance_id and claim_epoch must be supplied together (both for an executor read, "
            "or neither for an observer read)",
        )
    if epoch is not None:
        await _executor_read(node, job_id, instance_id, epoch)
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        job = await _job(node, job_id)
        found = [e for e in job.events if e["seq"] > after and (not types or e["type"] in types)]
        remaining = deadline - asyncio.get_running_loop().time()
        if found or remaining <= 0:
            break
        await request.app[RUNTIME].wait(job_id, remaining)
    found = found[:limit]
    return json_response(
        {
            "events": [_render_event(job_id, e) for e in found],
            "next_after": max([after, *(e["seq"] for e in found)]),
        }
    )


def pending_jobs(view: View, agent_id: str) -> int:
    """X-Mesh-Pending-Jobs: claimable jobs for the capabilities of the agent's group (agents
    sharing its name), capped at 100. Free when nothing is queued (the usual HEAD)."""
    if not view.jobs.any_pending():
        return 0
    agent = view.agents.get(agent_id)
    if agent is None:
        return 0
    name = agent.registration.get("name")
    capabilities = {
        tool["capability"]
        for other in view.agents.values()
        if other is agent or (name and other.registration.get("name") == name)
        for tool in other.registration.get("tools") or ()
    }
    return min(view.jobs.pending(capabilities), PENDING_CAP)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/jobs", create_job),
        web.get("/jobs", list_jobs, allow_head=False),
        web.post("/jobs/batch", submit_batch),
        web.post("/jobs/claim", claim_jobs),
        web.get("/jobs/{job_id}", get_job, allow_head=False),
        web.post("/jobs/{job_id}/release", release_job),
        web.post("/jobs/{job_id}/cancel", cancel_job),
        web.post("/jobs/{job_id}/reclaim", reclaim_job),
        web.post("/jobs/{job_id}/events", post_event),
        web.get("/jobs/{job_id}/events", list_events, allow_head=False),
    ]
