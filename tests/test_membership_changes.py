"""One membership change in flight at a time, on real pysyncobj nodes over loopback.

Two changes appended before the first commits let two disjoint majorities exist (a 3-member
cluster that became 5 in one go: {A, D, E} on the new configuration, {B, C} on the old one). The
leader must refuse the second change until the first is committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pysyncobj import FAIL_REASON, SyncObjConf

from replication.journal import LmdbJournal
from replication.peers import Peers
from replication.status import RaftStatus
from replication.syncobj import RaftNode, install
from replication.wire import Secret
from tests.ports import free_port
from tests.processes import Registry
from tests.raft_cluster import unexpected_storage_failure
from tests.test_cluster import (
    Cluster,
    _has_members,
    agent_ids,
    all_ready,
    converged,
    register,
    until,
)
from tests.timing import scaled

SECRET = Secret.from_key("membership-test-key-0123456789abcd")


class Answers:
    """Callback results of membership commands, waited for from the test thread."""

    def __init__(self) -> None:
        self.results: list[int] = []
        self._event = threading.Condition()

    def callback(self) -> Callable[[Any, int], None]:
        def record(_result: Any, error: int) -> None:
            with self._event:
                self.results.append(error)
                self._event.notify_all()

        return record

    def wait(self, count: int, timeout: float) -> list[int]:
        with self._event:
            self._event.wait_for(lambda: len(self.results) >= count, scaled(timeout))
            return list(self.results)


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[[str, list[str]], RaftNode]]:
    made: list[RaftNode] = []

    def start(address: str, others: list[str]) -> RaftNode:
        data = tmp_path / address.replace(":", "_")
        journal = LmdbJournal(str(data / "raft"))
        conf = SyncObjConf(
            fullDumpFile=str(data / "raft" / "dump.bin"),
            dynamicMembershipChange=True,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=0.05,
            raftMinTimeout=0.3,
            raftMaxTimeout=0.6,
            connectionRetryTime=0.2,
        )
        install()
        node = RaftNode(
            Peers(address, tuple(others)),
            conf,
            journal,
            lambda *_: None,
            lambda _: None,
            SECRET,
            unexpected_storage_failure,
        )
        made.append(node)
        return node

    yield start
    for node in made:
        node.destroy_synchronous()
        node.journal._destroy()


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {scaled(timeout):.1f}s")
        time.sleep(0.02)


def test_a_second_change_is_refused_while_the_first_is_uncommitted(
    start_node: Callable[[str, list[str]], RaftNode],
) -> None:
    a = f"127.0.0.1:{free_port()}"
    d, e = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    leader = start_node(a, [])
    _until(lambda: leader._isLeader() and leader.raftCommitIndex >= 1, 10, "a leader")
    answers = Answers()
    # D does not run: {A, D} needs D's acknowledgement, so the first change stays uncommitted.
    leader.addNodeToCluster(d, callback=answers.callback())
    _until(lambda: d in RaftStatus.parse(leader.getStatus()).members, 5, "D appended")
    leader.addNodeToCluster(e, callback=answers.callback())
    assert answers.wait(1, 5) == [FAIL_REASON.REQUEST_DENIED]
    assert RaftStatus.parse(leader.getStatus()).members == tuple(sorted([a, d]))
    changes = [entry for entry in leader.journal[:] if entry[0][:1] == b"\x02"]
    assert len(changes) == 1, "two membership changes in the log at once"


def test_the_next_change_goes_through_once_the_first_is_committed(
    start_node: Callable[[str, list[str]], RaftNode],
) -> None:
    a, d, e = (f"127.0.0.1:{free_port()}" for _ in range(3))
    leader = start_node(a, [])
    _until(lambda: leader._isLeader() and leader.raftCommitIndex >= 1, 10, "a leader")
    start_node(d, [a])
    answers = Answers()
    leader.addNodeToCluster(d, callback=answers.callback())
    assert answers.wait(1, 10) == [FAIL_REASON.SUCCESS]
    # E is not running: its add is appended (the previous change committed) and stays pending.
    leader.addNodeToCluster(e, callback=answers.callback())
    _until(
        lambda: e in RaftStatus.parse(leader.getStatus()).members, 5, "E appended after D committed"
    )
    assert RaftStatus.parse(leader.getStatus()).members == tuple(sorted([a, d, e]))


@pytest.mark.slow
async def test_two_pods_started_at_once_join_one_after_the_other(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """``podManagementPolicy: Parallel`` scaling 3 -> 5: both new pods ask to join at once; the
    leader takes one change at a time and the refused join retries until it is in."""
    cluster = Cluster(tmp_path, registries, n=5)
    addresses = [cluster.address(i) for i in range(5)]
    cluster.start_first(3)
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes[:3], timeout=20)
        assert await register(session, cluster.nodes[0], "before-scale-up")
        for i in (3, 4):
            cluster.start(i, REGISTRY_PEERS=",".join(addresses[: i + 1]))
        await until(lambda: _has_members(session, cluster.nodes[0], addresses), 40)
        await all_ready(session, cluster.nodes, timeout=30)
        assert await register(session, cluster.nodes[4], "after-scale-up")
        for node in cluster.nodes:
            assert {"before-scale-up", "after-scale-up"} <= await agent_ids(
                session, node, linearizable=True
            )
        await converged(session, cluster.nodes)
