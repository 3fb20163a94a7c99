"""The checkers: each takes the history (and what the run observed at the end) and returns a
verdict dict with ``valid`` and the evidence behind it."""

from __future__ import annotations

import itertools
from typing import Any

from jepsen_like.history import DELETE, FAIL, HEARTBEAT, OK, READ, WRITE, Op, by_key
from jepsen_like.linearizability import check_key

Verdict = dict[str, Any]


def lost_writes(ops: list[Op], final: dict[str, Any]) -> Verdict:
    """(a) No acknowledged write is missing from the final state.

    A write is owed to the final state when it was acknowledged and no other write or delete
    of its key could have come after it (every other one failed, or completed before it
    began). Its value must then be the key's final value.
    """
    lost = []
    for key, key_ops in by_key(ops):
        mutations = [op for op in key_ops if op.f in (WRITE, DELETE) and op.outcome != FAIL]
        for write in mutations:
            if write.f != WRITE or write.outcome != OK:
                continue
            superseded = any(
                other is not write and (other.end is None or other.end > write.start)
                for other in mutations
            )
            if not superseded and final.get(key) != write.value:
                lost.append({"key": key, "value": write.value, "final": final.get(key)})
    return {"valid": not lost, "lost": lost}


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
    """(c) After healing, every replica reports the same view digest."""
    return {"valid": len(set(digests.values())) == 1 and bool(digests), "digests": digests}


def availability(ops: list[Op], faults: list[dict[str, Any]]) -> Verdict:
    """(d) Fraction of operations that succeeded during each fault, and the longest stretch
    with no acknowledged write. Informative: availability is measured, not required."""
    windows = []
    for fault in faults:
        inside = [op for op in ops if fault["start"] <= op.start < fault["end"]]
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
        alive = sorted(
            op.end
            for op in key_ops
            if op.outcome == OK
            and op.end is not None
            and (op.f == WRITE or (op.f == HEARTBEAT and op.result == "ok"))
        )
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
