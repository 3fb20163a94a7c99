"""A registry finding of the chaos harness's job work (issue 16).

registry/job_sweep.py ``Leases.on_applied`` noted a fresh lease window for every job an applied
event names, and a posted event (``POST /jobs/{id}/events``, ``JOB_POST``) names its job. So each
event a consumer posted restarted the owner's lease on the leader's monotonic clock, although the
job's ``lease_expires_at`` stayed where the last claim or batch put it, and in the Go registry
only the owner's batches and executor reads extend a lease. A producer that hangs while its
agent keeps heartbeating then never lost a job whose consumer posts more often than the lease
window. A lease is now noted again only when it changes.
"""

from __future__ import annotations

from registry import jobs
from registry.job_sweep import Leases
from tests.test_jobs import Log, spec


def test_a_posted_event_does_not_extend_the_owners_lease() -> None:
    now = [100.0]
    log = Log()
    leases = Leases(log.view, clock=lambda: now[0])
    log.commit(jobs.create(spec("j", max_duration=10), 1000))
    claim = jobs.claim(log.view.jobs.jobs["j"], "p1", 2000)
    log.commit(claim)
    leases.on_applied(2, claim)
    now[0] = 109.0  # 1 s of the 10 s lease left; a consumer posts input for the handler
    post = jobs.post(log.view.jobs.jobs["j"], {"type": "input", "payload": {"q": 1}}, 11_000)
    assert log.commit(post)
    leases.on_applied(3, post)
    assert log.view.jobs.jobs["j"].lease_expires_ms == 12_000  # the lease itself is unchanged
    now[0] = 110.5  # past the lease the claim gave
    assert leases.expired() == {"j"}
