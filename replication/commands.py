"""Raft log commands in our own encoding: no pickle in the journal, the dump or on the wire.

pysyncobj prefixes every command with a type byte (``_COMMAND_TYPE``) and, for everything
after it, pickles: a call of a ``@replicated`` method, a membership change, a code version.
Unpickling a command runs whatever it names, so a command from a peer (or a journal written by
one) could run code. Here the part after the type byte is:

- REGULAR: the registry's event record itself (``registry.events`` framing; empty for a
  barrier). The registry replicates one thing, so there is no method to name.
- MEMBERSHIP: msgpack ``[op, node_id]``, op ``"add"`` or ``"rem"``, node_id ``host:port``.
- NO_OP: nothing (pysyncobj's own, appended by every new leader).

VERSION commands (pysyncobj's code versions) are never written by this code and are applied as
no-ops.

Sizes: a command travels in one ``append_entries`` frame. :data:`BATCH_BYTES` is both the
wire budget of one batch and pysyncobj's ``appendEntriesBatchSizeBytes``; since every command
is smaller (:data:`MAX_RECORD`), none takes pysyncobj's chunked "transmission" path, which
unpickles and, before §5.3 was enforced, deleted entries the follower held.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgpack
from pysyncobj.syncobj import _COMMAND_TYPE

REGULAR: int = _COMMAND_TYPE.REGULAR
NO_OP: int = _COMMAND_TYPE.NO_OP
MEMBERSHIP: int = _COMMAND_TYPE.MEMBERSHIP
OPS = ("add", "rem")
BATCH_BYTES = 4 << 20
"""Bytes of entries (counted as on the wire) per append_entries message."""
MAX_RECORD = 3 << 20
"""Largest event record the registry may propose (a larger one is refused with 503): well
above what a body of the default MAX_REQUEST_BYTES (512 KiB) encodes to, and with its type byte
below :data:`BATCH_BYTES`, so that pysyncobj never chunks it."""
ENTRY_OVERHEAD = 32
"""Upper bound on the msgpack bytes of one entry besides its command (array, bin header and
two integers), so that a batch of tiny entries is counted at its real size too."""


def regular(record: bytes) -> bytes:
    """The body of a REGULAR command (pysyncobj adds the type byte): the record itself."""
    if len(record) > MAX_RECORD:
        raise ValueError(f"a {len(record)}-byte record exceeds the {MAX_RECORD}-byte limit")
    return record


def record_of(command: bytes) -> bytes | None:
    """The event record a journal command carries (None for no-ops, membership, barriers)."""
    if not command or command[0] != REGULAR or len(command) == 1:
        return None
    return command[1:]


def membership(op: str, node_id: str) -> bytes:
    """The body of a MEMBERSHIP command; ValueError for an op or id pysyncobj could not use."""
    if op not in OPS or not _is_address(node_id):
        raise ValueError(f"not a membership change: {op!r} {node_id!r}")
    packed: bytes = msgpack.packb([op, node_id], use_bin_type=True)
    return packed


def changes_in(entries: Iterable[Any]) -> Iterator[list[str]]:
    """The membership changes (``[op, node_id]``) among journal entries ``(command, index,
    term)``, in their order."""
    for entry in entries:
        change = parse_membership(bytes(entry[0]))
        if change is not None:
            yield change


def parse_membership(command: bytes) -> list[str] | None:
    """``[op, node_id]`` of a MEMBERSHIP command, as pysyncobj's cluster change reads it;
    None for any other command, and for a malformed one (which then changes nothing)."""
    if not command or command[0] != MEMBERSHIP:
        return None
    try:
        request = msgpack.unpackb(command[1:], raw=False)
    except ValueError:
        return None
    match request:
        case [str() as op, str() as node_id] if op in OPS and _is_address(node_id):
            return [op, node_id]
    return None


def _is_address(node_id: Any) -> bool:
    host, sep, port = str(node_id).rpartition(":")
    return bool(sep and host and port.isdigit())


def batch(entries: Sequence[tuple[bytes, int, int]], budget: int) -> list[tuple[bytes, int, int]]:
    """The leading entries to send in one append_entries: at least one, and more while their
    wire size stays under ``budget``."""
    total = 0
    for count, entry in enumerate(entries, 1):
        total += len(entry[0]) + ENTRY_OVERHEAD
        if total >= budget:
            return list(entries[:count])
    return list(entries)
