"""Replication pieces that need no cluster: the durable journal, peer discovery, timing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pysyncobj import FAIL_REASON, SyncObjConf
from pysyncobj.node import TCPNode

from registry.config import Config, ConfigError
from registry.store import StorageFailure
from replication import commands
from replication import journal as journal_module
from replication.dumps import Dumps, cluster_at, write_dump
from replication.journal import LmdbJournal
from replication.peers import Peers, RaftTiming, discover
from replication.syncobj import RaftNode, install
from replication.wire import Secret
from tests.ports import free_port
from tests.raft_cluster import address, running, unexpected_storage_failure


def test_journal_survives_reopen_only_what_was_synced(tmp_path: Path) -> None:
    journal = LmdbJournal(str(tmp_path))
    for i in range(1, 6):
        journal.add(b"cmd%d" % i, i, 1)
    journal.sync()
    journal.add(b"unsynced", 6, 1)
    assert journal[-1] == (b"unsynced", 6, 1)
    journal._env.close()  # a crash before the next sync: entry 6 was never acknowledged
    reopened = LmdbJournal(str(tmp_path))
    assert len(reopened) == 5
    assert reopened[-1] == (b"cmd5", 5, 1)
    assert reopened[1:3] == [(b"cmd2", 2, 1), (b"cmd3", 3, 1)]


def test_journal_truncate_reappend_and_trim_are_atomic_per_sync(tmp_path: Path) -> None:
    journal = LmdbJournal(str(tmp_path))
    for i in range(1, 11):
        journal.add(b"a%d" % i, i, 1)
    journal.sync()
    journal.deleteEntriesFrom(6)  # keep indexes 1..6
    journal.add(b"b7", 7, 2)
    journal.deleteEntriesTo(2)  # drop indexes 1..2
    journal.setRaftCommitIndex(7)
    journal.setCurrentTerm(2, "127.0.0.1:1")  # writes through with everything pending
    journal._env.close()
    reopened = LmdbJournal(str(tmp_path))
    assert [entry[1] for entry in reopened[:]] == [3, 4, 5, 6, 7]
    assert reopened[-1] == (b"b7", 7, 2)
    assert reopened.getCurrentTerm() == 2
    assert reopened.getVotedForNodeId() == "127.0.0.1:1"
    assert reopened.getRaftCommitIndex() == 7
    with pytest.raises(ValueError, match="append of 9 after 7"):
        reopened.add(b"gap", 9, 2)


def test_journal_reads_recent_entries_from_memory_and_older_ones_from_lmdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a sync the newest commands stay in memory up to HELD_BYTES (pysyncobj reads each
    new entry back at once), older ones come from LMDB, and a truncation or trim drops what it
    removes from memory too."""
    monkeypatch.setattr(journal_module, "HELD_BYTES", 10)
    journal = LmdbJournal(str(tmp_path))
    for i in range(1, 9):
        journal.add(b"c%d" % i, i, 1)  # 2 bytes each
    journal.sync()
    assert list(journal._pending) == [4, 5, 6, 7, 8] and journal._held_bytes == 10
    opened: list[object] = []
    begin = journal._env.begin
    monkeypatch.setattr(
        journal, "_env", SimpleNamespace(begin=lambda **kw: opened.append(kw) or begin(**kw))
    )
    assert journal[3:8] == [(b"c%d" % i, i, 1) for i in range(4, 9)]
    assert opened == []  # all held: no LMDB transaction
    assert journal[0:3] == [(b"c%d" % i, i, 1) for i in range(1, 4)]
    assert len(opened) == 1  # the older ones in one transaction
    journal.deleteEntriesFrom(6)  # keep indexes 1..6
    journal.add(b"new7", 7, 2)
    journal.deleteEntriesTo(4)  # drop indexes 1..4
    assert list(journal._pending) == [5, 6, 7] and journal._held_bytes == 8
    journal.sync()
    assert [entry[:2] for entry in journal[:]] == [(b"c5", 5), (b"c6", 6), (b"new7", 7)]
    journal.clear()
    assert journal._pending == {} and journal._held_bytes == 0


def base_config(**overrides: object) -> Config:
    return replace(Config(enable_leader_election=True), **overrides)  # type: ignore[arg-type]


def test_peers_from_statefulset_dns_names() -> None:
    config = base_config(pod_name="mcp-mesh-registry-1", replicas=3)
    peers = discover(config)
    suffix = "mcp-mesh-registry-headless.mcp-mesh.svc.cluster.local:4321"
    assert peers.self_address == f"mcp-mesh-registry-1.{suffix}"
    assert peers.others == (f"mcp-mesh-registry-0.{suffix}", f"mcp-mesh-registry-2.{suffix}")


def test_a_scaled_up_pod_lists_every_lower_ordinal_to_join_through() -> None:
    peers = discover(base_config(pod_name="mcp-mesh-registry-2", replicas=1))
    assert [p.split(".")[0] for p in peers.others] == ["mcp-mesh-registry-0", "mcp-mesh-registry-1"]
    with pytest.raises(ConfigError, match="POD_NAME"):
        discover(base_config(pod_name="registry"))


def test_peers_from_explicit_list() -> None:
    config = base_config(peers=("127.0.0.1:7001", "127.0.0.1:7002"), raft_port=7002)
    peers = discover(config)
    assert (peers.self_address, peers.others) == ("127.0.0.1:7002", ("127.0.0.1:7001",))
    with pytest.raises(ConfigError, match="exactly one entry for this node"):
        discover(replace(config, raft_port=7003))


def test_lease_settings_map_onto_raft_timing() -> None:
    default = RaftTiming.from_config(Config())
    assert (default.election_min, default.election_max) == (0.6, 1.2)
    assert default.heartbeat == pytest.approx(0.1)
    assert default.step_down == 2.0
    assert default.election_min > 3 * default.heartbeat  # pysyncobj's own constraint
    doubled = RaftTiming.from_config(Config(lease_duration=30, renew_deadline=20))
    assert doubled.election_min == 2 * default.election_min
    assert doubled.step_down == 2 * default.step_down


def test_a_snapshot_chunk_does_not_commit_a_former_leaders_own_entries(tmp_path: Path) -> None:
    """A node holding entries of an old term (never committed) receives the first chunk of a
    snapshot from the new leader: its commit index must not move over those entries."""
    journal = LmdbJournal(str(tmp_path / "raft"))
    applied: list[int] = []
    node = _node(tmp_path, journal, lambda index, _: applied.append(index))
    try:
        for index in range(2, 11):  # pysyncobj put its no-op at 1
            journal.add(b"\x00uncommitted", index, 1)
        before = node.raftCommitIndex
        chunk = {
            "type": "append_entries",
            "term": 2,
            "commit_index": 50,
            "serialized": (b"first part of a snapshot", True, False),
        }
        node._SyncObj__onMessageReceived(TCPNode("127.0.0.1:2"), chunk)
        assert node.raftCommitIndex == before < 2
        assert applied == []
    finally:
        node.destroy()
        journal._destroy()


UNIT_SECRET = Secret.from_key("unit-test-key-0123456789abcdefghij")


def _node(tmp_path: Path, journal: LmdbJournal, deliver: Any = lambda *_: None) -> RaftNode:
    """A node that never ticks, on a free loopback port; ``destroy()`` closes it at once."""
    peers = Peers(f"127.0.0.1:{free_port()}", ("127.0.0.1:2", "127.0.0.1:3"))
    conf = SyncObjConf(autoTick=False, fullDumpFile=str(tmp_path / "raft" / "dump.bin"))
    install()
    return RaftNode(
        peers, conf, journal, deliver, lambda _: None, UNIT_SECRET, unexpected_storage_failure
    )


LEADER = TCPNode("127.0.0.1:2")


@pytest.fixture
def follower(
    tmp_path: Path,
) -> Iterator[tuple[RaftNode, LmdbJournal, Callable[[], list[dict[str, Any]]]]]:
    """A node whose log holds entries 2-20 of term 1 (after pysyncobj's own entry at 1), and
    the replies it has queued on its real transport (a node that never ticks never flushes
    them: they leave only after the next journal sync, see the last test)."""
    journal = LmdbJournal(str(tmp_path / "raft"))
    node = _node(tmp_path, journal)
    try:
        for index in range(2, 21):
            journal.add(_command(index), index, 1)
        journal.sync()
        assert node.transport is not None
        transport = node.transport
        yield node, journal, lambda: [message for _, message in transport._acks]
    finally:
        node.destroy()
        journal._destroy()


def _command(index: int, term: int = 1) -> bytes:
    return f"entry {index} of term {term}".encode()


def _append(node: RaftNode, prev: int, entries: list[tuple[int, int]], commit: int = 50) -> None:
    """The leader's append_entries: ``entries`` as (index, term) after entry ``prev``."""
    message = {
        "type": "append_entries",
        "term": 2,
        "commit_index": commit,
        "prevLogIdx": prev,
        "prevLogTerm": node.journal.term_at(prev),
        "entries": [(_command(i, t), i, t) for i, t in entries],
    }
    node._SyncObj__onMessageReceived(LEADER, message)


def _log(journal: LmdbJournal) -> list[tuple[bytes, int, int]]:
    journal.sync()
    return [tuple(entry) for entry in journal[1:]]  # type: ignore[misc]  # from entry 2


def test_entries_held_are_not_deleted_by_a_shorter_resend(follower: Any) -> None:
    """A leader that rewound this follower's next index resends 6-10: entries 11-20, which
    the follower acknowledged, stay; the reply says the log matches up to 10, and the commit
    index goes no further than that (11-20 were not checked against the leader's log)."""
    node, journal, replies = follower
    before = _log(journal)
    _append(node, 5, [(i, 1) for i in range(6, 11)])
    assert _log(journal) == before
    answer = {
        "type": "next_node_idx",
        "next_node_idx": 11,
        "reset": False,
        "success": True,
        "incarnation": node.incarnations.identity,
        "term": 2,  # the term of the append_entries it answers
    }
    assert replies() == [answer]
    assert node.raftCommitIndex == 10
    assert node.raftCurrentTerm == 2  # the leader's term was still taken


def test_a_heartbeat_from_behind_deletes_nothing(follower: Any) -> None:
    node, journal, replies = follower
    before = _log(journal)
    _append(node, 12, [], commit=15)
    assert _log(journal) == before
    assert replies()[-1]["next_node_idx"] == 13 and replies()[-1]["success"]
    assert node.raftCommitIndex == 12


def test_a_resend_that_extends_the_log_appends_only_the_new_entries(follower: Any) -> None:
    node, journal, replies = follower
    before = _log(journal)
    _append(node, 15, [(i, 1) for i in range(16, 26)])
    assert [op[:2] for op in journal._ops] == [("put", i) for i in range(21, 26)]  # before sync
    assert _log(journal) == before + [(_command(i), i, 1) for i in range(21, 26)]
    assert replies()[-1]["next_node_idx"] == 26 and replies()[-1]["success"]


def test_a_conflicting_entry_still_replaces_the_rest_of_the_log(follower: Any) -> None:
    """Entry 8 of term 2 differs from the follower's entry 8 (term 1): 8-20 go (Raft 5.3)."""
    node, journal, replies = follower
    before = _log(journal)
    _append(node, 5, [(6, 1), (7, 1), (8, 2)])
    assert _log(journal) == [*before[:6], (_command(8, 2), 8, 2)]  # entries 2-7, then 8
    assert replies()[-1]["next_node_idx"] == 9 and replies()[-1]["success"]


def test_a_resend_after_a_missing_entry_is_refused(follower: Any) -> None:
    node, journal, replies = follower
    before = _log(journal)
    message = {
        "type": "append_entries",
        "term": 2,
        "commit_index": 50,
        "prevLogIdx": 10,
        "prevLogTerm": 2,  # the follower's entry 10 is of term 1
        "entries": [],
    }
    node._SyncObj__onMessageReceived(LEADER, message)
    assert _log(journal) == before
    assert replies()[-1]["success"] is False
    assert node.raftCommitIndex < 2


def test_acks_and_commits_leave_a_node_only_for_entries_on_its_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Committed" must mean "on disk on a majority": a follower's ``next_node_idx`` waits in
    the transport until the journal sync after the poll that brought the entries
    (DurableTransport.send / flush_acks), and a leader counts its own log only after the
    tick's sync. Checked on three real nodes with LMDB journals, on every acknowledgement and
    every commit index as the frame leaves the node's real TCP connection: the sender's last
    committed LMDB transaction must hold the entry it vouches for."""
    with running(tmp_path, monkeypatch) as cluster:
        leader = cluster.elect()
        followers = cluster.others(leader)
        answers: list[int] = []
        for burst in range(1, 7):
            # Writes through the leader and forwarded by a follower, several per poll.
            for i in range(6):
                node = leader if i % 2 else followers[burst % 2]
                node.submit(b"write", lambda _, error: answers.append(error))
            cluster.run_until(lambda: len(answers) == 6 * burst)  # noqa: B023  # called at once
        assert set(answers) == {FAIL_REASON.SUCCESS}
        last = leader.journal.last_index
        cluster.run_until(lambda: all(cluster.applied[address(n)][-1] == last for n in followers))

    acks = [f for f in cluster.frames if f.message["type"] == "next_node_idx" and f.claims]
    commits = [f for f in cluster.frames if f.message["type"] == "append_entries" and f.claims]
    for follower in followers:
        assert max(f.claims or 0 for f in acks if f.sender is follower) == last
    assert max(f.claims or 0 for f in commits) == last
    assert [(address(f.sender), f.claims) for f in acks if f.sender and not f.on_disk] == []
    assert [(address(f.sender), f.claims) for f in commits if f.sender and not f.on_disk] == []


def test_an_ack_from_an_earlier_term_does_not_count_in_a_later_one(tmp_path: Path) -> None:
    """Finding 11: node A leads term 1 and sends entries 2-30 to B, whose ack is held up (a
    partition stalls the connection). A's log is then overwritten by term 2's leader (entries
    2-15 of term 2), and A leads again in term 3 with its no-op at 16. B's old ack, arriving
    now, must not make A count B as holding 16: B holds term 1's entries, not these."""
    b_journal = LmdbJournal(str(tmp_path / "b" / "raft"))
    b = _node(tmp_path / "b", b_journal)
    a_journal = LmdbJournal(str(tmp_path / "a" / "raft"))
    a = _node(tmp_path / "a", a_journal)
    try:
        term_1 = {
            "type": "append_entries",
            "term": 1,
            "commit_index": 1,
            "prevLogIdx": 1,
            "prevLogTerm": b_journal.term_at(1),
            "entries": [(_command(i, 1), i, 1) for i in range(2, 31)],
        }
        b._SyncObj__onMessageReceived(LEADER, term_1)
        assert b.transport is not None
        ((_, late_ack),) = b.transport._acks  # what B's next flush sends
        assert late_ack["next_node_idx"] == 31 and late_ack["success"]

        for index in range(2, 16):  # what term 2's leader left in A's log
            a_journal.add(_command(index, 2), index, 2)
        a._SyncObj__setCurrentTerm(3, a._SyncObj__selfNode.id)
        a._SyncObj__onBecomeLeader()  # the no-op of term 3 at 16
        assert a_journal.last_index == 16 and a_journal.term_at(16) == 3
        assert a.transport is not None
        a.transport._onMessageReceived(LEADER, late_ack)
        a.doTick(0)
        assert a._SyncObj__raftMatchIndex[LEADER] == 0
        assert a.raftCommitIndex < 16  # only A holds it: one of three

        current = {**late_ack, "next_node_idx": 17, "term": 3}  # B caught up in term 3
        a.transport._onMessageReceived(LEADER, current)
        a.doTick(0)
        assert a.raftCommitIndex == 16
    finally:
        for node, journal in ((a, a_journal), (b, b_journal)):
            node.destroy()
            journal._destroy()


def test_a_received_dump_that_fails_to_load_is_not_acknowledged(tmp_path: Path) -> None:
    """pysyncobj logs an error loading a dump the leader sent and acknowledges it as installed
    anyway: the leader would count this node as holding everything up to the snapshot. The
    node stops instead, and nothing it queued after the failure is acknowledged."""

    def unreadable(path: str) -> Any:
        raise OSError(5, "Input/output error", path)

    journal = LmdbJournal(str(tmp_path / "raft"))
    failures: list[StorageFailure] = []
    conf = SyncObjConf(
        autoTick=False,
        fullDumpFile=str(tmp_path / "raft" / "dump.bin"),
        serializer=lambda path, data: None,
        deserializer=unreadable,
    )
    peers = Peers(f"127.0.0.1:{free_port()}", ("127.0.0.1:2", "127.0.0.1:3"))
    install()
    node = RaftNode(
        peers, conf, journal, lambda *_: None, lambda _: None, UNIT_SECRET, failures.append
    )
    try:
        assert node.transport is not None
        last_chunk = {
            "type": "append_entries",
            "term": 2,
            "commit_index": 50,
            "serialized": (b"a whole snapshot in one chunk", True, True),
        }
        node._SyncObj__onMessageReceived(LEADER, last_chunk)
        assert [str(f) for f in failures] == [
            "loading the raft dump failed at log index 1: [Errno 5] Input/output error: "
            f"'{tmp_path / 'raft' / 'dump.bin'}'"
        ]
        assert [m for _, m in node.transport._acks if m.get("success")] == []
    finally:
        node.destroy()
        journal._destroy()


X = "127.0.0.1:9"


def _change(op: str, member: str) -> bytes:
    return bytes([commands.MEMBERSHIP]) + commands.membership(op, member)


def test_a_dump_holds_the_membership_as_of_its_own_index() -> None:
    """pysyncobj hands its serializer the configuration now, with every change appended, and
    a change appended after the dump's index is not in force there (review finding 6)."""
    now = ["127.0.0.1:1", "127.0.0.1:2", X]
    later = [(b"\x00event", 6, 2), (_change("add", X), 7, 2), (b"\x00event", 8, 2)]
    assert cluster_at(now, later) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert cluster_at(["127.0.0.1:1"], [(_change("rem", X), 7, 2)]) == ["127.0.0.1:1", X]
    assert cluster_at(now, [(b"\x00event", 6, 2)]) == sorted(now)


def _restarted_over_a_dump(tmp_path: Path, journal: LmdbJournal, cluster: list[str]) -> RaftNode:
    """A node started over ``journal`` with a dump of entries 4 and 5 (its journal starts at
    2) whose configuration is ``cluster``, read as dumps.Dumps.read does, without a view."""
    prev, last = tuple(journal[2]), tuple(journal[3])

    def read_dump(path: str) -> Any:
        journal.trim_before_dump(prev, last)
        return last, prev, [TCPNode(member) for member in cluster]

    dump = tmp_path / "raft" / "dump.bin"
    dump.write_bytes(b"present")  # pysyncobj loads a dump only if the file exists
    conf = SyncObjConf(
        autoTick=False,
        fullDumpFile=str(dump),
        serializer=lambda path, data: None,
        deserializer=read_dump,
    )
    peers = Peers(f"127.0.0.1:{free_port()}", tuple(cluster))
    install()
    return RaftNode(
        peers,
        conf,
        journal,
        lambda *_: None,
        lambda _: None,
        UNIT_SECRET,
        unexpected_storage_failure,
    )


def test_a_change_appended_after_a_dump_is_in_force_again_after_a_restart(
    tmp_path: Path,
) -> None:
    """At a restart the dump's configuration (as of its index) is loaded over the saved one;
    the change the journal holds after it was in force from its append and stays so."""
    journal = LmdbJournal(str(tmp_path / "raft"))
    for index in range(2, 6):
        journal.add(_command(index), index, 1)
    journal.add(_change("add", X), 6, 1)
    journal.sync()
    node = _restarted_over_a_dump(tmp_path, journal, ["127.0.0.1:2", "127.0.0.1:3"])
    try:
        node._SyncObj__loadDumpFile(clearJournal=False)
        members = sorted(n.id for n in node._SyncObj__otherNodes)
        assert members == ["127.0.0.1:2", "127.0.0.1:3", X]
    finally:
        node.destroy()
        journal._destroy()


def test_a_committed_change_does_not_undo_a_later_one_already_in_force(tmp_path: Path) -> None:
    """The log removes X at 6 and adds it back at 8; the commit index is 7. X is a member (a
    change is in force once appended), and applying the committed removal must not remove it
    until the add commits (found by review: the restart and a follower receiving both
    changes in one batch)."""
    journal = LmdbJournal(str(tmp_path / "raft"))
    for index in range(2, 6):
        journal.add(_command(index), index, 1)
    journal.add(_change("rem", X), 6, 1)
    journal.add(_command(7), 7, 1)
    journal.add(_change("add", X), 8, 1)
    journal.setRaftCommitIndex(7)
    journal.sync(force=True)
    node = _restarted_over_a_dump(tmp_path, journal, ["127.0.0.1:2", "127.0.0.1:3", X])
    try:
        node.doTick(0.0)  # loads the dump, then applies the entries up to the commit index
        assert node.raftLastApplied == 7
        assert X in {n.id for n in node._SyncObj__otherNodes}
    finally:
        node.destroy()
        journal._destroy()


def test_a_received_dump_and_its_rename_are_on_disk_before_it_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pysyncobj renames a received dump into place without a sync, then clears the journal
    and acknowledges the install once Dumps.read returns: the file and the directory holding
    the rename are fsynced first (review finding 12; lazyfs keeps renames eager, so the chaos
    harness's power loss cannot see a missing directory sync)."""
    raft = tmp_path / "raft"
    raft.mkdir()
    path = raft / "dump.bin"
    write_dump(str(path), (b"\x00", 5, 1), (b"\x00", 4, 1), ["127.0.0.1:1"], 5, b"view", [])
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    installed: list[int] = []
    proposer = SimpleNamespace(
        node=None, schedule_install=lambda index, *_: installed.append(index)
    )
    Dumps(proposer).read(str(path))  # type: ignore[arg-type]
    assert installed == [5]
    assert str(path) in synced and str(raft) in synced
