"""The peer wire on RAFT_PORT: a mutual challenge-response handshake, then sealed frames.

Nothing a peer sends is parsed as anything richer than fixed-size byte fields until it has
proved it holds the cluster's ENCRYPTION_KEY, and after that only as msgpack (see
``replication/codec.py``): there is no pickle anywhere on this port. This module holds no
sockets; ``replication/connection.py`` (pysyncobj's poller) and ``replication/utility.py``
(blocking admin calls) drive it.

Handshake (the connecting side is the client)::

    client -> server   HELLO   = MAGIC | version (u16) | client nonce (32)
    server -> client   REPLY   = MAGIC | version (u16) | server nonce (32) | server MAC (32)
    client -> server   FINISH  = client MAC (32)

Both MACs are HMAC-SHA256 under the auth key over the transcript ``HELLO | REPLY without its
MAC``, which holds both fresh nonces and the version, each prefixed with its role, so that
neither can be replayed from another connection nor reflected back to its sender. One relay
the roles do not stop: someone who copies a node's HELLO into a connection of their own to the
same node gets that node's server MAC for the transcript its client expects, and its client's
FINISH for the transcript its server expects: the node would talk to itself through them. So a
node's server refuses a HELLO carrying a nonce its own clients have outstanding
(:class:`Nonces`). The client
checks the server's MAC before sending its own; the server checks the client's before it reads
a single frame. Each side compares in constant time. The session's two keys (one per
direction) come from HKDF over the same transcript, so every connection and direction gets
fresh keys.

Frames::

    length (u32, big-endian, of what follows) | ChaCha20-Poly1305(plaintext, aad=length)

The nonce is a per-direction counter that both sides keep, never sent: a replayed, reordered,
dropped or tampered frame fails its tag and closes the connection. A length over
:data:`MAX_FRAME` closes the connection before anything is allocated for the body.

Version: HELLO carries the client's wire version. A server refuses one it does not speak (and
logs it); the client refuses a REPLY in any other version. A later version can be rolled out
one pod at a time by having servers accept both before clients start offering the new one.
"""

from __future__ import annotations

import hmac
import os
import struct
import threading
import time
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from registry.config import check_key

WIRE_VERSION = 1
"""The wire this code speaks. Bump for any change to the handshake, framing or encoding."""
ACCEPTED_VERSIONS = frozenset({WIRE_VERSION})
"""Client versions a server accepts."""
MAGIC = b"MMRW"
NONCE_BYTES = 32
MAC_BYTES = 32
TAG_BYTES = 16
HEADER = struct.Struct(">I")
HELLO_BYTES = len(MAGIC) + 2 + NONCE_BYTES
REPLY_BYTES = HELLO_BYTES + MAC_BYTES
FINISH_BYTES = MAC_BYTES
MAX_FRAME = 9 << 20
"""Largest plaintext in one frame. The largest legitimate message is an append_entries batch:
under ``replication.commands.BATCH_BYTES`` of entries plus the one that crosses it, of at most
``replication.commands.MAX_RECORD`` (7 MiB in all); the rest is headroom."""
HANDSHAKE_TIMEOUT = 3.0
"""Seconds an unauthenticated connection may take to finish the handshake before it is closed
(a legitimate one takes two round trips)."""
_SALT = b"mcp-mesh-registry raft wire"
_SERVER = b"server MAC"
_CLIENT = b"client MAC"
_SESSION = b"session keys"


class Refused(Exception):
    """The peer failed the handshake or sent a frame that does not open: close the
    connection. The message says why, for the log."""


@dataclass(frozen=True)
class Secret:
    """The handshake's auth key, derived once from ENCRYPTION_KEY."""

    auth_key: bytes

    @classmethod
    def from_key(cls, encryption_key: str) -> Secret:
        """HKDF-SHA256 of ENCRYPTION_KEY. A key that config.load would refuse in cluster mode
        (empty or under 32 bytes) is refused here too, with the same ConfigError, whoever built
        the Config: a peer wire a weak key opens would let anyone who reaches RAFT_PORT join or
        write."""
        check_key(encryption_key)
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=b"auth key")
        return cls(hkdf.derive(encryption_key.encode()))

    def mac(self, role: bytes, transcript: bytes) -> bytes:
        return hmac.new(self.auth_key, role + transcript, sha256).digest()

    def session(self, transcript: bytes, client: bool) -> Session:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=64, salt=transcript, info=_SESSION)
        keys = hkdf.derive(self.auth_key)
        to_server, to_client = keys[:32], keys[32:]
        if client:
            return Session(Sealer(to_server), Opener(to_client))
        return Session(Sealer(to_client), Opener(to_server))


class Nonces:
    """The client nonces one node has sent and not yet seen answered (its servers refuse a
    HELLO carrying one: a reflection). Shared by the node's connections, which run on its tick
    thread and on admin threads, hence the lock; an abandoned handshake's nonce expires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[bytes, float] = {}

    def add(self, nonce: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            for old in [n for n, at in self._sent.items() if now - at > 2 * HANDSHAKE_TIMEOUT]:
                del self._sent[old]
            self._sent[nonce] = now

    def discard(self, nonce: bytes) -> None:
        with self._lock:
            self._sent.pop(nonce, None)

    def __contains__(self, nonce: object) -> bool:
        with self._lock:
            return nonce in self._sent


def _nonce(message: bytes) -> bytes:
    """The nonce of a HELLO or REPLY (after the magic and version)."""
    return message[len(MAGIC) + 2 : HELLO_BYTES]


def _check_magic(message: bytes, who: str) -> int:
    """The version in a HELLO or REPLY; Refused for anything that is not our wire."""
    if message[: len(MAGIC)] != MAGIC:
        raise Refused(f"{who} does not speak this wire (no magic)")
    return int.from_bytes(message[len(MAGIC) : len(MAGIC) + 2], "big")


class ClientHandshake:
    """The connecting side: ``hello()``, then ``finish(reply)`` gives FINISH and the session."""

    def __init__(
        self, secret: Secret, version: int = WIRE_VERSION, nonces: Nonces | None = None
    ) -> None:
        self._secret = secret
        self._hello = MAGIC + version.to_bytes(2, "big") + os.urandom(NONCE_BYTES)
        self._nonces = nonces
        if nonces is not None:
            nonces.add(_nonce(self._hello))

    def hello(self) -> bytes:
        return self._hello

    def finish(self, reply: bytes) -> tuple[bytes, Session]:
        if self._nonces is not None:
            self._nonces.discard(_nonce(self._hello))
        version = _check_magic(reply, "server")
        if reply[: len(MAGIC) + 2] != self._hello[: len(MAGIC) + 2]:
            raise Refused(f"server speaks wire version {version}, this node {WIRE_VERSION}")
        transcript = self._hello + reply[:HELLO_BYTES]
        if not hmac.compare_digest(reply[HELLO_BYTES:], self._secret.mac(_SERVER, transcript)):
            raise Refused("server failed authentication (a different ENCRYPTION_KEY?)")
        return self._secret.mac(_CLIENT, transcript), self._secret.session(transcript, True)


class ServerHandshake:
    """The accepting side: ``reply(hello)`` gives REPLY, ``finish(finish)`` the session."""

    def __init__(self, secret: Secret, nonces: Nonces | None = None) -> None:
        self._secret = secret
        self._transcript = b""
        self._nonces = nonces

    @property
    def replied(self) -> bool:
        """HELLO answered: FINISH is what comes next."""
        return bool(self._transcript)

    def reply(self, hello: bytes) -> bytes:
        version = _check_magic(hello, "client")
        if version not in ACCEPTED_VERSIONS:
            raise Refused(f"client speaks wire version {version}, this node {WIRE_VERSION}")
        if self._nonces is not None and _nonce(hello) in self._nonces:
            raise Refused("a HELLO with a nonce this node sent (a reflected handshake)")
        body = hello[: len(MAGIC) + 2] + os.urandom(NONCE_BYTES)
        self._transcript = hello + body
        return body + self._secret.mac(_SERVER, self._transcript)

    def finish(self, finish: bytes) -> Session:
        if not self._transcript:
            raise Refused("FINISH before HELLO")
        if not hmac.compare_digest(finish, self._secret.mac(_CLIENT, self._transcript)):
            raise Refused("client failed authentication (a different ENCRYPTION_KEY?)")
        return self._secret.session(self._transcript, False)


class Sealer:
    """Seals one direction's frames with its key and counter."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def seal(self, plaintext: bytes) -> bytes:
        if len(plaintext) > MAX_FRAME:
            raise ValueError(f"a {len(plaintext)}-byte message exceeds the {MAX_FRAME} frame limit")
        header = HEADER.pack(len(plaintext) + TAG_BYTES)
        nonce = self._counter.to_bytes(12, "big")
        self._counter += 1
        return header + self._aead.encrypt(nonce, plaintext, header)


class Opener:
    """Opens the other direction's frames, in order, each exactly once."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def open(self, header: bytes, body: bytes) -> bytes:
        nonce = self._counter.to_bytes(12, "big")
        try:
            plaintext = self._aead.decrypt(nonce, body, header)
        except InvalidTag:
            raise Refused(
                "a frame failed authentication (tampered, replayed or reordered)"
            ) from None
        self._counter += 1
        return plaintext


def frame_length(header: bytes) -> int:
    """The sealed length a frame header announces; Refused when over the limit, before
    anything is read or allocated for it."""
    (length,) = HEADER.unpack(header)
    if not TAG_BYTES <= length <= MAX_FRAME + TAG_BYTES:
        raise Refused(f"frame length {length} outside 16..{MAX_FRAME + TAG_BYTES}")
    return int(length)


@dataclass
class Session:
    """An authenticated connection's two directions."""

    sealer: Sealer
    opener: Opener
