"""The ReadIndex protocol object against a stand-in for the pysyncobj node it drives.

The cluster tests (tests/test_cluster.py) run it for real; these pin the rules that are hard to
provoke there: whose replies count, which acknowledgements confirm a read, when it gives up.
"""

from __future__ import annotations

from typing import Any

import pytest
from pysyncobj import FAIL_REASON

from replication import read_index
from replication.read_index import GIVE_UP_AFTER, REFUSED, ReadIndex

LEADER, F1, F2 = "10.0.0.1:4321", "10.0.0.2:4321", "10.0.0.3:4321"


class StandIn:
    """The attributes and methods of replication.raft.RaftNode that ReadIndex uses."""

    def __init__(self, me: str, leader: str | None, term: int = 3, commit: int = 10) -> None:
        self.me = me
        self.leader = leader
        self.raftCurrentTerm = term
        self.raftCommitIndex = commit
        self.raftLastApplied = commit
        self._SyncObj__noopIDx: int | None = commit
        self.otherNodes = [n for n in (LEADER, F1, F2) if n != me]
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def wake(self) -> None:
        pass

    def send(self, to: str, message: dict[str, Any]) -> bool:
        self.sent.append((to, message))
        return True

    def _isLeader(self) -> bool:
        return self.leader == self.me

    def _getLeader(self) -> str | None:
        return self.leader


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        monkeypatch.setattr(read_index, "monotonic", lambda: self.now)


def results() -> tuple[list[tuple[Any, int]], Any]:
    got: list[tuple[Any, int]] = []
    return got, lambda result, error: got.append((result, error))


def test_a_follower_takes_the_reply_only_from_the_leader_it_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Clock(monkeypatch)
    node = StandIn(F1, leader=LEADER)
    reads = ReadIndex(node)
    got, callback = results()
    reads.request(callback)
    reads.tick()
    [(to, request)] = node.sent
    assert (to, request["type"]) == (LEADER, read_index.REQUEST)
    other_id = request["id"] + 1
    reads.on_message(F2, {"type": read_index.REPLY, "id": request["id"], "index": 5})
    reads.on_message(LEADER, {"type": read_index.REPLY, "id": other_id, "index": 5})
    reads.on_message(LEADER, {"type": read_index.REPLY, "id": "x", "index": 5})
    reads.tick()
    assert got == []
    reads.on_message(LEADER, {"type": read_index.REPLY, "id": request["id"], "index": 12})
    reads.tick()
    assert got == []  # not applied up to 12 yet
    node.raftLastApplied = 12
    reads.tick()
    assert got == [(12, FAIL_REASON.SUCCESS)]


def test_request_ids_differ_between_processes() -> None:
    first, second = StandIn(F1, LEADER), StandIn(F1, LEADER)
    for node in (first, second):
        reads = ReadIndex(node)
        reads.request(lambda *_: None)
        reads.tick()
    assert first.sent[0][1]["id"] != second.sent[0][1]["id"]


def test_an_unanswered_request_is_refused_so_the_caller_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    node = StandIn(F1, leader=LEADER)
    reads = ReadIndex(node)
    got, callback = results()
    reads.request(callback)
    reads.tick()
    clock.now += GIVE_UP_AFTER / 2
    reads.tick()
    assert got == []
    clock.now += GIVE_UP_AFTER
    reads.tick()
    assert got == [(None, REFUSED)]


def test_the_leader_answers_after_a_majority_acknowledged_a_later_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Clock(monkeypatch)
    node = StandIn(LEADER, leader=LEADER, commit=10)
    reads = ReadIndex(node)
    # Acknowledgements of earlier probes prove nothing about leadership after the request.
    reads.on_message(F1, {"type": read_index.PROBE_ACK, "term": 3, "seq": 0})
    got, callback = results()
    reads.request(callback)
    reads.tick()
    probes = [m for _, m in node.sent if m["type"] == read_index.PROBE]
    assert {to for to, m in node.sent} == {F1, F2} and probes
    seq = probes[0]["seq"]
    node.raftCommitIndex = 11  # a write committed after the read arrived: not needed by it
    reads.on_message(F1, {"type": read_index.PROBE_ACK, "term": 2, "seq": seq})
    reads.tick()
    assert got == []  # an ack from an older term does not count
    reads.on_message(F1, {"type": read_index.PROBE_ACK, "term": 3, "seq": seq})
    reads.tick()
    assert got == [(10, FAIL_REASON.SUCCESS)]


def test_the_leader_refuses_reads_before_its_no_op_commits_and_after_a_term_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Clock(monkeypatch)
    node = StandIn(LEADER, leader=LEADER, commit=10)
    node._SyncObj__noopIDx = 11
    reads = ReadIndex(node)
    got, callback = results()
    reads.request(callback)
    reads.tick()
    assert got == [(None, REFUSED)]
    node._SyncObj__noopIDx = 10
    got.clear()
    reads.request(callback)
    reads.on_message(F2, {"type": read_index.REQUEST, "id": 7})
    reads.tick()
    node.raftCurrentTerm = 4
    reads.on_message(F1, {"type": read_index.PROBE_ACK, "term": 4, "seq": 99})
    reads.tick()
    assert got == [(None, REFUSED)]
    assert (F2, {"type": read_index.REPLY, "id": 7, "error": "no read index"}) in node.sent


def test_malformed_messages_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    Clock(monkeypatch)
    node = StandIn(F1, leader=LEADER)
    reads = ReadIndex(node)
    for message in (
        {"type": read_index.PROBE},
        {"type": read_index.PROBE, "term": "3", "seq": 1},
        {"type": read_index.PROBE_ACK, "term": 3},
        {"type": read_index.REQUEST},
        {"type": read_index.REPLY, "index": 3},
    ):
        reads.on_message(LEADER, message)
    reads.tick()
    assert node.sent == []
    reads.on_message(LEADER, {"type": read_index.PROBE, "term": 3, "seq": 4})
    assert node.sent == [(LEADER, {"type": read_index.PROBE_ACK, "term": 3, "seq": 4})]
