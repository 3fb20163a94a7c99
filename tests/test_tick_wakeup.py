"""replication/syncobj.py's _OneWakeup on real nodes: a burst of commands queued between two
ticks writes one wakeup to the tick thread's pipe, and every command of it is committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pysyncobj import FAIL_REASON

from tests.raft_cluster import running


def test_a_burst_of_commands_wakes_the_tick_once_and_all_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(tmp_path, monkeypatch) as cluster:
        leader = cluster.calm()
        pipe = leader._wakeup.pipe
        notify = pipe.notify
        written: list[int] = []

        def counted() -> None:
            written.append(1)
            notify()

        monkeypatch.setattr(pipe, "notify", counted)
        answers: list[tuple[Any, int]] = []
        for _ in range(50):  # a burst from the loop while the tick thread is elsewhere
            leader.submit(b"entry", lambda result, error: answers.append((result, error)))
        assert len(written) == 1
        cluster.run_until(lambda: len(answers) == 50)
        assert [error for _, error in answers] == [FAIL_REASON.SUCCESS] * 50
        assert len({applied.index for applied, _ in answers}) == 50
        leader.submit(b"entry", lambda result, error: answers.append((result, error)))
        assert len(written) == 2  # the tick that drained the burst re-armed the wakeup
        cluster.run_until(lambda: len(answers) == 51)
