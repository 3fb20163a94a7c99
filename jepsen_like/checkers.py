"""The checkers: each takes the history (and what the run observed at the end) and returns a
verdict dict with ``valid`` and the evidence behind it."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from jepsen_like.history import (
    DELETE,
    FAIL,
    HEARTBEAT,
    OK,
    READ,
    UNREACHABLE,
    WRITE,
    WRITE_APIS,
    Op,
    by_key,
)
from jepsen_like.linearizability import check_key

Verdict = dict[str, Any]
SECOND = 1_000_000_000


def lost_writes(ops: list[Op], final: dict[str, Any]) -> Verdict:
    """(a) No acknowledged write or delete is missing from the final state.

    An acknowledged operation is owed to the final state when nothing that changes its key
    could have taken effect after it. For a write that is any other write or delete; for a
    delete only a write (a second delete leaves the agent absent too). An operation could have
    taken effect after this one unless it failed (it never happened) or completed before this
    one began; one with an unknown outcome may apply at any later time, so it always could.
    The owed write's value must then be the key's final value; after an owed delete the agent
    must be absent. Each loss names the API that acknowledged the lost write, or for a delete
    undone the APIs of the writes whose value came back.
    """
    lost = []
    for key, key_ops in by_key(ops):
        mutations = [op for op in key_ops if op.f in (WRITE, DELETE) and op.outcome != FAIL]
        value = final.get(key)
        for done in mutations:
            if done.outcome != OK:
                continue
            overriders = mutations if done.f == WRITE else [m for m in mutations if m.f == WRITE]
            if any(_may_follow(other, done) for other in overriders):
                continue
            if done.f == WRITE and value != done.value:
                lost.append({"key": key, "value": done.value, "final": value, "api": done.api})
            elif done.f == DELETE and value is not None:
                apis = sorted({m.api for m in mutations if m.f == WRITE and m.value == value})
                lost.append({"key": key, "deleted_at": done.start, "final": value, "api": apis})
    return {"valid": not lost, "lost": lost}


def _may_follow(other: Op, op: Op) -> bool:
    """Whether ``other`` (not failed) may have taken effect after ``op`` did."""
    return other is not op and (other.end is None or other.end > op.start)


def linearizable(ops: list[Op], final: dict[str, Any] | None = None) -> Verdict:
    """(b) Every key's writes, deletes and linearizable reads linearize; with ``final``, the
    state read from every replica after healing counts as one more read at the end."""
    failures, unknown, checked = [], [], 0
    end = max((op.end or op.start for op in ops), default=0) + 1
    for key, key_ops in by_key(ops):
        if final is not None:
            key_ops = [*key_ops, Op(-1, READ, key, None, end, end + 1, OK, final.get(key))]
        verdict = check_key(key, key_ops)
        checked += 1
        if verdict.valid is None:
            unknown.append(key)
        elif not verdict.valid:
            failures.append({"key": key, "ops": verdict.ops, "stuck_at": verdict.stuck_at})
    return {
        "valid": not failures and (None if unknown else True),
        "keys": checked,
        "failures": failures,
        "gave_up": unknown,
    }


def converged(digests: dict[str, str]) -> Verdict:
    """(c) After healing, every replica answered and reports the same view digest. A replica
    that did not answer is no evidence of agreement, however many others agree."""
    values = set(digests.values())
    return {"valid": len(values) == 1 and UNREACHABLE not in values, "digests": digests}


def strangers(faults: list[dict[str, Any]]) -> Verdict:
    """(g) Nobody but the cluster's own members spoke Raft: no stranger's bytes were unpickled
    and no member appeared that the cluster did not have (the ``stranger`` nemesis records
    what it found as ``breach``)."""
    breaches = [
        {"fault": f.get("planned"), "breach": f["detail"]["breach"]}
        for f in faults
        if (f.get("detail") or {}).get("breach")
    ]
    visits = sum(1 for f in faults if f.get("name") == "stranger")
    return {"valid": not breaches, "visits": visits, "breaches": breaches}


def membership(faults: list[dict[str, Any]]) -> Verdict:
    """(n) Every scale-down held: a removal acknowledged before a power loss was still in force
    once the power was back, and the cluster ended with its old members and no others (the
    ``membership`` nemesis records what failed as ``lost``). A membership fault that recorded no
    ``lost`` at all (its scale-down never finished), or whose shape reached nothing it was meant
    to (``unreached``: no leader, or fewer than five members), leaves the run without that
    evidence."""
    visits = [f for f in faults if f.get("name") == "membership"]
    failures = [
        {"fault": f.get("planned"), "lost": f["detail"]["lost"]}
        for f in visits
        if (f.get("detail") or {}).get("lost")
    ]
    unjudged = sum(
        1
        for f in visits
        if "lost" not in (f.get("detail") or {}) or "unreached" in (f.get("detail") or {})
    )
    return {
        "valid": not failures and not unjudged,
        "visits": len(visits),
        "unjudged": unjudged,
        "failures": failures,
    }


def self_stops(logs: dict[str, str], required: bool) -> Verdict:
    """(m) No replica stopped itself. The registry logs at ``critical`` when it stops its own
    node (a damaged log, or a failure it has no way around), and the process exits; the
    clients only see it as one replica fewer, so no other checker notices. In the PostgreSQL
    topology nothing the nemesis does can damage the log (one server, ``fsync=on``, no restore
    or failover), so every such stop is a bug (seed 18001 found one) and ``required`` makes it
    invalid; in the Raft topology a node whose storage fails stops by design (fail-stop), so
    its stops are counted, not judged. ``logs``: each replica's log text by name."""
    stops = []
    for name, text in sorted(logs.items()):
        for line in text.splitlines():
            if '"critical"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") == "critical":
                error = str(entry.get("exception") or "").strip().splitlines()[-1:]
                stops.append(
                    {"node": name, "ts": entry.get("ts"), "msg": entry.get("msg"), "error": error}
                )
    return {"valid": not (stops and required), "required": required, "stops": stops}


def availability(ops: list[Op], faults: list[dict[str, Any]]) -> Verdict:
    """(d) Fraction of operations that succeeded during each fault, and the longest stretch
    with no acknowledged write. Informative: availability is measured, not required."""
    windows = []
    for fault in faults:
        inside = _during(ops, fault)
        ok = sum(1 for op in inside if op.outcome == OK)
        windows.append(
            {**fault, "ops": len(inside), "ok_fraction": ok / len(inside) if inside else None}
        )
    write_times = sorted(
        op.end for op in ops if op.f in (WRITE, DELETE) and op.outcome == OK and op.end
    )
    starts = [op.start for op in ops]
    longest = 0
    if starts:
        marks = [min(starts), *write_times, max(op.end or op.start for op in ops)]
        longest = max(b - a for a, b in itertools.pairwise(marks)) if len(marks) > 1 else 0
    total = len(ops)
    return {
        "valid": True,
        "ok_fraction": sum(1 for op in ops if op.outcome == OK) / total if total else None,
        "faults": windows,
        "longest_write_gap_s": longest / 1e9,
    }


def _during(ops: list[Op], fault: dict[str, Any]) -> list[Op]:
    """The operations invoked while ``fault`` was active."""
    return [op for op in ops if fault["start"] <= op.start < fault["end"]]


def health(ops: list[Op], timeout_ns: int, grace_ns: int) -> Verdict:
    """(e) No agent that kept heartbeating was reported unhealthy.

    A heartbeat answered ``gone`` (HEAD 410) is a false verdict when, since the agent's last
    registration, it was never silent for ``timeout_ns - grace_ns`` or more: every gap between
    its acknowledged registrations and heartbeats, and from the last of them to the 410, is
    shorter (the grace covers the check interval and the followers' liveness forwarding).
    An agent that was silent long enough may rightly have been marked unhealthy, even if a
    replica that had not yet applied that verdict answered a later heartbeat "ok".
    """
    false_alarms = []
    for key, key_ops in by_key(ops):
        registered = sorted(
            op.end for op in key_ops if op.f == WRITE and op.outcome == OK and op.end is not None
        )
        alive = liveness_marks(key_ops)
        deleted = [op.start for op in key_ops if op.f == DELETE and op.outcome != FAIL]
        for beat in key_ops:
            if beat.f != HEARTBEAT or beat.outcome != OK or beat.result != "gone":
                continue
            since = max((t for t in registered if t <= beat.start), default=None)
            if since is None or any(since <= t <= beat.start for t in deleted):
                continue
            marks = [t for t in alive if since <= t <= beat.start] + [beat.start]
            if all(b - a < timeout_ns - grace_ns for a, b in itertools.pairwise(marks)):
                last_ok = marks[-2] if len(marks) > 1 else since
                false_alarms.append({"key": key, "at": beat.start, "last_ok": last_ok})
    return {"valid": not false_alarms, "false_unhealthy": false_alarms}


def liveness_ops(key_ops: list[Op]) -> list[Op]:
    """The operations by which an agent was certainly heard from: its acknowledged
    registrations and its heartbeats answered "ok"."""
    return [
        op
        for op in key_ops
        if op.outcome == OK
        and op.end is not None
        and (op.f == WRITE or (op.f == HEARTBEAT and op.result == "ok"))
    ]


def liveness_marks(key_ops: list[Op]) -> list[int]:
    """When an agent was certainly heard from (:func:`liveness_ops`' completions), in order."""
    return sorted(op.end for op in liveness_ops(key_ops) if op.end is not None)


@dataclass(frozen=True)
class Thresholds:
    """How much a run must show before its other verdicts count. A cluster that refuses
    everything breaks no safety rule, so without these a run of nothing but errors, or one
    whose nemesis never ran, would be valid. Rates are per second of the run's time limit.
    The defaults are a fourth to a sixth of what a 30-second ``--nemesis all`` run acknowledged
    on a 2-core machine (1,283-1,948 writes, 225-351 deletes, 1,017-1,513 reads, ok fraction
    0.65-0.78 over four runs): they fail a cluster that stopped working, not a slow one."""

    ok_writes_per_s: float = 10.0
    ok_deletes_per_s: float = 2.0
    ok_reads_per_s: float = 8.0
    min_ok_fraction: float = 0.4
    min_overlap_s: float = 0.5
    """How long a scheduled pair must have been active together (planned: 0.9 s or more), so
    that one fault healed just as the next began does not count as an overlap."""


DEFAULT_THRESHOLDS = Thresholds()


def evidence(
    ops: list[Op],
    run_s: float | None,
    scheduled: list[dict[str, Any]] | None,
    faults: list[dict[str, Any]] | None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    topology: str = "raft",
) -> Verdict:
    """(f) The run exercised the cluster: enough acknowledged writes, deletes and
    linearizable reads for its length, an overall ok fraction above the floor, and every
    scheduled fault carried out while clients worked, every scheduled overlap really
    overlapping. ``run_s`` is the run's time limit; None for it or either fault list means
    the run's record of it is missing, which proves nothing and so fails. In the PostgreSQL
    topology every ``kill-decider`` must also have shown a takeover (:func:`_takeovers`)."""
    reasons: list[str] = []
    ok = [op for op in ops if op.outcome == OK]
    observed: dict[str, Any] = {
        "ok_writes": sum(1 for op in ok if op.f == WRITE),
        "ok_deletes": sum(1 for op in ok if op.f == DELETE),
        "ok_reads": sum(1 for op in ok if op.f == READ),
        "ok_writes_by_api": {
            api: sum(op.api == api for op in ok if op.f == WRITE) for api in WRITE_APIS
        },
        "ok_fraction": len(ok) / len(ops) if ops else None,
    }
    required: dict[str, Any] = {"ok_fraction": thresholds.min_ok_fraction}
    if run_s is None:
        reasons.append("the run's time limit is unknown (workload.json missing)")
    else:
        rates = {
            "ok_writes": thresholds.ok_writes_per_s,
            "ok_deletes": thresholds.ok_deletes_per_s,
            "ok_reads": thresholds.ok_reads_per_s,
        }
        for name, rate in rates.items():
            required[name] = math.ceil(rate * run_s)
            if observed[name] < required[name]:
                reasons.append(f"{name}: {observed[name]}, fewer than {required[name]}")
    fraction = observed["ok_fraction"]
    if fraction is None or fraction < thresholds.min_ok_fraction:
        shown = "unknown (no operations)" if fraction is None else f"{fraction:.3f}"
        reasons.append(f"ok fraction {shown}, below {thresholds.min_ok_fraction}")
    if scheduled is None or faults is None:
        reasons.append("no record of the faults scheduled and carried out (faults.json)")
    else:
        observed.update(_fault_evidence(ops, scheduled, faults, thresholds, reasons))
        required["faults"] = len(scheduled)
        required["overlaps"] = sum(p.get("overlaps") is not None for p in scheduled)
        if topology == "postgresql":
            kills = [f for f in faults if f.get("name") == "kill-decider"]
            required["decider_takeovers"] = len(kills)
            observed["decider_takeovers"] = _takeovers(kills, reasons)
    return {
        "valid": not reasons,
        "thresholds": asdict(thresholds),
        "required": required,
        "observed": observed,
        "reasons": reasons,
    }


def _fault_evidence(
    ops: list[Op],
    scheduled: list[dict[str, Any]],
    faults: list[dict[str, Any]],
    thresholds: Thresholds,
    reasons: list[str],
) -> dict[str, Any]:
    """Match the faults carried out to the schedule; append what is missing to ``reasons``."""
    done = {f["planned"]: f for f in faults if f.get("end", 0) > f["start"]}
    missing = [
        f"#{i} {p['kind']}"
        for i, p in enumerate(scheduled)
        if i not in done or done[i]["name"] != p["kind"]
    ]
    if missing:
        reasons.append(
            f"{len(scheduled) - len(missing)} of {len(scheduled)} scheduled faults carried out"
            f" (missing {', '.join(missing)})"
        )
    idle = [f"#{i} {f['name']}" for i, f in sorted(done.items()) if not _during(ops, f)]
    if idle:
        reasons.append(f"no client operation during fault {', '.join(idle)}")
    overlapped = 0
    for i, p in enumerate(scheduled):
        j = p.get("overlaps")
        if j is None:
            continue
        a, b = done.get(i), done.get(j)
        together = 0.0
        if a is not None and b is not None:
            together = (min(a["end"], b["end"]) - max(a["start"], b["start"])) / SECOND
        if together >= thresholds.min_overlap_s:
            overlapped += 1
        else:
            reasons.append(
                f"scheduled overlap of #{j} and #{i} did not happen"
                f" (active together {max(0.0, together):.3f} s, needs {thresholds.min_overlap_s} s)"
            )
    return {
        "faults": len(done),
        "faults_by_kind": dict(Counter(f["name"] for f in done.values())),
        "overlaps": overlapped,
    }


def _takeovers(kills: list[dict[str, Any]], reasons: list[str]) -> int:
    """How many ``kill-decider`` faults killed the replica that said it was the decider and
    saw another replica report itself decider with a higher term (the PostgreSQL topology's
    analogue of a leader change); each one that did not is a reason."""
    seen = 0
    for fault in kills:
        detail = fault.get("detail") or {}
        if detail.get("decider") is None:
            reasons.append(f"kill-decider #{fault.get('planned')} found no decider to kill")
        elif detail.get("successor") is None:
            reasons.append(
                f"kill-decider #{fault.get('planned')}: no other replica took over as decider"
                f" (term above {detail.get('term')})"
            )
        else:
            seen += 1
    return seen
