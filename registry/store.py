"""The node's durable storage: one LMDB environment holding the event log and view snapshots.

Why LMDB: appends and snapshot writes are single transactions, so a crash (kill -9, power
loss) leaves either the whole write or none of it, and with ``sync=True`` a commit returns only
after the data is on disk, which is what lets us acknowledge a write. Keys of the log are
big-endian indexes, so LMDB's ordering is log order and appends use the cheap append path.

All methods block; callers on the event loop run them in a dedicated thread (see commit.py).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from typing import Any

import lmdb
import msgpack

from registry.config import DEFAULT_MAP_SIZE
from registry.events import CorruptRecord

_LOG = b"log"
_SNAPSHOTS = b"snapshots"
SNAPSHOTS_KEPT = 2
"""Older snapshots are dropped; keeping two survives one bad snapshot write being noticed."""


def sync_directory(path: str) -> None:
    """fsync a directory: a name created, renamed or removed in it is durable only then."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def open_lmdb(path: str, **options: Any) -> lmdb.Environment:
    """``lmdb.open`` of the environment at ``path`` (made if missing), with the names of its
    files and directories on disk before anything is written to it.

    LMDB syncs its files' data, not the directory entries naming them: on a filesystem that
    makes a new name durable only when its directory is synced (POSIX allows it; the chaos
    harness's lazyfs does it), a power loss after the first acknowledged write could take the
    whole environment with it. So the environment's directory is synced after LMDB made its
    files, and each directory above it up to the first that already existed (at least the
    parent: a data directory someone else just made counts as made here)."""
    absolute = os.path.abspath(path)
    existing = absolute
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    os.makedirs(absolute, exist_ok=True)
    env = lmdb.open(absolute, **options)
    top = existing if existing != absolute else os.path.dirname(absolute)
    directory = absolute
    while True:
        sync_directory(directory)
        if directory in (top, os.path.dirname(directory)):
            return env
        directory = os.path.dirname(directory)


class StorageFailure(Exception):
    """A write to this node's disk failed (ENOSPC, EIO, LMDB map full) at log ``index``.

    Whatever the node would acknowledge next could claim entries that are not on disk, so a
    cluster node stops at once on it; single-node mode answers the write with 503 instead
    (:class:`StoreFull`, for the event log in this store).
    """

    def __init__(self, what: str, index: int, cause: BaseException) -> None:
        super().__init__(f"{what} failed at log index {index}: {cause}")
        self.index = index


class StoreFull(Exception):
    """The LMDB map is full: nothing more can be written until it is enlarged."""


def index_key(index: int) -> bytes:
    return index.to_bytes(8, "big")


def _key_index(key: bytes) -> int:
    return int.from_bytes(key, "big")


class Store:
    """Event log, snapshots and small metadata in one LMDB environment under ``path``."""

    def __init__(self, path: str, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = path
        self.map_size = map_size
        self._env = open_lmdb(path, map_size=map_size, max_dbs=4, sync=True, metasync=True)
        self._log = self._env.open_db(_LOG)
        self._snapshots = self._env.open_db(_SNAPSHOTS)

    def close(self) -> None:
        self._env.close()

    # -- log -------------------------------------------------------------------------------

    def append(self, entries: list[tuple[int, bytes]]) -> None:
        """Write ``(index, record)`` pairs in one transaction, synced before returning.

        Raises StoreFull, naming the limit, when the map has no room (the transaction is
        aborted, so none of the entries is written); lmdb's own message speaks of its API.
        """
        try:
            with self._env.begin(write=True, db=self._log) as txn:
                for index, record in entries:
                    if not txn.put(index_key(index), record, append=True, db=self._log):
                        raise ValueError(f"log index {index} is not after the last index")
        except lmdb.MapFullError:
            raise StoreFull(
                f"storage full: the LMDB environment at {self.path} reached its map size "
                f"of {self.map_size} bytes (LMDB_MAP_SIZE)"
            ) from None

    def last_index(self) -> int:
        """Index of the newest log entry (0 when the log is empty)."""
        with self._env.begin(db=self._log) as txn:
            cursor = txn.cursor(db=self._log)
            return _key_index(cursor.key()) if cursor.last() else 0

    def entries(self, start: int) -> Iterator[tuple[int, bytes]]:
        """Log entries with index >= ``start``, in order, from one consistent read snapshot."""
        with self._env.begin(db=self._log, buffers=False) as txn:
            cursor = txn.cursor(db=self._log)
            if not cursor.set_range(index_key(start)):
                return
            for key, value in cursor:
                yield _key_index(key), value

    def entry_count(self) -> int:
        with self._env.begin(db=self._log) as txn:
            return int(txn.stat(self._log)["entries"])

    # -- snapshots ---------------------------------------------------------------------------

    def put_snapshot(self, index: int, state: Any) -> None:
        """Store the view ``state`` covering the log up to ``index``; prune old snapshots."""
        self._put_record(index, snapshot_record(state))

    def put_snapshot_record(self, index: int, record: bytes) -> None:
        """Store a snapshot record received from a peer (checked first)."""
        decode_snapshot(index, record)
        self._put_record(index, record)

    def _put_record(self, index: int, record: bytes) -> None:
        with self._env.begin(write=True, db=self._snapshots) as txn:
            txn.put(index_key(index), record, db=self._snapshots)
            cursor = txn.cursor(db=self._snapshots)
            keys = [key for key, _ in cursor]
            for key in keys[:-SNAPSHOTS_KEPT]:
                txn.delete(key, db=self._snapshots)

    def latest_snapshot_record(self) -> tuple[int, bytes] | None:
        """``(index, record)`` of the newest snapshot as stored (checksum included), or None."""
        with self._env.begin(db=self._snapshots, buffers=False) as txn:
            cursor = txn.cursor(db=self._snapshots)
            if not cursor.last():
                return None
            return _key_index(cursor.key()), bytes(cursor.value())

    def latest_snapshot(self) -> tuple[int, Any] | None:
        """``(index, state)`` of the newest snapshot, or None; CorruptRecord if it is damaged."""
        found = self.latest_snapshot_record()
        if found is None:
            return None
        index, record = found
        return index, decode_snapshot(index, record)

    def snapshot_index(self) -> int:
        with self._env.begin(db=self._snapshots) as txn:
            cursor = txn.cursor(db=self._snapshots)
            return _key_index(cursor.key()) if cursor.last() else 0


def snapshot_record(state: Any) -> bytes:
    """A view state as stored: CRC32 of the body, then the msgpack body."""
    body: bytes = msgpack.packb(state, use_bin_type=True)
    return zlib.crc32(body).to_bytes(4, "big") + body


def decode_snapshot(index: int, record: bytes) -> Any:
    """The view state in a snapshot ``record``; CorruptRecord naming ``index`` if damaged."""
    body = record[4:]
    if len(record) < 5 or zlib.crc32(body).to_bytes(4, "big") != record[:4]:
        raise CorruptRecord(index, "snapshot checksum mismatch")
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise CorruptRecord(index, f"undecodable snapshot ({exc})") from None
