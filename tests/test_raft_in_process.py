"""Real Raft nodes (RaftNode, its TCP transport, LMDB journals) in this process, on loopback.

Separate processes hide what leaves a node; here the test sees each message a node sends and
can let a journal's disk fill up at a size it chooses, while everything else is the real thing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from pysyncobj import FAIL_REASON, SyncObjConf
from pysyncobj.transport import TCPTransport

from registry.config import DEFAULT_MAP_SIZE
from registry.store import StorageFailure
from replication import syncobj
from replication.journal import LmdbJournal
from replication.peers import Peers
from replication.status import RaftStatus
from replication.syncobj import RaftNode, _Applied, install
from tests.ports import free_port
from tests.raft_cluster import SECRET
from tests.timing import scaled

TINY_MAP = 256 << 10
"""An LMDB map that a few dozen 2 KiB entries fill (LMDB_MAP_SIZE's smallest is 64 KiB)."""


def poll(check: Callable[[], Any], timeout: float) -> bool:
    """Whether ``check`` became true within ``timeout`` (scaled) seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> None:
    assert poll(check, timeout), f"{what}: not within {scaled(timeout)} s"


class Member:
    """One RaftNode with its journal under ``root/name``; a storage failure stops it (in
    production :func:`replication.proposer.halt` ends the process instead)."""

    def __init__(
        self,
        root: Path,
        name: str,
        port: int,
        others: list[int],
        journal: type[LmdbJournal] = LmdbJournal,
        extra_peers: tuple[str, ...] | list[str] = (),
        **conf: Any,
    ) -> None:
        self.path = root / name
        self.address = f"127.0.0.1:{port}"
        self.failures: list[StorageFailure] = []
        self.journal = journal(str(self.path), conf.pop("map_size", DEFAULT_MAP_SIZE))
        settings: dict[str, Any] = {
            "fullDumpFile": str(self.path / "dump.bin"),
            "appendEntriesUseBatch": False,
            "appendEntriesPeriod": 0.05,
            "raftMinTimeout": 0.3,
            "raftMaxTimeout": 0.6,
            "connectionTimeout": 1.0,
            "connectionRetryTime": 0.1,
            "commandsWaitLeader": False,
            "logCompactionMinEntries": 2**62,
            "logCompactionMinTime": 2**31,
            **conf,
        }
        install()
        self.node = RaftNode(
            Peers(self.address, (*(f"127.0.0.1:{p}" for p in others), *extra_peers)),
            SyncObjConf(**settings),
            self.journal,
            lambda index, record: _Applied(index),
            lambda agents: None,
            SECRET,
            self._stop,
        )

    def _stop(self, failure: StorageFailure) -> None:
        self.failures.append(failure)
        self.node.destroy()  # the tick thread ends after this tick

    def stop(self) -> None:
        if self.node.tick_thread_alive():
            self.node.destroy_synchronous()


@pytest.fixture
def members(tmp_path: Path) -> Iterator[Callable[..., Member]]:
    made: list[Member] = []

    def make(name: str, port: int, others: list[int], **options: Any) -> Member:
        made.append(Member(tmp_path, name, port, others, **options))
        return made[-1]

    yield make
    for member in made:
        member.stop()


def durable_indexes(path: Path) -> list[int]:
    """The entry indexes a journal's LMDB file holds, read back from disk."""
    env = lmdb.open(str(path), readonly=True, max_dbs=2, lock=False)
    try:
        entries = env.open_db(b"raft_entries", create=False)
        with env.begin(db=entries) as txn:
            return [int.from_bytes(key, "big") for key, _ in txn.cursor(db=entries)]
    finally:
        env.close()


@pytest.mark.parametrize("full", ["follower", "leader"])
def test_a_journal_that_fills_up_stops_the_node_before_it_acknowledges(
    members: Callable[..., Member], monkeypatch: pytest.MonkeyPatch, full: str
) -> None:
    """Two members; one's LMDB map fills after a few dozen entries (a full disk, as far as
    LMDB can tell). That node stops, naming the first index it could not write, and nothing
    counts an entry it does not hold: no follower ack past its disk, no write answered
    as committed past the leader's disk (with two members, each of them is needed)."""
    sent: list[tuple[TCPTransport, dict[str, Any]]] = []
    original_send = TCPTransport.send

    def recording_send(self: TCPTransport, node: Any, message: Any) -> Any:
        if isinstance(message, dict) and message.get("type") == "next_node_idx":
            sent.append((self, message))
        return original_send(self, node, message)

    monkeypatch.setattr(TCPTransport, "send", recording_send)
    leader_port, follower_port = free_port(), free_port()
    small = {"map_size": TINY_MAP}
    follower = members(
        "follower",
        follower_port,
        [leader_port],
        raftMinTimeout=1000.0,  # never the one to start an election
        raftMaxTimeout=2000.0,
        connectionTimeout=2000.0,
        **(small if full == "follower" else {}),
    )
    leader = members("leader", leader_port, [follower_port], **(small if full == "leader" else {}))
    wait_for(leader.node._isLeader, 10, "leader elected")
    committed: list[int] = []

    def on_result(result: Any, error: int) -> None:
        if error == FAIL_REASON.SUCCESS:
            committed.append(result.index)

    stopped = follower if full == "follower" else leader
    submitted = 0  # in waves of a few, up to far more than the small map holds
    while submitted < 400 and stopped.node.tick_thread_alive():
        for _ in range(4):
            leader.node.submit(b"r" * 2048, on_result)
        submitted += 4
        if not poll(lambda n=submitted: len(committed) == n or stopped.failures, 5):
            break  # a write did not commit: the small journal is full
    halted = poll(lambda: not stopped.node.tick_thread_alive(), 20)
    leader.stop()
    follower.stop()
    on_disk = durable_indexes(stopped.path)
    assert on_disk == list(range(on_disk[0], on_disk[-1] + 1)), "a hole in the journal's keys"
    last = on_disk[-1]
    follower_acks = [m["next_node_idx"] - 1 for t, m in sent if t is follower.node.transport]
    if full == "follower":
        assert follower_acks and max(follower_acks) <= last, (max(follower_acks), last)
        assert leader.node._SyncObj__raftMatchIndex[follower.node._SyncObj__selfNode] <= last
    assert committed and max(committed) <= last, (max(committed), last)
    assert halted and stopped.failures, "the node whose disk filled up did not stop"
    (failure,) = {id(f): f for f in stopped.failures}.values()
    assert failure.index == last + 1
    assert "raft journal write failed at log index" in str(failure)
    assert "MDB_MAP_FULL" in str(failure)


def test_a_lone_leader_counts_only_what_its_disk_holds(members: Callable[..., Member]) -> None:
    """Alone in its cluster the leader commits by counting itself only: every commit index
    it sets must already be synced, its election no-op included."""
    seen: list[tuple[int, int]] = []

    class Watched(LmdbJournal):
        def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
            seen.append((raftCommitIndex, self.synced_index))
            super().setRaftCommitIndex(raftCommitIndex)

    lone = members("lone", free_port(), [], journal=Watched)
    done = threading.Event()
    wait_for(lone.node._isLeader, 10, "leader elected")
    lone.node.submit(b"one", lambda result, error: done.set())
    wait_for(done.is_set, 10, "write committed")
    assert seen
    assert all(index <= synced for index, synced in seen), seen


def test_a_peer_name_that_takes_long_to_resolve_does_not_stall_the_others(
    members: Callable[..., Member], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three members, one of them known by a name whose lookup hangs (a DNS server gone). The
    other two, which connect to it (its name sorts first), keep ticking and heartbeating
    while that lookup hangs: it happens off their tick threads."""
    slow = f"0-slow-peer.invalid:{free_port()}"
    hanging, release = threading.Event(), threading.Event()
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == slow.rpartition(":")[0]:
            hanging.set()
            release.wait(scaled(30))
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # b's timeouts keep it from campaigning or dropping connections; they would also make its
    # first-contact settling time (which they bound) hours long. This test is about ticking.
    monkeypatch.setattr(syncobj, "first_contact_wait", lambda conf: 0.0)
    first, second = free_port(), free_port()
    try:
        leader = members("a", first, [second], extra_peers=[slow])
        follower = members(
            "b",
            second,
            [first],
            extra_peers=[slow],
            raftMinTimeout=1000.0,
            raftMaxTimeout=2000.0,
            connectionTimeout=2000.0,
        )
        wait_for(leader.node._isLeader, 10, "leader elected")
        wait_for(hanging.is_set, 10, "the slow name looked up")
        ticks = {"a": 0, "b": 0}

        def counter(name: str) -> Callable[[], None]:
            def count() -> None:
                ticks[name] += 1

            return count

        leader.node.addOnTickCallback(counter("a"))
        follower.node.addOnTickCallback(counter("b"))
        term = leader.node.raftCurrentTerm
        wait_for(lambda: min(ticks.values()) >= 20, 3, "both tick threads ticking")
        assert hanging.is_set() and not release.is_set()  # all of it while the lookup hangs
        assert leader.node._isLeader() and leader.node.raftCurrentTerm == term
        assert follower.node._getLeader() == leader.node._SyncObj__selfNode
    finally:
        release.set()


def test_the_status_read_from_pysyncobjs_fields_is_what_its_dictionary_says(
    members: Callable[..., Member],
) -> None:
    """The tick thread's status (RaftNode.status) and the parse of pysyncobj's status
    dictionary (what a peer reads over the utility channel) agree, on the leader and on the
    followers, after a write, and with a member gone. Both are read while the tick thread may
    move the state between the two reads, so each comparison is retried until they agree: a
    field read wrongly never does."""
    ports = [free_port() for _ in range(3)]
    nodes = [
        members(f"m{i}", port, [p for p in ports if p != port]) for i, port in enumerate(ports)
    ]

    def status(member: Member) -> RaftStatus:
        while True:
            try:
                return member.node.status()
            except RuntimeError:  # pysyncobj's dicts changed size under this thread: again
                continue

    def agree(member: Member) -> bool:
        try:
            return member.node.status() == RaftStatus.parse(member.node.getStatus())
        except RuntimeError:
            return False

    wait_for(lambda: any(m.node._isLeader() for m in nodes), 10, "leader elected")
    done = threading.Event()
    lead = next(m for m in nodes if m.node._isLeader())
    lead.node.submit(b"one", lambda result, error: done.set())
    wait_for(done.is_set, 10, "write committed")
    for member in nodes:
        wait_for(lambda m=member: agree(m), 5, f"{member.address}'s two statuses agree")
    now = status(lead)
    assert now.leading and now.has_quorum and len(now.members) == 3
    assert now.commit_index >= 1 and set(now.match_index) == set(now.others)
    gone = next(m for m in nodes if m is not lead)
    gone.stop()
    wait_for(lambda: gone.address not in status(lead).connected, 10, "member gone")
    for member in nodes:
        if member is not gone:
            wait_for(lambda m=member: agree(m), 5, f"{member.address}'s statuses agree")
    last = next(m for m in nodes if m is not lead and m is not gone)
    last.stop()  # the leader alone: no quorum
    wait_for(lambda: not status(lead).has_quorum, 10, "quorum lost")
    wait_for(lambda: agree(lead), 5, "the lone leader's statuses agree")
