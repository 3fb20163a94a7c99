"""pysyncobj's TCP connection replaced by one that speaks ``replication/wire.py``.

pysyncobj's ``TcpConnection`` unpickles every frame it reads (``pickle.loads(zlib.
decompress(data))``), before anything has checked who sent it, and buffers up to 2 GiB of an
announced frame, copying the whole buffer on every 8 KiB read. :class:`WireConnection` has the
same interface as far as pysyncobj's transport and server use it, and instead:

- runs the wire's handshake first and reports the connection CONNECTED only after it (for an
  outgoing connection, that is when pysyncobj's transport is told it is connected and sends
  this node's id);
- reads into one bytearray bounded by the unit it waits for (a handshake message, or one frame
  of at most ``wire.MAX_FRAME``), refusing an over-long length prefix at once;
- hands pysyncobj only msgpack-decoded plain data (``replication/codec.py``);
- closes at the first thing that does not check out, with a log line saying why.

:func:`install` makes pysyncobj build these instead of its own, for every connection in the
process (its transport creates outgoing ones, its server incoming ones). Each must be given the
cluster's :class:`wire.Secret` (``replication.transport.DurableTransport`` does) before it is used;
one without fails closed. Everything here runs on pysyncobj's tick thread.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import pysyncobj.tcp_server
import pysyncobj.transport
from pysyncobj.monotonic import monotonic
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, set_keepalive

from replication import codec, wire

log = logging.getLogger(__name__)

_READ = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
_READ_WRITE = _READ | POLL_EVENT_TYPE.WRITE


class WireConnection:
    """One peer connection on pysyncobj's poller (a drop-in for its ``TcpConnection``)."""

    def __init__(
        self,
        poller: Any,
        onMessageReceived: Callable[[Any], None] | None = None,
        onConnected: Callable[[], None] | None = None,
        onDisconnected: Callable[[], None] | None = None,
        socket: socket.socket | None = None,
        timeout: float = 10.0,
        sendBufferSize: int = 2**13,
        recvBufferSize: int = 2**13,
        keepalive: tuple[int, int, int] | None = None,
    ) -> None:
        self.secret: wire.Secret | None = None
        self.nonces: wire.Nonces | None = None  # the node's (see wire.Nonces)
        self.encryptor = None  # set (to None) by pysyncobj's transport; never used
        self._poller = poller
        self._on_message = onMessageReceived
        self._on_connected = onConnected
        self._on_disconnected = onDisconnected
        self._timeout = timeout
        self._send_size = sendBufferSize
        self._recv_size = recvBufferSize
        self._keepalive = keepalive
        self._in = bytearray()
        self._out = bytearray()
        self._handshake: wire.ClientHandshake | wire.ServerHandshake | None = None
        self._session: wire.Session | None = None
        self._tcp_pending = False
        self._writing = False
        self._socket = socket
        self._fileno: int | None = None
        self._peer = "?"
        self.state = CONNECTION_STATE.DISCONNECTED
        self._last_read = self._deadline = monotonic()
        if socket is not None:  # accepted by pysyncobj's server: we are the handshake's server
            self._peer = _address(socket)
            self._start(socket)

    # -- pysyncobj's TcpConnection interface ----------------------------------------------------

    def setOnConnectedCallback(self, callback: Callable[[], None] | None) -> None:
        self._on_connected = callback

    def setOnMessageReceivedCallback(self, callback: Callable[[Any], None] | None) -> None:
        self._on_message = callback

    def setOnDisconnectedCallback(self, callback: Callable[[], None] | None) -> None:
        self._on_disconnected = callback

    def fileno(self) -> int | None:
        return self._fileno

    def getSendBufferSize(self) -> int:
        return len(self._out)

    def connect(self, host: str | None, port: int) -> bool:
        """Start connecting to a peer (the handshake's client); False if that cannot start."""
        if host is None or self.secret is None:
            return False
        self._reset()
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_size)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._keepalive is not None:
            set_keepalive(sock, *self._keepalive)
        sock.setblocking(False)
        error = sock.connect_ex((host, port))
        if error not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            return False
        self._peer = f"{host}:{port}"
        self._tcp_pending = True
        self._start(sock)
        return True

    def send(self, message: Any) -> None:
        """Seal and send one message; dropped, as pysyncobj drops it, without a session."""
        if self._session is None or self.state != CONNECTION_STATE.CONNECTED:
            return
        if self._timed_out():
            return
        try:
            frame = self._session.sealer.seal(codec.encode(message))
        except (TypeError, ValueError):
            log.exception("cannot send a message to %s; closing the connection", self._peer)
            self.disconnect()
            return
        self._out += frame
        self._flush()

    def disconnect(self) -> None:
        notify = self._on_disconnected is not None and (self.state != CONNECTION_STATE.DISCONNECTED)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._fileno is not None:
            self._poller.unsubscribe(self._fileno)
            self._fileno = None
        self._reset()
        if notify and self._on_disconnected is not None:
            self._on_disconnected()

    # -- ours -----------------------------------------------------------------------------------

    def expired(self, now: float) -> bool:
        """Still unauthenticated after ``wire.HANDSHAKE_TIMEOUT``: the transport closes it."""
        return (
            self.state != CONNECTION_STATE.DISCONNECTED
            and self._session is None
            and now > self._deadline
        )

    # -- internals ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._in = bytearray()
        self._out = bytearray()
        self._handshake = None
        self._session = None
        self._tcp_pending = False
        self._writing = False
        self.state = CONNECTION_STATE.DISCONNECTED

    def _start(self, sock: socket.socket) -> None:
        self._socket = sock
        self._fileno = sock.fileno()
        self.state = CONNECTION_STATE.CONNECTING
        self._last_read = self._deadline = monotonic()
        self._deadline += wire.HANDSHAKE_TIMEOUT
        self._writing = True
        self._poller.subscribe(self._fileno, self._process, _READ_WRITE)

    def _process(self, descr: int, event: int) -> None:
        if descr != self._fileno:
            self._poller.unsubscribe(descr)
            return
        if event & POLL_EVENT_TYPE.ERROR or self._timed_out():
            self.disconnect()
            return
        # This event is for this socket only. Closing it calls pysyncobj back, and for an
        # outgoing connection that connects again at once, on this object: what is left of
        # the event must not then act on the new socket (reading it, or dropping the WRITE
        # interest that would tell it the connect completed, so it never sends its HELLO).
        sock = self._socket
        if self._tcp_pending:
            assert self._socket is not None
            if self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.disconnect()
                return
            self._tcp_pending = False
            if self.secret is None:
                self.disconnect()
                return
            client = wire.ClientHandshake(self.secret, nonces=self.nonces)
            self._handshake = client
            self._last_read = monotonic()
            self._out += client.hello()
        if event & POLL_EVENT_TYPE.READ:
            self._read(sock)
        if self._socket is sock and self.state != CONNECTION_STATE.DISCONNECTED:
            self._flush()

    def _timed_out(self) -> bool:
        """pysyncobj's liveness rule: nothing read for ``timeout`` seconds closes it."""
        if monotonic() - self._last_read > self._timeout:
            self.disconnect()
            return True
        return False

    def _read(self, sock: socket.socket | None) -> None:
        while sock is not None and self._socket is sock:
            try:
                chunk = sock.recv(self._recv_size)
            except BlockingIOError:
                return
            except OSError:
                self.disconnect()
                return
            if not chunk:
                self.disconnect()
                return
            self._last_read = monotonic()
            self._in += chunk
            self._consume(sock)

    def _consume(self, sock: socket.socket) -> None:
        """Handle every complete unit in the buffer (handshake messages, then frames), while
        the connection is still on ``sock``."""
        while self._socket is sock:
            try:
                message, done = self._next()
            except (wire.Refused, ValueError, TypeError) as exc:
                log.warning("peer connection %s closed: %s", self._peer, exc)
                self.disconnect()
                return
            if not done:
                return
            if message is not None and self._on_message is not None:
                try:
                    self._on_message(message)
                except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                    # Only an authenticated peer gets this far, but a message of the wrong
                    # shape must cost its connection, never the tick (pysyncobj's handlers
                    # index fields without checking them).
                    log.exception("peer connection %s closed: malformed message", self._peer)
                    self.disconnect()
                    return

    def _next(self) -> tuple[Any, bool]:
        """The next message in the buffer, if a whole unit is there: ``(message or None,
        True)``; ``(None, False)`` when more bytes are needed."""
        if self._session is not None:
            if len(self._in) < wire.HEADER.size:
                return None, False
            header = bytes(self._in[: wire.HEADER.size])
            end = wire.HEADER.size + wire.frame_length(header)
            if len(self._in) < end:
                return None, False
            body = bytes(self._in[wire.HEADER.size : end])
            del self._in[:end]
            return codec.decode(self._session.opener.open(header, body)), True
        if self._handshake is None:  # accepted: this side answers the peer's HELLO
            if self.secret is None:
                raise wire.Refused("no key to authenticate with")
            self._handshake = wire.ServerHandshake(self.secret, self.nonces)
        handshake = self._handshake
        size = _expected(handshake)
        if len(self._in) < size:
            return None, False
        unit = bytes(self._in[:size])
        del self._in[:size]
        if isinstance(handshake, wire.ClientHandshake):
            finish, self._session = handshake.finish(unit)
            self._out += finish
            self._established()
        elif handshake.replied:
            self._session = handshake.finish(unit)
            self._established()
        else:
            self._out += handshake.reply(unit)
        return None, True

    def _established(self) -> None:
        self.state = CONNECTION_STATE.CONNECTED
        self._handshake = None
        if self._on_connected is not None:
            self._on_connected()

    def _flush(self) -> None:
        while self._out and self._socket is not None:
            try:
                sent = self._socket.send(self._out)
            except BlockingIOError:
                break
            except OSError:
                self.disconnect()
                return
            del self._out[:sent]
        want_write = bool(self._out)
        if self._fileno is not None and want_write != self._writing:
            self._writing = want_write
            mask = _READ_WRITE if want_write else _READ
            self._poller.subscribe(self._fileno, self._process, mask)


def _expected(handshake: wire.ClientHandshake | wire.ServerHandshake) -> int:
    if isinstance(handshake, wire.ClientHandshake):
        return wire.REPLY_BYTES
    return wire.FINISH_BYTES if handshake.replied else wire.HELLO_BYTES


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _address(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def install() -> None:
    """Make pysyncobj's transport and server build :class:`WireConnection`s."""
    pysyncobj.transport.TcpConnection = WireConnection
    pysyncobj.tcp_server.TcpConnection = WireConnection
