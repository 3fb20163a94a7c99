"""The incarnation rules (replication/incarnation.py) over a real LMDB journal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pysyncobj.node import TCPNode

from replication.incarnation import Incarnations
from replication.journal import LmdbJournal
from tests.raft_cluster import address, running
from tests.test_read_index import transfer
from tests.timing import scaled

FOLLOWER = 0

ME, B, C = "10.0.0.1:4321", "10.0.0.2:4321", "10.0.0.3:4321"


def _open(path: Path) -> tuple[LmdbJournal, Incarnations]:
    journal = LmdbJournal(str(path))
    return journal, Incarnations(journal, ME)


def test_a_journal_keeps_its_incarnation_and_a_new_one_gets_another(tmp_path: Path) -> None:
    first = LmdbJournal(str(tmp_path / "a"))
    same = first.identity
    first._destroy()
    assert LmdbJournal(str(tmp_path / "a")).identity == same
    assert LmdbJournal(str(tmp_path / "wiped")).identity != same


def test_votes_are_taken_at_first_contact_then_only_from_the_known_incarnation(
    tmp_path: Path,
) -> None:
    journal, rules = _open(tmp_path)
    # The cluster's first election: nobody known yet; votes count from voters at first
    # contact too (a 5-member cluster's first leader needs two).
    assert not rules.vote_counts("10.0.0.8:4321", "e-1", fresh=False)
    assert not rules.vote_counts("10.0.0.8:4321", None, fresh=True)
    assert rules.vote_counts(B, "b-1", fresh=True)
    assert rules.vote_counts(C, "c-1", fresh=True)
    rules.elected()  # first contact is over; the voters are known by their incarnations
    assert not rules.first_contact and rules.known[B] == "b-1"
    assert not rules.vote_counts("10.0.0.9:4321", "d-1", fresh=True)
    assert rules.vote_counts(B, "b-1", fresh=False)
    assert not rules.vote_counts(B, "b-2", fresh=True)  # B lost its disk
    assert not rules.vote_counts(B, None, fresh=False)
    journal._destroy()
    _, reopened = _open(tmp_path)
    assert not reopened.vote_counts(B, "b-2", fresh=True)  # the record survives a restart
    assert reopened.vote_counts(B, "b-1", fresh=False)


def test_a_vote_request_from_a_member_past_first_contact_ends_it(tmp_path: Path) -> None:
    """Two emptied members of three must not elect each other while the third, which kept
    its disk, is heard campaigning: its request ends their first contact, durably."""
    journal, rules = _open(tmp_path)
    rules.vote_requested(fresh=True)  # another member at its first election
    rules.vote_requested(fresh=None)  # says nothing of itself
    assert rules.first_contact
    rules.vote_requested(fresh=False)  # C has heard of a leader (or of a member that has)
    assert not rules.first_contact
    assert not rules.vote_counts(B, "b-1", fresh=True)  # the other emptied member's vote
    assert not rules.vote_counts(C, "c-1", fresh=False)  # nor C's: it may be emptied too
    journal._destroy()
    _, reopened = _open(tmp_path)
    assert not reopened.first_contact
    assert not reopened.vote_counts(B, "b-1", fresh=True)


def test_a_new_incarnation_counts_only_once_it_holds_the_commit_index_it_was_first_seen_at(
    tmp_path: Path,
) -> None:
    _, rules = _open(tmp_path)
    assert rules.ack_counts(C, "c-1", matched=10, last=10)  # learned at first contact
    assert not rules.ack_counts(C, "c-2", matched=0, last=50)  # wiped: catch up to 50
    assert not rules.counted(C) and not rules.in_good_standing(C, "c-2")
    assert not rules.ack_counts(C, "c-2", matched=49, last=60)
    assert rules.ack_counts(C, "c-2", matched=50, last=60)
    assert rules.counted(C) and rules.in_good_standing(C, "c-2")
    assert not rules.in_good_standing(C, "c-1")
    assert rules.vote_counts(C, "c-2", fresh=False) and not rules.vote_counts(C, "c-1", fresh=False)
    assert not rules.ack_counts(C, None, matched=80, last=80)


def test_a_node_the_leader_knows_by_another_incarnation_is_not_recognised(
    tmp_path: Path,
) -> None:
    journal, rules = _open(tmp_path)
    assert rules.recognised  # nobody said otherwise (a cluster's start, or never heard of)
    rules.adopt({ME: "before-the-disk-was-lost", B: "b-1", C: "c-2", 7: "junk", "x": 3})
    assert rules.known == {ME: "before-the-disk-was-lost", B: "b-1", C: "c-2"}
    assert not rules.recognised
    journal._destroy()
    journal, reopened = _open(tmp_path)
    assert not reopened.recognised  # a restart does not make it forget
    reopened.adopt({ME: journal.identity})  # the leader has counted it as caught up
    assert reopened.recognised


def test_an_unrecognised_node_never_stands_for_election(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own vote would count: a node that lost its disk, half caught up, would otherwise
    become leader with a vote from a member further behind (the reviewer's scenario)."""
    with running(tmp_path, monkeypatch) as cluster:
        leader = cluster.elect()
        lost, other = cluster.others(leader)
        cluster.paused = {address(leader), address(other)}
        for _ in range(50):  # read what the leader sent before it paused (its map names `lost`)
            cluster.tick(lost)
        lost.incarnations.adopt({address(lost): "before-the-disk-was-lost"})
        deadline = time.monotonic() + scaled(3)  # five election timeouts at most
        while time.monotonic() < deadline:
            cluster.tick(lost)
            assert lost.getStatus()["state"] == FOLLOWER
        lost.incarnations.adopt({address(lost): lost.incarnations.identity})
        cluster.run_until(lambda: lost.getStatus()["state"] != FOLLOWER, lost)


def test_a_match_index_kept_for_an_uncounted_member_does_not_outlive_its_term(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader keeps the real match index of a member it does not count yet; when it leads
    again in a later term, a value from before must not come back as that member's match."""
    with running(tmp_path, monkeypatch) as cluster:
        leader = cluster.calm()
        f1, _ = cluster.others(leader)
        transfer(cluster, leader, f1)
        cluster.run_until(lambda: f1._isLeader())
        leader._uncounted_match[address(f1)] = 10**6  # kept while it led before, say
        transfer(cluster, f1, leader)
        cluster.run_until(lambda: leader._isLeader())
        cluster.write(leader)
        match = leader._SyncObj__raftMatchIndex[TCPNode(address(f1))]
        assert match <= f1.journal.last_index


def test_a_lost_first_round_leaves_no_record_and_a_won_one_does(tmp_path: Path) -> None:
    """A vote taken at first contact in a round this node did not win is not kept: after a
    restart it is still at first contact (a kept one would make it say it is past it, and a
    new cluster's first election could stall for good). Winning ends it durably."""
    journal, rules = _open(tmp_path)
    assert rules.vote_counts(B, "b-1", fresh=True)
    journal._destroy()
    journal, reopened = _open(tmp_path)
    assert reopened.first_contact and B not in reopened.known
    assert reopened.vote_counts(B, "b-1", fresh=True)
    reopened.elected()
    journal._destroy()
    _, again = _open(tmp_path)
    assert not again.first_contact and again.known[B] == "b-1"


def test_a_member_caught_up_under_another_leader_is_not_a_newcomer_for_ever(
    tmp_path: Path,
) -> None:
    """This node saw C's new incarnation as a newcomer, lost the lead, learned from the next
    leader that C caught up, and leads again: C counts, and is not reported catching up."""
    _, rules = _open(tmp_path)
    assert rules.ack_counts(C, "c-1", matched=10, last=10)
    assert not rules.ack_counts(C, "c-2", matched=0, last=50)
    rules.adopt({C: "c-2"})
    assert rules.ack_counts(C, "c-2", matched=0, last=60)
    assert rules.counted(C) and rules.in_good_standing(C, "c-2")


def test_a_member_alone_in_its_cluster_stays_at_first_contact_when_it_leads(
    tmp_path: Path,
) -> None:
    """A single member leads without votes; the pods that join it later must still get their
    votes counted until it has heard from them (a 1 -> 3 scale-up)."""
    _, rules = _open(tmp_path)
    rules.elected()
    assert rules.first_contact
    assert rules.vote_counts(B, "b-1", fresh=True)


def test_first_contact_settles_on_every_members_fresh_hello_or_the_wait(tmp_path: Path) -> None:
    _, rules = _open(tmp_path)
    assert not rules.settled([B, C], waited=False)
    rules.hello(B, True)
    assert not rules.settled([B, C], waited=False)  # C, which may hold the log, not heard
    assert rules.settled([B, C], waited=True)  # a new cluster with a member missing
    rules.hello(C, True)
    assert rules.settled([B, C], waited=False)  # a new cluster, all up
    assert rules.first_contact


def test_a_hello_from_a_member_past_first_contact_ends_it_for_good(tmp_path: Path) -> None:
    journal, rules = _open(tmp_path)
    rules.hello(B, True)
    rules.hello(C, False)
    assert not rules.first_contact
    assert rules.settled([B, C], waited=False)  # past first contact: votes by incarnation
    journal._destroy()
    journal, rules = _open(tmp_path)
    assert not rules.first_contact


def test_a_leader_of_an_older_version_ends_first_contact_too(tmp_path: Path) -> None:
    """A leader from before incarnations sends append_entries without them."""
    _, rules = _open(tmp_path)
    rules.adopt(None)
    assert not rules.first_contact


def test_a_restored_node_at_first_contact_tells_a_hello_from_another_restore(
    tmp_path: Path,
) -> None:
    """Which hellos show a lone restore does not match the cluster (the process test is the
    end of tests/test_backup.py::test_cluster_restore_on_three_nodes)."""
    journal, rules = _open(tmp_path / "restored")
    journal.set_restored_from("backup-a")
    assert rules.restore_mismatch("", fresh=False)  # a running cluster, never restored
    assert rules.restore_mismatch("backup-b", fresh=False)  # restored from another file
    assert rules.restore_mismatch("backup-b", fresh=True)  # another restore, starting too
    assert not rules.restore_mismatch("backup-a", fresh=False)  # the same backup
    assert not rules.restore_mismatch("", fresh=True)  # a new, empty member
    assert not rules.restore_mismatch(None, fresh=False)  # an older version says nothing
    rules.vote_requested(fresh=False)  # past first contact: the restore was taken
    assert not rules.restore_mismatch("backup-b", fresh=False)
    _, plain = _open(tmp_path / "not-restored")
    assert not plain.restore_mismatch("backup-b", fresh=False)
