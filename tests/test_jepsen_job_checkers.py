"""The chaos harness's MeshJob checkers on hand-made histories they must classify correctly:
for every rule a valid history, one that breaks it plainly, and one that breaks it subtly
(a moment too early, one replica of three, the other client's result)."""

from __future__ import annotations

import json
import random
from itertools import islice
from pathlib import Path
from typing import Any

from jepsen_like import job_checkers
from jepsen_like.check import check_run
from jepsen_like.history import (
    FAIL,
    HEARTBEAT,
    INFO,
    JOB_BATCH,
    JOB_CANCEL,
    JOB_CLAIM,
    JOB_CREATE,
    JOB_READ,
    OK,
    WRITE,
    Op,
)
from jepsen_like.jobs import producer_steps, submitter_steps
from tests.test_jepsen_checkers import faults_record, lively, run_dir

S = 1_000_000_000
TIMEOUT, GRACE = 10 * S, 4 * S
LEASE = 2
A, B = "jw0", "jw1"


def create(start: float, end: float, outcome: str = OK, token: str = "t") -> Op:
    spec = {"capability": "jc0", "max_duration": LEASE, "max_retries": 3}
    return Op(300, JOB_CREATE, token, spec, _ns(start), _end(end), outcome, f"id-{token}")


def claim(who: str, epoch: int, start: float, end: float, token: str = "t", node: str = "n0") -> Op:
    got = {"token": token, "id": f"id-{token}", "epoch": epoch, "max_duration": LEASE}
    process = 200 + int(who[2:])
    return Op(process, JOB_CLAIM, "jc0", {"instance": who}, _ns(start), _end(end), OK, got, node)


def batch(
    who: str,
    epoch: int,
    start: float,
    end: float | None,
    answer: str | None = "accepted",
    status: str | None = None,
    sent: Any = None,
    token: str = "t",
) -> Op:
    value = {
        "instance": who,
        "epoch": epoch,
        "status": status,
        "result": sent if status == "completed" else None,
        "error": sent if status == "failed" else None,
    }
    outcome = INFO if end is None else OK
    return Op(200 + int(who[2:]), JOB_BATCH, token, value, _ns(start), _end(end), outcome, answer)


def cancel(start: float, end: float | None, answer: str = "cancelled", token: str = "t") -> Op:
    outcome = INFO if end is None else OK
    return Op(301, JOB_CANCEL, token, None, _ns(start), _end(end), outcome, answer)


def read(start: float, end: float, state: dict[str, Any] | None, token: str = "t") -> Op:
    return Op(302, JOB_READ, token, None, _ns(start), _end(end), OK, state)


def job(status: str = "working", result: Any = None, error: Any = None) -> dict[str, Any]:
    return {"status": status, "result": result, "error": error, "owner": None, "epoch": 1}


def everywhere(state: dict[str, Any] | None, token: str = "t") -> dict[str, Any]:
    """The final listing: every replica holds ``state`` for ``token`` (nothing for None)."""
    return {n: ({} if state is None else {token: state}) for n in ("n0", "n1", "n2")}


def alive(who: str, until: float, every: float = 1.0, since: float = -1.0) -> list[Op]:
    """The agent registered at ``since`` and heartbeat "ok" every ``every`` seconds."""
    process = 400 + int(who[2:])
    ops = [Op(process, WRITE, who, "127.0.0.1:3000", _ns(since), _ns(since) + 1000, OK)]
    t = since + every
    while t <= until:
        ops.append(Op(process, HEARTBEAT, who, None, _ns(t), _ns(t) + 1000, OK, "ok"))
        t += every
    return ops


def _ns(seconds: float) -> int:
    return int(seconds * S)


def _end(seconds: float | None) -> int | None:
    return None if seconds is None else _ns(seconds)


def claims_verdict(ops: list[Op]) -> dict[str, Any]:
    return job_checkers.overlapping_claims(ops, TIMEOUT, GRACE)


def rules(verdict: dict[str, Any]) -> list[str]:
    return [v["rule"] for v in verdict["violations"]]


# -- a whole valid history -----------------------------------------------------------------------

RESULT = {"by": B, "epoch": 2, "round": 9}


def valid_history() -> list[Op]:
    """Created; A claims (epoch 1) and renews once; A stalls; the lease runs out and B, racing
    A's next claim through another replica, claims epoch 2; A's late progress is fenced off;
    B completes; reads and a cancel see it completed."""
    return [
        create(0, 0.1),
        claim(A, 1, 0.2, 0.3),
        batch(A, 1, 0.5, 0.6),  # renews: the lease runs to 2.5 s at the earliest
        claim(B, 2, 3.0, 3.1, node="n1"),
        batch(A, 1, 3.2, 3.3, answer="claim_superseded"),
        batch(B, 2, 3.4, 3.5),
        batch(B, 2, 4.0, 4.1, status="completed", sent=RESULT),
        read(4.2, 4.3, job("completed", RESULT)),
        cancel(4.4, 4.5, answer="terminal"),
        *alive(A, 6),
        *alive(B, 6),
    ]


FINAL = everywhere(job("completed", RESULT))


def test_a_valid_job_history_passes_every_job_checker() -> None:
    ops = valid_history()
    assert job_checkers.lost_jobs(ops, FINAL) == {
        "valid": True,
        "jobs": 1,
        "lost": [],
        "phantoms": [],
    }
    assert claims_verdict(ops) == {"valid": True, "claims": 2, "violations": []}
    assert job_checkers.completed_results(ops, FINAL)["valid"]
    assert job_checkers.completed_results(ops, FINAL)["checked"] == 1
    assert job_checkers.terminal_stays(ops, FINAL) == {"valid": True, "violations": []}


# -- (h) lost jobs -------------------------------------------------------------------------------


def test_an_acknowledged_job_missing_from_a_replica_is_lost() -> None:
    ops = [create(0, 0.1)]
    assert job_checkers.lost_jobs(ops, everywhere(job()))["valid"]
    gone = job_checkers.lost_jobs(ops, everywhere(None))
    assert gone["lost"] == [{"token": "t", "known_at": _ns(0.1), "missing_on": ["n0", "n1", "n2"]}]
    # subtle: two replicas of three have it
    one_short = {**everywhere(job()), "n2": {}}
    assert job_checkers.lost_jobs(ops, one_short)["lost"][0]["missing_on"] == ["n2"]
    # a replica that did not answer holds nothing anyone can read
    silent = {**everywhere(job()), "n1": None}
    assert job_checkers.lost_jobs(ops, silent)["lost"][0]["missing_on"] == ["n1"]
    assert not job_checkers.lost_jobs(ops, {})["valid"]  # no final record at all


def test_a_known_job_answered_not_found_is_lost() -> None:
    """Known from its create, or, created with an unknown outcome, from a claim that got it;
    then a read (after a barrier), a cancel or a batch says there is no such job."""
    final = everywhere(job())
    for absent in (read(1, 1.1, None), cancel(1, 1.1, "absent"), batch(A, 1, 1, 1.1, "not_found")):
        verdict = job_checkers.lost_jobs([create(0, 0.1), absent], final)
        assert verdict["lost"] == [
            {"token": "t", "known_at": _ns(0.1), "absent": absent.f, "at": S}
        ]
    unknown_create = create(0, None, INFO)
    assert job_checkers.lost_jobs([unknown_create], everywhere(None))["valid"]  # never seen
    seen = [unknown_create, claim(A, 1, 0.5, 0.6), read(1, 1.1, None)]
    assert not job_checkers.lost_jobs(seen, final)["valid"]
    assert not job_checkers.lost_jobs(seen[:2], everywhere(None))["valid"]


def test_a_failed_create_that_took_effect_is_a_phantom() -> None:
    failed = create(0, 0.1, FAIL)
    assert job_checkers.lost_jobs([failed], everywhere(None))["valid"]
    verdict = job_checkers.lost_jobs([failed], {**everywhere(None), "n1": {"t": job()}})
    assert verdict["phantoms"] == [{"token": "t", "seen_at": None, "on": ["n1"]}]
    assert not job_checkers.lost_jobs([failed, claim(A, 1, 1, 1.1)], everywhere(None))["valid"]


# -- (i) overlapping claims ----------------------------------------------------------------------


def test_one_epoch_given_to_two_claims_is_caught() -> None:
    """Two replicas each committed their own claim of the job: both answered epoch 1."""
    ops = [create(0, 0.1), claim(A, 1, 0.2, 0.3), claim(B, 1, 0.2, 0.35, node="n1")]
    ops += [*alive(A, 2), *alive(B, 2)]
    verdict = claims_verdict(ops)
    assert rules(verdict) == ["epoch given twice"]
    assert verdict["violations"][0]["owners"] == [A, B]


def test_epochs_must_follow_real_time() -> None:
    """Epoch 2 acknowledged before epoch 1 was asked for: the epochs went back (and, by
    epoch order, epoch 2 was given while epoch 1 held)."""
    ops = [claim(A, 2, 0.2, 0.3), claim(B, 1, 4, 4.1), *alive(A, 5), *alive(B, 5)]
    verdict = claims_verdict(ops)
    assert rules(verdict) == [
        "epoch not increasing",
        "claim given while an earlier claim was valid",
    ]
    in_order = [claim(A, 1, 0.2, 0.3), claim(B, 2, 4, 4.1), *alive(B, 5)]
    assert claims_verdict(in_order)["valid"]


def test_a_delta_applied_from_a_non_owner_is_caught() -> None:
    ops = [claim(A, 1, 0.2, 0.3), batch(B, 1, 0.5, 0.6), *alive(A, 2), *alive(B, 2)]
    assert rules(claims_verdict(ops)) == ["delta from a non-owner"]
    ops[1] = batch(B, 1, 0.5, 0.6, answer="not_owner")  # rejected: fine
    assert claims_verdict(ops)["valid"]


def test_a_stale_owner_must_be_fenced_off_after_a_newer_claim() -> None:
    """A's progress (epoch 1) applied although it was sent after B's claim of epoch 2 had been
    acknowledged: the old claim was still taking deltas. A is no registered agent here, so its
    claim may have ended at any time (the sweep takes a job from an unhealthy owner) and only
    the fencing rule speaks."""
    superseded = [op for op in valid_history() if op.key != A]
    stale = batch(A, 1, 3.2, 3.3)  # answered "accepted" instead of claim_superseded
    ops = [stale if op.f == JOB_BATCH and op.start == _ns(3.2) else op for op in superseded]
    assert claims_verdict(superseded)["valid"]
    verdict = claims_verdict(ops)
    assert rules(verdict) == ["stale epoch applied"]
    assert verdict["violations"][0]["newer"] == 2
    # subtle: sent while B's claim was still in flight, it may have been applied first
    concurrent = [batch(A, 1, 3.05, 3.3) if op is stale else op for op in ops]
    assert claims_verdict(concurrent)["valid"]
    # with A healthy, an applied renewal so close to B's claim breaks the lease rule too: the
    # renewal was applied either after B's claim (fencing) or before it (A's lease then held)
    healthy = claims_verdict([*concurrent, *alive(A, 6)])
    assert rules(healthy) == ["claim given while an earlier claim was valid"]


def test_a_claim_given_before_the_previous_lease_could_expire_is_caught() -> None:
    """A renewed at 0.5 s with a 2 s lease: no replica can expire it before 2.5 s. B's claim
    acknowledged at 2.45 s was given while A's claim held; at 2.55 s it may have expired."""
    base = [create(0, 0.1), claim(A, 1, 0.2, 0.3), batch(A, 1, 0.5, 0.6), *alive(A, 6)]
    early = claims_verdict([*base, claim(B, 2, 2.3, 2.45, node="n1"), *alive(B, 6)])
    assert rules(early) == ["claim given while an earlier claim was valid"]
    assert early["violations"][0]["valid_until"] == _ns(2.5)
    assert claims_verdict([*base, claim(B, 2, 2.3, 2.55), *alive(B, 6)])["valid"]
    # the renewal counts from when it was sent, and only if it was applied: a rejected or
    # unknown one renews nothing, so the lease runs from the claim (0.2 s) to 2.2 s
    for renewal in (batch(A, 1, 0.5, 0.6, answer="claim_superseded"), batch(A, 1, 0.5, None)):
        ops = [*base[:2], renewal, *alive(A, 6), claim(B, 2, 2.1, 2.25), *alive(B, 6)]
        assert claims_verdict(ops)["valid"]
    # the same owner claiming again early is as wrong: its first claim still held
    again = claims_verdict([*base, claim(A, 2, 2.3, 2.45)])
    assert rules(again) == ["claim given while an earlier claim was valid"]


def test_an_owner_that_may_be_unhealthy_may_lose_its_claim_early() -> None:
    """The sweep takes a job back from an owner that is not a healthy agent, lease or not."""
    early_claim = claim(B, 2, 1.0, 1.1, node="n1")
    base = [claim(A, 1, 0.2, 0.3), batch(A, 1, 0.5, 0.6), early_claim, *alive(B, 6)]
    assert not claims_verdict([*base, *alive(A, 6)])["valid"]
    # never registered: unhealthy from the start
    assert claims_verdict(base)["valid"]
    # last heard from 6.1 s before B's claim was acknowledged (1.1 s), more than timeout -
    # grace (6 s): may have been unhealthy by then
    assert claims_verdict([*base, *alive(A, -5.0, since=-5.0)])["valid"]
    # subtle: 5.9 s before, still certainly healthy
    assert not claims_verdict([*base, *alive(A, -4.8, since=-4.8)])["valid"]
    # answered 410 after its last "ok": it was unhealthy then
    gone = Op(400, HEARTBEAT, A, None, _ns(0.8), _ns(0.85), OK, "gone")
    assert claims_verdict([*base, *alive(A, 0.5), gone])["valid"]


def test_an_owner_silent_for_long_may_be_judged_unhealthy_just_after_heartbeating_again() -> None:
    """Seed 13007: A was silent for 10 s, heartbeated through a follower, claimed the job 0.2 s
    later, and lost it to B 0.4 s after that: the leader had judged A unhealthy before the
    follower's next liveness report told it of the heartbeat (sent once a second), and the
    sweep took the job back. A heartbeat answered by a follower is known to the leader only
    up to FORWARD_NS later; one answered long enough before A's claim still counts."""

    def history(heartbeat_at: float) -> list[Op]:
        silent = alive(A, -9.0, since=-9.0)
        heartbeat = Op(
            400, HEARTBEAT, A, None, _ns(heartbeat_at), _ns(heartbeat_at) + 1000, OK, "ok"
        )
        return [
            *silent,
            heartbeat,
            claim(A, 1, 1.2, 1.3),
            claim(B, 2, 1.6, 1.7, node="n1"),
            *alive(B, 6),
        ]

    assert claims_verdict(history(1.0))["valid"]
    # Known to the leader by the time of B's claim: A was certainly healthy, its lease held.
    assert rules(claims_verdict(history(-2.0))) == ["claim given while an earlier claim was valid"]


# -- (j) completed results -----------------------------------------------------------------------


def test_a_completed_job_must_hold_its_result_on_every_replica() -> None:
    ops = valid_history()
    other = {"by": A, "epoch": 1, "round": 3}
    wrong_result = {**FINAL, "n1": {"t": job("completed", other)}}
    verdict = job_checkers.completed_results(ops, wrong_result)
    assert verdict["wrong"] == [
        {
            "token": "t",
            "node": "n1",
            "acknowledged": {"status": "completed", "result": RESULT},
            "final": {"status": "completed", "result": other},
        }
    ]
    assert not job_checkers.completed_results(ops, {**FINAL, "n2": {"t": job("failed")}})["valid"]
    assert not job_checkers.completed_results(ops, {**FINAL, "n0": {}})["valid"]
    assert not job_checkers.completed_results(ops, {**FINAL, "n0": None})["valid"]


def test_the_result_owed_is_the_applied_batch_s_not_a_rejected_one() -> None:
    """Subtle: the job is completed everywhere, but with the result of A's completion, which
    the registry rejected (A's claim had been superseded); B's was the one applied."""
    ops = [*valid_history(), batch(A, 1, 4.0, 4.05, "claim_superseded", "completed", {"by": A})]
    assert job_checkers.completed_results(ops, FINAL)["valid"]
    assert not job_checkers.completed_results(ops, everywhere(job("completed", {"by": A})))["valid"]
    # a completion with an unknown outcome is owed nothing; a failure is owed its error
    unknown = [claim(A, 1, 0, 0.1), batch(A, 1, 1, None, None, "completed", {"by": A})]
    assert job_checkers.completed_results(unknown, everywhere(job()))["valid"]
    failed = [claim(A, 1, 0, 0.1), batch(A, 1, 1, 1.1, status="failed", sent="boom")]
    assert job_checkers.completed_results(failed, everywhere(job("failed", error="boom")))["valid"]
    assert not job_checkers.completed_results(failed, everywhere(job("failed", error="x")))["valid"]


# -- (k) terminal stays terminal -----------------------------------------------------------------


def test_a_terminal_job_seen_live_again_is_caught() -> None:
    ops = valid_history()
    working = read(5, 5.1, job("working"))
    verdict = job_checkers.terminal_stays([*ops, working], FINAL)
    # after the batch, the read and the cancel that found it terminal
    assert rules(verdict) == ["reopened"] * 3
    assert verdict["violations"][0]["then"] == "read: working"
    # subtle: a read running while the completion was applied may have come first
    concurrent = read(4.05, 4.2, job("working"))
    assert job_checkers.terminal_stays([*ops, concurrent], FINAL)["valid"]
    # a claim, a cancel applied after it had been cancelled
    cancelled = [create(0, 0.1), cancel(1, 1.1), claim(A, 1, 1.2, 1.3)]
    final = everywhere(job("cancelled", error="cancelled: jepsen"))
    assert rules(job_checkers.terminal_stays(cancelled, final)) == ["reopened"]
    # one replica of three ends with the job working again
    reopened_on_one = {**FINAL, "n2": {"t": job("working")}}
    verdict = job_checkers.terminal_stays(valid_history(), reopened_on_one)
    assert "final state on n2: working" in [v["then"] for v in verdict["violations"]]


def test_a_terminal_job_must_not_change_its_end() -> None:
    ops = valid_history()
    later = read(5, 5.1, job("cancelled", error="cancelled: jepsen"))
    assert "terminal state changed" in rules(job_checkers.terminal_stays([*ops, later], FINAL))
    # subtle: completed, but with another result than the batch applied
    other = read(5, 5.1, job("completed", {"by": A}))
    assert "terminal state changed" in rules(job_checkers.terminal_stays([*ops, other], FINAL))
    # two terminal transitions both applied, concurrently (no order, still one too many)
    twice = [create(0, 0.1), claim(A, 1, 0.2, 0.3)]
    twice += [batch(A, 1, 1, 1.2, status="completed", sent={"by": A}), cancel(1.1, 1.3)]
    verdict = job_checkers.terminal_stays(twice, everywhere(job("completed", {"by": A})))
    assert "ended twice" in rules(verdict)


# -- (l) evidence, and the run's verdicts ------------------------------------------------------


def job_run(path: Path, job_ops: list[Op], final_jobs: dict[str, Any], pairs: int) -> Path:
    """A run directory with the register workload's evidence, ``job_ops`` and a final job
    listing; ``pairs`` producer pairs in workload.json."""
    path.mkdir(exist_ok=True)
    run_dir(path, [*lively(2), *job_ops], faults_record(2))
    final = json.loads((path / "final.json").read_text())
    final["values"] = {op.key: op.value for op in job_ops if op.f == WRITE}  # producers' agents
    (path / "final.json").write_text(json.dumps({**final, "jobs": final_jobs}))
    workload = {"time_limit": 2, "producer_pairs": pairs, "submitters": 1}
    (path / "workload.json").write_text(json.dumps(workload))
    return path


def busy_jobs(count: int) -> tuple[list[Op], dict[str, Any]]:
    """``count`` jobs each created, claimed and completed; the first one reclaimed after a
    lease ran out, fencing its first owner, with a claim racing through another replica."""
    ops: list[Op] = [*alive(A, 30), *alive(B, 30)]
    finals: dict[str, Any] = {}
    for k in range(count):
        t, token = 10.0 * k / count, f"t{k}"
        done = {"by": A, "k": k}
        ops += [create(t, t + 0.01, token=token), claim(A, 1, t + 0.02, t + 0.03, token=token)]
        ops += [batch(A, 1, t + 0.04, t + 0.05, status="completed", sent=done, token=token)]
        finals[token] = job("completed", done)
    ops = [op for op in ops if not (op.key == "t0" and op.f == JOB_BATCH)]
    ops += [
        claim(B, 2, 3.0, 3.1, token="t0", node="n1"),
        Op(200, JOB_CLAIM, "jc0", {"instance": A}, _ns(3.0), _ns(3.05), OK, None, "n2"),
        batch(A, 1, 3.2, 3.3, "claim_superseded", token="t0"),
        batch(B, 2, 3.4, 3.5, status="completed", sent={"by": B}, token="t0"),
    ]
    finals["t0"] = job("completed", {"by": B})
    return ops, {n: dict(finals) for n in ("n0", "n1", "n2")}


def test_a_run_with_the_job_workload_must_show_it(tmp_path: Path) -> None:
    ops, final = busy_jobs(4)
    results = check_run(job_run(tmp_path / "busy", ops, final, pairs=2))
    assert results["valid"] is True, results["job_evidence"]
    assert results["job_evidence"]["required"] == {
        "ok_creates": 2,
        "completions": 1,
        "reclaims": 1,
        "fenced": 1,
        "races": 1,
    }
    observed = results["job_evidence"]["observed"]
    assert (observed["reclaims"], observed["fenced"], observed["races"]) == (1, 1, 1)
    assert "Job workload evidence" in (tmp_path / "busy" / "report.html").read_text()
    # configured, nothing done: no job rule broken, no evidence either
    idle = check_run(job_run(tmp_path / "idle", [], {}, pairs=2))
    assert idle["valid"] is False and idle["evidence"]["valid"] is True
    assert idle["job_evidence"]["reasons"] == [
        "ok_creates: 0, fewer than 2",
        "completions: 0, fewer than 1",
        "reclaims: 0, fewer than 1",
        "fenced: 0, fewer than 1",
        "races: 0, fewer than 1",
    ]
    # the minima scale with the run: enough for 2 s is not enough for 30 s
    ten_times = job_checkers.job_evidence(ops, 30, configured=True)
    assert [r.split(":")[0] for r in ten_times["reasons"]] == [
        "ok_creates",
        "completions",
        "reclaims",
        "fenced",
        "races",
    ]
    # a run without the job workload owes none
    assert check_run(job_run(tmp_path / "none", [], {}, pairs=0))["valid"] is True


def test_job_faults_make_the_run_invalid_and_leave_the_register_verdicts_alone(
    tmp_path: Path,
) -> None:
    ops, final = busy_jobs(4)
    final["n1"] = {k: v for k, v in final["n1"].items() if k != "t2"}
    results = check_run(job_run(tmp_path, ops, final, pairs=2))
    assert results["valid"] is False
    assert results["lost_jobs"]["lost"][0]["missing_on"] == ["n1"]
    assert results["completed_results"]["valid"] is False
    for name in ("lost_writes", "linearizable", "health", "evidence", "job_evidence"):
        assert results[name]["valid"] is True, name


def test_job_clients_draw_every_choice_from_the_seed() -> None:
    def draws(seed: int) -> tuple[list[Any], list[Any]]:
        rng = random.Random(seed)
        return list(islice(submitter_steps(3, rng), 200)), list(islice(producer_steps(3, rng), 200))

    first = draws(5)
    assert first == draws(5) and first != draws(6)
    submits, rounds = first
    assert {s.f for s in submits} == {JOB_CREATE, JOB_CANCEL, JOB_READ}
    # a pair's two instances claim the same capability through two different replicas
    assert all(a.node != b.node and a.capability == b.capability for a, b, _ in rounds)
    assert {a.action for a, _, _ in rounds} == {"progress", "complete", "fail", "stall"}
