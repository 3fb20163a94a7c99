"""Linearizable reads without log entries: Raft's ReadIndex (Ongaro's thesis, §6.4).

A replica must not answer from a view that may be behind what the cluster has acknowledged
(an unchanged full heartbeat, a DELETE of an agent it does not know, ``?consistency=
linearizable``). Appending an empty entry and waiting for it works, but costs an fsynced
entry on a majority per request: with thousands of agents re-sending unchanged full
heartbeats, that was the registry's whole log growth. ReadIndex gets the same guarantee
without writing anything:

1. The leader notes its commit index, provided it has committed an entry of its own term
   (pysyncobj appends a no-op at election), so the index covers everything committed before.
2. It confirms it still leads: it sends a probe carrying its term to every other member, and
   waits until a majority (itself included) has answered the probe *sent after the request
   arrived* while still in that term. A member in a higher term never answers, so no newer
   leader can have committed anything before the request arrived.
3. The requesting replica (the leader itself, or a follower that asked the leader over the
   Raft connection) waits until it has applied that index, then reads its view.

Everything here runs on pysyncobj's tick thread; requests arrive from the event loop through a
thread-safe deque, and results leave through the callback (result, error) that
``RaftProposer._committed`` passes, which settles the loop's future in FIFO order after every
entry applied up to the index.
"""

from __future__ import annotations

import collections
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pysyncobj import FAIL_REASON
from pysyncobj.monotonic import monotonic

REQUEST = "mesh_read_index"
"""Follower -> leader: ``{"id"}``, "tell me a read index"."""
REPLY = "mesh_read_index_reply"
"""Leader -> follower: ``{"id", "index"}``, or ``{"id", "error"}``."""
PROBE = "mesh_read_probe"
"""Leader -> every member: ``{"term", "seq"}``."""
PROBE_ACK = "mesh_read_probe_ack"
"""Member -> leader, only from a member still in that term: ``{"term", "seq"}``."""
MESSAGES = (REQUEST, REPLY, PROBE, PROBE_ACK)

Callback = Callable[[Any, int], None]
REFUSED = -1
"""The error a refused read gets (no leader, not the leader any more, or a leader that has not
committed in its term yet): the caller falls back to a barrier entry, which handles all three."""
REPROBE_AFTER = 0.1
"""Seconds before a leader probes again for reads still unconfirmed (a probe can be lost
with its connection)."""
GIVE_UP_AFTER = 1.0
"""Seconds after which a read not answered yet is refused, so that its caller falls back to a
barrier entry within its own timeout: a follower's request or the leader's reply may have been
lost with a connection, and during a rolling upgrade a peer without read indexes ignores
requests and probes."""


@dataclass
class _Pending:
    """Reads the leader has indexed and is confirming its leadership for."""

    term: int
    index: int
    seq: int
    """Probes numbered ``seq`` or later were sent after these reads arrived."""
    voters: frozenset[Any]
    since: float
    replies: list[Callback | tuple[Any, int]] = field(default_factory=list)


class ReadIndex:
    """The ReadIndex protocol for one :class:`replication.syncobj.RaftNode`."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._incoming: collections.deque[Callback] = collections.deque()
        self._remote: list[tuple[Any, int]] = []
        self._pending: list[_Pending] = []
        self._seq = 0
        self._probed_at = 0.0
        self._acks: dict[Any, tuple[int, int]] = {}
        # Ids start at random: after this process restarts, a reply the leader still owes its
        # previous incarnation (an older read index) must not match a new request.
        self._ids = itertools.count(secrets.randbits(62))
        self._asked: dict[int, tuple[float, Any, Callback]] = {}
        self._waiting: list[tuple[int, Callback]] = []

    # -- any thread ---------------------------------------------------------------------------

    def request(self, callback: Callback) -> None:
        """Ask for a read index; ``callback(index, SUCCESS)`` once this node has applied it,
        ``callback(None, REFUSED)`` when it cannot be had here and now."""
        self._incoming.append(callback)
        self._node.wake()

    # -- tick thread ----------------------------------------------------------------------------

    def on_message(self, sender: Any, message: dict[str, Any]) -> None:
        """Handle one of :data:`MESSAGES`; a malformed one (only an authenticated peer can send
        any) is dropped rather than allowed to raise inside pysyncobj's tick."""
        kind = message.get("type")
        node = self._node
        term, seq, request_id = message.get("term"), message.get("seq"), message.get("id")
        if kind == PROBE and isinstance(term, int) and isinstance(seq, int):
            if term == node.raftCurrentTerm:
                node.send(sender, {"type": PROBE_ACK, "term": term, "seq": seq})
        elif kind == PROBE_ACK and isinstance(term, int) and isinstance(seq, int):
            # Only from the member that held the log: an empty incarnation of it (a lost disk)
            # answering a deposed leader must not make that leader's reads look confirmed.
            standing = node.incarnations.in_good_standing(sender.id, message.get("incarnation"))
            if standing and (term, seq) > self._acks.get(sender, (-1, -1)):
                self._acks[sender] = (term, seq)
        elif kind == REQUEST and isinstance(request_id, int):
            self._remote.append((sender, request_id))
        elif kind == REPLY and isinstance(request_id, int):
            asked = self._asked.get(request_id)
            if asked is None or asked[1] != sender:
                return
            del self._asked[request_id]
            index = message.get("index")
            if isinstance(index, int):
                self._waiting.append((index, asked[2]))
            else:
                asked[2](None, REFUSED)

    def tick(self) -> None:
        """Index new reads, confirm pending ones, answer those applied."""
        node = self._node
        now = monotonic()
        local = []
        while self._incoming:
            local.append(self._incoming.popleft())
        remote, self._remote = self._remote, []
        if node._isLeader():
            self._index(local + remote, now)
        else:
            for sender, request_id in remote:
                node.send(sender, {"type": REPLY, "id": request_id, "error": "not the leader"})
            self._ask_leader(local, now)
        self._confirm(now)
        self._expire(now)
        applied = node.raftLastApplied
        if self._waiting:
            done = [(i, cb) for i, cb in self._waiting if i <= applied]
            self._waiting = [(i, cb) for i, cb in self._waiting if i > applied]
            for index, callback in done:
                callback(index, FAIL_REASON.SUCCESS)

    def _index(self, reads: list[Callback | tuple[Any, int]], now: float) -> None:
        if not reads:
            return
        node = self._node
        noop = node._SyncObj__noopIDx
        commit = node.raftCommitIndex
        if noop is None or commit < noop:
            # Not yet known to hold every committed entry: let the caller use a log barrier.
            for reply in reads:
                self._answer(reply, None)
            return
        self._seq += 1
        self._probe(node.raftCurrentTerm, now)
        self._pending.append(
            _Pending(
                node.raftCurrentTerm,
                commit,
                self._seq,
                frozenset(node.otherNodes),
                now,
                list(reads),
            )
        )

    def _probe(self, term: int, now: float) -> None:
        node = self._node
        self._probed_at = now
        for member in node.otherNodes:
            node.send(member, {"type": PROBE, "term": term, "seq": self._seq})

    def _confirm(self, now: float) -> None:
        if not self._pending:
            return
        node = self._node
        term = node.raftCurrentTerm
        still: list[_Pending] = []
        for pending in self._pending:
            if not node._isLeader() or pending.term != term:
                for reply in pending.replies:
                    self._answer(reply, None)
                continue
            acks = 1 + sum(
                1
                for voter in pending.voters
                if self._acks.get(voter, (-1, -1)) >= (term, pending.seq)
            )
            if acks * 2 > len(pending.voters) + 1:
                for reply in pending.replies:
                    self._answer(reply, pending.index)
            else:
                still.append(pending)
        self._pending = still
        if still and now - self._probed_at > REPROBE_AFTER:
            self._seq += 1
            self._probe(term, now)

    def _answer(self, reply: Callback | tuple[Any, int], index: int | None) -> None:
        if isinstance(reply, tuple):
            sender, request_id = reply
            body: dict[str, Any] = {"type": REPLY, "id": request_id}
            body.update({"index": index} if index is not None else {"error": "no read index"})
            self._node.send(sender, body)
        elif index is None:
            reply(None, REFUSED)
        else:
            self._waiting.append((index, reply))

    def _ask_leader(self, reads: list[Callback], now: float) -> None:
        leader = self._node._getLeader()
        for callback in reads:
            if leader is None:
                callback(None, REFUSED)
                continue
            request_id = next(self._ids)
            if self._node.send(leader, {"type": REQUEST, "id": request_id}):
                self._asked[request_id] = (now, leader, callback)
            else:
                callback(None, REFUSED)

    def _expire(self, now: float) -> None:
        """Refuse reads whose answer may never come: asked of a leader that is not the leader
        any more (its connection may be gone), or unanswered for too long."""
        leader = self._node._getLeader()
        for request_id, (since, asked, callback) in list(self._asked.items()):
            if asked != leader or now - since > GIVE_UP_AFTER:
                del self._asked[request_id]
                callback(None, REFUSED)
        for pending in [p for p in self._pending if now - p.since > GIVE_UP_AFTER]:
            self._pending.remove(pending)
            for reply in pending.replies:
                self._answer(reply, None)
