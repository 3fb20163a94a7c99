"""pysyncobj's utility commands (``status``, ``add``, ``remove``) over the authenticated wire.

pysyncobj's own ``TcpUtility`` pickles (and unpickles the answer); this client runs the
handshake of ``replication/wire.py`` as the connecting side, sends one sealed frame holding the
command and reads one sealed frame back. The server side is pysyncobj's utility handling,
reached through ``replication.transport.DurableTransport``, which accepts only these three
commands. Blocking: call it off the event loop and the tick thread.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from replication import codec, wire

log = logging.getLogger(__name__)

COMMANDS = frozenset({"status", "add", "remove"})
"""The utility commands this cluster answers (pysyncobj also has set_version and transfer)."""


def ask(
    peer: str,
    command: list[Any],
    secret: wire.Secret,
    timeout: float = 1.0,
    nonces: wire.Nonces | None = None,
) -> Any:
    """One utility command to ``peer`` (``host:port``); None when it did not answer, or did
    not prove it holds the key. A node passes its ``nonces`` (see wire.Nonces)."""
    host, _, port = peer.rpartition(":")
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            handshake = wire.ClientHandshake(secret, nonces=nonces)
            sock.sendall(handshake.hello())
            finish, session = handshake.finish(_read(sock, wire.REPLY_BYTES, deadline))
            sock.sendall(finish + session.sealer.seal(codec.encode(command)))
            header = _read(sock, wire.HEADER.size, deadline)
            body = _read(sock, wire.frame_length(header), deadline)
            return codec.decode(session.opener.open(header, body))
    except wire.Refused as exc:
        log.warning("utility call to %s refused: %s", peer, exc)
    except (OSError, ValueError) as exc:
        log.debug("utility call to %s failed: %s", peer, exc)
    return None


def _read(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Exactly ``size`` bytes before ``deadline``; OSError (a timeout, or EOF) otherwise."""
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("utility call timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        data += chunk
    return bytes(data)
