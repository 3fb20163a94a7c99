"""The incarnation rules (replication/incarnation.py) over a real LMDB journal."""

from __future__ import annotations

from pathlib import Path

from replication.incarnation import Incarnations
from replication.journal import LmdbJournal

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
    assert rules.vote_counts(B, "b-1")  # the cluster's first election: nobody known yet
    assert rules.vote_counts(C, "c-1")  # (a 5-member cluster's first leader needs two)
    rules.adopt({B: "b-1", C: "c-1"})  # a leader was heard of: first contact is over
    assert not rules.vote_counts("10.0.0.9:4321", "d-1")
    assert rules.vote_counts(B, "b-1")
    assert not rules.vote_counts(B, "b-2")  # B lost its disk
    assert not rules.vote_counts(B, None)
    journal._destroy()
    _, reopened = _open(tmp_path)
    assert not reopened.vote_counts(B, "b-2")  # the record survives a restart
    assert reopened.vote_counts(B, "b-1")


def test_a_new_incarnation_counts_only_once_it_holds_the_commit_index_it_was_first_seen_at(
    tmp_path: Path,
) -> None:
    _, rules = _open(tmp_path)
    assert rules.ack_counts(C, "c-1", matched=10, commit=10)  # learned at first contact
    assert not rules.ack_counts(C, "c-2", matched=0, commit=50)  # wiped: catch up to 50
    assert not rules.counted(C)
    assert not rules.ack_counts(C, "c-2", matched=49, commit=60)
    assert rules.ack_counts(C, "c-2", matched=50, commit=60)
    assert rules.counted(C)
    assert rules.vote_counts(C, "c-2") and not rules.vote_counts(C, "c-1")
    assert not rules.ack_counts(C, None, matched=80, commit=80)


def test_followers_adopt_the_leaders_incarnations_but_never_their_own(tmp_path: Path) -> None:
    journal, rules = _open(tmp_path)
    rules.adopt({ME: "someone-else", B: "b-1", C: "c-2", 7: "junk", "x": 3})
    assert rules.known == {ME: journal.identity, B: "b-1", C: "c-2"}
