"""Real RaftNodes on loopback, ticked by the test itself.

Each node is a :class:`replication.syncobj.RaftNode` on its own LMDB journal in a tmp dir and its
own loopback port, with the production settings of ``replication.syncobj._conf`` except these:

- ``autoTick`` is off: the test thread runs each node's tick in turn (``Cluster.run_until``),
  so pausing a node is not ticking it, and which frames a node has read when it acts is the
  test's to choose, without sleeps or races between tick threads;
- timeouts are short for the first election, then made long (``Cluster.calm``) so that a node
  paused for a test, or a test thread descheduled on a loaded machine, starts no election and
  deposes no leader; a test changes leaders on purpose (pysyncobj's ``transferLeadership``);
- a bind that fails raises (OSError, as in production: ``DurableTransport`` binds before the
  first tick) and the cluster starts again on fresh ports (another process took the free port).

Every frame any node sends goes through ``replication.connection.WireConnection.send``,
wrapped here to note the frame and then run as is: tests see what left which node, and for an
acknowledgement or a leader's commit index, whether the sender's journal held those entries on
disk right then.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from pysyncobj import FAIL_REASON
from pysyncobj.node import TCPNode

from registry.config import Config
from registry.store import StorageFailure
from replication.connection import WireConnection
from replication.journal import LmdbJournal, _key
from replication.peers import Peers, RaftTiming
from replication.syncobj import RaftNode, _Applied, _conf, install
from replication.wire import Secret
from tests.ports import free_port
from tests.timing import scaled

T = TypeVar("T")

FAST = RaftTiming(
    election_min=0.3, election_max=0.6, heartbeat=0.05, step_down=2.0, reconnect=0.05, dns_cache=1
)
"""Timing for the first election; ``Cluster.calm`` lengthens the election and step-down
timeouts once there is a leader."""
SECRET = Secret.from_key("raft-cluster-test-key-0123456789abc")
TICK_WAIT = 0.002
"""Seconds one node's tick may wait for socket events: enough not to spin the shared CPU while a
condition is polled, short enough that a round over every node stays a few milliseconds."""


def unexpected_storage_failure(failure: StorageFailure) -> None:
    """A RaftNode's ``on_storage_failure`` where no journal write is expected to fail (in
    production :func:`replication.proposer.halt` ends the process)."""
    raise AssertionError(f"unexpected storage failure: {failure}")


def on_disk(journal: LmdbJournal, index: int) -> bool:
    """Whether the last committed LMDB transaction holds the journal's entry ``index`` (same
    term as in memory): what a power cut right now would leave of it."""
    if index < 1:
        return True
    term = journal.term_at(index)
    with journal._env.begin(db=journal._entries) as txn:
        value = txn.get(_key(index))
    return term is not None and value is not None and int.from_bytes(value[:8], "big") == term


@dataclass
class Frame:
    """One message as it left a node through its real TCP connection."""

    sender: RaftNode | None
    message: dict[str, Any]
    claims: int | None = None
    """The index the frame vouches for: acknowledged (``next_node_idx``, success) or committed
    (a leader's ``append_entries``)."""
    on_disk: bool | None = None
    """Whether the sender's journal held ``claims`` on disk as the frame left."""


@dataclass
class Cluster:
    root: Path
    nodes: list[RaftNode] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    applied: dict[str, list[int]] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    _current: RaftNode | None = None

    # -- building ---------------------------------------------------------------------------

    def start(self, size: int, attempts: int = 3) -> None:
        """Start ``size`` nodes on free ports; on a machine shared with other tests a port can
        be taken between finding it free and binding it, so try again on fresh ports."""
        for attempt in range(attempts):
            addresses = [f"127.0.0.1:{free_port()}" for _ in range(size)]
            try:
                for address in addresses:
                    others = [a for a in addresses if a != address]
                    self.nodes.append(self._start_node(address, others))
                return
            except OSError:  # RAFT_PORT taken: DurableTransport binds in its constructor
                self.destroy()
                self.nodes.clear()
                if attempt + 1 == attempts:
                    raise

    def _start_node(self, address: str, others: list[str]) -> RaftNode:
        config = Config(data_dir=str(self.root / address.replace(":", "_")))
        conf = _conf(config, FAST, SimpleNamespace(write=None, read=None))
        conf.autoTick = False
        conf.connectionTimeout = scaled(30)
        journal = LmdbJournal(str(Path(config.data_dir) / "raft"))
        applied = self.applied.setdefault(address, [])

        def deliver(index: int, _record: bytes) -> _Applied:
            applied.append(index)
            return _Applied(index)  # a write's result, as the proposer's deliver makes it

        install()
        try:
            return RaftNode(
                Peers(address, tuple(others)),
                conf,
                journal,
                deliver,
                lambda _agents: None,
                SECRET,
                unexpected_storage_failure,
            )
        except OSError:
            journal._destroy()
            raise

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()  # without autoTick: closes its sockets and its journal at once

    def record(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Note every frame as it leaves (see the module docstring), then send it as is."""
        send = WireConnection.send

        def noted(connection: WireConnection, message: Any) -> None:
            if isinstance(message, dict):
                self.frames.append(self._frame(message))
            send(connection, message)

        monkeypatch.setattr(WireConnection, "send", noted)

    def _frame(self, message: dict[str, Any]) -> Frame:
        sender = self._current
        kind = message.get("type")
        if sender is None:
            return Frame(sender, message)
        if kind == "next_node_idx" and message.get("success"):
            claims = int(message["next_node_idx"]) - 1
        elif kind == "append_entries" and sender._isLeader():
            claims = int(message["commit_index"])
        else:
            return Frame(sender, message)
        return Frame(sender, message, claims, on_disk(sender.journal, claims))

    # -- driving ----------------------------------------------------------------------------

    def tick(self, node: RaftNode) -> None:
        self._current = node
        try:
            node.doTick(TICK_WAIT)
        finally:
            self._current = None

    def run_until(self, check: Callable[[], T], *nodes: RaftNode, timeout: float = 10.0) -> T:
        """Tick ``nodes`` (default: every node not paused) one at a time until ``check`` holds
        after one of those ticks; fail after ``timeout`` seconds (scaled)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            for node in nodes or [n for n in self.nodes if address(n) not in self.paused]:
                self.tick(node)
                result = check()
                if result:
                    return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {scaled(timeout)} s")

    def send(self, sender: RaftNode, to: RaftNode, message: dict[str, Any]) -> bool:
        """``sender`` sends ``message`` to ``to`` over its real connection, outside a tick."""
        self._current = sender
        try:
            return sender.send(TCPNode(address(to)), message)
        finally:
            self._current = None

    # -- reading ----------------------------------------------------------------------------

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.nodes if n._isLeader() and address(n) not in self.paused]
        return leaders[0] if len(leaders) == 1 else None

    def others(self, node: RaftNode) -> list[RaftNode]:
        return [n for n in self.nodes if n is not node]

    def sent(self, sender: RaftNode, kind: str) -> Iterator[dict[str, Any]]:
        return (f.message for f in self.frames if f.sender is sender and f.message["type"] == kind)

    def elect(self) -> RaftNode:
        """Tick until one leader has committed its no-op and every node follows it."""

        def settled() -> RaftNode | None:
            leader = self.leader()
            if leader is None or leader.raftCommitIndex < leader.journal.last_index:
                return None
            ok = all(n._getLeader() == leader.selfNode for n in self.nodes)
            return leader if ok else None

        return self.run_until(settled)

    def calm(self) -> RaftNode:
        """Elect a leader, then make elections and step-downs take far longer than any test.

        The long timeouts take hold on a follower when it next hears from the leader (it draws
        its next election deadline then): a write every node applied proves that happened."""
        leader = self.elect()
        for node in self.nodes:
            node.conf.raftMinTimeout = scaled(30)
            node.conf.raftMaxTimeout = scaled(60)
            node.conf.leaderFallbackTimeout = scaled(30)
        self.write(leader)
        return leader

    def write(self, node: RaftNode) -> int:
        """Commit one entry through ``node`` and wait until every node not paused applied it."""
        results: list[tuple[Any, int]] = []
        node.submit(b"entry", lambda result, error: results.append((result, error)))
        self.run_until(lambda: results)
        [(applied, error)] = results
        assert error == FAIL_REASON.SUCCESS, f"write through {address(node)} failed: {error}"
        index = applied.index
        self.run_until(
            lambda: all(
                index in self.applied[address(n)]
                for n in self.nodes
                if address(n) not in self.paused
            )
        )
        return int(index)


def address(node: RaftNode) -> str:
    return str(node.selfNode.address)


@contextlib.contextmanager
def running(root: Path, monkeypatch: pytest.MonkeyPatch, size: int = 3) -> Iterator[Cluster]:
    """``size`` real nodes on loopback, destroyed (ports and journals closed) whatever happens:
    a node left bound would hold its port, and one left unticked never closes its sockets."""
    made = Cluster(root)
    made.record(monkeypatch)
    try:
        made.start(size)
        yield made
    finally:
        made.destroy()
