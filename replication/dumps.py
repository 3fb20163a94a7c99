"""pysyncobj's full-dump file in our format: the view snapshot plus the log records after it.

Compaction: after this node writes a view snapshot (registry StateMachine, every
SNAPSHOT_EVERY events), it asks pysyncobj to compact. Our serializer writes a dump holding that
snapshot plus the few log records after it; pysyncobj then drops the journal up to there and
sends the dump to any follower too far behind (a new or wiped node), whose deserializer installs
the snapshot and replays the records.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgpack
from pysyncobj.node import TCPNode

from registry.config import Config
from registry.events import CorruptRecord
from registry.store import sync_directory
from replication import commands, legacy

if TYPE_CHECKING:
    from replication.proposer import RaftProposer

log = logging.getLogger(__name__)

DUMP_VERSION = 2
"""2: commands in ``replication/commands.py``'s encoding; 1: pickled (converted on read)."""


def dump_path(config: Config) -> str:
    return os.path.join(config.data_dir, "raft", "dump.bin")


class Dumps:
    """pysyncobj's full-dump file, in our format: view snapshot + the records after it.

    Both methods run on the tick thread. ``write`` captures the newest view snapshot from the
    store and the journal records after it; ``read`` (at startup, and when the leader sent the
    dump to this follower) hands snapshot and records to the loop and returns the two journal
    entries pysyncobj keeps, exactly as they are in the journal.
    """

    def __init__(self, proposer: RaftProposer) -> None:
        self.proposer = proposer

    def write(self, path: str, data: Any) -> None:
        last, prev, cluster = data
        store = self.proposer.machine.store
        found = store.latest_snapshot_record()
        node = self.proposer.node
        if found is None or node is None:
            raise RuntimeError("no view snapshot to compact to")
        index, snapshot = found
        journal = node.journal
        first = journal[0][1]
        if index + 1 < first:
            raise RuntimeError(f"journal starts at {first}, after snapshot {index}")
        tail = [
            [entry[1], record]
            for entry in journal[index + 1 - first : last[1] - first + 1]
            if (record := commands.record_of(entry[0])) is not None
        ]
        members = cluster_at([str(member) for member in cluster], journal[last[1] - first + 1 :])
        write_dump(path, last, prev, members, index, snapshot, tail)
        log.info(
            "raft log compacted",
            extra={"snapshot_index": index, "tail": len(tail), "through": last[1]},
        )

    def read(self, path: str) -> tuple[Any, Any, Any]:
        """Raises on a dump that cannot be trusted; RaftNode then stops the node (pysyncobj
        would log the error and carry on without the dump)."""
        with open(path, "rb") as dump:
            raw = dump.read()
            # A received dump was written and renamed into place without a sync, and pysyncobj
            # clears the journal and acknowledges the install right after this: both the data
            # and the rename must be on disk first, or a power loss leaves this node without
            # the entries the leader now counts it as holding (review finding 12).
            os.fsync(dump.fileno())
        sync_directory(os.path.dirname(path) or ".")
        body = raw[4:]
        if len(raw) < 5 or zlib.crc32(body).to_bytes(4, "big") != raw[:4]:
            raise CorruptRecord(0, f"raft dump {path} checksum mismatch")
        dump_state = msgpack.unpackb(body, raw=False, strict_map_key=False)
        last, prev = (_entry(dump_state[key], dump_state["version"]) for key in ("last", "prev"))
        self.proposer.schedule_install(
            dump_state["snapshot_index"], dump_state["snapshot"], dump_state["tail"]
        )
        node = self.proposer.node
        if node is not None:
            node.journal.trim_before_dump(prev, last)
        # As nodes, not strings: pysyncobj drops itself from this list by comparing nodes, and
        # a string never equals one (it would count itself as a peer and need one ack more).
        return last, prev, [TCPNode(member) for member in dump_state["cluster"]]


def cluster_at(cluster: list[str], later: Iterable[Any]) -> list[str]:
    """The members as of the entry before ``later``: ``cluster``, the configuration now, with
    the membership changes in the entries ``later`` undone, newest first.

    pysyncobj takes a change into its configuration when the entry is appended, as Raft does,
    and hands its serializer that configuration, so a dump made while a change was appended
    but not yet committed said the change was in force at an index before it. Installed on a
    follower, or loaded at a restart, it gave that node a member its log did not hold; if the
    change was then truncated away, that node's configuration differed from everyone else's
    for good, and the next change could leave two majorities that do not overlap (review
    finding 6). The entries after the dump still carry the change, in force once appended."""
    members = set(cluster)
    for op, member in reversed(list(commands.changes_in(later))):
        if op == "add":
            members.discard(member)
        else:
            members.add(member)
    return sorted(members)


def _entry(entry: list[Any], version: int) -> tuple[bytes, int, int]:
    """A journal entry kept in a dump, with its command as the journal holds it."""
    command = bytes(entry[0])
    return legacy.convert(command) if version < 2 else command, int(entry[1]), int(entry[2])


def write_dump(
    path: str,
    last: Any,
    prev: Any,
    cluster: list[str],
    snapshot_index: int,
    snapshot: bytes,
    tail: list[list[Any]],
) -> None:
    """A dump file (CRC32 + msgpack), fsynced: pysyncobj trims the journal once it exists."""
    body = msgpack.packb(
        {
            "version": DUMP_VERSION,
            "last": list(last),
            "prev": list(prev),
            "cluster": sorted(cluster),
            "snapshot_index": snapshot_index,
            "snapshot": snapshot,
            "tail": tail,
        },
        use_bin_type=True,
    )
    with open(path, "wb") as out:
        out.write(zlib.crc32(body).to_bytes(4, "big") + body)
        out.flush()
        os.fsync(out.fileno())
