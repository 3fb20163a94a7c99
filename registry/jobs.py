"""MeshJob state: jobs, their attempts and event channels, and every transition between states.

A job moves ``working -> (input_required) -> completed | failed | cancelled`` as in MCP Mesh's Go
registry (ent_service_jobs.go, sweep.go). Every transition is a job event in the log. Its proposer
(an HTTP handler, or the leader's sweep) decides the event's timestamp and names the *revision* of
each job it read; :func:`apply_event` applies the event only if every named job is still at that
revision, and refuses it otherwise (the whole event, on every replica alike). That one check is
what makes a claim given once: two producers racing for a job through different replicas propose
two claims of the same revision; the first committed takes the job, the second finds a newer
revision and is refused, and its proposer retries against its now newer view.

Because a job at the named revision is exactly the job the proposer looked at, the proposer can
run the same transition on a copy first (:func:`decide`) and knows the outcome of its event
(which deltas were accepted, the new claim epoch, the event's seq) the moment it is committed,
without reading the view again. Nothing here reads a clock or does I/O; lease windows are derived
from the event's timestamp and the job's own ``max_duration``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from registry.events import (
    JOB_BATCH,
    JOB_CANCEL,
    JOB_CLAIM,
    JOB_CREATE,
    JOB_DRAIN,
    JOB_EXTEND,
    JOB_KINDS,
    JOB_POST,
    JOB_PURGE,
    JOB_RECLAIM,
    JOB_RELEASE,
    JOB_SWEEP,
    Event,
)

WORKING: Final = "working"
INPUT_REQUIRED: Final = "input_required"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
STATUSES: Final = (WORKING, INPUT_REQUIRED, COMPLETED, FAILED, CANCELLED)
TERMINAL: Final = frozenset({COMPLETED, FAILED, CANCELLED})

DEFAULT_LEASE_SECONDS: Final = 300
"""Lease window of a job without ``max_duration`` (the Go registry's defaultClaimLeaseSeconds)."""

# Reasons of a rejected delta in POST /jobs/batch (the Go registry's stable strings).
NOT_FOUND: Final = "not_found"
NOT_OWNER: Final = "not_owner"
ALREADY_TERMINAL: Final = "already_terminal"
INVALID_STATUS: Final = "invalid_status"
CLAIM_SUPERSEDED: Final = "claim_superseded"

LEASE_EXPIRED: Final = "lease expired: no completion within lease window"
"""The error of a job failed by the sweep for an expired lease with no retry left (Go's text)."""
RECLAIM_CAUSES: Final = ("manual", "lease_expired", "orphaned")
"""Why a job was taken from its owner and put back in the queue: an operator's reclaim, or the
sweep (lease run out, owner no longer a healthy agent); the ``cause`` of the reclaim counter."""


class Refusal(Exception):
    """A request the job's current state refuses: the HTTP status and message to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Job:
    """One job as the log describes it. Times are wall-clock milliseconds chosen by proposers."""

    id: str
    capability: str
    submitted_by: str
    submitted_payload: dict[str, Any]
    submitted_ms: int
    created_index: int
    max_retries: int = 1
    max_duration: int | None = None
    total_deadline: int | None = None
    status: str = WORKING
    owner: str | None = None
    claim_epoch: int = 0
    attempt_count: int = 0
    progress: float | None = None
    progress_message: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    recv_cursor: dict[str, int] | None = None
    lease_expires_ms: int | None = None
    last_heartbeat_ms: int | None = None
    terminal_ms: int | None = None
    rev: int = 0
    """Bumped by every change of the job's state: what a proposer names to have its event
    applied only to the state it decided on."""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """One entry per claim: ``{"epoch", "instance_id", "claimed_ms", "ended_ms", "end"}``."""
    events: list[dict[str, Any]] = field(default_factory=list)
    next_seq: int = 1

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def claimable(self) -> bool:
        """Queued for a claim: working, no owner, retry budget left (``attempt <= max``)."""
        return self.status == WORKING and self.owner is None and self.within_budget

    @property
    def within_budget(self) -> bool:
        return self.attempt_count <= self.max_retries

    def lease_window_ms(self) -> int:
        return 1000 * (self.max_duration or DEFAULT_LEASE_SECONDS)

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Job:
        return cls(**state)


# -- transitions on one job (shared by decide and apply) -----------------------------------------


def _end_attempt(job: Job, ts: int, end: str) -> None:
    if job.attempts and job.attempts[-1]["ended_ms"] is None:
        job.attempts[-1]["ended_ms"] = ts
        job.attempts[-1]["end"] = end


def _finish(job: Job, status: str, ts: int, error: str | None) -> None:
    job.status = status
    job.terminal_ms = ts
    if error is not None:
        job.error = error
    _end_attempt(job, ts, status)


def _reset(job: Job, ts: int, end: str) -> None:
    """Back in the queue: working, no owner, no lease; the next claim counts the attempt."""
    _end_attempt(job, ts, end)
    job.status = WORKING
    job.owner = None
    job.lease_expires_ms = None
    job.last_heartbeat_ms = None


def _fail_clearing(job: Job, ts: int, error: str) -> None:
    """Failed by the registry (sweep, exhausted release): no owner and no lease left."""
    job.owner = None
    job.lease_expires_ms = None
    job.last_heartbeat_ms = ts
    _finish(job, FAILED, ts, error)


def _append_event(job: Job, ts: int, item: dict[str, Any]) -> int:
    seq = job.next_seq
    job.events.append(
        {
            "seq": seq,
            "type": item["type"],
            "payload": item.get("payload"),
            "trace_context": item.get("trace_context"),
            "posted_by": item.get("posted_by"),
            "created_ms": ts,
        }
    )
    job.next_seq += 1
    return seq


def _claim(job: Job, ts: int, instance_id: str) -> None:
    job.owner = instance_id
    job.attempt_count += 1
    job.claim_epoch += 1
    job.lease_expires_ms = ts + job.lease_window_ms()
    job.last_heartbeat_ms = ts
    job.attempts.append(
        {
            "epoch": job.claim_epoch,
            "instance_id": instance_id,
            "claimed_ms": ts,
            "ended_ms": None,
            "end": None,
        }
    )


def delta_outcome(job: Job | None, instance_id: str, delta: dict[str, Any]) -> str:
    """Why ``delta`` from ``instance_id`` is rejected, or "" when it applies (Go's order of
    checks: existence, epoch fencing or ownership, terminal, status value)."""
    if job is None:
        return NOT_FOUND
    owns = job.owner == instance_id
    epoch = delta.get("claim_epoch")
    if epoch is not None:
        if not owns or epoch != job.claim_epoch:
            return CLAIM_SUPERSEDED
    elif not owns:
        return NOT_OWNER
    if job.terminal:
        return ALREADY_TERMINAL
    status = delta.get("status")
    if status is not None and status not in STATUSES:
        return INVALID_STATUS
    return ""


def _apply_delta(job: Job, ts: int, delta: dict[str, Any]) -> None:
    status = delta.get("status")
    job.last_heartbeat_ms = ts
    if status is None or status not in TERMINAL:
        job.lease_expires_ms = ts + job.lease_window_ms()
    if delta.get("progress") is not None:
        job.progress = delta["progress"]
    if delta.get("progress_message") is not None:
        job.progress_message = delta["progress_message"]
    incoming = delta.get("recv_cursor")
    if incoming is not None:
        merged = dict(job.recv_cursor or {})
        for key, seq in incoming.items():
            if key not in merged or seq > merged[key]:
                merged[key] = seq
        job.recv_cursor = merged
    if status is None:
        return
    if status in TERMINAL:
        error = delta.get("error") if status == FAILED else None
        if status == COMPLETED and delta.get("result") is not None:
            job.result = delta["result"]
        _finish(job, status, ts, error)
    else:
        job.status = status


def _release(job: Job, ts: int, reason: str) -> None:
    """Owner gives the job back; past its budget the job fails (Go's exhausted release)."""
    if not job.within_budget:
        job.owner = None
        job.lease_expires_ms = None
        job.last_heartbeat_ms = ts
        error = f"exhausted (release): {reason.strip() or 'max retries exceeded'}"
        _finish(job, FAILED, ts, error)
        return
    _end_attempt(job, ts, "released")
    job.owner = None
    job.lease_expires_ms = None
    job.last_heartbeat_ms = ts


def _cancel(job: Job, ts: int, reason: str, posted_by: str | None) -> None:
    job.last_heartbeat_ms = ts
    _finish(job, CANCELLED, ts, f"cancelled: {reason.strip()}" if reason.strip() else None)
    # The synthetic event a handler parked on recv_event unwinds on (Go posts it right after).
    synthetic = {"type": "cancelled", "payload": {"reason": reason}, "posted_by": posted_by}
    _append_event(job, ts, synthetic)


# -- checks a proposer makes before proposing (raise Refusal) ------------------------------------


def check_release(job: Job | None, instance_id: str) -> Job:
    if job is None:
        raise Refusal(404, "job not found")
    if job.terminal:
        raise Refusal(409, "job is already in a terminal state")
    if job.owner != instance_id:
        raise Refusal(403, "caller is not the current owner of this job")
    return job


def check_live(job: Job | None) -> Job:
    """Cancel, reclaim and event posts need a job that exists and is not terminal."""
    if job is None:
        raise Refusal(404, "job not found")
    if job.terminal:
        raise Refusal(409, "job is already in a terminal state")
    return job


# -- event payloads (everything time-dependent decided here, by the proposer) --------------------


def create(job: dict[str, Any], ts_ms: int) -> Event:
    return Event(JOB_CREATE, ts_ms, {"job": job})


def claim(job: Job, instance_id: str, ts_ms: int) -> Event:
    return Event(JOB_CLAIM, ts_ms, {"id": job.id, "rev": job.rev, "instance_id": instance_id})


def batch(jobs: JobsState, instance_id: str, deltas: list[dict[str, Any]], ts_ms: int) -> Event:
    revs = {d["id"]: _rev(jobs.get(d["id"])) for d in deltas}
    return Event(JOB_BATCH, ts_ms, {"instance_id": instance_id, "deltas": deltas, "revs": revs})


def release(job: Job, instance_id: str, reason: str, ts_ms: int) -> Event:
    payload = {"id": job.id, "rev": job.rev, "instance_id": instance_id, "reason": reason}
    return Event(JOB_RELEASE, ts_ms, payload)


def cancel(job: Job, reason: str, posted_by: str | None, ts_ms: int) -> Event:
    payload = {"id": job.id, "rev": job.rev, "reason": reason, "posted_by": posted_by}
    return Event(JOB_CANCEL, ts_ms, payload)


def reclaim(job: Job, ts_ms: int) -> Event:
    return Event(JOB_RECLAIM, ts_ms, {"id": job.id, "rev": job.rev})


def extend(job: Job, lease_ms: int, ts_ms: int) -> Event:
    """An executor read's lease extension (poll-liveness), capped by the proposer."""
    return Event(JOB_EXTEND, ts_ms, {"id": job.id, "rev": job.rev, "lease_ms": lease_ms})


def post(job: Job, item: dict[str, Any], ts_ms: int) -> Event:
    """A posted event; it takes seq ``job.next_seq`` or is refused (a racing post took it)."""
    return Event(JOB_POST, ts_ms, {"id": job.id, "seq": job.next_seq, "event": item})


def sweep(actions: list[dict[str, Any]], ts_ms: int) -> Event:
    """Leader decisions: ``[{"id", "rev", "op": "reset"|"fail", "end"|"error", "event"?}]``,
    each applied only to the job revision it was decided on."""
    return Event(JOB_SWEEP, ts_ms, {"actions": actions})


def drain(on: bool, ts_ms: int) -> Event:
    """Drain mode on (no claim is given, on any replica) or off."""
    return Event(JOB_DRAIN, ts_ms, {"on": on})


def purge(job_ids: list[str], events_of: list[str], ts_ms: int) -> Event:
    """Retention: terminal jobs removed, and terminal jobs whose event channels are dropped."""
    return Event(JOB_PURGE, ts_ms, {"ids": sorted(job_ids), "events_of": sorted(events_of)})


def touched(event: Event) -> list[str]:
    """The ids of the jobs a job event names (for listeners: leases, long polls)."""
    p = event.payload
    if event.kind == JOB_CREATE:
        return [p["job"]["id"]]
    if event.kind == JOB_BATCH:
        return list(p["revs"])
    if event.kind == JOB_SWEEP:
        return [a["id"] for a in p["actions"]]
    if event.kind == JOB_PURGE:
        return [*p["ids"], *p["events_of"]]
    if event.kind == JOB_DRAIN:
        return []
    if event.kind in JOB_KINDS:
        return [p["id"]]
    return []


def _rev(job: Job | None) -> int | None:
    return None if job is None else job.rev


# -- the job view --------------------------------------------------------------------------------


@dataclass(slots=True)
class Counts:
    """What the applied job events did, counted by apply (so equal on every replica, and kept
    by snapshots): the monotonic figures behind the job counters in registry/metrics.py."""

    claims: int = 0
    lease_expiries: int = 0
    """Leases the sweep ended: the job back in the queue, or failed with no retry left."""
    reclaims: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECLAIM_CAUSES, 0))

    def to_state(self) -> dict[str, Any]:
        return asdict(self)


class JobsState:
    """All jobs, with the queue of claimable jobs per capability derived from them, the
    cluster's drain mode, and the counts of what job events did."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.draining = False
        """Drain mode (``/admin/drain``): while on, apply refuses every claim."""
        self.counts = Counts()
        # Derived (rebuilt on load, never stored): claimable job ids per capability.
        self._queued: dict[str, set[str]] = {}

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def __len__(self) -> int:
        return len(self.jobs)

    def _reindex(self, job: Job) -> None:
        queue = self._queued.setdefault(job.capability, set())
        if job.claimable and job.id in self.jobs:
            queue.add(job.id)
        else:
            queue.discard(job.id)

    def next_claimable(self, capability: str) -> Job | None:
        """The oldest claimable job of ``capability`` (FIFO by submission, as in Go)."""
        ids = self._queued.get(capability)
        if not ids:
            return None
        return min((self.jobs[i] for i in ids), key=lambda j: (j.submitted_ms, j.created_index))

    def any_pending(self) -> bool:
        return any(self._queued.values())

    def pending(self, capabilities: Iterable[str]) -> int:
        return sum(len(self._queued.get(c, ())) for c in set(capabilities))

    def live(self) -> Iterator[Job]:
        return (job for job in self.jobs.values() if not job.terminal)

    def live_claims(self) -> int:
        """Live jobs with an owner: what an operator waits to reach 0 while draining."""
        return sum(job.owner is not None for job in self.live())

    def to_state(self) -> list[dict[str, Any]]:
        return [job.to_state() for job in self.jobs.values()]

    def mode_state(self) -> dict[str, Any]:
        """Drain mode and counts, for the view's snapshot next to :meth:`to_state`."""
        return {"draining": self.draining, "counts": self.counts.to_state()}

    @classmethod
    def from_state(
        cls, state: list[dict[str, Any]], mode: dict[str, Any] | None = None
    ) -> JobsState:
        jobs = cls()
        for item in state:
            job = Job.from_state(item)
            jobs.jobs[job.id] = job
            jobs._reindex(job)
        # Snapshots written before drain mode and counts have no mode.
        if mode is not None:
            jobs.draining = mode["draining"]
            counts = mode["counts"]
            reclaims = {**dict.fromkeys(RECLAIM_CAUSES, 0), **counts["reclaims"]}
            jobs.counts = Counts(counts["claims"], counts["lease_expiries"], reclaims)
        return jobs


# -- apply ---------------------------------------------------------------------------------------


def _revs_hold(jobs: JobsState, revs: dict[str, int | None]) -> bool:
    return all(_rev(jobs.get(job_id)) == rev for job_id, rev in revs.items())


def run_batch(
    get: Any, instance_id: str, deltas: list[dict[str, Any]], ts: int
) -> list[tuple[str, str]]:
    """Apply the deltas in order to the jobs ``get(id)`` returns; ``[(id, reason)]`` of the
    rejected ones. A later delta sees an earlier one's effect, as in Go's loop."""
    rejected: list[tuple[str, str]] = []
    for delta in deltas:
        job = get(delta["id"])
        reason = delta_outcome(job, instance_id, delta)
        if reason:
            rejected.append((delta["id"], reason))
            continue
        assert job is not None
        _apply_delta(job, ts, delta)
        job.rev += 1
    return rejected


def decide_batch(
    jobs: JobsState, instance_id: str, deltas: list[dict[str, Any]], ts: int
) -> list[tuple[str, str]]:
    """What :func:`apply_event` will make of the batch if the jobs' revisions still hold."""
    scratch = {d["id"]: copy.deepcopy(jobs.get(d["id"])) for d in deltas}
    return run_batch(scratch.get, instance_id, deltas, ts)


def apply_event(jobs: JobsState, index: int, event: Event) -> bool:
    """Apply a committed job event; whether it took effect (False: a named revision moved on,
    or the state no longer allows it; nothing changed)."""
    p, ts = event.payload, event.ts_ms
    kind = event.kind
    if kind == JOB_CREATE:
        spec = p["job"]
        if spec["id"] in jobs.jobs:
            return False
        new = Job(**spec, submitted_ms=ts, created_index=index)
        jobs.jobs[new.id] = new
        jobs._reindex(new)
        return True
    if kind == JOB_BATCH:
        if not _revs_hold(jobs, p["revs"]):
            return False
        run_batch(jobs.get, p["instance_id"], p["deltas"], ts)
        for job_id in p["revs"]:
            if (changed := jobs.get(job_id)) is not None:
                jobs._reindex(changed)
        return True
    if kind == JOB_SWEEP:
        return _apply_sweep(jobs, ts, p["actions"])
    if kind == JOB_PURGE:
        return _apply_purge(jobs, p)
    if kind == JOB_DRAIN:
        flipped = jobs.draining != bool(p["on"])
        jobs.draining = bool(p["on"])
        return flipped
    job = jobs.get(p["id"])
    if job is None:
        return False
    if kind == JOB_POST:
        if job.terminal or job.next_seq != p["seq"]:
            return False
        _append_event(job, ts, p["event"])
        return True
    if job.rev != p["rev"]:
        return False
    if kind == JOB_CLAIM:
        # A claim decided before a drain it committed after is refused too: once a drain is
        # acknowledged, no replica gives out work.
        if not job.claimable or jobs.draining:
            return False
        _claim(job, ts, p["instance_id"])
        jobs.counts.claims += 1
    elif kind == JOB_RELEASE:
        if job.terminal or job.owner != p["instance_id"]:
            return False
        _release(job, ts, p["reason"])
    elif kind == JOB_CANCEL:
        if job.terminal:
            return False
        _cancel(job, ts, p["reason"], p["posted_by"])
    elif kind == JOB_RECLAIM:
        if job.terminal:
            return False
        if job.owner is not None:
            jobs.counts.reclaims["manual"] += 1
        _reset(job, ts, "reclaimed")
    elif kind == JOB_EXTEND:
        if job.terminal or job.owner is None:
            return False
        job.lease_expires_ms = p["lease_ms"]
        job.last_heartbeat_ms = ts
    else:
        return False
    job.rev += 1
    jobs._reindex(job)
    return True


def _apply_sweep(jobs: JobsState, ts: int, actions: list[dict[str, Any]]) -> bool:
    changed = False
    for action in actions:
        job = jobs.get(action["id"])
        if job is None or job.rev != action["rev"] or job.terminal:
            continue
        if action["op"] == "reset":
            _reset(job, ts, action["end"])
            reclaims = jobs.counts.reclaims
            reclaims[action["end"]] = reclaims.get(action["end"], 0) + 1
            jobs.counts.lease_expiries += action["end"] == "lease_expired"
        else:
            _fail_clearing(job, ts, action["error"])
            jobs.counts.lease_expiries += action["error"] == LEASE_EXPIRED
            if action.get("event") is not None:
                _append_event(job, ts, action["event"])
        job.rev += 1
        jobs._reindex(job)
        changed = True
    return changed


def _apply_purge(jobs: JobsState, p: dict[str, Any]) -> bool:
    changed = False
    for job_id in p["ids"]:
        job = jobs.get(job_id)
        if job is not None and job.terminal:
            del jobs.jobs[job_id]
            jobs._queued.get(job.capability, set()).discard(job_id)
            changed = True
    for job_id in p["events_of"]:
        job = jobs.get(job_id)
        if job is not None and job.terminal and job.events:
            job.events = []
            changed = True
    return changed
