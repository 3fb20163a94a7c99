"""The chaos harness's checkers on hand-made histories they must classify correctly."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

from jepsen_like import checkers
from jepsen_like.check import check_run
from jepsen_like.client import worker_steps
from jepsen_like.history import (
    DELETE,
    FAIL,
    GUIDE_API,
    HEARTBEAT,
    INFO,
    INVOKE,
    OK,
    PROTOCOL_API,
    READ,
    UNREACHABLE,
    WRITE,
    WRITE_APIS,
    Event,
    Op,
    operations,
    read_events,
    write_events,
)
from jepsen_like.linearizability import check_key
from jepsen_like.nemesis import KINDS, Fault, Planned, compatible, plan

SECOND = 1_000_000_000


def op(
    f: str,
    value: Any,
    start: int,
    end: int | None,
    outcome: str = OK,
    result: Any = None,
    key: str = "a",
    process: int = 0,
    api: str = "",
) -> Op:
    return Op(process, f, key, value, start, end, outcome, result, api=api)


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
    assert verdict["lost"] == [{"key": "a", "value": "v2", "final": "v1", "api": ""}]
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


def test_lost_write_names_the_api_that_acknowledged_it() -> None:
    ops = [
        op(WRITE, "v1", 0, 10, api=PROTOCOL_API),
        op(WRITE, "v2", 20, 30, api=GUIDE_API),
        op(WRITE, "v3", 5, 15, key="b", api=PROTOCOL_API),
    ]
    lost = checkers.lost_writes(ops, {"a": "v1"})["lost"]
    assert [(x["key"], x["api"]) for x in lost] == [("a", GUIDE_API), ("b", PROTOCOL_API)]


def test_acknowledged_delete_undone_is_caught() -> None:
    """The agent is back in the final state after an acknowledged delete that nothing could
    have followed: a lost delete, tied to the API of the write that came back."""
    ops = [
        op(WRITE, "v1", 0, 10, api=GUIDE_API),
        op(DELETE, None, 20, 30, result=True),
        op(WRITE, "v2", 40, 50, outcome=FAIL, api=PROTOCOL_API),  # never happened
    ]
    verdict = checkers.lost_writes(ops, {"a": "v1"})
    assert not verdict["valid"]
    assert verdict["lost"] == [{"key": "a", "deleted_at": 20, "final": "v1", "api": [GUIDE_API]}]
    assert checkers.lost_writes(ops, {})["valid"]
    # "already absent" is as much a promise of absence as "deleted"
    absent = [op(DELETE, None, 0, 10, result=False)]
    assert not checkers.lost_writes(absent, {"a": "v0"})["valid"]
    assert checkers.lost_writes(absent, {})["valid"]


def test_a_delete_is_owed_only_when_no_write_may_follow_it() -> None:
    delete = op(DELETE, None, 20, 30, result=True, process=1)
    followers = {
        "acknowledged after": op(WRITE, "v2", 40, 50, process=2),
        "concurrent, acknowledged": op(WRITE, "v2", 10, 25, process=2),
        "concurrent, unknown": op(WRITE, "v2", 25, None, outcome=INFO, process=2),
        # invoked long before, never answered: may still apply after the delete
        "earlier, unknown": op(WRITE, "v2", 0, None, outcome=INFO, process=2),
    }
    for name, write in followers.items():
        assert checkers.lost_writes([delete, write], {"a": "v2"})["valid"], name
        # absent is fine too, unless the write was acknowledged after the delete: then the
        # write is owed
        absent = checkers.lost_writes([delete, write], {})
        assert absent["valid"] is (name != "acknowledged after"), name
    # a write that completed before the delete began cannot follow it; nor can a later delete
    before = op(WRITE, "v1", 0, 19, process=2)
    again = op(DELETE, None, 40, 50, result=False, process=2)
    assert not checkers.lost_writes([before, delete, again], {"a": "v1"})["valid"]


def test_convergence_availability_and_health() -> None:
    assert checkers.converged({"n0": "x", "n1": "x", "n2": "x"})["valid"]
    assert not checkers.converged({"n0": "x", "n1": "y"})["valid"]
    assert not checkers.converged({"n0": "x", "n1": "x", "n2": UNREACHABLE})["valid"]
    assert not checkers.converged(dict.fromkeys(("n0", "n1", "n2"), UNREACHABLE))["valid"]
    assert not checkers.converged({})["valid"]
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
        Event(INVOKE, 1, WRITE, "a", 0, "v1", "n0", GUIDE_API),
        Event(INVOKE, 2, READ, "a", 1, None, "n1"),
        Event(OK, 1, WRITE, "a", 5, None, "n0"),
        Event(OK, 2, READ, "a", 6, "v1", "n1"),
        Event(INVOKE, 1, WRITE, "a", 7, "v2", "n2"),  # never completed: unknown outcome
    ]
    path = tmp_path / "history.jsonl"
    write_events(path, events)
    ops = operations(read_events(path))
    assert [(o.f, o.outcome, o.end, o.result, o.api) for o in ops] == [
        (WRITE, OK, 5, None, GUIDE_API),
        (READ, OK, 6, "v1", ""),
        (WRITE, INFO, None, None, ""),
    ]


def lively(seconds: float, outcome: str = OK) -> list[Op]:
    """A history with just enough acknowledged work for a ``seconds``-long run under the
    default thresholds: per agent, one after another, write, read it, write, read, delete,
    read its absence (so the final state is empty). With ``outcome`` FAIL: the same
    requests, every one refused."""
    th = checkers.DEFAULT_THRESHOLDS
    agents = math.ceil(
        seconds * max(th.ok_writes_per_s / 2, th.ok_deletes_per_s, th.ok_reads_per_s / 3)
    )
    step = int(seconds * SECOND) // (6 * agents)
    ops, t = [], 0
    for k in range(agents):
        key, v1, v2 = f"k{k}", f"k{k}.1", f"k{k}.2"
        for f, value, result in [
            (WRITE, v1, None),
            (READ, None, v1),
            (WRITE, v2, None),
            (READ, None, v2),
            (DELETE, None, True),
            (READ, None, None),
        ]:
            result = result if outcome == OK else None
            api = PROTOCOL_API if f == WRITE else ""
            ops.append(op(f, value, t, t + step // 2, outcome, result, key, api=api))
            t += step
    return ops


def faults_record(seconds: float) -> dict[str, Any]:
    """faults.json for a run of ``seconds``: a kill and, overlapping it for half the run, a
    partition."""
    span = int(seconds * SECOND)
    scheduled = [Planned("kill", 0.0, seconds * 3 / 4), Planned("partition", seconds / 4, 1, 0)]
    faults = [
        Fault("kill", 0, span * 3 // 4, {"node": 1}, planned=0),
        Fault("partition", span // 4, span, {"shape": "isolate", "node": 0}, 1),
    ]
    return {"scheduled": [asdict(p) for p in scheduled], "faults": [asdict(f) for f in faults]}


def run_dir(
    path: Path, ops: list[Op], faults: dict[str, Any] | None, seconds: float | None = 2
) -> Path:
    """A run directory as the harness leaves it, for ``check_run``: history, final state
    (empty, three replicas agreeing), and optionally faults.json and workload.json."""
    events = []
    for o in ops:
        events.append(Event(INVOKE, o.process, o.f, o.key, o.start, o.value, o.node, o.api))
        events.append(Event(o.outcome, o.process, o.f, o.key, o.end or 0, o.result, o.node))
    write_events(path / "history.jsonl", events)
    digests = dict.fromkeys(("n0", "n1", "n2"), "d")
    (path / "final.json").write_text(json.dumps({"digests": digests, "values": {}}))
    if faults is not None:
        (path / "faults.json").write_text(json.dumps(faults))
    if seconds is not None:
        (path / "workload.json").write_text(json.dumps({"time_limit": seconds}))
    return path


def test_a_run_with_evidence_is_valid(tmp_path: Path) -> None:
    results = check_run(run_dir(tmp_path, lively(2), faults_record(2)))
    assert results["valid"] is True, results["evidence"]["reasons"]
    assert results["evidence"]["observed"]["overlaps"] == 1
    assert results["evidence"]["required"] == {
        "ok_fraction": 0.4,
        "ok_writes": 20,
        "ok_deletes": 4,
        "ok_reads": 16,
        "faults": 2,
        "overlaps": 1,
    }
    assert json.loads((tmp_path / "results.json").read_text())["evidence"]["valid"] is True
    assert "<h2>Evidence</h2>" in (tmp_path / "report.html").read_text()


def test_a_cluster_that_refuses_everything_is_invalid(tmp_path: Path) -> None:
    """Every completion failed and the final state is empty: no safety rule is broken, but
    nothing was shown either."""
    results = check_run(run_dir(tmp_path, lively(2, outcome=FAIL), faults_record(2)))
    others = {k: v["valid"] for k, v in results.items() if isinstance(v, dict) and k != "evidence"}
    assert all(others.values()), others
    assert results["valid"] is False
    reasons = results["evidence"]["reasons"]
    assert [r.split(":")[0] for r in reasons[:3]] == ["ok_writes", "ok_deletes", "ok_reads"]
    assert reasons[3].startswith("ok fraction 0.0")
    assert "Not enough evidence" in (tmp_path / "report.html").read_text()


def test_an_empty_history_is_invalid(tmp_path: Path) -> None:
    assert check_run(run_dir(tmp_path, [], faults_record(2)))["valid"] is False


def test_missing_records_leave_a_run_without_evidence(tmp_path: Path) -> None:
    (tmp_path / "no-faults").mkdir()
    results = check_run(run_dir(tmp_path / "no-faults", lively(2), faults=None))
    assert results["valid"] is False
    assert results["evidence"]["reasons"] == [
        "no record of the faults scheduled and carried out (faults.json)"
    ]
    (tmp_path / "no-limit").mkdir()
    results = check_run(run_dir(tmp_path / "no-limit", lively(2), faults_record(2), None))
    assert results["evidence"]["reasons"] == [
        "the run's time limit is unknown (workload.json missing)"
    ]


def test_too_few_acknowledged_operations_for_the_run_length() -> None:
    """The minima scale with the time limit: enough for 2 s is not enough for 10 s. Enough of
    each, drowned in refusals (failed heartbeats here), falls below the ok-fraction floor."""
    record = faults_record(2)
    ops = lively(2)
    assert checkers.evidence(ops, 2, record["scheduled"], record["faults"])["valid"]
    verdict = checkers.evidence(ops, 10, record["scheduled"], record["faults"])
    assert [r.split(":")[0] for r in verdict["reasons"]] == ["ok_writes", "ok_deletes", "ok_reads"]
    refused = [op(HEARTBEAT, None, t, t + 1, FAIL, key="hb") for t in range(100)]
    verdict = checkers.evidence(ops + refused, 2, record["scheduled"], record["faults"])
    assert verdict["reasons"] == ["ok fraction 0.375, below 0.4"]


def test_fewer_faults_than_scheduled_is_invalid() -> None:
    ops, record = lively(2), faults_record(2)
    scheduled, faults = record["scheduled"], record["faults"]
    verdict = checkers.evidence(ops, 2, scheduled, faults[:1])
    assert not verdict["valid"]
    assert verdict["reasons"] == [
        "1 of 2 scheduled faults carried out (missing #1 partition)",
        "scheduled overlap of #0 and #1 did not happen (active together 0.000 s, needs 0.5 s)",
    ]
    never_healed = [faults[0], {**faults[1], "end": 0}]
    assert not checkers.evidence(ops, 2, scheduled, never_healed)["valid"]
    wrong_kind = [faults[0], {**faults[1], "name": "pause"}]
    assert not checkers.evidence(ops, 2, scheduled, wrong_kind)["valid"]


def test_a_scheduled_overlap_must_really_overlap() -> None:
    """From the recorded times: one fault after the other is no overlap, and neither is one
    healed just as the next began (a nemesis that heals before it starts the next fault)."""
    ops, record = lively(2), faults_record(2)
    kill, partition = record["faults"]
    one_after_other = [kill, {**partition, "start": kill["end"], "end": kill["end"] + SECOND}]
    verdict = checkers.evidence(ops, 2, record["scheduled"], one_after_other)
    assert verdict["reasons"] == [
        "scheduled overlap of #0 and #1 did not happen (active together 0.000 s, needs 0.5 s)"
    ]
    assert verdict["observed"]["overlaps"] == 0
    touching = [kill, {**partition, "start": kill["end"] - 1_000_000}]
    verdict = checkers.evidence(ops, 2, record["scheduled"], touching)
    assert verdict["reasons"] == [
        "scheduled overlap of #0 and #1 did not happen (active together 0.001 s, needs 0.5 s)"
    ]


def test_a_fault_without_clients_is_no_evidence() -> None:
    ops, record = lively(2), faults_record(2)
    kill, partition = record["faults"]
    late = 10 * SECOND  # after the last operation: both faults shifted there, still overlapping
    after = [{**f, "start": f["start"] + late, "end": f["end"] + late} for f in (kill, partition)]
    verdict = checkers.evidence(ops, 2, record["scheduled"], after)
    assert verdict["reasons"] == ["no client operation during fault #0 kill, #1 partition"]


def test_schedule_replays_from_its_seed_with_every_kind_and_an_overlap() -> None:
    kinds = list(KINDS)
    schedule = plan(kinds, 30, seed=11)
    assert schedule == plan(kinds, 30, seed=11)
    assert schedule != plan(kinds, 30, seed=12)
    assert sorted(p.kind for p in schedule) == sorted(KINDS)
    pairs = [(schedule[p.overlaps], p) for p in schedule if p.overlaps is not None]
    assert len(pairs) == 1
    for first, second in pairs:
        assert compatible(first.kind, second.kind)
        assert first.at < second.at < first.at + first.hold
    for seed in range(50):
        schedule = plan(kinds, 300, seed, overlaps=2)
        assert {p.kind for p in schedule} == set(KINDS)
        assert max(p.at + p.hold for p in schedule[len(KINDS) :]) <= 300
        for p in schedule:
            if p.overlaps is not None:
                assert compatible(schedule[p.overlaps].kind, p.kind)
    assert all(p.overlaps is None for p in plan(kinds, 60, 1, overlaps=0))
    assert all(p.overlaps is None for p in plan(["restart", "partition", "move"], 60, 1))


def test_overlap_pairs_exclude_unsafe_or_self_defeating_combinations() -> None:
    assert compatible("partition", "kill")
    assert compatible("kill", "wipe")
    assert not compatible("restart", "kill")
    assert not compatible("pause", "restart")
    assert not compatible("partition", "partition")
    assert not compatible("wipe", "wipe")
    assert not compatible("move", "partition")


def test_workers_draw_every_choice_from_the_seed() -> None:
    """Same seed, same operations, values, APIs and replicas; each write names its API."""

    def steps(seed: int) -> list[Any]:
        return list(islice(worker_steps(3, 3, random.Random(seed)), 400))

    first = steps(5)
    assert first == steps(5)
    assert first != steps(6)
    writes = [s for s in first if s.f == WRITE]
    assert {s.api for s in writes} == set(WRITE_APIS)
    assert all(s.api == "" for s in first if s.f != WRITE)


def test_a_stranger_who_got_in_makes_the_run_invalid() -> None:
    visit = {"name": "stranger", "start": 1, "end": 2, "planned": 0, "detail": {"breach": []}}
    assert checkers.strangers([visit]) == {"valid": True, "visits": 1, "breaches": []}
    breached = {**visit, "detail": {"breach": ["a replica unpickled a stranger's bytes"]}}
    verdict = checkers.strangers([visit, breached])
    assert verdict["valid"] is False and verdict["breaches"][0]["fault"] == 0


def test_a_scale_down_that_did_not_hold_makes_the_run_invalid() -> None:
    """An acknowledged removal lost with the power, a membership fault whose scale-down left
    no verdict at all, or one whose shape reached nothing, fails ``membership``; a clean one
    passes."""
    held = {"name": "membership", "start": 1, "end": 2, "planned": 3, "detail": {"lost": []}}
    assert checkers.membership([held]) == {
        "valid": True,
        "visits": 1,
        "unjudged": 0,
        "failures": [],
    }
    lost = {**held, "detail": {"lost": ["the acknowledged removal of n4 was lost"]}}
    verdict = checkers.membership([held, lost])
    assert verdict["valid"] is False and verdict["failures"][0]["fault"] == 3
    unfinished = {**held, "detail": {"shape": "power"}}
    assert checkers.membership([unfinished])["valid"] is False
    unreached = {**held, "detail": {"lost": [], "unreached": "no leader among the five"}}
    assert checkers.membership([held, unreached])["unjudged"] == 1
    assert checkers.membership([])["valid"] is True  # a run without the nemesis owes nothing


def test_postgresql_runs_owe_a_decider_takeover_for_every_kill_decider() -> None:
    """In the PostgreSQL topology a ``kill-decider`` is evidence only if it killed the replica
    that said it decided and another replica then decided with a higher term; the Raft
    topology's runs owe nothing of the kind."""
    ops = lively(2)
    span = 2 * SECOND
    scheduled = [asdict(Planned("kill-decider", 0.0, 1.5))]

    def record(detail: dict[str, Any]) -> list[dict[str, Any]]:
        return [asdict(Fault("kill-decider", 0, span * 3 // 4, detail, planned=0))]

    took_over = {"node": 1, "decider": 1, "term": 3, "successor": 0, "successor_term": 4}
    verdict = checkers.evidence(ops, 2, scheduled, record(took_over), topology="postgresql")
    assert verdict["valid"], verdict["reasons"]
    assert verdict["observed"]["decider_takeovers"] == verdict["required"]["decider_takeovers"]
    nobody = {"node": 1, "decider": 1, "term": 3}
    verdict = checkers.evidence(ops, 2, scheduled, record(nobody), topology="postgresql")
    assert verdict["reasons"] == ["kill-decider #0: no other replica took over as decider"
                                  " (term above 3)"]  # fmt: skip
    no_decider = {"node": 2, "decider": None}
    verdict = checkers.evidence(ops, 2, scheduled, record(no_decider), topology="postgresql")
    assert verdict["reasons"] == ["kill-decider #0 found no decider to kill"]
    assert checkers.evidence(ops, 2, scheduled, record(nobody))["valid"]  # raft: not owed


def test_a_replica_that_stopped_itself_invalidates_a_postgresql_run() -> None:
    """(m): a ``critical`` entry is a replica stopping its own node. Owed none in the
    PostgreSQL topology (seed 18001: a replica exited on an asyncpg error after a pg-kill, and
    every other checker passed); counted, not judged, in the Raft topology (fail-stop storage)."""
    stop = json.dumps(
        {
            "ts": "2026-12-04T18:34:12.236Z",
            "level": "critical",
            "msg": "postgresql log failed; stopping",
            "exception": "Traceback (most recent call last):\n  ...\nInternalClientError: x",
        }
    )
    info = json.dumps({"level": "info", "msg": "request", "detail": '"critical"'})
    logs = {"n0": f"{info}\n{stop}\nTraceback (most recent call last):\n", "n1": info}
    verdict = checkers.self_stops(logs, required=True)
    assert not verdict["valid"]
    assert verdict["stops"] == [
        {
            "node": "n0",
            "ts": "2026-12-04T18:34:12.236Z",
            "msg": "postgresql log failed; stopping",
            "error": ["InternalClientError: x"],
        }
    ]
    assert checkers.self_stops(logs, required=False)["valid"]
    assert checkers.self_stops({"n0": info, "n1": ""}, required=True)["valid"]
