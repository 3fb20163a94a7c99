"""Every touch of pysyncobj's SyncObj internals, and :func:`install`, which patches pysyncobj.

The file to read on a pysyncobj upgrade (written against 0.3.17): :class:`RaftNode` overrides
its name-mangled ``_SyncObj__*`` methods and reads their state, :func:`_journal_factory` stands
in for ``pysyncobj.syncobj.createJournal``, and :func:`_conf` chooses every ``SyncObjConf``
setting. The other modules that reach into pysyncobj are :mod:`replication.transport` (its TCP
transport), :mod:`replication.connection` (its TCP connection) and :mod:`replication.dns` (its
resolver), the last two put in place by :func:`install`.

Durability: the journal is :class:`replication.journal.LmdbJournal`. It is synced (one fsync
for everything appended since the last sync) before a follower sends its queued
``next_node_idx`` acks (all acks of one poll share one fsync) and at every tick before the
leader counts its own log toward a majority. So an event is
committed only once a majority has it on disk, and the write is answered only after that.
A journal write that fails (disk full, I/O error, LMDB_MAP_SIZE reached) stops the process at
once (:func:`replication.proposer.halt`), before any acknowledgement or count could follow it.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pysyncobj.syncobj
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.journal import Journal
from pysyncobj.monotonic import monotonic

from registry.config import Config
from registry.store import StorageFailure
from replication import commands, connection, dns, read_index, wire
from replication.dumps import dump_path
from replication.incarnation import Incarnations
from replication.journal import LmdbJournal
from replication.peers import Peers, RaftTiming
from replication.read_index import ReadIndex
from replication.status import RaftStatus, Role
from replication.transport import (
    HELLO_MESSAGE,
    LIVENESS_MESSAGE,
    DurableTransport,
)

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


_NO_OP = pysyncobj.syncobj._bchr(pysyncobj.syncobj._COMMAND_TYPE.NO_OP)
"""pysyncobj's no-op journal command (what a new leader appends)."""


@dataclass(slots=True)
class _Applied:
    """One committed entry on its way from the tick thread to the loop. ``_apply`` fills in
    ``took_effect`` on the loop before the proposer's callback is settled there (both cross in
    FIFO order), so the proposer reads its own entry's outcome, not the view's later state."""

    index: int
    took_effect: bool = False


class _OneWakeup:
    """pysyncobj's PipeNotifier, written to only when no wakeup is pending.

    pysyncobj writes a byte to the tick thread's pipe for every queued command; under load
    that is a syscall per write on the loop and a wakeup per byte's arrival for the tick
    thread (issue 14's profile: 1.4 to 2.9% of each replica's samples in ``notify``). One
    pending byte is enough: the tick that reads it drains the whole queue, and re-arms this
    (``RaftNode._checkCommandsToApply``) before it starts draining.
    """

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.pending = False

    def notify(self) -> None:
        if not self.pending and self.pipe is not None:
            self.pending = True
            self.pipe.notify()


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
        nonces: wire.Nonces | None = None,
        on_refused: Callable[[str], None] | None = None,
        settle: float | None = None,
    ) -> None:
        if not _installed:
            # pysyncobj's own connections unpickle what peers send, and its journal is a file.
            raise RuntimeError("replication.syncobj.install() must run before a RaftNode is built")
        # Set before SyncObj.__init__: its tick thread starts inside it.
        self.wire_secret = secret
        # This node's outstanding client nonces, shared with its admin calls (wire.Nonces).
        self.wire_nonces = nonces if nonces is not None else wire.Nonces()
        self.journal = journal
        self._on_storage_failure = on_storage_failure
        self._on_refused = on_refused or _exit_refused
        # Set when this node found it must not take part (a restore that does not match the
        # running cluster's): it then ignores every message until the process is gone.
        self.refused = False
        # Set when a dump failed to load: nothing is acknowledged after it (the node stops).
        self.dump_failed = False
        self.transport: DurableTransport | None = None
        self._deliver = deliver
        self._on_liveness = on_liveness
        self.outbox: collections.deque[list[str]] = collections.deque()
        # The tick thread's latest status (None before its first tick).
        self.status_snapshot: RaftStatus | None = None
        self.leader_changes = 0
        self._last_leader: str | None = None
        self._members = sorted([peers.self_address, *peers.others])
        # (term, index) of the last membership change this node appended as leader.
        self._membership_change: tuple[int, int] | None = None
        self._saved_members = journal.members()
        self.read_index = ReadIndex(self)
        self.incarnations = Incarnations(journal, peers.self_address)
        # RAFT_FIRST_CONTACT_WAIT, or derived from the timing (first_contact_wait).
        self._settles_at = monotonic() + (first_contact_wait(conf) if settle is None else settle)
        # Leader: the real match index of members whose acknowledgements do not count yet.
        self._uncounted_match: dict[str, int] = {}
        conf.journalFile = journal
        # Before SyncObj.__init__, whose tick thread may drain commands before it returns.
        self._wakeup = _OneWakeup(None)
        super().__init__(
            peers.self_address, list(peers.others), conf, transportClass=DurableTransport
        )
        self.addOnTickCallback(self._after_tick)
        # pysyncobj's own notifier, wrapped once it exists (made only without
        # appendEntriesUseBatch, as our conf has it); the attribute is read at each use, and a
        # byte written meanwhile to the bare one still wakes the tick.
        self._wakeup.pipe = vars(self).get("_SyncObj__pipeNotifier")
        if self._wakeup.pipe is not None:
            self._SyncObj__pipeNotifier = self._wakeup

    def _onTick(self, timeToWait: float = 0.0) -> None:
        # Anything appended outside the tick callbacks (entries received from the leader) is
        # synced before this tick counts the leader's log toward a majority, and before a
        # follower acknowledges it.
        try:
            self.journal.sync()
            if self.transport is not None:
                self.transport.flush_acks()
            if self.refused or not self.incarnations.recognised:
                # The cluster knows this address by another incarnation: this node lost its
                # disk and has not caught up. Its vote for itself would count like any other,
                # so it does not stand for election (replication/incarnation.py).
                self._SyncObj__raftElectionDeadline = monotonic() + self.conf.raftMaxTimeout
            elif not self._settled():
                # At first contact and not settled: a member that kept its log may still be
                # on its way (replication/incarnation.py). Randomised, so that two members
                # settling together do not keep splitting their votes.
                self._SyncObj__raftElectionDeadline = (
                    monotonic() + self._SyncObj__generateRaftTimeout()
                )
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
        if installed and not clearJournal:
            self._take_changes_after(loaded[0])
            return
        if installed and self.journal.last_index == loaded[0]:
            return
        self.dump_failed = True
        index = loaded[0] if loaded else self.journal.last_index
        log.critical("raft dump not loaded; stopping", extra={"index": index})
        cause = errors[0] if errors else RuntimeError("pysyncobj could not install it")
        self._on_storage_failure(StorageFailure("loading the raft dump", index, cause))

    def _take_changes_after(self, index: int) -> None:
        """At a restart: a dump holds the configuration as of its own index (dumps.cluster_at),
        and a membership change appended after it is in force from its append (Raft takes a
        change when it is appended; pysyncobj, loading the dump, would take it only once it
        commits), so the journal's changes after the dump are taken again here."""
        for change in self._changes_after(index):
            self._SyncObj__doChangeCluster(change)

    def _changed_later(self, member: str, index: int) -> bool:
        """Whether an entry after ``index`` in the journal changes ``member``'s membership."""
        return any(change[1] == member for change in self._changes_after(index))

    def _changes_after(self, index: int) -> Iterator[list[str]]:
        """The membership changes in the journal's entries after ``index``."""
        return commands.changes_in(self.journal[index - self.journal[0][1] + 1 :])

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
        if self.refused:
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "request_vote":
            self.incarnations.vote_requested(message.get("fresh"))
            if not self._settled():
                log.debug("vote request from %s left unanswered: first contact not settled", node)
                return
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

    def _settled(self) -> bool:
        """Whether this node may stand for election and vote (Incarnations.settled)."""
        others = (node.id for node in self._SyncObj__otherNodes)
        return self.incarnations.settled(others, monotonic() >= self._settles_at)

    def hello(self) -> dict[str, Any]:
        """The first message this node sends on every connection to a member."""
        return {
            "type": HELLO_MESSAGE,
            "fresh": self.incarnations.first_contact,
            "restored_from": self.journal.restored_from,
        }

    def on_hello(self, member: str, message: dict[str, Any]) -> None:
        """A member's hello: first checked against this node's restore
        (Incarnations.restore_mismatch), which stops this node with exit 2 before the hello
        could end its first contact; then taken (Incarnations.hello)."""
        if self.refused:
            return
        fresh = message.get("fresh")
        if self.incarnations.restore_mismatch(message.get("restored_from"), fresh):
            self.refused = True
            self._on_refused(
                f"this data directory was restored from a backup, but {member} was not "
                "restored from the same backup: to restore the cluster, scale it to 0 and "
                "restore every member from one file; to rejoin the running cluster, empty "
                "this directory"
            )
            return
        self.incarnations.hello(member, fresh)

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
        if change is not None:
            # Taken when appended (and again at a restart); taken once more here for a node
            # whose saved membership missed it (a crash before it was saved), unless the log
            # changes that member again later: a committed "rem X" must not undo the "add X"
            # appended after it, already in force (review of 9a16b1b).
            if not self._changed_later(change[1], int(self.raftLastApplied) + 1):
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

        The wakeup is re-armed first: a command queued from here on wakes the tick again, one
        queued before is in the queue this call drains (see :class:`_OneWakeup`). pysyncobj's
        drain stops after ``appendEntriesPeriod``; a drain that ran that long may have left
        commands whose wakeup was the pending one, so it wakes the next tick itself.

        With appendEntriesUseBatch=False (needed for low latency: commands wake the tick and
        commit indexes are pushed at once), pysyncobj sends AppendEntries after *each* queued
        command, so a burst of k writes costs k sealed messages per follower and k
        acknowledgements. Shadowing the (name-mangled) send method for the duration of the loop
        turns that into one send of everything appended, which the loop then does once.
        """
        self._wakeup.pending = False
        started = monotonic()
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
        if monotonic() - started >= self.conf.appendEntriesPeriod:
            self._wakeup.pending = False
            self._wakeup.notify()

    def getStatus(self) -> dict[str, Any]:
        """pysyncobj's status (also the utility ``status`` answer), with the backup this
        node's log was started from, if any (see RaftProposer.start: restoring one member)."""
        status: dict[str, Any] = super().getStatus()
        status["restored_from"] = self.journal.restored_from
        return status

    def status(self) -> RaftStatus:
        """What ``RaftStatus.parse(self.getStatus())`` says, read from pysyncobj's fields
        instead of from the dictionary it builds: the tick thread takes one every tick, several
        per write on each node, and building the dictionary to parse it back cost about 15 us
        each time. The dictionary stays the utility ``status`` answer, which peers parse."""
        others = self._SyncObj__otherNodes
        connected = self._SyncObj__connectedNodes
        me = str(self.selfNode)
        leader = self._SyncObj__raftLeader
        restored = self.journal.restored_from
        return RaftStatus(
            self_address=me,
            role=Role.of(self._SyncObj__raftState),
            term=int(self.raftCurrentTerm),
            leader=None if leader is None else str(leader),
            commit_index=int(self.raftCommitIndex),
            last_applied=int(self.raftLastApplied),
            log_size=len(self._SyncObj__raftLog),
            members=tuple(sorted([me, *(node.id for node in others)])),
            connected=frozenset(node.id for node in others if node in connected),
            match_index={
                node.id: int(index) for node, index in self._SyncObj__raftMatchIndex.items()
            },
            has_quorum=bool(self.hasQuorum),
            restored_from=None if restored is None else str(restored),
        )

    def _after_tick(self) -> None:
        """Runs on the tick thread after appends: group commit, status, liveness batches."""
        self.journal.sync()
        if self.transport is not None:
            self.transport.flush_acks()
        status = self.status()
        self.status_snapshot = status
        self.read_index.tick()
        members = list(status.members)
        changed = members != self._members
        if changed:
            self._members = members
            log.info("raft membership changed", extra={"members": members})
        # Saved at every change, and the first time this node is in a cluster with a leader
        # (its initial members, or the cluster it joined): a restart then rejoins these members
        # whatever REGISTRY_PEERS or REGISTRY_REPLICAS say, instead of probing peers again. Not
        # before: a pod that found no cluster at its first start must look again at the next.
        if members != self._saved_members and (changed or status.leader_reachable):
            self.journal.set_members(members)
            self._saved_members = members
        if status.leader != self._last_leader:
            self._last_leader = status.leader
            self.leader_changes += 1
            log.info("raft leader changed", extra={"leader": status.leader, "term": status.term})
        # The loop fills the outbox once every LIVENESS_PERIOD (RaftProposer._forward_liveness):
        # sent at the next tick, not throttled a second time here (that could delay an id by
        # up to two periods).
        if not self.outbox or self.transport is None:
            return
        batch: list[str] = []
        while self.outbox:
            batch.extend(self.outbox.popleft())
        leader = self._getLeader()  # a node, as the transport wants (status.leader is its id)
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


def _exit_refused(line: str) -> None:
    """Stop the process with exit 2 and one line, from the tick thread that found it must not
    take part: nothing it would do next (a vote, an acknowledgement) may leave it."""
    log.critical("%s; stopping", line)
    print(f"mcp-mesh-registry: {line}", file=sys.stderr, flush=True)
    os._exit(2)


CLUSTER_DNS_TTL = 5.0
"""Seconds cluster DNS may keep handing out a moved pod's old address: the TTL of CoreDNS's
kubernetes plugin (5 s unless its ``ttl`` option says otherwise)."""


def first_contact_wait(conf: SyncObjConf) -> float:
    """Seconds a node at first contact waits for its members' hellos before it takes part in
    an election without them (replication/incarnation.py), unless RAFT_FIRST_CONTACT_WAIT
    says: time enough for a member that is up and reachable to connect to it even with stale
    answers for its name, in cluster DNS (CLUSTER_DNS_TTL) and then in its own cache: the
    answers expire, a connect to the old address is dropped after connectionTimeout and the
    next one, after connectionRetryTime, can itself take a connectionTimeout; then one
    election timeout. It does not cover a member whose process takes longer than that to
    start, or cluster DNS with a longer TTL (raise RAFT_FIRST_CONTACT_WAIT for those): the
    hole that is left needs two disks lost at once."""
    connect = conf.connectionTimeout + conf.connectionRetryTime
    return float(CLUSTER_DNS_TTL + conf.dnsCacheTime + 2 * connect + conf.raftMaxTimeout)


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
