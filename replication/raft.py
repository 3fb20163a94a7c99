"""Raft replication of the event log with pysyncobj, behind registry.commit.Proposer.

Threads: pysyncobj runs Raft on its own tick thread; the registry runs on the asyncio loop.
Committed events cross over with ``loop.call_soon_threadsafe`` (FIFO), and a write's future is
settled through the same queue *after* its event, so a handler that awaited ``propose`` reads
its own write. The future carries what applying the event did (an :class:`_Applied` filled by
``_apply``), since later entries may be applied before the handler resumes.

Durability: the journal is :class:`replication.journal.LmdbJournal`. It is synced (one fsync
for everything appended since the last sync) before a follower sends its queued
``next_node_idx`` acks (all acks of one poll share one fsync) and at every tick before the
leader counts its own log toward a majority. So an event is
committed only once a majority has it on disk, and the write is answered only after that.
A journal write that fails (disk full, I/O error, LMDB_MAP_SIZE reached) stops the process at
once (:func:`halt`), before any acknowledgement or count could follow it.

Compaction: after this node writes a view snapshot (registry StateMachine, every
SNAPSHOT_EVERY events), it asks pysyncobj to compact. Our serializer writes a dump holding that
snapshot plus the few log records after it; pysyncobj then drops the journal up to there and
sends the dump to any follower too far behind (a new or wiped node), whose deserializer installs
the snapshot and replays the records.

Barriers (an answer that must reflect every acknowledged write): a read index confirmed by a
majority, which appends nothing (``replication/read_index.py``); an empty entry through the log
only where no read index can be had (no leader, or one that has not committed in its term).

Liveness: heartbeats reach any replica but only the leader decides health. Followers send the
ids of agents they heard from to the leader once a second, over the same authenticated Raft
connection (a message type of our own), never through the log.

Wire and commands: peers talk ``replication/wire.py`` (authenticated handshake, sealed msgpack
frames; ``replication/connection.py`` plugs it into pysyncobj), and log commands are
``replication/commands.py``'s encoding: nothing from a peer, the journal or a dump is unpickled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

import msgpack
import pysyncobj.syncobj
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
from pysyncobj.journal import Journal
from pysyncobj.monotonic import monotonic
from pysyncobj.node import TCPNode
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from registry import events
from registry.commit import Committed, StateMachine, Unavailable
from registry.config import Config, ConfigError
from registry.events import CorruptRecord, Event
from registry.health import Liveness
from registry.store import StorageFailure
from replication import commands, connection, dns, legacy, read_index, utility, wire
from replication.incarnation import Incarnations
from replication.journal import LmdbJournal
from replication.peers import Peers, RaftTiming
from replication.read_index import ReadIndex

log = logging.getLogger(__name__)

_create_journal = pysyncobj.syncobj.createJournal


def _journal_factory(journal_file: Any) -> Any:
    """pysyncobj builds its journal from ``conf.journalFile``; let that be our journal object.

    (pysyncobj 0.3.17 has no journal parameter; it looks this function up at call time.)
    """
    return journal_file if isinstance(journal_file, Journal) else _create_journal(journal_file)


_installed = False


def install() -> None:
    """Patch pysyncobj for this process, before the first :class:`RaftNode` is built: its
    journal comes from ``conf.journalFile`` (:func:`_journal_factory`), its connections speak
    ``replication/wire.py`` (:func:`replication.connection.install`) and peer names are
    resolved off the tick thread (:func:`replication.dns.install`). Idempotent."""
    global _installed
    if _installed:
        return
    pysyncobj.syncobj.createJournal = _journal_factory
    connection.install()
    dns.install()
    _installed = True


_PARTNER = "partner_node_status_server_"
_NO_OP = pysyncobj.syncobj._bchr(pysyncobj.syncobj._COMMAND_TYPE.NO_OP)
"""pysyncobj's no-op journal command (what a new leader appends)."""
LIVENESS_MESSAGE = "mesh_liveness"
DUMP_VERSION = 2
"""2: commands in ``replication/commands.py``'s encoding; 1: pickled (converted on read)."""
LIVENESS_PERIOD = 1.0
"""Seconds between a follower's liveness batches to the leader."""
_FAILURES = {
    FAIL_REASON.QUEUE_FULL: "write queue full",
    FAIL_REASON.MISSING_LEADER: "no leader (this node cannot reach a majority)",
    FAIL_REASON.DISCARDED: "write discarded by a leader change; retry",
    FAIL_REASON.NOT_LEADER: "leader changed; retry",
    FAIL_REASON.LEADER_CHANGED: "leader changed before the write was accepted; retry",
    FAIL_REASON.REQUEST_DENIED: "write refused by the leader",
    FAIL_REASON.UNKNOWN_OUTCOME: "outcome unknown after a leader change",
}


@dataclass(slots=True)
class _Applied:
    """One committed entry on its way from the tick thread to the loop. ``_apply`` fills in
    ``took_effect`` on the loop before the proposer's callback is settled there (both cross in
    FIFO order), so the proposer reads its own entry's outcome, not the view's later state."""

    index: int
    took_effect: bool = False


class _Refused(Unavailable):
    """A read index could not be had; a barrier entry will do instead."""


class _Denied(Unavailable):
    """The leader refused the command (a membership change while another is pending)."""


class DurableTransport(TCPTransport):  # type: ignore[misc]  # pysyncobj is untyped
    """TCP transport that fsyncs the journal before acknowledging entries, carries the
    registry's liveness batches, and lets only key holders in (``replication/wire.py``)."""

    def __init__(self, syncObj: RaftNode, selfNode: Any, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._acks: list[tuple[Any, Any]] = []
        syncObj.transport = self
        self._bind_now()

    def _bind_now(self) -> None:
        """Bind RAFT_PORT before the tick thread starts, raising OSError when it cannot be.

        pysyncobj binds on the tick thread and, with maxBindRetries=0, retries a failed bind
        forever without a word: a port in use left the node at "raft not started" for good.
        """
        try:
            self._server.bind()
        except OSError as exc:
            raise OSError(
                exc.errno, f"RAFT_PORT {self._selfNode.port} cannot be bound ({exc.strerror})"
            ) from None
        self._ready = True  # what pysyncobj's own bind would have set
        self._bindOverEvent.set()

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        outgoing = self._connections.get(node)
        if outgoing is not None:
            outgoing.secret = self._syncObj.wire_secret

    def _onNewIncomingConnection(self, conn: Any) -> None:
        conn.secret = self._syncObj.wire_secret
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        """An authenticated connection's first message: a member's id, or one of the utility
        commands we answer. Anything else (pysyncobj's read-only nodes, its other utility
        commands) is refused."""
        utility_call = (
            isinstance(message, list) and bool(message) and message[0] in utility.COMMANDS
        )
        if utility_call or (isinstance(message, str) and message in self._nodeAddrToNode):
            super()._onIncomingMessageReceived(conn, message)
            return
        log.warning("refused a peer connection that named itself %.100r", message)
        self._unknownConnections.discard(conn)
        conn.disconnect()

    def send(self, node: Any, message: Any) -> bool:
        if isinstance(message, dict):
            message = self._syncObj.stamp(message)
        # Acknowledgements wait for the next flush_acks: every entry received in one poll is
        # then made durable by a single fsync before any of them is acknowledged.
        if isinstance(message, dict) and message.get("type") == "next_node_idx":
            if not self._syncObj.dump_failed:
                self._acks.append((node, message))
            return True
        return bool(super().send(node, message))

    def flush_acks(self) -> None:
        """Sync the journal, then send the acknowledgements queued since the last flush."""
        if not self._acks:
            return
        self._syncObj.journal.sync()
        acks, self._acks = self._acks, []
        for node, message in acks:
            super().send(node, message)

    def _onTick(self) -> None:
        self._drop_stalled_connects()
        self._drop_unauthenticated()
        super()._onTick()

    def _drop_unauthenticated(self) -> None:
        """Close accepted connections that have not finished the handshake in time: a peer
        that connects and then stalls (or trickles bytes) holds nothing for long."""
        now = monotonic()
        for conn in [c for c in self._unknownConnections if c.expired(now)]:
            log.warning("peer connection closed: no handshake in %.1f s", wire.HANDSHAKE_TIMEOUT)
            self._unknownConnections.discard(conn)
            conn.disconnect()

    def _drop_stalled_connects(self) -> None:
        """Give up on connection attempts that got no answer within connectionTimeout.

        pysyncobj checks its timeout only when the socket reports an event, and a SYN sent to
        an address nobody holds any more (a pod rescheduled with a new IP) reports nothing until
        the kernel gives up, about two minutes later. Dropping the attempt lets the next one
        resolve the name again and reach the peer at its new address.
        """
        timeout = self._syncObj.conf.connectionTimeout
        now = monotonic()
        for node, conn in list(self._connections.items()):
            started = self._lastConnectAttempt.get(node)
            if (
                conn.state == CONNECTION_STATE.CONNECTING
                and started is not None
                and now - started > timeout
            ):
                log.info("no answer from %s within %.1f s; connecting again", node, timeout)
                conn.disconnect()

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == LIVENESS_MESSAGE:
            self._syncObj.receive_liveness(message.get("agents") or [])
        elif kind in read_index.MESSAGES:
            self._syncObj.read_index.on_message(node, message)
        elif isinstance(kind, str):
            super()._onMessageReceived(node, message)
        else:  # pysyncobj would raise inside its tick on a message without a type
            log.warning("dropped a message without a type from %s", node)


class RaftNode(SyncObj):  # type: ignore[misc]
    """The pysyncobj object, replicating encoded registry events (``replication/commands.py``)."""

    def __init__(
        self,
        peers: Peers,
        conf: SyncObjConf,
        journal: LmdbJournal,
        deliver: Callable[[int, bytes], _Applied],
        on_liveness: Callable[[list[str]], None],
        secret: wire.Secret,
        on_storage_failure: Callable[[StorageFailure], None],
    ) -> None:
        if not _installed:
            # pysyncobj's own connections unpickle what peers send, and its journal is a file.
            raise RuntimeError("replication.raft.install() must run before a RaftNode is built")
        # Set before SyncObj.__init__: its tick thread starts inside it.
        self.wire_secret = secret
        self.journal = journal
        self._on_storage_failure = on_storage_failure
        # Set when a dump failed to load: nothing is acknowledged after it (the node stops).
        self.dump_failed = False
        self.transport: DurableTransport | None = None
        self._deliver = deliver
        self._on_liveness = on_liveness
        self.outbox: collections.deque[list[str]] = collections.deque()
        self._last_liveness = 0.0
        self.status_snapshot: dict[str, Any] = {}
        self.leader_changes = 0
        self._last_leader: Any = None
        self._members = sorted([peers.self_address, *peers.others])
        # (term, index) of the last membership change this node appended as leader.
        self._membership_change: tuple[int, int] | None = None
        self._saved_members = journal.members()
        self.read_index = ReadIndex(self)
        self.incarnations = Incarnations(journal, peers.self_address)
        # Leader: the real match index of members whose acknowledgements do not count yet.
        self._uncounted_match: dict[str, int] = {}
        conf.journalFile = journal
        super().__init__(
            peers.self_address, list(peers.others), conf, transportClass=DurableTransport
        )
        self.addOnTickCallback(self._after_tick)

    def _onTick(self, timeToWait: float = 0.0) -> None:
        # Anything appended outside the tick callbacks (entries received from the leader) is
        # synced before this tick counts the leader's log toward a majority, and before a
        # follower acknowledges it.
        try:
            self.journal.sync()
            if self.transport is not None:
                self.transport.flush_acks()
            if not self.incarnations.recognised:
                # The cluster knows this address by another incarnation: this node lost its
                # disk and has not caught up. Its vote for itself would count like any other,
                # so it does not stand for election (replication/incarnation.py).
                self._SyncObj__raftElectionDeadline = monotonic() + self.conf.raftMaxTimeout
            super()._onTick(timeToWait)
        except StorageFailure as failure:
            # Raised by whichever journal write failed in this tick (and by every sync after
            # it), so nothing of this tick that depended on it went out; stop here.
            self._on_storage_failure(failure)

    def _SyncObj__loadDumpFile(self, clearJournal: bool) -> None:
        """Load a dump, and stop if that failed.

        pysyncobj logs any error loading a dump and carries on; after a dump received from the
        leader it even acknowledges it as installed, so the leader counts this node as holding
        entries it does not hold (review finding). Success is what a load leaves behind: the
        dump's last entry applied and, for a received dump, the journal ending there."""
        serializer = self._SyncObj__serializer
        read = serializer.deserialize
        loaded: list[int] = []
        errors: list[BaseException] = []

        def deserialize() -> Any:
            try:
                data = read()
            except BaseException as exc:
                errors.append(exc)
                raise
            loaded.append(int(data[1][1]))
            return data

        serializer.deserialize = deserialize
        try:
            super()._SyncObj__loadDumpFile(clearJournal)
        finally:
            del serializer.deserialize
        installed = loaded and self._SyncObj__raftLastApplied == loaded[0]
        if installed and (not clearJournal or self.journal.last_index == loaded[0]):
            return
        self.dump_failed = True
        index = loaded[0] if loaded else self.journal.last_index
        log.critical("raft dump not loaded; stopping", extra={"index": index})
        cause = errors[0] if errors else RuntimeError("pysyncobj could not install it")
        self._on_storage_failure(StorageFailure("loading the raft dump", index, cause))

    def _SyncObj__onBecomeLeader(self) -> None:
        """Sync the new leader's no-op before the same tick counts it: alone in the cluster,
        pysyncobj commits it right after appending it."""
        super()._SyncObj__onBecomeLeader()
        self.journal.sync()
        self.incarnations.elected()
        # Match indexes kept for uncounted members belong to the term they were learned in;
        # pysyncobj has just reset its own to 0, and a stale one restored later could count a
        # member as holding entries it lost since.
        self._uncounted_match.clear()

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        """Votes and acknowledgements are judged by the sender's incarnation (a member that
        lost its disk is not the member that held the log: replication/incarnation.py), and
        two corrections to pysyncobj's handling of ``append_entries``.

        Entries this log already holds are never deleted (see _skip_entries_held).

        A snapshot being received does not move the commit index over this node's log.
        pysyncobj lets every ``append_entries`` message raise the follower's commit index to
        ``min(leader's commit, own last index)``; for a chunk of a snapshot transfer nothing
        has checked that this node's log matches the leader's, and a former leader still holds
        entries of its old term that were never committed. Applying those acknowledged writes
        the cluster never had (found by the chaos harness: a partitioned leader's writes
        answered 200, then gone). Such chunks now carry this node's own commit index; the
        snapshot, once complete, brings the right state.
        """
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "request_vote":
            self.incarnations.vote_requested(message.get("fresh"))
        if kind == "response_vote" and not self.incarnations.vote_counts(
            node.id, message.get("incarnation"), message.get("fresh")
        ):
            log.warning(
                "vote from %s not counted: not the incarnation of it this node knows "
                "(a member that lost its disk votes only once it has caught up)",
                node.id,
            )
            return
        if kind == "next_node_idx" and self._isLeader():
            self._acknowledged(node, message)
            return
        if kind == "append_entries" and message.get("term", -1) >= self.raftCurrentTerm:
            self.incarnations.adopt(message.get("incarnations"))
        if kind == "append_entries":
            if "transmission" in message:
                # pysyncobj's chunked entries, which it unpickles; our leaders never send them
                # (commands.BATCH_BYTES exceeds every command).
                log.warning("dropped a chunked append_entries from %s", node)
                return
            if "serialized" in message:
                message = {**message, "commit_index": self.raftCommitIndex}
            elif "prevLogIdx" in message:
                held = self._held(message)
                if self._append_without_truncating(node, message, held):
                    return
                message = self._skip_entries_held(message, held)
        super()._SyncObj__onMessageReceived(node, message)

    def _acknowledged(self, node: Any, message: dict[str, Any]) -> None:
        """Leader: take a follower's acknowledgement of this term (see :meth:`stamp`), counting
        it toward commits only from the incarnation of that member which held the log
        (replication/incarnation.py)."""
        if message.get("term") != self.raftCurrentTerm:
            # An answer to an append_entries of another term. pysyncobj's acks carry no term,
            # and a leader raises matchIndex from any successful one (reset to 0 when it takes
            # office), so an ack sent to this node while it led an earlier term, delivered
            # late (its connection stalled by a partition), would count the follower as
            # holding entries up to the old log's end, which this node's log may since have
            # replaced: the no-op of the new term would commit with this node alone. A
            # follower answers append_entries only with the term it then holds, equal to the
            # sender's, so an ack of this term answers this leader's own messages.
            log.debug("dropped an acknowledgement of term %s from %s", message.get("term"), node)
            return
        success = bool(message.get("success"))
        matched = int(message.get("next_node_idx", 0)) - 1 if success else -1
        counts = self.incarnations.ack_counts(
            node.id, message.get("incarnation"), matched, self._SyncObj__getCurrentLogIndex()
        )
        match = self._SyncObj__raftMatchIndex
        if node in match and node.id in self._uncounted_match:
            # pysyncobj moves the next index only when the match grows: give it the real one.
            match[node] = self._uncounted_match[node.id]
        super()._SyncObj__onMessageReceived(node, message)
        if not counts and node in match:
            # Sent the log like any follower, never counted as holding it toward commits.
            self._uncounted_match[node.id] = match[node]
            match[node] = 0
        else:
            self._uncounted_match.pop(node.id, None)

    def stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        """Tick thread: what an outgoing message says of incarnations and, for an
        acknowledgement, of the term it answers (see _acknowledged).

        An acknowledgement is stamped as pysyncobj makes it, right after it took the sender's
        append_entries (whose term it adopted or already had), so its term is that message's,
        even if this node's term moves on before the ack leaves with the next flush_acks."""
        kind = message.get("type")
        if kind == "next_node_idx":
            return {
                **message,
                "incarnation": self.incarnations.identity,
                "term": self.raftCurrentTerm,
            }
        if kind in ("request_vote", "response_vote"):
            return {
                **message,
                "incarnation": self.incarnations.identity,
                "fresh": self.incarnations.first_contact,
            }
        if kind == read_index.PROBE_ACK:
            return {**message, "incarnation": self.incarnations.identity}
        if kind == "append_entries":
            return {**message, "incarnations": self.incarnations.known}
        return message

    def _held(self, message: dict[str, Any]) -> int:
        """How many leading entries of an append_entries this log already holds (same index,
        same term); -1 if it does not hold the entry the message says precedes them."""
        if self.journal.term_at(message["prevLogIdx"]) != message["prevLogTerm"]:
            return -1
        held = 0
        for _, index, term in message.get("entries") or ():
            if self.journal.term_at(index) != term:
                break
            held += 1
        return held

    def _skip_entries_held(self, message: dict[str, Any], held: int) -> dict[str, Any]:
        """Start an append_entries after the entries this log already holds.

        pysyncobj deletes everything after ``prevLogIdx`` whenever this log is longer, then
        re-appends what the message carries. A leader that rewound this follower's next index
        (after a late acknowledgement) resends entries the follower holds, and the follower
        dropped acknowledged, possibly committed entries until they came back: the chaos
        runs logged it 18-29 times per run. Raft (section 5.3) deletes only from the first
        entry whose term differs, which is what pysyncobj does once the held ones are skipped.
        """
        if held <= 0:
            return message
        entries = message["entries"]
        _, index, term = entries[held - 1]
        return {**message, "prevLogIdx": index, "prevLogTerm": term, "entries": entries[held:]}

    def _append_without_truncating(self, node: Any, message: dict[str, Any], held: int) -> bool:
        """Answer an append_entries whose entries this log holds already, with more after
        them, without deleting those (see _skip_entries_held); False if it is not one.

        pysyncobj is given the message without its entries, so it still takes the leader's
        term and resets the election timer, with the commit index capped at the last entry
        the message vouched for: entries past it were not checked against the leader's log.
        Then it is told, as pysyncobj would tell it, how far this log matches."""
        entries = message.get("entries") or []
        if held != len(entries):
            return False
        matched = entries[-1][1] if entries else message["prevLogIdx"]
        if self.journal.last_index <= matched:
            return False
        accepted = message["term"] >= self.raftCurrentTerm
        vouched = {
            k: v for k, v in message.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")
        }
        vouched["commit_index"] = min(message["commit_index"], matched)
        super()._SyncObj__onMessageReceived(node, vouched)
        if accepted:
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=matched + 1, success=True)
        return True

    def _SyncObj__changeCluster(self, request: Any) -> bool:
        """Leader: accept a membership change only when no earlier one is still uncommitted.

        Adding or removing one server at a time is safe only if each change commits before the
        next one starts (Raft dissertation, section 4.1): two adds appended back to back turn a
        3-member cluster into 5 with only the old majority's followers unaware, and {A, D, E}
        can then commit while {B, C}, still on the 3-member configuration, elect a leader of
        their own. pysyncobj means to refuse a change while the previous one is pending but
        never records the index of the change it appended (its ``__changeClusterIDx`` is only
        ever None), so parallel joins (``podManagementPolicy: Parallel``, 3 -> 5) went through
        together. A refused change answers REQUEST_DENIED; joins and removals retry it.
        """
        term = self.raftCurrentTerm
        pending = self._membership_change
        if pending is not None and pending[0] == term and self.raftCommitIndex < pending[1]:
            return False
        # pysyncobj's own check: the no-op of this term is committed (every earlier entry is).
        if not super()._SyncObj__changeCluster(request):
            return False
        # The caller appends the change at the next index, after this returns.
        self._membership_change = (term, self._SyncObj__getCurrentLogIndex() + 1)
        return True

    def _SyncObj__getEntries(
        self, fromIDx: int, count: int | None = None, maxSizeBytes: int | None = None
    ) -> list[tuple[bytes, int, int]]:
        """pysyncobj's entry slice, with a batch (``maxSizeBytes``) counted as it goes on the
        wire: pysyncobj counts only the commands, so a batch of tiny entries could be many
        times its budget in one frame."""
        entries: list[tuple[bytes, int, int]] = super()._SyncObj__getEntries(fromIDx, count)
        if maxSizeBytes is None or not entries:
            return entries
        return commands.batch(entries, maxSizeBytes)

    def _SyncObj__doApplyCommand(self, command: bytes) -> _Applied | None:
        """Apply one committed command (tick thread); never raises, or pysyncobj would retry
        it forever. An event record goes to the registry; what applying it did is the result."""
        change = self._SyncObj__parseChangeClusterRequest(command)
        if change is not None:  # already applied when appended; again after a restart
            self._SyncObj__doChangeCluster(change)
            return None
        if not command or command[0] != commands.REGULAR:
            return None
        return self._deliver(int(self.raftLastApplied) + 1, command[1:])

    def _SyncObj__parseChangeClusterRequest(self, command: bytes) -> list[str] | None:
        return commands.parse_membership(command)

    def addNodeToCluster(self, node: Any, callback: Any = None) -> None:
        self._applyCommand(commands.membership("add", str(node)), callback, commands.MEMBERSHIP)

    def removeNodeFromCluster(self, node: Any, callback: Any = None) -> None:
        self._applyCommand(commands.membership("rem", str(node)), callback, commands.MEMBERSHIP)

    def submit(self, record: bytes, callback: Callable[[Any, int], None]) -> None:
        """Propose one event record (empty: a barrier); ``callback(index, error)``."""
        self._applyCommand(commands.regular(record), callback, commands.REGULAR)

    def _checkCommandsToApply(self) -> None:
        """Append every queued command, then send them to each follower in one message.

        With appendEntriesUseBatch=False (needed for low latency: commands wake the tick and
        commit indexes are pushed at once), pysyncobj sends AppendEntries after *each* queued
        command, so a burst of k writes costs k sealed messages per follower and k
        acknowledgements. Shadowing the (name-mangled) send method for the duration of the loop
        turns that into one send of everything appended, which the loop then does once.
        """
        wanted = False

        def defer() -> None:
            nonlocal wanted
            wanted = True

        self._SyncObj__sendAppendEntries = defer
        try:
            super()._checkCommandsToApply()
        finally:
            del self._SyncObj__sendAppendEntries
        if wanted:
            self._SyncObj__sendAppendEntries()

    def _after_tick(self) -> None:
        """Runs on the tick thread after appends: group commit, status, liveness batches."""
        self.journal.sync()
        if self.transport is not None:
            self.transport.flush_acks()
        status = self.getStatus()
        leader = status.get("leader")
        # pysyncobj keeps naming a leader it can no longer reach (a follower that lost every
        # connection never starts an election), so readiness and writes look at this too.
        if status.get("state") == 2:
            status["leader_reachable"] = bool(status.get("has_quorum"))
        else:
            status["leader_reachable"] = (
                leader is not None and status.get(f"{_PARTNER}{leader}") == 2
            )
        self.status_snapshot = status
        self.read_index.tick()
        members = membership(status)
        changed = members != self._members
        if changed:
            self._members = members
            log.info("raft membership changed", extra={"members": members})
        # Saved at every change, and the first time this node is in a cluster with a leader
        # (its initial members, or the cluster it joined): a restart then rejoins these members
        # whatever REGISTRY_PEERS or REGISTRY_REPLICAS say, instead of probing peers again. Not
        # before: a pod that found no cluster at its first start must look again at the next.
        if members != self._saved_members and (changed or status["leader_reachable"]):
            self.journal.set_members(members)
            self._saved_members = members
        if leader != self._last_leader:
            self._last_leader = leader
            self.leader_changes += 1
            log.info(
                "raft leader changed",
                extra={"leader": str(leader) if leader else None, "term": status.get("raft_term")},
            )
        now = time.monotonic()
        if now - self._last_liveness < LIVENESS_PERIOD or self.transport is None:
            return
        self._last_liveness = now
        batch: list[str] = []
        while self.outbox:
            batch.extend(self.outbox.popleft())
        if batch and leader is not None and not self._isLeader():
            self.transport.send(leader, {"type": LIVENESS_MESSAGE, "agents": batch})

    def wake(self) -> None:
        """Make the tick thread run now (as pysyncobj does for a queued command)."""
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        """Tick thread: one of our own messages to a member over the Raft connection; False
        when there is no connection to send it on."""
        return self.transport is not None and bool(self.transport.send(node, message))

    def receive_liveness(self, agent_ids: list[str]) -> None:
        if self._isLeader():
            self._on_liveness([a for a in agent_ids if isinstance(a, str)])


def halt(failure: StorageFailure) -> NoReturn:
    """Stop the process at once on a failed journal write, from the thread that saw it.

    Not a clean shutdown: that would flush the journal again and keep the tick thread running
    while the loop winds down. The entries that were not written were never acknowledged;
    after a restart (with space again) the node catches up from the leader.
    """
    log.critical("%s; stopping", failure, extra={"index": failure.index})
    os._exit(1)


def membership(status: dict[str, Any]) -> list[str]:
    """The members a pysyncobj status names: itself plus every partner."""
    partners = [key[len(_PARTNER) :] for key in status if key.startswith(_PARTNER)]
    return sorted([str(status["self"]), *partners])


def dump_path(config: Config) -> str:
    return os.path.join(config.data_dir, "raft", "dump.bin")


def _conf(config: Config, timing: RaftTiming, dumps: Any) -> SyncObjConf:
    return SyncObjConf(
        fullDumpFile=dump_path(config),
        serializer=dumps.write,
        deserializer=dumps.read,
        dynamicMembershipChange=True,
        appendEntriesUseBatch=False,
        appendEntriesBatchSizeBytes=commands.BATCH_BYTES,
        appendEntriesPeriod=timing.heartbeat,
        raftMinTimeout=timing.election_min,
        raftMaxTimeout=timing.election_max,
        leaderFallbackTimeout=timing.step_down,
        connectionTimeout=max(timing.election_max, 1.0),
        connectionRetryTime=timing.reconnect,
        dnsCacheTime=timing.dns_cache,
        dnsFailCacheTime=min(1.0, timing.dns_cache),
        commandsWaitLeader=False,
        # Compaction is driven by our snapshots (forceLogCompaction), never by pysyncobj's timers.
        logCompactionMinEntries=2**62,
        logCompactionMinTime=2**31,
    )


class Dumps:
    """pysyncobj's full-dump file, in our format: view snapshot + the records after it.

    Both methods run on the tick thread. ``write`` captures the newest view snapshot from the
    store and the journal records after it; ``read`` (at startup, and when the leader sent the
    dump to this follower) hands snapshot and records to the loop and returns the two journal
    entries pysyncobj keeps, exactly as they are in the journal.
    """

    def __init__(self, proposer: RaftProposer) -> None:
        self.proposer = proposer

    def write(self, path: str, data: Any) -> None:
        last, prev, cluster = data
        store = self.proposer.machine.store
        found = store.latest_snapshot_record()
        node = self.proposer.node
        if found is None or node is None:
            raise RuntimeError("no view snapshot to compact to")
        index, snapshot = found
        journal = node.journal
        first = journal[0][1]
        if index + 1 < first:
            raise RuntimeError(f"journal starts at {first}, after snapshot {index}")
        tail = [
            [entry[1], record]
            for entry in journal[index + 1 - first : last[1] - first + 1]
            if (record := commands.record_of(entry[0])) is not None
        ]
        write_dump(path, last, prev, [str(member) for member in cluster], index, snapshot, tail)
        log.info(
            "raft log compacted",
            extra={"snapshot_index": index, "tail": len(tail), "through": last[1]},
        )

    def read(self, path: str) -> tuple[Any, Any, Any]:
        try:
            return self._read(path)
        except CorruptRecord as exc:
            # pysyncobj logs any error loading a dump and carries on without it, with a journal
            # that starts after the entries only the dump holds: stop instead.
            log.critical("corrupt raft dump; stopping", extra={"path": path})
            self.proposer.fail_from_tick(exc)
            raise

    def _read(self, path: str) -> tuple[Any, Any, Any]:
        with open(path, "rb") as dump:
            raw = dump.read()
            os.fsync(dump.fileno())  # a received dump was written without a sync
        body = raw[4:]
        if len(raw) < 5 or zlib.crc32(body).to_bytes(4, "big") != raw[:4]:
            raise CorruptRecord(0, f"raft dump {path} checksum mismatch")
        dump_state = msgpack.unpackb(body, raw=False, strict_map_key=False)
        last, prev = (_entry(dump_state[key], dump_state["version"]) for key in ("last", "prev"))
        self.proposer.schedule_install(
            dump_state["snapshot_index"], dump_state["snapshot"], dump_state["tail"]
        )
        node = self.proposer.node
        if node is not None:
            node.journal.trim_before_dump(prev, last)
        # As nodes, not strings: pysyncobj drops itself from this list by comparing nodes, and
        # a string never equals one (it would count itself as a peer and need one ack more).
        return last, prev, [TCPNode(member) for member in dump_state["cluster"]]


def _entry(entry: list[Any], version: int) -> tuple[bytes, int, int]:
    """A journal entry kept in a dump, with its command as the journal holds it."""
    command = bytes(entry[0])
    return legacy.convert(command) if version < 2 else command, int(entry[1]), int(entry[2])


def write_dump(
    path: str,
    last: Any,
    prev: Any,
    cluster: list[str],
    snapshot_index: int,
    snapshot: bytes,
    tail: list[list[Any]],
) -> None:
    """A dump file (CRC32 + msgpack), fsynced: pysyncobj trims the journal once it exists."""
    body = msgpack.packb(
        {
            "version": DUMP_VERSION,
            "last": list(last),
            "prev": list(prev),
            "cluster": sorted(cluster),
            "snapshot_index": snapshot_index,
            "snapshot": snapshot,
            "tail": tail,
        },
        use_bin_type=True,
    )
    with open(path, "wb") as out:
        out.write(zlib.crc32(body).to_bytes(4, "big") + body)
        out.flush()
        os.fsync(out.fileno())


class RaftProposer:
    """registry.commit.Proposer over pysyncobj: writes from any replica, committed by Raft."""

    def __init__(
        self,
        config: Config,
        peers: Peers,
        machine: StateMachine,
        liveness: Liveness,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.config = config
        self.secret = wire.Secret.from_key(config.encryption_key)
        self.peers = peers
        self.machine = machine
        self.liveness = liveness
        self.timing = RaftTiming.from_config(config)
        self.node: RaftNode | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-writer")
        self._snapshotting = False
        self._liveness_task: asyncio.Task[None] | None = None
        self._join_task: asyncio.Task[None] | None = None
        self._on_fatal = on_fatal

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        install()  # pysyncobj patched for this process
        self._loop = asyncio.get_running_loop()
        raft_dir = os.path.join(self.config.data_dir, "raft")
        legacy.upgrade_journal(raft_dir, self.config.lmdb_map_size)
        journal = LmdbJournal(raft_dir, self.config.lmdb_map_size)
        join_via = None
        if journal.members():
            # A node that ran before rejoins the membership it last saw, whatever the env says.
            others = [m for m in journal.members() if m != self.peers.self_address]
        else:
            found = await self._loop.run_in_executor(None, self._existing_cluster)
            others = list(self.peers.others)
            if found is not None:
                peer, members = found
                others = [m for m in members if m != self.peers.self_address]
                # Already a member (its disk was lost): it takes the cluster's membership, which
                # may be larger than its env's (scaled up past REGISTRY_REPLICAS), and would
                # otherwise refuse the connections of members it does not list, a leader's too.
                join_via = None if self.peers.self_address in members else peer
        self.peers = Peers(self.peers.self_address, tuple(others))
        if self._restored(journal):
            if join_via is not None:
                raise ConfigError(
                    f"this data directory was restored from a backup, but a cluster already runs "
                    f"at {join_via}: restore every member from the same backup and start them "
                    "together, or empty this directory to join the running cluster"
                )
            self._start_log_at_snapshot()
        self.node = RaftNode(
            self.peers,
            _conf(self.config, self.timing, Dumps(self)),
            journal,
            self._deliver,
            self._liveness_in,
            self.secret,
            halt,
        )
        if join_via is not None:
            self._join_task = asyncio.create_task(self._join(join_via), name="raft-join")
        elif not journal.members():
            # Nobody answered yet: a cluster may come up after us (a scaled-up pod that started
            # before the running ones were reachable); keep looking until we have a leader.
            self._join_task = asyncio.create_task(self._watch_for_cluster(), name="raft-join")
        self._liveness_task = asyncio.create_task(self._forward_liveness(), name="liveness-out")
        log.info(
            "raft started",
            extra={
                "self": self.peers.self_address,
                "peers": list(self.peers.others),
                "wire_version": wire.WIRE_VERSION,
            },
        )

    async def stop(self) -> None:
        for task in (self._liveness_task, self._join_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.node is not None:
            node, self.node = self.node, None
            await asyncio.get_running_loop().run_in_executor(None, node.destroy_synchronous)
            node.journal._destroy()
        self._io.shutdown(wait=True)

    # -- membership -------------------------------------------------------------------------------

    def _restored(self, journal: LmdbJournal) -> bool:
        """A view that starts past 0 with a journal that never held anything: a restore."""
        return (
            self.machine.view.applied_index > 0
            and len(journal) == 0
            and not journal.members()
            and not os.path.exists(dump_path(self.config))
        )

    def _start_log_at_snapshot(self) -> None:
        """Make the Raft log start right after the restored snapshot.

        Raft indexes are the view's indexes; a log starting at 1 would have every new entry up
        to the snapshot's index skipped as already applied. A dump holding the snapshot and two
        no-op entries ending at its index (term 0) is what pysyncobj loads as "compacted up to
        here". Every member restored from the same backup starts with the same log, so they
        agree on it and elect a leader as usual.
        """
        index = self.machine.view.applied_index
        found = self.machine.store.latest_snapshot_record()
        if found is None or found[0] != index:
            raise ConfigError(f"restored view at {index} has no snapshot at that index")
        members = [self.peers.self_address, *self.peers.others]
        write_dump(
            dump_path(self.config),
            (_NO_OP, index, 0),
            (_NO_OP, index - 1, 0),
            members,
            index,
            found[1],
            [],
        )
        log.info("raft log starts after the restored snapshot", extra={"index": index})

    def _existing_cluster(self) -> tuple[str, list[str]] | None:
        """A running cluster, as ``(peer asked, its members)``; it may count this node already.

        Blocking (utility connections); asked of the configured peers at first start only.
        """
        for peer in self.peers.others:
            status = utility.ask(peer, ["status"], self.secret)
            if isinstance(status, dict) and "self" in status:
                return peer, membership(status)
        return None

    async def _watch_for_cluster(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(2.0)
            node = self.node
            if node is not None and node.status_snapshot.get("leader_reachable"):
                return
            found = await loop.run_in_executor(None, self._existing_cluster)
            if found is not None and self.peers.self_address not in found[1]:
                await self._join(found[0])
                return

    async def _join(self, peer: str) -> None:
        """Ask the cluster to add this node (dynamic membership), until it has."""
        loop = asyncio.get_running_loop()
        me = self.peers.self_address
        while True:
            log.info("asking to join the cluster", extra={"via": peer, "self": me})
            await loop.run_in_executor(None, utility.ask, peer, ["add", me], self.secret, 5.0)
            status = await loop.run_in_executor(None, utility.ask, peer, ["status"], self.secret)
            if isinstance(status, dict) and "self" in status and me in membership(status):
                log.info("joined the cluster", extra={"members": membership(status)})
                return
            await asyncio.sleep(1.0)

    async def remove_member(self, member: str) -> None:
        """Remove ``member`` from the cluster, refusing when that would leave no quorum."""
        node = self.node
        if node is None or not node.status_snapshot:
            raise Unavailable("raft is not running")
        status = node.status_snapshot
        members = membership(status)
        if member not in members:
            # A follower's membership can lag the leader's (a member that joined while it was
            # down): "no such member" is said only by a node holding every committed change.
            # The chaos harness's scale-down took a lagging follower's 404 as done and left a
            # stopped pod in a 4-member cluster, which then needed every other member.
            await self.barrier()
            status = await self._next_status(node)
            members = membership(status)
            if member not in members:
                raise KeyError(member)
        if member == self.peers.self_address:
            raise ValueError("a node cannot remove itself: run this against another member")
        if member == str(status.get("leader")):
            # pysyncobj's leader denies removing itself, which read as "a change pending".
            raise ValueError(
                "that member is the leader: stop it first (the others elect a new leader), "
                "then remove it"
            )
        remaining = [m for m in members if m != member]
        reachable = 1 + sum(
            1 for m in remaining if status.get(f"{_PARTNER}{m}") == 2
        )  # self + connected partners
        if reachable < len(remaining) // 2 + 1:
            raise ValueError(
                f"removing {member} would leave {reachable} reachable of {len(remaining)} "
                "members, less than a majority: bring members back first"
            )
        # The leader refuses a change while an earlier one is uncommitted (a join in flight):
        # wait for it, within the write timeout.
        deadline = time.monotonic() + self.config.write_timeout
        while True:
            try:
                await self._committed(
                    lambda callback: node.removeNodeFromCluster(member, callback=callback),
                    "membership change not committed in time; outcome unknown",
                )
                return
            except _Denied:
                if time.monotonic() > deadline:
                    raise Unavailable(
                        "the leader refused the removal: another membership change is still "
                        "pending; retry"
                    ) from None
                await asyncio.sleep(0.2)

    async def _next_status(self, node: RaftNode) -> dict[str, Any]:
        """The first status snapshot taken after now (the tick thread makes one each tick)."""
        seen = node.status_snapshot
        deadline = time.monotonic() + self.config.write_timeout
        while node.status_snapshot is seen:
            if time.monotonic() > deadline:
                raise Unavailable("the raft tick thread made no status in time")
            await asyncio.sleep(0.01)
        return node.status_snapshot

    # -- tick thread -> loop --------------------------------------------------------------------

    def _deliver(self, index: int, record: bytes) -> _Applied:
        """Tick thread: hand a committed entry to the loop (an empty record is a barrier)."""
        applied = _Applied(index)
        if not record or self._loop is None:
            return applied
        self._in_flight += 1
        self._loop.call_soon_threadsafe(self._apply, applied, record)
        return applied

    def _apply(self, applied: _Applied, record: bytes) -> None:
        self._in_flight -= 1
        index = applied.index
        if index <= self.machine.view.applied_index:
            return  # already in the view restored from the snapshot
        try:
            event = events.decode(record, index)
        except CorruptRecord as exc:
            log.critical("corrupt replicated record; stopping", extra={"index": index})
            self._on_fatal(exc)
            return
        applied.took_effect = self.machine.apply(index, event)
        if self.machine.snapshot_due() and not self._snapshotting:
            self._snapshotting = True
            asyncio.get_running_loop().create_task(self._snapshot())

    async def _snapshot(self) -> None:
        try:
            await self.machine.snapshot(self._io)
            if self.node is not None:
                self.node.forceLogCompaction()
        finally:
            self._snapshotting = False

    def schedule_install(self, index: int, snapshot: bytes, tail: list[list[Any]]) -> None:
        """Tick thread: a dump was loaded; install its snapshot and records on the loop."""
        if self._loop is None:
            return
        self._in_flight += 1
        self._loop.call_soon_threadsafe(self._install, index, snapshot, tail)

    def _install(self, index: int, snapshot: bytes, tail: list[list[Any]]) -> None:
        self._in_flight -= 1
        try:
            if index > self.machine.view.applied_index:
                self.machine.install(index, snapshot)
            for entry_index, record in tail:
                if entry_index > self.machine.view.applied_index:
                    self.machine.apply(entry_index, events.decode(record, entry_index))
        except CorruptRecord as exc:
            log.critical("corrupt snapshot or record; stopping", extra={"index": exc.index})
            self._on_fatal(exc)

    def fail_from_tick(self, error: BaseException) -> None:
        """Tick thread: stop the node over ``error`` (``on_fatal`` belongs to the loop)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_fatal, error)

    def _liveness_in(self, agent_ids: list[str]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.liveness.seen_many, agent_ids)

    async def _forward_liveness(self) -> None:
        while True:
            await asyncio.sleep(LIVENESS_PERIOD)
            batch = self.liveness.drain_outbox()
            if batch and self.node is not None and not self.node._isLeader():
                self.node.outbox.append(batch)

    # -- Proposer -------------------------------------------------------------------------------

    async def _submit(self, record: bytes) -> Committed:
        node = self.node
        if node is None:
            raise Unavailable("raft is not running")
        if node._getLeader() is None or not node.status_snapshot.get("leader_reachable"):
            raise Unavailable("no reachable leader (this node cannot reach a majority)")
        try:
            applied: _Applied = await self._committed(
                lambda callback: node.submit(record, callback),
                f"not committed within {self.config.write_timeout:g}s; outcome unknown",
            )
        except ValueError as exc:  # too large for the log (commands.MAX_RECORD)
            raise Unavailable(str(exc)) from None
        return Committed(applied.index, applied.took_effect)

    async def _committed(
        self, submit: Callable[[Callable[[Any, int], None]], None], timeout_reason: str
    ) -> Any:
        """Submit a command to pysyncobj with a callback and await its result on the loop.

        The callback runs on the tick thread (or the caller's, on QUEUE_FULL); a failure
        reason becomes Unavailable, and so does no answer within WRITE_TIMEOUT.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: int) -> None:
            if future.done():
                return
            if error == FAIL_REASON.SUCCESS:
                future.set_result(result)
            elif error == read_index.REFUSED:
                future.set_exception(_Refused("no read index here and now"))
            elif error == FAIL_REASON.REQUEST_DENIED:
                future.set_exception(_Denied(_FAILURES[error]))
            else:
                future.set_exception(Unavailable(_FAILURES.get(error, f"raft error {error}")))

        def callback(result: Any, error: int) -> None:
            # A loop closed by shutdown has nobody left waiting; raising here would abort the
            # rest of pysyncobj's tick.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        submit(callback)
        try:
            return await asyncio.wait_for(future, self.config.write_timeout)
        except TimeoutError:
            raise Unavailable(timeout_reason) from None

    async def propose(self, event: Event) -> Committed:
        return await self._submit(events.encode(event))

    async def barrier(self) -> None:
        """Wait until this node's view holds every write acknowledged before the call.

        A read index (see replication/read_index.py) when the leader can give one, which
        writes nothing; otherwise (no leader, a leader changing, or one that has not committed
        in its term yet) an empty entry through the log, which decides those cases itself."""
        node = self.node
        if node is None:
            raise Unavailable("raft is not running")
        if node._getLeader() is None or not node.status_snapshot.get("leader_reachable"):
            raise Unavailable("no reachable leader (this node cannot reach a majority)")
        try:
            await self._committed(
                node.read_index.request,
                f"no read index within {self.config.write_timeout:g}s",
            )
        except _Refused:
            await self._submit(b"")

    def ready(self) -> tuple[bool, str]:
        node = self.node
        status = node.status_snapshot if node is not None else {}
        if not status:
            return False, "raft not started"
        if status.get("leader") is None or not status.get("leader_reachable"):
            return False, "no reachable leader (election in progress or cut off from the majority)"
        if not node or not node.isReady():
            return False, "catching up with the leader"
        if status["last_applied"] < status["commit_idx"] or self._in_flight:
            return False, "applying committed entries"
        return True, "member of a cluster with a leader, caught up"

    def leading(self) -> bool:
        return self.node is not None and bool(self.node._isLeader())

    def leader(self) -> str:
        leader = self.node.status_snapshot.get("leader") if self.node is not None else None
        return str(leader) if leader is not None else ""

    def status(self) -> dict[str, Any]:
        node = self.node
        status = dict(node.status_snapshot) if node is not None else {}
        members = [{"id": self.peers.self_address, "state": "self", "connected": True}]
        others = [m for m in membership(status) if m != self.peers.self_address] if status else []
        for other in others:
            members.append(
                {
                    "id": other,
                    "state": "peer",
                    "connected": status.get(f"partner_node_status_server_{other}") == 2,
                    "match_index": status.get(f"match_idx_server_{other}"),
                    "catching_up": not node.incarnations.counted(other) if node else False,
                }
            )
        role = {0: "follower", 1: "candidate", 2: "leader"}.get(status.get("state", -1), "unknown")
        return {
            "mode": "raft",
            "node_id": self.peers.self_address,
            "instance_id": self.config.instance_id,
            "role": role,
            "term": status.get("raft_term", 0),
            "leader": self.leader(),
            "members": members,
            "commit_index": status.get("commit_idx", 0),
            "applied_index": self.machine.view.applied_index,
            "raft_applied_index": status.get("last_applied", 0),
            "log_size": status.get("log_len", 0),
            "leader_changes": node.leader_changes if node is not None else 0,
            # False on a node whose disk was lost until the leader counts it again (it then
            # neither stands for election nor has its vote counted: replication/incarnation.py).
            "recognised": node.incarnations.recognised if node is not None else False,
            # True until this node hears of a leader or of a member that has (a new cluster's
            # first election, as far as it can tell).
            "first_contact": node.incarnations.first_contact if node is not None else False,
        }


class RaftCollector(Collector):
    """Raft metrics, read from the tick thread's last status snapshot at scrape time."""

    def __init__(self, proposer: RaftProposer) -> None:
        self.proposer = proposer

    def collect(self) -> Iterator[Metric]:
        node = self.proposer.node
        status = node.status_snapshot if node is not None else {}
        yield GaugeMetricFamily(
            "mcp_registry_raft_term", "Raft term", value=status.get("raft_term", 0)
        )
        yield GaugeMetricFamily(
            "mcp_registry_raft_is_leader",
            "1 on the leader",
            value=1 if status.get("state") == 2 else 0,
        )
        yield GaugeMetricFamily(
            "mcp_registry_raft_commit_index", "Raft commit index", value=status.get("commit_idx", 0)
        )
        yield GaugeMetricFamily(
            "mcp_registry_raft_applied_index",
            "Raft last applied index",
            value=status.get("last_applied", 0),
        )
        yield CounterMetricFamily(
            "mcp_registry_raft_leader_changes",
            "Leader changes seen",
            value=node.leader_changes if node is not None else 0,
        )
        yield GaugeMetricFamily(
            "mcp_registry_raft_peers",
            "Cluster members including self",
            value=len(membership(status)) if status else 0,
        )
