"""pysyncobj's messages as msgpack, for the sealed frames of ``replication/wire.py``.

What pysyncobj sends is plain data: dicts with str keys holding ints, bools, str, bytes, None,
lists and tuples. Two things need care:

- Nodes: a utility ``status`` reply names nodes (``self``, ``leader``) as pysyncobj Node
  objects; on the wire they become their ids (``host:port`` strings), which is all that
  ``replication.syncobj.membership`` and our callers read.
- Tuples: msgpack has one array type, decoded as lists. pysyncobj relies on lists where it
  mutates a utility command (``message[0] = ...``), so arrays stay lists, except the entries of
  an ``append_entries``, which become ``(command, index, term)`` tuples again: what pysyncobj's
  own log holds and compares against, so a received entry equals the same entry read locally.
"""

from __future__ import annotations

from typing import Any

import msgpack
from pysyncobj.node import Node


def _plain(value: Any) -> Any:
    if isinstance(value, Node):
        return value.id
    raise TypeError(f"{type(value).__name__} cannot cross the peer wire")


def encode(message: Any) -> bytes:
    """One message as msgpack (bytes as bin, str as str)."""
    packed: bytes = msgpack.packb(message, use_bin_type=True, default=_plain)
    return packed


def decode(data: bytes) -> Any:
    """A message from :func:`encode`; raises ValueError (or a subclass) on anything else.

    Only plain data comes out: msgpack builds no objects of its own choosing (extension types
    are refused), and map keys must be str or bytes."""
    message = msgpack.unpackb(data, raw=False, ext_hook=_no_ext)
    if isinstance(message, dict) and message.get("type") == "append_entries":
        entries = message.get("entries")
        if entries is not None:
            message["entries"] = [_entry(entry) for entry in entries]
    return message


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} on the peer wire")


def _entry(entry: Any) -> tuple[bytes, int, int]:
    match entry:
        case [bytes() as command, int() as index, int() as term]:
            return command, index, term
    raise ValueError("an append_entries entry is not [command, index, term]")
