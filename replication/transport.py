"""pysyncobj's TCP transport, made durable, authenticated and able to carry liveness.

Wire and commands: peers talk ``replication/wire.py`` (authenticated handshake, sealed msgpack
frames; ``replication/connection.py`` plugs it into pysyncobj), and log commands are
``replication/commands.py``'s encoding: nothing from a peer, the journal or a dump is unpickled.

Liveness batches (see :mod:`replication.proposer`) travel as a message type of our own,
:data:`LIVENESS_MESSAGE`, on the same authenticated connection as Raft's messages.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pysyncobj.monotonic import monotonic
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.tcp_server import SERVER_STATE
from pysyncobj.transport import TCPTransport

from replication import read_index, utility, wire

if TYPE_CHECKING:
    from replication.syncobj import RaftNode

log = logging.getLogger(__name__)

LIVENESS_MESSAGE = "mesh_liveness"
LIVENESS_PERIOD = 1.0
"""Seconds between a follower's liveness batches to the leader."""
HELLO_MESSAGE = "mesh_hello"
"""The first message either side sends on a connection between members: whether its sender
is at first contact (replication/incarnation.py) and the backup its log was restored from
(RaftNode.on_hello)."""


class DurableTransport(TCPTransport):  # type: ignore[misc]  # pysyncobj is untyped
    """TCP transport that fsyncs the journal before acknowledging entries, carries the
    registry's liveness batches, and lets only key holders in (``replication/wire.py``)."""

    def __init__(self, syncObj: RaftNode, selfNode: Any, otherNodes: Any) -> None:
        self._rebind_at = 0.0  # the next time a listener pysyncobj closed may be bound again
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
            outgoing.nonces = self._syncObj.wire_nonces

    def _onNewIncomingConnection(self, conn: Any) -> None:
        conn.secret = self._syncObj.wire_secret
        conn.nonces = self._syncObj.wire_nonces
        super()._onNewIncomingConnection(conn)

    def _onNodeConnected(self, node: Any) -> None:
        super()._onNodeConnected(node)
        super().send(node, self._syncObj.hello())

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
        self._rebind_if_closed()
        super()._onTick()

    def _rebind_if_closed(self) -> None:
        """Bind the peer listener again if pysyncobj closed it.

        pysyncobj's server closes its listening socket on any accept error but EAGAIN, such as
        EMFILE when a flood of connections has used up the process's descriptors, and its
        transport, still marked ready, never binds again: the node would take no connection
        from a peer for good (review finding 11). Here it binds again, at most once per
        ``bindRetryTime``, until that works (marking the transport not ready instead would
        stop pysyncobj's whole tick meanwhile)."""
        server = self._server
        if not self._ready or server._TcpServer__state != SERVER_STATE.UNBINDED:
            return
        now = monotonic()
        if now < self._rebind_at:
            return
        self._rebind_at = now + self._syncObj.conf.bindRetryTime
        try:
            server.bind()
        except OSError as exc:
            server.unbind()
            log.warning("the peer listener was closed and cannot be bound yet: %s", exc)
        else:
            log.warning("the peer listener was closed (a failed accept) and is bound again")

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
        elif kind == HELLO_MESSAGE:
            self._syncObj.on_hello(node.id, message)
        elif kind in read_index.MESSAGES:
            self._syncObj.read_index.on_message(node, message)
        elif isinstance(kind, str):
            super()._onMessageReceived(node, message)
        else:  # pysyncobj would raise inside its tick on a message without a type
            log.warning("dropped a message without a type from %s", node)
