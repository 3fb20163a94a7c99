"""A stranger on RAFT_PORT: what anyone who can reach a replica's peer port might send.

Run inside the client namespace (``python -m jepsen_like.stranger MARKER HOLD HOST...``), it
sends every replica garbage, a length prefix promising gigabytes, pickles that would create
``MARKER`` if any replica unpickled them (bare, length-prefixed, zlib-compressed as pysyncobj
frames them), pysyncobj's utility commands with a wrong key (add a member, remove one), and
keeps a crowd of idle connections open for ``HOLD`` seconds. The replicas must carry on as if
nothing happened: the nemesis then checks that the marker does not exist and the membership is
what it was (jepsen_like/nemesis.py, ``_stranger``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import sys
import threading
import time
import zlib

RAFT_PORT = 4321
IDLE_CONNECTIONS = 40


class _Touch:
    """Unpickling this runs ``touch MARKER``: proof that a replica unpickled a stranger's bytes."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def payloads(marker: str) -> list[bytes]:
    """Everything sent on a fresh connection, one connection per payload."""
    evil = pickle.dumps(_Touch(marker))
    framed = zlib.compress(evil)
    message = pickle.dumps({"type": "append_entries", "evil": _Touch(marker)})
    return [
        os.urandom(65536),
        struct.pack(">I", 0xFFFFFFF0) + bytes(1 << 20),
        evil,
        struct.pack(">I", len(evil)) + evil,
        struct.pack(">I", len(framed)) + framed,
        struct.pack(">I", len(message)) + zlib.compress(message),
        struct.pack("<I", len(framed)) + framed,
    ]


def _send(host: str, payload: bytes) -> None:
    with contextlib.suppress(OSError), socket.create_connection((host, RAFT_PORT), 2) as conn:
        conn.settimeout(0.5)
        conn.sendall(payload)
        with contextlib.suppress(OSError):
            conn.recv(4096)


def _utility(host: str) -> None:
    """pysyncobj's utility commands, with a key the cluster does not have."""
    from pysyncobj.utility import TcpUtility

    stranger = f"10.77.0.250:{RAFT_PORT}"
    for command in (["add", stranger], ["remove", f"{host}:{RAFT_PORT}"], ["status"]):
        for password in ("wrong-key", None):
            with contextlib.suppress(Exception):
                TcpUtility(password, 0.5).executeCommand(f"{host}:{RAFT_PORT}", command)


def _visit(host: str, marker: str, idle: list[socket.socket]) -> None:
    for payload in payloads(marker):
        _send(host, payload)
    _utility(host)
    for _ in range(IDLE_CONNECTIONS):
        with contextlib.suppress(OSError):
            idle.append(socket.create_connection((host, RAFT_PORT), 2))


def main() -> None:
    marker, hold, hosts = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    idle: list[socket.socket] = []
    visits = [threading.Thread(target=_visit, args=(h, marker, idle)) for h in hosts]
    for visit in visits:
        visit.start()
    for visit in visits:
        visit.join()
    time.sleep(hold)
    for conn in idle:
        conn.close()


if __name__ == "__main__":
    main()
