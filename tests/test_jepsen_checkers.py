"""The chaos harness's checkers on hand-made histories they must classify correctly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jepsen_like import checkers
from jepsen_like.history import (
    DELETE,
    FAIL,
    HEARTBEAT,
    INFO,
    INVOKE,
    OK,
    READ,
    WRITE,
    Event,
    Op,
    operations,
    read_events,
    write_events,
)
from jepsen_like.linearizability import check_key


def op(
    f: str,
    value: Any,
    start: int,
    end: int | None,
    outcome: str = OK,
    result: Any = None,
    key: str = "a",
    process: int = 0,
) -> Op:
    return Op(process, f, key, value, start, end, outcome, result)


def test_valid_concurrent_history() -> None:
    ops = [
        op(WRITE, "v1", 0, 10, process=1),
        op(WRITE, "v2", 5, 15, process=2),  # concurrent with v1: either order
        op(READ, None, 12, 14, result="v1", process=3),  # v2 linearized first, then v1
        op(READ, None, 20, 21, result="v1", process=3),
        op(DELETE, None, 30, 31, result=True, process=1),
        op(READ, None, 32, 33, result=None, process=2),
        op(DELETE, None, 34, 35, result=False, process=2),
    ]
    assert check_key("a", ops).valid
    assert checkers.linearizable(ops, final={"a": None})["valid"]
    assert checkers.lost_writes(ops, {"a": None})["valid"]


def test_lost_acknowledged_write_is_caught() -> None:
    ops = [op(WRITE, "v1", 0, 10), op(WRITE, "v2", 20, 30)]
    verdict = checkers.lost_writes(ops, {"a": "v1"})
    assert not verdict["valid"]
    assert verdict["lost"] == [{"key": "a", "value": "v2", "final": "v1"}]
    assert not checkers.linearizable(ops, final={"a": "v1"})["valid"]
    assert not checkers.lost_writes(ops, {})["valid"]  # the agent vanished altogether


def test_stale_linearizable_read_is_caught() -> None:
    ops = [
        op(WRITE, "v1", 0, 10, process=1),
        op(WRITE, "v2", 20, 30, process=1),
        op(READ, None, 40, 50, result="v1", process=2),  # v2 was acknowledged before it began
    ]
    verdict = checkers.linearizable(ops)
    assert not verdict["valid"]
    assert verdict["failures"][0]["stuck_at"]["result"] == "v1"


def test_write_seen_then_unseen_is_caught() -> None:
    ops = [
        op(WRITE, "v1", 0, None, outcome=INFO, process=1),  # timed out: may or may not apply
        op(READ, None, 10, 20, result="v1", process=2),  # seen...
        op(READ, None, 30, 40, result=None, process=3),  # ...then gone, with no delete
    ]
    assert not checkers.linearizable(ops)["valid"]


def test_unknown_outcomes_may_apply_late_or_never() -> None:
    late = [
        op(WRITE, "v1", 0, 10, process=1),
        op(WRITE, "v2", 5, None, outcome=INFO, process=2),
        op(READ, None, 100, 110, result="v1", process=3),
        op(READ, None, 200, 210, result="v2", process=3),  # the unknown write landed late
    ]
    assert checkers.linearizable(late)["valid"]
    never = [*late[:2], op(READ, None, 100, 110, result="v1", process=3)]
    assert checkers.linearizable(never, final={"a": "v1"})["valid"]
    failed = [op(WRITE, "v9", 0, 5, outcome=FAIL), op(READ, None, 10, 11, result="v9")]
    assert not checkers.linearizable(failed)["valid"]  # a failed write must not be visible


def test_delete_results_constrain_the_order() -> None:
    ops = [
        op(WRITE, "v1", 0, 10),
        op(DELETE, None, 20, 30, result=False),  # said "absent" after v1 was acknowledged
    ]
    assert not checkers.linearizable(ops)["valid"]


def test_convergence_availability_and_health() -> None:
    assert checkers.converged({"n0": "x", "n1": "x", "n2": "x"})["valid"]
    assert not checkers.converged({"n0": "x", "n1": "y"})["valid"]
    ops = [
        op(WRITE, "v1", 0, 1_000_000_000),
        op(WRITE, "v2", 1_500_000_000, 2_000_000_000, outcome=INFO),
        op(WRITE, "v3", 5_000_000_000, 6_000_000_000),
    ]
    figures = checkers.availability(
        ops, [{"name": "partition", "start": 1_000_000_000, "end": 4_000_000_000}]
    )
    assert figures["faults"][0]["ok_fraction"] == 0.0
    assert figures["longest_write_gap_s"] == 5.0
    second = 1_000_000_000
    beats = [
        op(WRITE, "hb:1", 0, 1),  # the agent registers
        op(HEARTBEAT, None, 2, 3, result="ok"),
        op(HEARTBEAT, None, 5 * second, 5 * second + 1, result="ok"),
        op(HEARTBEAT, None, 9 * second, 9 * second + 1, result="gone"),  # 4 s after a beat
    ]
    timeout, grace = 60 * second, 5 * second
    assert not checkers.health(beats, timeout, grace)["valid"]
    silent = [*beats[:2], op(HEARTBEAT, None, 70 * second, 70 * second + 1, result="gone")]
    assert checkers.health(silent, timeout, grace)["valid"]


def test_health_silence_then_stale_ok_answers_is_not_a_false_alarm() -> None:
    """Seen in a 5-minute run: heartbeats to a paused replica time out for 11 s (longer than
    the 10 s timeout), the resumed replica answers two more "ok" from its not yet updated
    view, then 410: the leader rightly marked the agent unhealthy."""
    second = 1_000_000_000
    timeout, grace = 10 * second, 4 * second
    history = [
        op(WRITE, "hb:1", 0, 1),
        op(HEARTBEAT, None, 1 * second, 1 * second + 1, result="ok"),
        *(op(HEARTBEAT, None, t * second, None, outcome=INFO) for t in range(2, 13, 4)),
        op(HEARTBEAT, None, 13 * second, 13 * second + 1, result="ok"),
        op(HEARTBEAT, None, 14 * second, 14 * second + 1, result="ok"),
        op(HEARTBEAT, None, 15 * second, 15 * second + 1, result="gone"),
    ]
    assert checkers.health(history, timeout, grace)["valid"]
    # the same answers with no silence before them: a false alarm
    steady = [
        op(WRITE, "hb:1", 0, 1),
        *(op(HEARTBEAT, None, t * second, t * second + 1, result="ok") for t in range(1, 15)),
        op(HEARTBEAT, None, 15 * second, 15 * second + 1, result="gone"),
    ]
    assert not checkers.health(steady, timeout, grace)["valid"]


def test_history_roundtrip_and_pairing(tmp_path: Path) -> None:
    events = [
        Event(INVOKE, 1, WRITE, "a", 0, "v1", "n0"),
        Event(INVOKE, 2, READ, "a", 1, None, "n1"),
        Event(OK, 1, WRITE, "a", 5, None, "n0"),
        Event(OK, 2, READ, "a", 6, "v1", "n1"),
        Event(INVOKE, 1, WRITE, "a", 7, "v2", "n2"),  # never completed: unknown outcome
    ]
    path = tmp_path / "history.jsonl"
    write_events(path, events)
    ops = operations(read_events(path))
    assert [(o.f, o.outcome, o.end, o.result) for o in ops] == [
        (WRITE, OK, 5, None),
        (READ, OK, 6, "v1"),
        (WRITE, INFO, None, None),
    ]
