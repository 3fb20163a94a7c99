"""replication/status.py: pysyncobj's status dictionary read into RaftStatus (real nodes' status
is parsed by the cluster tests and tests/test_membership_changes.py)."""

from __future__ import annotations

from typing import Any

from replication.status import RaftStatus, Role

ME, B, C = "10.0.0.1:4321", "10.0.0.2:4321", "10.0.0.3:4321"


def _raw(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "self": ME,
        "state": 0,
        "leader": B,
        "has_quorum": False,
        "raft_term": 7,
        "commit_idx": 40,
        "last_applied": 39,
        "log_len": 12,
        f"partner_node_status_server_{B}": 2,
        f"partner_node_status_server_{C}": 0,
        f"match_idx_server_{B}": 40,
    }
    raw.update(over)
    return raw


def test_a_follower_reaches_the_leader_only_while_connected_to_it() -> None:
    status = RaftStatus.parse(_raw())
    assert status.role is Role.FOLLOWER and not status.leading
    assert status.members == (ME, B, C) and status.others == (B, C)
    assert status.connected == {B}
    assert (status.term, status.commit_index, status.last_applied, status.log_size) == (
        7,
        40,
        39,
        12,
    )
    assert status.match_index == {B: 40}
    assert status.leader_reachable
    assert not RaftStatus.parse(_raw(leader=C)).leader_reachable  # named, not connected
    assert not RaftStatus.parse(_raw(leader=None)).leader_reachable
    assert status.restored_from is None  # an older peer that does not say


def test_a_leader_reaches_itself_only_with_a_quorum() -> None:
    assert RaftStatus.parse(_raw(state=2, leader=ME, has_quorum=True)).leader_reachable
    alone = RaftStatus.parse(_raw(state=2, leader=ME, has_quorum=False))
    assert alone.leading and not alone.leader_reachable
    assert alone.role.label == "leader"
    assert RaftStatus.parse(_raw(state=9)).role is Role.UNKNOWN
    assert RaftStatus.parse(_raw(restored_from="")).restored_from == ""
