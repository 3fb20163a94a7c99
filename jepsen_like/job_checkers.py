"""The MeshJob checkers: (h) no acknowledged job lost, (i) no two overlapping claims of one job,
(j) every job completed (or failed) by an acknowledged batch holds that outcome on every
replica, (k) no terminal job reopened, and (l) the job workload's evidence.

Each job's operations are found by its token (jepsen_like/history.py): a claim by the token in
the job it was given (a claim with an unknown outcome names no job and constrains nothing), every
other operation by its key. ``final`` is what every replica listed after healing:
``{node: {token: {"id", "status", "result", "error", "owner", "epoch", "attempts"}} | None}``
(None: the replica did not answer).

The state machine these rules come from (registry/jobs.py): a job is claimable only while it is
working with no owner; each claim makes its claimer the owner and raises the claim epoch by one;
a delta is applied only from the owner with the current epoch (otherwise ``claim_superseded``)
and only while the job is not terminal (``already_terminal``); a terminal job (completed,
failed, cancelled) takes no claim, no delta, no cancel. A claim ends when the job becomes
terminal, or the leader's sweep takes it back: its lease ran out on the leader's monotonic
clock, or its owner is not a healthy agent.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from jepsen_like.checkers import SECOND, liveness_ops
from jepsen_like.history import (
    DELETE,
    FAIL,
    HEARTBEAT,
    JOB_BATCH,
    JOB_CANCEL,
    JOB_CLAIM,
    JOB_CREATE,
    JOB_FUNCTIONS,
    JOB_READ,
    OK,
    WRITE,
    Op,
    by_key,
)
from replication.transport import LIVENESS_PERIOD

Verdict = dict[str, Any]
Final = dict[str, dict[str, Any] | None]
TERMINAL = frozenset({"completed", "failed", "cancelled"})
ACCEPTED = "accepted"
FORWARD_NS = int((2 * LIVENESS_PERIOD + 1) * SECOND)
"""How long after a follower answered a heartbeat the leader may still not know of it: the
follower's event loop hands its batch of heard agents to the tick thread once every
LIVENESS_PERIOD (replication/proposer.py ``_forward_liveness``), the tick thread sends what it
holds at most once every LIVENESS_PERIOD too (replication/syncobj.py), and a second more for
the delivery and the leader's tick. A report sent to a node that is no longer the leader is
dropped; the health checker's grace covers that rarer case."""


def by_job(ops: Iterable[Op]) -> dict[str, list[Op]]:
    """Every job's operations, by token, in the order they were invoked."""
    jobs: dict[str, list[Op]] = {}
    for op in ops:
        if op.f == JOB_CLAIM:
            if op.outcome != OK or op.result is None:
                continue
            token = op.result["token"]
        elif op.f in JOB_FUNCTIONS:
            token = op.key
        else:
            continue
        jobs.setdefault(token, []).append(op)
    return dict(sorted(jobs.items()))


def _applied(op: Op) -> bool:
    """An acknowledged batch whose delta was applied."""
    return op.f == JOB_BATCH and op.outcome == OK and op.result == ACCEPTED


def _claims(job_ops: list[Op]) -> list[Op]:
    return sorted((op for op in job_ops if op.f == JOB_CLAIM), key=lambda op: op.result["epoch"])


# -- (h) lost jobs -------------------------------------------------------------------------------


def _exists(op: Op) -> bool:
    """An acknowledged operation that shows the job existed when it was carried out."""
    if op.outcome != OK:
        return False
    if op.f in (JOB_CREATE, JOB_CLAIM):
        return True
    if op.f == JOB_READ:
        return op.result is not None
    if op.f == JOB_BATCH:
        return bool(op.result != "not_found")
    return op.f == JOB_CANCEL and op.result != "absent"


def _absent(op: Op) -> bool:
    """An acknowledged answer, given after a barrier, that the job does not exist."""
    if op.outcome != OK:
        return False
    return (
        (op.f == JOB_READ and op.result is None)
        or (op.f == JOB_CANCEL and op.result == "absent")
        or (op.f == JOB_BATCH and op.result == "not_found")
    )


def lost_jobs(ops: list[Op], final: Final) -> Verdict:
    """(h) No acknowledged job lost: a job known to exist (its create acknowledged, or any
    acknowledged answer about it: a claim that got it, a read, a batch or cancel that found it)
    is never answered "not found" by an operation invoked after it was known, and every replica
    lists it at the end. A job whose create failed (it never happened) must never be seen at
    all. The runs keep terminal jobs for MCP_MESH_JOB_RETENTION's default day, longer than any
    run, so no job leaves legitimately: one missing is lost."""
    lost, phantoms, known = [], [], 0
    for token, job_ops in by_job(ops).items():
        seen = [op.end for op in job_ops if _exists(op) and op.end is not None]
        on = sorted(node for node, held in final.items() if held is not None and token in held)
        if any(op.f == JOB_CREATE and op.outcome == FAIL for op in job_ops):
            if seen or on:
                phantoms.append({"token": token, "seen_at": min(seen, default=None), "on": on})
            continue
        if not seen:
            continue
        known += 1
        since = min(seen)
        for op in job_ops:
            if _absent(op) and op.start > since:
                lost.append({"token": token, "known_at": since, "absent": op.f, "at": op.start})
        missing = sorted(node for node, held in final.items() if held is None or token not in held)
        if missing or not final:
            lost.append({"token": token, "known_at": since, "missing_on": missing or "all"})
    return {"valid": not lost and not phantoms, "jobs": known, "lost": lost, "phantoms": phantoms}


# -- (i) overlapping claims ----------------------------------------------------------------------


def overlapping_claims(ops: list[Op], timeout_ns: int, grace_ns: int) -> Verdict:
    """(i) No two claims of one job overlap.

    For each job, among its acknowledged claims:
    - every claim epoch is given once (two claims acknowledged with one epoch: two owners);
    - epochs follow real time: a claim acknowledged before another was invoked has the lower
      epoch;
    - an applied delta comes from the owner its epoch was claimed by;
    - fencing: no delta of epoch ``e`` is applied when it was invoked after a claim with a higher
      epoch had been acknowledged (the older claim had ended before the newer one was given);
    - no claim is acknowledged while an earlier epoch's claim was certainly still valid. An
      epoch's claim is valid from its claim until its lease runs out or its owner may have been
      judged unhealthy, whichever is first (the workload neither releases nor reclaims; a
      terminal transition ends a claim too, but then no claim may follow at all: that is for
      :func:`terminal_stays` to judge). The lease runs out on the leader's monotonic clock no
      earlier than ``max_duration`` after the *invocation* of the last acknowledged renewal
      (the claim itself, or an applied progress batch of the epoch): its proposer decided the
      lease after the request was sent, and a replica notes the expiry when it applies the
      event, later still (after a restart or a snapshot, a full window from then); the
      sweep that takes the job back, and the new claim, commit after that. CLOCK_MONOTONIC is
      one clock for every namespace of the machine, so the client's timestamps compare with
      it. The owner may have been judged unhealthy from the first moment its acknowledged
      registrations and "ok" heartbeats have been silent for ``timeout - grace`` (the rule of
      the health checker, which fails the run if the registry breaks it), or from a 410 or a
      delete after the last of them; with none before the claim, at once.
    """
    agents = dict(by_key(op for op in ops if op.f in (WRITE, HEARTBEAT, DELETE)))
    violations: list[dict[str, Any]] = []
    claims_seen = 0
    for token, job_ops in by_job(ops).items():
        claims = _claims(job_ops)
        claims_seen += len(claims)
        found = _claim_violations(claims, job_ops, agents, timeout_ns - grace_ns)
        violations += [{"token": token, **v} for v in found]
    return {"valid": not violations, "claims": claims_seen, "violations": violations}


def _claim_violations(
    claims: list[Op], job_ops: list[Op], agents: dict[str, list[Op]], silence: int
) -> list[dict[str, Any]]:
    """One job's breaches of the rules of :func:`overlapping_claims`."""
    found: list[dict[str, Any]] = []
    owner = {c.result["epoch"]: owner_of(c) for c in claims}
    for epoch, group in itertools.groupby(claims, key=lambda c: c.result["epoch"]):
        owners = [owner_of(c) for c in group]
        if len(owners) > 1:
            found.append({"rule": "epoch given twice", "epoch": epoch, "owners": owners})
    for a, b in itertools.permutations(claims, 2):
        if a.end is not None and a.end < b.start and a.result["epoch"] >= b.result["epoch"]:
            found.append(
                {
                    "rule": "epoch not increasing",
                    "first": a.result["epoch"],
                    "then": b.result["epoch"],
                }
            )
    for d in (op for op in job_ops if _applied(op)):
        epoch, by = d.value["epoch"], d.value["instance"]
        if epoch in owner and owner[epoch] != by:
            found.append(
                {"rule": "delta from a non-owner", "epoch": epoch, "owner": owner[epoch], "by": by}
            )
        for c in claims:
            if c.result["epoch"] > epoch and c.end is not None and d.start > c.end:
                found.append(
                    {
                        "rule": "stale epoch applied",
                        "epoch": epoch,
                        "newer": c.result["epoch"],
                        "newer_acknowledged_at": c.end,
                        "applied_delta_invoked_at": d.start,
                    }
                )
    for earlier in claims:
        valid_until = _valid_until(earlier, job_ops, agents.get(owner_of(earlier), []), silence)
        for later in claims:
            newer = later.result["epoch"] > earlier.result["epoch"]
            if newer and later.end is not None and later.end <= valid_until:
                found.append(
                    {
                        "rule": "claim given while an earlier claim was valid",
                        "epoch": earlier.result["epoch"],
                        "valid_until": valid_until,
                        "newer": later.result["epoch"],
                        "newer_acknowledged_at": later.end,
                    }
                )
    return found


def owner_of(claim: Op) -> str:
    return str(claim.value["instance"])


def _valid_until(claim: Op, job_ops: list[Op], agent_ops: list[Op], silence: int) -> float:
    """The earliest moment ``claim`` may have ended (see :func:`overlapping_claims`)."""
    epoch, instance = claim.result["epoch"], owner_of(claim)
    mine = [
        op
        for op in job_ops
        if op.f == JOB_BATCH and op.value["epoch"] == epoch and op.value["instance"] == instance
    ]
    renewals = [claim.start] + [op.start for op in mine if _applied(op) and not op.value["status"]]
    lease_ns: int = claim.result["max_duration"] * SECOND
    lease_end = max(renewals) + lease_ns
    return min(lease_end, _unhealthy_from(agent_ops, claim.start, silence, lease_end))


def _known_marks(agent_ops: list[Op]) -> list[tuple[int, int]]:
    """When the agent was certainly heard from, and the latest moment the leader (which alone
    judges health) certainly knows it: a registration goes through the log, so at once; a
    heartbeat answered by a follower reaches the leader with the follower's next liveness
    report (``LIVENESS_PERIOD``), so up to ``FORWARD_NS`` later."""
    return sorted(
        (op.end, op.end + (0 if op.f == WRITE else FORWARD_NS))
        for op in liveness_ops(agent_ops)
        if op.end is not None
    )


def _unhealthy_from(agent_ops: list[Op], t: int, silence: int, until: float) -> float:
    """The earliest moment from ``t`` on (``until`` if none before) at which the agent may
    have been judged unhealthy: the first moment ``J`` at which no mark the leader certainly
    knows by ``J`` lies within ``silence`` before it (an owner silent for long may be judged
    unhealthy just after it heartbeated again, through a follower: seed 13007's reclaim), or a
    410 or delete answered after its last mark before ``t``."""
    marks = _known_marks(agent_ops)
    times = [m for m, _ in marks]

    def blocked(moment: float) -> bool:
        first = bisect.bisect_right(times, moment - silence)
        return any(
            known <= moment for _, known in marks[first : bisect.bisect_right(times, moment)]
        )

    prior = max((m for m in times if m <= t), default=-math.inf)
    gone = [
        op.start
        for op in agent_ops
        if op.start > prior
        and op.outcome != FAIL
        and ((op.f == HEARTBEAT and op.result == "gone" and op.outcome == OK) or op.f == DELETE)
    ]
    ends = (m + silence for m in times if t < m + silence < until)
    judged = next((j for j in (t, *ends) if not blocked(j)), until)
    return min([judged, *(max(t, g) for g in gone)])


# -- (j) completed results -----------------------------------------------------------------------


def completed_results(ops: list[Op], final: Final) -> Verdict:
    """(j) Every job completed (or failed) by an applied, acknowledged batch is, on every
    replica at the end, completed with the result that batch sent (failed with its error)."""
    wrong, checked = [], 0
    for token, job_ops in by_job(ops).items():
        for done in (op for op in job_ops if _applied(op) and op.value["status"]):
            checked += 1
            status = done.value["status"]
            field = "result" if status == "completed" else "error"
            for node, held in sorted(final.items()) or [("all", None)]:
                job = (held or {}).get(token)
                if job is None or job["status"] != status or job[field] != done.value[field]:
                    wrong.append(
                        {
                            "token": token,
                            "node": node,
                            "acknowledged": {"status": status, field: done.value[field]},
                            "final": None
                            if job is None
                            else {k: job[k] for k in ("status", field)},
                        }
                    )
    return {"valid": not wrong, "checked": checked, "wrong": wrong}


# -- (k) terminal stays terminal -----------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    """An acknowledged observation of a job: terminal (with what is known of its end state) or
    live, over the interval in which it happened."""

    start: float
    end: float
    terminal: bool
    state: tuple[tuple[str, Any], ...] = ()
    what: str = ""
    transition: bool = False
    """An acknowledged change to terminal (a batch's complete or fail, a cancel applied)."""


def _observations(job_ops: list[Op], final: Final, token: str) -> list[_Seen]:
    seen: list[_Seen] = []
    for op in job_ops:
        if op.outcome != OK or op.end is None:
            continue
        if op.f == JOB_CLAIM:
            seen.append(_Seen(op.start, op.end, False, what="claimed"))
        elif _applied(op):
            seen.append(_Seen(op.start, op.end, False, what="delta applied"))
            status = op.value["status"]
            if status:
                field = "result" if status == "completed" else "error"
                state = (("status", status), (field, op.value[field]))
                seen.append(_Seen(op.start, op.end, True, state, f"{status} by a batch", True))
        elif op.f == JOB_CANCEL and op.result == "cancelled":
            seen.append(_Seen(op.start, op.end, False, what="cancel applied"))
            seen.append(
                _Seen(op.start, op.end, True, (("status", "cancelled"),), "cancelled", True)
            )
        elif op.f == JOB_CANCEL and op.result == "terminal":
            seen.append(_Seen(op.start, op.end, True, (), "cancel found it terminal"))
        elif op.f == JOB_READ and op.result is not None:
            seen.append(_read(op.start, op.end, op.result, "read"))
    for node, held in sorted(final.items()):
        if held is not None and token in held:
            seen.append(_read(math.inf, math.inf, held[token], f"final state on {node}"))
    return seen


def _read(start: float, end: float, job: dict[str, Any], what: str) -> _Seen:
    if job["status"] not in TERMINAL:
        return _Seen(start, end, False, what=f"{what}: {job['status']}")
    state = (("status", job["status"]), ("result", job["result"]), ("error", job["error"]))
    return _Seen(start, end, True, state, what)


def terminal_stays(ops: list[Op], final: Final) -> Verdict:
    """(k) A terminal job never changes again. Observations: acknowledged claims and applied
    deltas or cancels (the job was live while they ran; the terminal ones also leave it
    terminal), cancels answered 409 (terminal), linearizable reads, and every replica's final
    state. Broken when a live observation begins after a terminal one was acknowledged
    (reopened), when two terminal observations disagree on what is known of the end state (status,
    result, error), or when two terminal transitions were both applied."""
    violations: list[dict[str, Any]] = []
    for token, job_ops in by_job(ops).items():
        seen = _observations(job_ops, final, token)
        terminal = [s for s in seen if s.terminal]
        for t in terminal:
            for live in seen:
                if not live.terminal and live.start > t.end:
                    reopened = {"after": t.what, "at": t.end, "then": live.what}
                    violations.append({"token": token, "rule": "reopened", **reopened})
        for a, b in itertools.combinations(terminal, 2):
            known_a, known_b = dict(a.state), dict(b.state)
            if any(known_a[k] != known_b[k] for k in known_a.keys() & known_b.keys()):
                changed = {"first": [a.what, known_a], "second": [b.what, known_b]}
                violations.append({"token": token, "rule": "terminal state changed", **changed})
        transitions = [s.what for s in terminal if s.transition]
        if len(transitions) > 1:
            violations.append({"token": token, "rule": "ended twice", "by": transitions})
    return {"valid": not violations, "violations": violations}


# -- (l) evidence --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobThresholds:
    """What a run with the job workload must show, per second of its time limit: jobs created
    and completed, claims given again after the sweep took a job back (``reclaims``: epoch 2 or
    more), stale owners' deltas refused (``fenced``: ``claim_superseded``), and claims racing
    through two replicas (``races``). A sixth to a tenth of what a 30-second ``--nemesis all``
    run did on a 2-core machine (228 creates, 73 completions, 37 reclaims, 38 fenced, 21 races):
    they fail a job workload that stopped working, not a slow one."""

    ok_creates_per_s: float = 1.0
    completions_per_s: float = 0.4
    reclaims_per_s: float = 0.1
    fenced_per_s: float = 0.1
    races_per_s: float = 0.05


DEFAULT_JOB_THRESHOLDS = JobThresholds()


def job_evidence(
    ops: list[Op],
    run_s: float | None,
    configured: bool,
    thresholds: JobThresholds = DEFAULT_JOB_THRESHOLDS,
) -> Verdict:
    """(l) A run configured with the job workload exercised it: jobs created and completed,
    leases expired and jobs reclaimed, stale owners' deltas refused, claims racing through
    different replicas. A run without the job workload (``configured`` False) owes none."""
    ok = [op for op in ops if op.f in JOB_FUNCTIONS and op.outcome == OK]
    claims = [op for op in ops if op.f == JOB_CLAIM]
    observed = {
        "ok_creates": sum(op.f == JOB_CREATE for op in ok),
        "ok_claims": sum(op.f == JOB_CLAIM and op.result is not None for op in ok),
        "completions": sum(_applied(op) and op.value["status"] == "completed" for op in ok),
        "failures": sum(_applied(op) and op.value["status"] == "failed" for op in ok),
        "cancels": sum(op.f == JOB_CANCEL and op.result == "cancelled" for op in ok),
        "reads": sum(op.f == JOB_READ for op in ok),
        "reclaims": sum(op.f == JOB_CLAIM and (op.result or {}).get("epoch", 0) > 1 for op in ok),
        "fenced": sum(op.f == JOB_BATCH and op.result == "claim_superseded" for op in ok),
        "races": _races(claims),
        "ok_fraction": len(ok) / n if (n := sum(op.f in JOB_FUNCTIONS for op in ops)) else None,
    }
    if not configured:
        return {"valid": True, "configured": False, "observed": observed, "reasons": []}
    reasons: list[str] = []
    required: dict[str, Any] = {}
    if run_s is None:
        reasons.append("the run's time limit is unknown (workload.json missing)")
    else:
        for name in ("ok_creates", "completions", "reclaims", "fenced", "races"):
            required[name] = math.ceil(getattr(thresholds, f"{name}_per_s") * run_s)
    for name, need in required.items():
        if observed[name] < need:
            reasons.append(f"{name}: {observed[name]}, fewer than {need}")
    return {
        "valid": not reasons,
        "configured": True,
        "thresholds": asdict(thresholds),
        "required": required,
        "observed": observed,
        "reasons": reasons,
    }


def _races(claims: list[Op]) -> int:
    """Pairs of acknowledged claims on one capability through different replicas, running at
    the same time, at least one of which got a job: the two proposals raced for a queue head."""
    done = sorted(
        (c for c in claims if c.outcome == OK and c.end is not None), key=lambda c: c.start
    )
    races = 0
    for i, a in enumerate(done):
        for b in done[i + 1 :]:
            assert a.end is not None
            if b.start >= a.end:
                break
            if a.key == b.key and a.node != b.node and (a.result or b.result):
                races += 1
    return races
