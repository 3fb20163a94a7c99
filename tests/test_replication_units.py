"""Replication pieces that need no cluster: the durable journal, peer discovery, timing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.node import TCPNode

from registry.config import Config, ConfigError
from replication.journal import LmdbJournal
from replication.peers import Peers, RaftTiming, discover
from replication.raft import RaftNode


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
    peers = Peers("127.0.0.1:1", ("127.0.0.1:2", "127.0.0.1:3"))
    conf = SyncObjConf(autoTick=False, fullDumpFile=str(tmp_path / "raft" / "dump.bin"))
    applied: list[int] = []
    node = RaftNode(peers, conf, journal, lambda index, _: applied.append(index), lambda _: None)
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
        journal._destroy()
