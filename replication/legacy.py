"""Journals and dumps from before ``replication/commands.py``, converted without unpickling.

Until wire version 1, log commands held pickles (protocol 2) of what pysyncobj applies: a
``@replicated`` call ``(0, (record,))`` and membership changes ``['add'|'rem', id, TCPNode]``.
A data directory from then is converted once, at start, before pysyncobj reads it. Nothing is
unpickled: ``pickletools.genops`` only lists a pickle's opcodes, and a command is converted
only if they are exactly the shape that code wrote; anything else is refused (CorruptRecord)
rather than guessed at. Every member converts the same bytes the same way, so logs that agreed
before still agree.
"""

from __future__ import annotations

import pickletools

from registry.config import DEFAULT_MAP_SIZE
from registry.events import CorruptRecord
from registry.store import open_lmdb
from replication import commands
from replication.journal import _ENTRIES, _META  # the journal's layout

FORMAT_KEY = b"command_format"
FORMAT = b"msgpack-1"
"""Marks a journal whose commands are in today's encoding (set on new journals too)."""
_RECORD_AS_TEXT = [
    "PROTO",
    "BININT1",
    "GLOBAL",
    "BINUNICODE",
    "BINUNICODE",
    "TUPLE2",
    "REDUCE",
    "TUPLE1",
    "TUPLE2",
    "STOP",
]
"""``pickle.dumps((0, (record,)), 2)``: the bytes are ``_codecs.encode(text, 'latin1')``."""
_EMPTY_RECORD = ["PROTO", "BININT1", "GLOBAL", "EMPTY_TUPLE", "REDUCE", "TUPLE1", "TUPLE2", "STOP"]
"""The same for ``b""`` (a barrier): ``__builtin__.bytes()``."""
_MEMBERSHIP_HEAD = ["PROTO", "EMPTY_LIST", "MARK", "BINUNICODE", "BINUNICODE"]
"""``pickle.dumps([op, node_id, node], 2)`` begins with the op and the id."""


def convert(command: bytes) -> bytes:
    """One journal command written before wire version 1, in today's encoding."""
    if not command or command[0] not in (commands.REGULAR, commands.MEMBERSHIP):
        return command  # no-ops (one type byte) are unchanged; version commands were never used
    try:
        ops = [
            (op.name, arg)
            for op, arg, _ in pickletools.genops(command[1:])
            if op.name not in ("BINPUT", "LONG_BINPUT", "MEMOIZE")
        ]
    except ValueError as exc:
        raise CorruptRecord(0, f"unreadable pre-upgrade raft command: {exc}") from None
    names = [name for name, _ in ops]
    if command[0] == commands.REGULAR:
        if names == _RECORD_AS_TEXT and ops[2][1] == "_codecs encode" and ops[4][1] == "latin1":
            return bytes([commands.REGULAR]) + str(ops[3][1]).encode("latin1")
        if names == _EMPTY_RECORD and ops[2][1] == "__builtin__ bytes":
            return bytes([commands.REGULAR])
    elif names[: len(_MEMBERSHIP_HEAD)] == _MEMBERSHIP_HEAD:
        return bytes([commands.MEMBERSHIP]) + commands.membership(str(ops[3][1]), str(ops[4][1]))
    raise CorruptRecord(0, f"pre-upgrade raft command of unknown shape: {names}")


def upgrade_journal(path: str, map_size: int = DEFAULT_MAP_SIZE) -> None:
    """Convert the LMDB journal at ``path`` (``replication/journal.py``'s layout) in one
    transaction, and mark it converted; a new journal is only marked. ``map_size``: the
    journal's LMDB_MAP_SIZE."""
    env = open_lmdb(path, map_size=map_size, max_dbs=2, sync=True, metasync=True)
    try:
        entries, meta = env.open_db(_ENTRIES), env.open_db(_META)
        with env.begin(write=True) as txn:
            if txn.get(FORMAT_KEY, db=meta) == FORMAT:
                return
            for key, value in list(txn.cursor(db=entries)):
                term, command = value[:8], value[8:]
                txn.put(key, term + convert(command), db=entries)
            txn.put(FORMAT_KEY, FORMAT, db=meta)
    finally:
        env.close()
