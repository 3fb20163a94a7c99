"""The MeshJob state machine (registry/jobs.py) and the leader's sweep decisions, without I/O.

The property test plays proposers deciding on replicas whose views lag the log by arbitrary
amounts, as handlers on different replicas do, and checks on the log's own view that no job is
ever given to two claimers, a terminal job never changes status again, every proposer's
precomputed answer is what its committed event did, and that replaying the log (whole, or from
a mid-way snapshot) gives an equal view on every replica.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from registry import jobs
from registry.events import Event, decode, encode
from registry.job_sweep import DEADLINE_EXCEEDED, LEASE_EXPIRED, ORPHANED, Leases, decide
from registry.view import View, apply


def spec(job_id: str, **fields: Any) -> dict[str, Any]:
    base = {
        "id": job_id,
        "capability": "render",
        "submitted_by": "consumer",
        "submitted_payload": {"n": 1},
        "max_retries": 1,
        "max_duration": None,
        "total_deadline": None,
        "owner": None,
    }
    return {**base, **fields}


class Log:
    """A committed log and the view of whoever applied all of it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.view = View()

    def commit(self, event: Event) -> bool:
        # Through the on-disk encoding, as every replica gets it.
        event = decode(encode(event), len(self.events) + 1)
        self.events.append(event)
        return apply(self.view, len(self.events), event)


class Replica:
    """A view that applies the log only when told to catch up (a lagging follower)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.view = View()

    def catch_up(self, upto: int | None = None) -> None:
        end = len(self.log.events) if upto is None else min(upto, len(self.log.events))
        while self.view.applied_index < end:
            index = self.view.applied_index + 1
            apply(self.view, index, self.log.events[index - 1])


def test_claim_takes_the_oldest_queued_job_and_counts_the_attempt() -> None:
    log = Log()
    log.commit(jobs.create(spec("b"), 2000))
    log.commit(jobs.create(spec("a"), 1000))
    job = log.view.jobs.next_claimable("render")
    assert job is not None and job.id == "a"
    assert log.commit(jobs.claim(job, "p1", 5000))
    claimed = log.view.jobs.jobs["a"]
    assert (claimed.owner, claimed.attempt_count, claimed.claim_epoch) == ("p1", 1, 1)
    assert claimed.lease_expires_ms == 5000 + 300_000
    assert log.view.jobs.next_claimable("render").id == "b"  # type: ignore[union-attr]


def test_a_second_claim_of_the_same_revision_is_refused() -> None:
    log = Log()
    log.commit(jobs.create(spec("j"), 1000))
    stale = copy.deepcopy(log.view.jobs.jobs["j"])
    assert log.commit(jobs.claim(stale, "p1", 2000))
    assert not log.commit(jobs.claim(stale, "p2", 2001))
    assert log.view.jobs.jobs["j"].owner == "p1"


def test_release_puts_the_job_back_until_the_last_attempt_then_fails_it() -> None:
    log = Log()
    log.commit(jobs.create(spec("k", max_retries=1), 1000))
    log.commit(jobs.claim(log.view.jobs.jobs["k"], "p1", 2000))
    assert log.commit(jobs.release(log.view.jobs.jobs["k"], "p1", "", 2001))
    job = log.view.jobs.jobs["k"]
    assert (job.status, job.owner, job.attempt_count) == (jobs.WORKING, None, 1)
    log.commit(jobs.claim(log.view.jobs.jobs["k"], "p2", 4000))  # attempt 2 = 1 + max_retries
    log.commit(jobs.release(log.view.jobs.jobs["k"], "p2", "boom", 5000))
    job = log.view.jobs.jobs["k"]
    assert (job.status, job.error, job.attempt_count) == (
        jobs.FAILED,
        "exhausted (release): boom",
        2,
    )
    assert [a["end"] for a in job.attempts] == ["released", jobs.FAILED]


def test_batch_fences_merges_the_cursor_and_completes() -> None:
    log = Log()
    log.commit(jobs.create(spec("j"), 1000))
    log.commit(jobs.claim(log.view.jobs.jobs["j"], "p1", 2000))
    deltas = [
        {"id": "j", "claim_epoch": 1, "progress": 0.5, "recv_cursor": {"a": 3, "b": 1}},
        {"id": "j", "claim_epoch": 1, "recv_cursor": {"a": 2}},
        {"id": "j", "claim_epoch": 2},
        {"id": "j", "status": "completed", "result": {"ok": True}},
        {"id": "j", "claim_epoch": 1},
        {"id": "nope"},
    ]
    decided = jobs.decide_batch(log.view.jobs, "p1", deltas, 3000)
    assert decided == [
        ("j", jobs.CLAIM_SUPERSEDED),
        ("j", jobs.ALREADY_TERMINAL),
        ("nope", jobs.NOT_FOUND),
    ]
    assert log.commit(jobs.batch(log.view.jobs, "p1", deltas, 3000))
    job = log.view.jobs.jobs["j"]
    assert job.recv_cursor == {"a": 3, "b": 1}
    assert (job.status, job.result, job.progress) == (jobs.COMPLETED, {"ok": True}, 0.5)
    assert jobs.decide_batch(log.view.jobs, "p2", [{"id": "j"}], 4000) == [("j", jobs.NOT_OWNER)]


def test_cancel_posts_the_synthetic_event_and_keeps_the_owner() -> None:
    log = Log()
    log.commit(jobs.create(spec("j", owner="pinned"), 1000))
    log.commit(jobs.post(log.view.jobs.jobs["j"], {"type": "tick", "payload": [1]}, 1500))
    log.commit(jobs.cancel(log.view.jobs.jobs["j"], "user", None, 2000))
    job = log.view.jobs.jobs["j"]
    assert (job.status, job.error, job.owner) == (jobs.CANCELLED, "cancelled: user", "pinned")
    assert [(e["seq"], e["type"], e["payload"]) for e in job.events] == [
        (1, "tick", [1]),
        (2, "cancelled", {"reason": "user"}),
    ]
    # a post decided before the cancel is refused once the job is terminal
    assert not log.commit(Event(jobs.JOB_POST, 2100, {"id": "j", "seq": 3, "event": {"type": "x"}}))


def test_sweep_orphans_expired_leases_and_deadlines_as_go_orders_them() -> None:
    log = Log()
    log.commit(jobs.create(spec("orphan", max_retries=0), 1000))
    log.commit(jobs.create(spec("lease"), 1001))
    log.commit(jobs.create(spec("deadline", total_deadline=5), 1002))
    for job_id in ("orphan", "lease"):
        log.commit(jobs.claim(log.view.jobs.jobs[job_id], "p1", 2000))
    log.view.agents.clear()  # p1 is not a registered agent: orphaned
    actions = decide(log.view, {"lease"}, 10_000, 0)
    assert [(a["id"], a["op"], a.get("error") or a.get("end")) for a in actions] == [
        ("orphan", "fail", ORPHANED),
        ("lease", "reset", "orphaned"),
        ("deadline", "fail", DEADLINE_EXCEEDED),
    ]
    assert log.commit(jobs.sweep(actions, 10_000))
    assert log.view.jobs.jobs["lease"].claimable
    assert log.view.jobs.jobs["deadline"].error == DEADLINE_EXCEEDED
    # an action decided on an older revision does nothing
    assert not log.commit(jobs.sweep(actions, 11_000))


def test_leases_run_out_on_the_monotonic_clock_only() -> None:
    now = [100.0]
    log = Log()
    leases = Leases(log.view, clock=lambda: now[0])
    log.commit(jobs.create(spec("j", max_duration=10), 1000))
    event = jobs.claim(log.view.jobs.jobs["j"], "p1", 2000)
    log.commit(event)
    leases.on_applied(2, event)
    now[0] = 109.0
    assert leases.expired() == set()
    now[0] = 110.5
    assert leases.expired() == {"j"}
    assert LEASE_EXPIRED  # the fail reason once out of budget (see decide)
    # a node that never saw the lease set gives it a full window from its first look
    fresh = Leases(log.view, clock=lambda: now[0])
    assert fresh.expired() == set()


def test_snapshots_without_jobs_still_load() -> None:
    state = View().to_state()
    del state["jobs"]
    assert len(View.from_state(state).jobs) == 0


# -- the property ------------------------------------------------------------------------------

INSTANCES = ("p1", "p2")
lag = st.integers(0, 3)
"""How many committed entries the proposer's replica has not applied yet."""
op = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 2)),
    st.tuples(st.just("claim"), lag, st.sampled_from(INSTANCES)),
    st.tuples(
        st.just("batch"),
        lag,
        st.sampled_from(INSTANCES),
        st.integers(0, 1),
        st.sampled_from([None, "completed", "failed", "input_required", "working"]),
        st.booleans(),
    ),
    st.tuples(st.just("release"), lag, st.sampled_from(INSTANCES), st.integers(0, 1)),
    st.tuples(st.just("cancel"), lag, st.integers(0, 1)),
    st.tuples(st.just("reclaim"), lag, st.integers(0, 1)),
    st.tuples(st.just("expire"), lag, st.integers(0, 1)),
    st.tuples(st.just("post"), lag, st.integers(0, 1)),
)


def _pick(view: View, i: int) -> jobs.Job | None:
    ordered = sorted(view.jobs.jobs.values(), key=lambda j: j.created_index)
    return ordered[i] if i < len(ordered) else None


def _proposal(view: View, item: tuple[Any, ...], ts: int) -> tuple[Event, Any] | None:
    """The event a handler (or the sweep) on a replica with ``view`` proposes, and the answer
    it precomputes; None when it proposes nothing."""
    kind = item[0]
    if kind == "claim":
        job = view.jobs.next_claimable("render")
        if job is None:
            return None
        return jobs.claim(job, item[2], ts), (job.id, item[2], job.claim_epoch + 1)
    if kind == "batch":
        job = _pick(view, item[3])
        if job is None:
            return None
        delta: dict[str, Any] = {"id": job.id}
        if item[4]:
            delta["status"] = item[4]
        if item[5]:
            delta["claim_epoch"] = job.claim_epoch
        decided = jobs.decide_batch(view.jobs, item[2], [delta], ts)
        return jobs.batch(view.jobs, item[2], [delta], ts), decided
    job = _pick(view, item[-1])
    if job is None:
        return None
    try:
        if kind == "release":
            return jobs.release(jobs.check_release(job, item[2]), item[2], "r", ts), None
        if kind == "cancel":
            return jobs.cancel(jobs.check_live(job), "c", None, ts), None
        if kind == "reclaim":
            return jobs.reclaim(jobs.check_live(job), ts), None
        if kind == "post":
            return jobs.post(jobs.check_live(job), {"type": "t", "payload": ts}, ts), None
    except jobs.Refusal:
        return None
    if job.terminal or job.owner is None:  # expire: the sweep's lease decision
        return None
    action: dict[str, Any] = {"id": job.id, "rev": job.rev}
    if job.within_budget:
        action |= {"op": "reset", "end": "lease_expired"}
    else:
        action |= {"op": "fail", "error": LEASE_EXPIRED}
    return jobs.sweep([action], ts), None


@settings(max_examples=1500, deadline=None)
@given(st.lists(op, min_size=4, max_size=40), st.integers(1, 40))
def test_any_interleaving_keeps_one_owner_and_terminal_jobs_final(
    ops: list[tuple[Any, ...]], snapshot_at: int
) -> None:
    log = Log()
    epochs: set[tuple[str, int]] = set()
    created = 0
    for ts, item in enumerate(ops, start=1000):
        if item[0] == "create":
            created += 1
            log.commit(jobs.create(spec(f"j{created}", max_retries=item[1]), ts))
            continue
        before = replica_at(log, len(log.events))
        stale = replica_at(log, max(0, len(log.events) - item[1]))
        proposal = _proposal(stale, item, ts)
        if proposal is None:
            continue
        event, answer = proposal
        if not log.commit(event):
            continue
        if item[0] == "claim":
            job_id, instance, epoch = answer
            won = log.view.jobs.jobs[job_id]
            assert (won.owner, won.claim_epoch) == (instance, epoch)
            assert (job_id, epoch) not in epochs  # never two claims of one generation
            epochs.add((job_id, epoch))
        if item[0] == "batch":  # the precomputed outcome is what the commit did
            assert answer == jobs.decide_batch(before.jobs, item[2], event.payload["deltas"], ts)
        for job in before.jobs.jobs.values():
            if job.terminal:  # terminal stays terminal, with its status and result
                after = log.view.jobs.jobs[job.id]
                assert (after.status, after.result) == (job.status, job.result)
    # Determinism: every replica that applies the whole log holds the same view ...
    for replica in (Replica(log), Replica(log)):
        replica.catch_up()
        assert replica.view.digest() == log.view.digest()
    # ... and a snapshot mid-way plus the tail equals the full replay.
    cut = min(snapshot_at, len(log.events))
    restored = View.from_state(replica_at(log, cut).to_state())
    for index in range(cut + 1, len(log.events) + 1):
        apply(restored, index, log.events[index - 1])
    assert restored.digest() == log.view.digest()


def replica_at(log: Log, index: int) -> View:
    view = View()
    for i in range(1, index + 1):
        apply(view, i, log.events[i - 1])
    return view
