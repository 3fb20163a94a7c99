"""pysyncobj's status dictionary, parsed once into :class:`RaftStatus`.

pysyncobj reports its state as a flat dictionary of magic numbers and keys built from member
ids (``state == 2`` for a leader, ``partner_node_status_server_<id> == 2`` for a connected
member, ``match_idx_server_<id>``). :meth:`RaftStatus.parse` reads the status a peer answers
over the utility channel (the raw dictionary is what goes on the wire); the tick thread builds
its own from pysyncobj's fields once per tick (``RaftNode.status``, checked against this
parser by a test). Readiness, writes, membership changes, ``GET /api/v1/cluster`` and the
metrics read the typed fields.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pysyncobj.syncobj import _RAFT_STATE

_PARTNER = "partner_node_status_server_"
_MATCH = "match_idx_server_"
_CONNECTED = 2
"""What pysyncobj's status says of a member it holds a connection to (0 otherwise)."""


class Role(enum.IntEnum):
    FOLLOWER = _RAFT_STATE.FOLLOWER
    CANDIDATE = _RAFT_STATE.CANDIDATE
    LEADER = _RAFT_STATE.LEADER
    UNKNOWN = -1

    @classmethod
    def of(cls, state: Any) -> Role:
        """pysyncobj's state number as a role (UNKNOWN for anything else)."""
        try:
            return cls(state)
        except ValueError:
            return cls.UNKNOWN

    @property
    def label(self) -> str:
        """The role as ``GET /api/v1/cluster`` says it."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class RaftStatus:
    """One node's Raft state as of one tick."""

    self_address: str
    role: Role
    term: int
    leader: str | None
    commit_index: int
    last_applied: int
    log_size: int
    members: tuple[str, ...]
    """Every member, this node included, sorted."""
    connected: frozenset[str]
    """The other members this node holds a connection to."""
    match_index: Mapping[str, int] = field(default_factory=dict)
    """Leader: how far each other member's log is known to match its own."""
    has_quorum: bool = False
    restored_from: str | None = None
    """The backup this node's log started from ("" for none; None: the sender does not say,
    an older version)."""

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> RaftStatus:
        """Read pysyncobj's status (RaftNode.getStatus, ours or a peer's). KeyError or
        ValueError on a dictionary that is not one."""
        partners = {
            key[len(_PARTNER) :]: value for key, value in raw.items() if key.startswith(_PARTNER)
        }
        leader = raw.get("leader")
        restored = raw.get("restored_from")
        self_address = str(raw["self"])
        return cls(
            self_address=self_address,
            role=Role.of(raw.get("state", -1)),
            term=int(raw.get("raft_term", 0)),
            leader=None if leader is None else str(leader),
            commit_index=int(raw.get("commit_idx", 0)),
            last_applied=int(raw.get("last_applied", 0)),
            log_size=int(raw.get("log_len", 0)),
            members=tuple(sorted([self_address, *partners])),
            connected=frozenset(m for m, state in partners.items() if state == _CONNECTED),
            match_index={
                key[len(_MATCH) :]: int(value)
                for key, value in raw.items()
                if key.startswith(_MATCH)
            },
            has_quorum=bool(raw.get("has_quorum")),
            restored_from=None if restored is None else str(restored),
        )

    @property
    def leading(self) -> bool:
        return self.role is Role.LEADER

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m != self.self_address)

    @property
    def leader_reachable(self) -> bool:
        """Whether this node can get a write committed now: a leader with a quorum, or a
        follower connected to the leader it names. pysyncobj keeps naming a leader it can no
        longer reach (a follower that lost every connection never starts an election)."""
        if self.leading:
            return self.has_quorum
        return self.leader is not None and self.leader in self.connected
