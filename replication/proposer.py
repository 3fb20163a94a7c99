"""Raft replication of the event log with pysyncobj, behind registry.commit.Proposer.

:class:`RaftProposer` runs a :class:`replication.syncobj.RaftNode` for the registry: writes and
barriers, what a committed entry does to the view, and membership (joining a running cluster,
``remove_member``).

Threads: pysyncobj runs Raft on its own tick thread; the registry runs on the asyncio loop.
Committed events cross over through one FIFO (``replication/handoff.py``: one loop wakeup per
batch), and a write's future is settled through the same queue *after* its event, so a handler
that awaited ``propose`` reads its own write. The future carries what applying the event did (an
:class:`replication.syncobj._Applied` filled by ``_apply``), since later entries may be applied
before the handler resumes.

Compaction: after each view snapshot this node asks pysyncobj to compact, to a dump of
``replication/dumps.py``.

Barriers (an answer that must reflect every acknowledged write): a read index confirmed by a
majority, which appends nothing (``replication/read_index.py``); an empty entry through the log
only where no read index can be had (no leader, or one that has not committed in its term).

Liveness: heartbeats reach any replica but only the leader decides health. Followers send the
ids of agents they heard from to the leader once a second, over the same authenticated Raft
connection (a message type of our own, ``replication/transport.py``), never through the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

from pysyncobj import FAIL_REASON

from registry import events
from registry.commit import Committed, StateMachine, Unavailable
from registry.config import Config, ConfigError
from registry.events import CorruptRecord, Event
from registry.health import Liveness
from registry.store import StorageFailure
from replication import legacy, read_index, utility, wire
from replication.dumps import Dumps, dump_path, write_dump
from replication.handoff import Handoff
from replication.journal import LmdbJournal
from replication.peers import Peers, RaftTiming
from replication.status import RaftStatus
from replication.syncobj import _NO_OP, RaftNode, _Applied, _conf, install
from replication.transport import LIVENESS_PERIOD

log = logging.getLogger(__name__)

_FAILURES = {
    FAIL_REASON.QUEUE_FULL: "write queue full",
    FAIL_REASON.MISSING_LEADER: "no leader (this node cannot reach a majority)",
    FAIL_REASON.DISCARDED: "write discarded by a leader change; retry",
    FAIL_REASON.NOT_LEADER: "leader changed; retry",
    FAIL_REASON.LEADER_CHANGED: "leader changed before the write was accepted; retry",
    FAIL_REASON.REQUEST_DENIED: "write refused by the leader",
    FAIL_REASON.UNKNOWN_OUTCOME: "outcome unknown after a leader change",
}


class _Refused(Unavailable):
    """A read index could not be had; a barrier entry will do instead."""


class _Denied(Unavailable):
    """The leader refused the command (a membership change while another is pending)."""


def _peer_status(answer: object) -> RaftStatus | None:
    """A peer's answer to the utility ``status`` command, if it is one."""
    if not isinstance(answer, dict) or "self" not in answer:
        return None
    try:
        return RaftStatus.parse(answer)
    except (TypeError, ValueError):
        return None


def halt(failure: StorageFailure) -> NoReturn:
    """Stop the process at once on a failed journal write, from the thread that saw it.

    Not a clean shutdown: that would flush the journal again and keep the tick thread running
    while the loop winds down. The entries that were not written were never acknowledged;
    after a restart (with space again) the node catches up from the leader.
    """
    log.critical("%s; stopping", failure, extra={"index": failure.index})
    os._exit(1)


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
        self.nonces = wire.Nonces()  # every client handshake this node makes (wire.Nonces)
        self.peers = peers
        self.machine = machine
        self.liveness = liveness
        self.timing = RaftTiming.from_config(config)
        self.node: RaftNode | None = None
        self._handoff: Handoff | None = None
        self._in_flight = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-writer")
        self._snapshotting = False
        self._liveness_task: asyncio.Task[None] | None = None
        self._join_task: asyncio.Task[None] | None = None
        self._on_fatal = on_fatal

    # -- lifecycle -------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand committed entries and results to ``loop`` (``start`` binds the running one)."""
        self._handoff = Handoff(loop)

    async def start(self) -> None:
        install()  # pysyncobj patched for this process (replication/syncobj.py)
        self.bind(asyncio.get_running_loop())
        raft_dir = os.path.join(self.config.data_dir, "raft")
        legacy.upgrade_journal(raft_dir, self.config.lmdb_map_size)
        journal = LmdbJournal(raft_dir, self.config.lmdb_map_size)
        join_via = None
        found = None
        if journal.members():
            # A node that ran before rejoins the membership it last saw, whatever the env says.
            others = [m for m in journal.members() if m != self.peers.self_address]
        else:
            found = await asyncio.get_running_loop().run_in_executor(None, self._existing_cluster)
            others = list(self.peers.others)
            if found is not None:
                peer, members, _ = found
                others = [m for m in members if m != self.peers.self_address]
                # Already a member (its disk was lost): it takes the cluster's membership, which
                # may be larger than its env's (scaled up past REGISTRY_REPLICAS), and would
                # otherwise refuse the connections of members it does not list, a leader's too.
                join_via = None if self.peers.self_address in members else peer
        self.peers = Peers(self.peers.self_address, tuple(others))
        if self._restored(journal):
            snapshot = self._restored_snapshot()
            digest = hashlib.sha256(snapshot).hexdigest()
            if join_via is not None:
                raise ConfigError(
                    f"this data directory was restored from a backup, but a cluster already runs "
                    f"at {join_via}: restore every member from the same backup and start them "
                    "together, or empty this directory to join the running cluster"
                )
            if found is not None and found[2] is not None and found[2] != digest:
                # One member of a running cluster restored on its own: the cluster would
                # replace the backup's view with its own, the operator believing it restored.
                raise ConfigError(
                    f"this data directory was restored from a backup, but the cluster running "
                    f"at {found[0]} was not restored from the same backup: to restore the "
                    "cluster, scale it to 0 and restore every member from one file; to rejoin "
                    "the running cluster, empty this directory"
                )
            journal.set_restored_from(digest)
            self._start_log_at_snapshot(snapshot)
        self.node = RaftNode(
            self.peers,
            _conf(self.config, self.timing, Dumps(self)),
            journal,
            self._deliver,
            self._liveness_in,
            self.secret,
            halt,
            nonces=self.nonces,
            settle=self.config.first_contact_wait,
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

    def _restored_snapshot(self) -> bytes:
        """The restored snapshot record. Its SHA-256 names the backup: every member restored
        from one file has the same, so a member restored on its own can tell whether the
        cluster it finds running was restored from its backup (``restored_from`` in the
        utility status)."""
        index = self.machine.view.applied_index
        found = self.machine.store.latest_snapshot_record()
        if found is None or found[0] != index:
            raise ConfigError(f"restored view at {index} has no snapshot at that index")
        return found[1]

    def _start_log_at_snapshot(self, snapshot: bytes) -> None:
        """Make the Raft log start right after the restored snapshot.

        Raft indexes are the view's indexes; a log starting at 1 would have every new entry up
        to the snapshot's index skipped as already applied. A dump holding the snapshot and two
        no-op entries ending at its index (term 0) is what pysyncobj loads as "compacted up to
        here". Every member restored from the same backup starts with the same log, so they
        agree on it and elect a leader as usual.
        """
        index = self.machine.view.applied_index
        members = [self.peers.self_address, *self.peers.others]
        write_dump(
            dump_path(self.config),
            (_NO_OP, index, 0),
            (_NO_OP, index - 1, 0),
            members,
            index,
            snapshot,
            [],
        )
        log.info("raft log starts after the restored snapshot", extra={"index": index})

    def _existing_cluster(self) -> tuple[str, list[str], str | None] | None:
        """A running cluster, as ``(peer asked, its members, the backup it was restored
        from: "" if none, None if the peer does not say)``; it may count this node already.

        Blocking (utility connections); asked of the configured peers at first start only.
        """
        for peer in self.peers.others:
            status = _peer_status(utility.ask(peer, ["status"], self.secret, nonces=self.nonces))
            if status is not None:
                # None from a version that does not say (it cannot tell us; not refused).
                return peer, list(status.members), status.restored_from
        return None

    async def _watch_for_cluster(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(2.0)
            node = self.node
            status = node.status_snapshot if node is not None else None
            if status is not None and status.leader_reachable:
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
            await loop.run_in_executor(
                None, utility.ask, peer, ["add", me], self.secret, 5.0, self.nonces
            )
            status = _peer_status(
                await loop.run_in_executor(
                    None, utility.ask, peer, ["status"], self.secret, 1.0, self.nonces
                )
            )
            if status is not None and me in status.members:
                log.info("joined the cluster", extra={"members": list(status.members)})
                return
            await asyncio.sleep(1.0)

    async def remove_member(self, member: str) -> None:
        """Remove ``member`` from the cluster, refusing when that would leave no quorum."""
        node = self.node
        status = node.status_snapshot if node is not None else None
        if node is None or status is None:
            raise Unavailable("raft is not running")
        if member not in status.members:
            # A follower's membership can lag the leader's (a member that joined while it was
            # down): "no such member" is said only by a node holding every committed change.
            # The chaos harness's scale-down took a lagging follower's 404 as done and left a
            # stopped pod in a 4-member cluster, which then needed every other member.
            await self.barrier()
            status = await self._next_status(node)
            if member not in status.members:
                raise KeyError(member)
        if member == self.peers.self_address:
            raise ValueError("a node cannot remove itself: run this against another member")
        if member == status.leader:
            # pysyncobj's leader denies removing itself, which read as "a change pending".
            raise ValueError(
                "that member is the leader: stop it first (the others elect a new leader), "
                "then remove it"
            )
        remaining = [m for m in status.members if m != member]
        reachable = 1 + sum(1 for m in remaining if m in status.connected)  # self + connected
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

    async def _next_status(self, node: RaftNode) -> RaftStatus:
        """The first status snapshot taken after now (the tick thread makes one each tick)."""
        seen = node.status_snapshot
        deadline = time.monotonic() + self.config.write_timeout
        while node.status_snapshot is seen or node.status_snapshot is None:
            if time.monotonic() > deadline:
                raise Unavailable("the raft tick thread made no status in time")
            await asyncio.sleep(0.01)
        return node.status_snapshot

    # -- tick thread -> loop --------------------------------------------------------------------

    def _deliver(self, index: int, record: bytes) -> _Applied:
        """Tick thread: hand a committed entry to the loop (an empty record is a barrier)."""
        applied = _Applied(index)
        if not record or self._handoff is None:
            return applied
        self._in_flight += 1
        self._handoff.put(self._apply, applied, record)
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
        if self._handoff is None:
            return
        self._in_flight += 1
        self._handoff.put(self._install, index, snapshot, tail)

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

    def _liveness_in(self, agent_ids: list[str]) -> None:
        if self._handoff is not None:
            self._handoff.put(self.liveness.seen_many, agent_ids)

    async def _forward_liveness(self) -> None:
        while True:
            await asyncio.sleep(LIVENESS_PERIOD)
            batch = self.liveness.drain_outbox()
            if batch and self.node is not None and not self.node._isLeader():
                self.node.outbox.append(batch)

    # -- Proposer -------------------------------------------------------------------------------

    def _reachable(self) -> RaftNode:
        """The running node, when it reaches a leader; Unavailable otherwise."""
        node = self.node
        if node is None:
            raise Unavailable("raft is not running")
        status = node.status_snapshot
        if node._getLeader() is None or status is None or not status.leader_reachable:
            raise Unavailable("no reachable leader (this node cannot reach a majority)")
        return node

    async def _submit(self, record: bytes) -> Committed:
        node = self._reachable()
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

        handoff = self._handoff
        assert handoff is not None, "submitted before bind() (start() binds)"

        def callback(result: Any, error: int) -> None:
            handoff.put(settle, result, error)  # after the entry's own apply (module docstring)

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
        node = self._reachable()
        try:
            await self._committed(
                node.read_index.request,
                f"no read index within {self.config.write_timeout:g}s",
            )
        except _Refused:
            await self._submit(b"")

    def ready(self) -> tuple[bool, str]:
        node = self.node
        status = node.status_snapshot if node is not None else None
        if node is None or status is None:
            return False, "raft not started"
        if status.leader is None or not status.leader_reachable:
            return False, "no reachable leader (election in progress or cut off from the majority)"
        if not node.isReady():
            return False, "catching up with the leader"
        if status.last_applied < status.commit_index or self._in_flight:
            return False, "applying committed entries"
        return True, "member of a cluster with a leader, caught up"

    def leading(self) -> bool:
        return self.node is not None and bool(self.node._isLeader())

    def leader(self) -> str:
        status = self.node.status_snapshot if self.node is not None else None
        return status.leader or "" if status is not None else ""

    def status(self) -> dict[str, Any]:
        node = self.node
        status = node.status_snapshot if node is not None else None
        members: list[dict[str, Any]] = [
            {"id": self.peers.self_address, "state": "self", "connected": True}
        ]
        if status is not None:
            for other in status.others:
                members.append(
                    {
                        "id": other,
                        "state": "peer",
                        "connected": other in status.connected,
                        "match_index": status.match_index.get(other),
                        "catching_up": not node.incarnations.counted(other) if node else False,
                    }
                )
        return {
            "mode": "raft",
            "node_id": self.peers.self_address,
            "instance_id": self.config.instance_id,
            "role": status.role.label if status is not None else "unknown",
            "term": status.term if status is not None else 0,
            "leader": self.leader(),
            "members": members,
            "commit_index": status.commit_index if status is not None else 0,
            "applied_index": self.machine.view.applied_index,
            "raft_applied_index": status.last_applied if status is not None else 0,
            "log_size": status.log_size if status is not None else 0,
            "leader_changes": node.leader_changes if node is not None else 0,
            # False on a node whose disk was lost until the leader counts it again (it then
            # neither stands for election nor has its vote counted: replication/incarnation.py).
            "recognised": node.incarnations.recognised if node is not None else False,
            # True until this node hears of a leader or of a member that has (a new cluster's
            # first election, as far as it can tell).
            "first_contact": node.incarnations.first_contact if node is not None else False,
            # The SHA-256 of the backup snapshot this node's log started from ("" if none).
            "restored_from": status.restored_from or "" if status is not None else "",
        }
