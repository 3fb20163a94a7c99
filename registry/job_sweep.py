"""The leader's job sweep: the time-driven half of MeshJob, proposed as events.

What the Go registry's sweep (sweep.go, every MCP_MESH_SWEEP_INTERVAL) does to jobs, in its
order: jobs whose owner is not a healthy registered agent go back to the queue (or fail once out
of retries, "orphaned: max retries exceeded"); jobs whose lease expired likewise ("lease expired:
no completion within lease window"); jobs past their ``total_deadline`` fail
("deadline_exceeded"); with MCP_MESH_JOB_STALE_TIMEOUT set, jobs without a deadline fail once
older than it (with a synthetic ``stale`` event). Then retention: the events of jobs terminal for
MCP_MESH_RETENTION are dropped (as Go's sweep does) and the jobs themselves after
MCP_MESH_JOB_RETENTION (Go keeps them forever; a replicated view must stay bounded).

Only the leader decides, and each action names the job revision it was decided on, so a job that
moved on in the meantime (its owner completed it, extended the lease) is left alone by apply.

Leases are judged by this node's monotonic clock, never by comparing wall clocks: a node notes,
when it applies an event that sets a lease, the monotonic time at which that lease runs out
(:class:`Leases`). It applies the event after its proposer decided it, so the noted expiry is
never earlier than the proposer's; a lease it never saw set (after a restart) gets a full window
from the moment it is first looked at, as agent health does after a failover. A wall-clock jump
therefore cannot reclaim a job early. Deadlines and retention are wall-clock by definition
(``total_deadline`` is an absolute Unix time from the client).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from registry import jobs
from registry.commit import Committed, Unavailable
from registry.events import Event
from registry.jobs import LEASE_EXPIRED
from registry.timefmt import now_ms
from registry.view import View

log = logging.getLogger(__name__)

ORPHANED = "orphaned: max retries exceeded"
DEADLINE_EXCEEDED = "deadline_exceeded"


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` writes it (``5m0s``, ``1h0m0s``, ``500ms``),
    for the stale reason text the Go registry uses."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class Leases:
    """When each job's current lease runs out on this node's monotonic clock."""

    def __init__(self, view: View, clock: Callable[[], float] = time.monotonic) -> None:
        self.view = view
        self._clock = clock
        # job id -> (the lease it was noted for, when that runs out here)
        self._until: dict[str, tuple[tuple[object, ...], float]] = {}

    def on_applied(self, index: int, event: Event) -> None:
        """StateMachine listener: note the leases the event just set (or ended). An event that
        names a job without changing its lease (a consumer's posted event) leaves the lease
        running: as in the Go registry, only a claim, the owner's batches and its executor
        reads extend it (found by the chaos harness's job workload)."""
        for job_id in jobs.touched(event):
            job = self.view.jobs.get(job_id)
            if job is None or job.owner is None or job.lease_expires_ms is None or job.terminal:
                self._until.pop(job_id, None)
            elif (noted := self._until.get(job_id)) is None or noted[0] != _lease(job):
                self._note(job)

    def on_reset(self) -> None:
        """A snapshot was installed: every lease gets a fresh full window."""
        self._until.clear()

    def _note(self, job: jobs.Job) -> None:
        assert job.lease_expires_ms is not None
        window_ms = job.lease_expires_ms - (job.last_heartbeat_ms or job.lease_expires_ms)
        self._until[job.id] = (_lease(job), self._clock() + max(window_ms, 0) / 1000)

    def expired(self) -> set[str]:
        """Owned live jobs whose lease has run out here."""
        now = self._clock()
        out: set[str] = set()
        for job in self.view.jobs.live():
            if job.owner is None or job.lease_expires_ms is None:
                continue
            noted = self._until.get(job.id)
            if noted is None or noted[0] != _lease(job):
                self._note(job)
            elif now > noted[1]:
                out.add(job.id)
        return out


def _lease(job: jobs.Job) -> tuple[object, ...]:
    """What identifies one lease: its owner's claim and the deadline the last extension set."""
    return (job.owner, job.claim_epoch, job.lease_expires_ms, job.last_heartbeat_ms)


def stale_reason(effective: float, stale_timeout: float) -> str:
    if effective > stale_timeout:
        return f"stale: no total_deadline set and exceeded max_duration ({go_duration(effective)})"
    return (
        "stale: no total_deadline set and exceeded the MCP_MESH_JOB_STALE_TIMEOUT ceiling "
        f"({go_duration(stale_timeout)})"
    )


def decide(
    view: View, lease_expired: set[str], wall_ms: int, stale_timeout: float
) -> list[dict[str, Any]]:
    """The sweep's actions, phase by phase as Go runs them (a job can get several: an orphan
    put back in the queue can still fail its deadline in the same sweep)."""
    actions: list[dict[str, Any]] = []
    for job in sorted(view.jobs.live(), key=lambda j: j.created_index):
        steps = _steps(view, job, job.id in lease_expired, wall_ms, stale_timeout)
        actions += [{"id": job.id, "rev": job.rev + i, **step} for i, step in enumerate(steps)]
    return actions


def _steps(
    view: View, job: jobs.Job, lease_expired: bool, wall_ms: int, stale_timeout: float
) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    owned = job.owner is not None
    if owned and not view.is_healthy(job.owner or ""):
        if not job.within_budget:
            return [{"op": "fail", "error": ORPHANED}]
        steps.append({"op": "reset", "end": "orphaned"})
        owned = False
    if owned and lease_expired:
        if not job.within_budget:
            return [{"op": "fail", "error": LEASE_EXPIRED}]
        steps.append({"op": "reset", "end": "lease_expired"})
    if job.total_deadline is not None:
        if job.total_deadline * 1000 < wall_ms:
            steps.append({"op": "fail", "error": DEADLINE_EXCEEDED})
        return steps
    if stale_timeout > 0:
        effective = max(stale_timeout, float(job.max_duration or 0))
        if job.submitted_ms < wall_ms - effective * 1000:
            reason = stale_reason(effective, stale_timeout)
            event = {"type": "stale", "payload": {"reason": "stale", "detail": reason}}
            steps.append({"op": "fail", "error": reason, "event": event})
    return steps


def decide_purge(
    view: View, wall_ms: int, retention: float, job_retention: float
) -> tuple[list[str], list[str]]:
    """Terminal jobs to remove, and terminal jobs whose events to drop (0 keeps forever)."""
    remove: list[str] = []
    drop_events: list[str] = []
    for job in view.jobs.jobs.values():
        if not job.terminal or job.terminal_ms is None:
            continue
        if job_retention > 0 and job.terminal_ms < wall_ms - job_retention * 1000:
            remove.append(job.id)
        elif retention > 0 and job.events and job.terminal_ms < wall_ms - retention * 1000:
            drop_events.append(job.id)
    return remove, drop_events


class JobSweeper:
    """Every MCP_MESH_SWEEP_INTERVAL, on the leader only: one sweep event, one purge event."""

    def __init__(
        self,
        view: View,
        leases: Leases,
        propose: Callable[[Event], Awaitable[Committed]],
        leading: Callable[[], bool],
        interval: float,
        stale_timeout: float,
        retention: float,
        job_retention: float,
    ) -> None:
        self.view = view
        self.leases = leases
        self.propose = propose
        self.leading = leading
        self.interval = interval
        self.stale_timeout = stale_timeout
        self.retention = retention
        self.job_retention = job_retention

    async def check(self) -> list[dict[str, Any]]:
        """One sweep; returns the actions it proposed."""
        if not self.leading():
            return []
        wall = now_ms()
        actions = decide(self.view, self.leases.expired(), wall, self.stale_timeout)
        if actions:
            await self.propose(jobs.sweep(actions, wall))
            log.info("jobs swept", extra={"actions": [(a["id"], a["op"]) for a in actions]})
        remove, drop_events = decide_purge(self.view, wall, self.retention, self.job_retention)
        if remove or drop_events:
            await self.propose(jobs.purge(remove, drop_events, wall))
        return actions

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Unavailable as exc:
                log.warning("job sweep skipped", extra={"reason": str(exc)})
