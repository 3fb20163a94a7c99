"""A durable Raft journal for pysyncobj, in LMDB, with group commit.

pysyncobj 0.3.17's own FileJournal writes into an mmap and never fsyncs, so an acknowledged
write could vanish with a power cut. This journal keeps every entry in LMDB and makes it durable
in :meth:`LmdbJournal.sync`: one transaction (one fsync) for everything added since the last
sync. The Raft node calls ``sync`` before a follower acknowledges entries and before the leader
counts itself toward a majority (see ``syncobj.py``), so "committed" means "on disk on a majority".

Only ``(term)`` per entry is kept in memory; commands are read back from LMDB on demand, except
those held in a map of their own: every one not yet synced, and the newest synced ones up to
``HELD_BYTES``. Right after a sync pysyncobj reads each new entry back, the leader to send it to
its followers and every node to apply it; with the commands still in memory those reads cost no
LMDB transaction and copy (they were about a twentieth of the leader's CPU in S1, issue 14 item
10), and memory stays bounded whatever the log's length. Term and vote are written through at
once: Raft requires them durable before a vote is answered.

Storage failures: a write that fails (disk full, I/O error, LMDB map full at LMDB_MAP_SIZE) raises
:class:`registry.store.StorageFailure`, and so does every later sync: nothing that would follow
(an acknowledgement, the leader counting itself) may believe the entries are on disk, and the
changes that were not written stay pending rather than vanishing (a later sync that "succeeded"
without them would leave a hole in the keys, and positions are rebuilt from the keys). The node
stops on it (``syncobj.py``).

Positions: pysyncobj addresses the journal by position (0 = oldest kept entry), entries are
``(command: bytes, raft_index: int, term: int)``.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import lmdb
import msgpack
from pysyncobj.journal import Journal

from registry.config import DEFAULT_MAP_SIZE
from registry.store import StorageFailure, open_lmdb, sync_directory

_ENTRIES = b"raft_entries"
_META = b"raft_meta"


HELD_BYTES = 4 * 1024 * 1024
"""Commands already synced that stay in memory (the newest ones, by their total size)."""


def _key(index: int) -> bytes:
    return index.to_bytes(8, "big")


class LmdbJournal(Journal):  # type: ignore[misc]  # pysyncobj is untyped
    """pysyncobj's Journal interface over an LMDB environment at ``path``."""

    def __init__(self, path: str, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self._path = path
        self._env = open_lmdb(path, map_size=map_size, max_dbs=2, sync=True, metasync=True)
        self._entries = self._env.open_db(_ENTRIES)
        self._meta = self._env.open_db(_META)
        self._lock = threading.Lock()
        # Commands held in memory, by index, ascending: every unsynced one, then (after a
        # sync) the newest synced ones whose sizes sum to at most HELD_BYTES.
        self._pending: dict[int, bytes] = {}
        self._held_bytes = 0
        self._ops: list[tuple[Any, ...]] = []
        self._terms: list[int] = []
        self._first = 0
        self._failure: StorageFailure | None = None
        with self._env.begin(db=self._entries) as txn:
            cursor = txn.cursor(db=self._entries)
            for key, value in cursor:
                if not self._terms:
                    self._first = int.from_bytes(key, "big")
                self._terms.append(int.from_bytes(value[:8], "big"))
            self._term = int(txn.get(b"term", db=self._meta) or b"0")
            voted = txn.get(b"voted_for", db=self._meta)
            self._voted_for = bytes(voted).decode() if voted else None
            self._commit = int(txn.get(b"commit", db=self._meta) or b"0")
            members = txn.get(b"members", db=self._meta)
            self._members = bytes(members).decode().split(",") if members else []
            identity = txn.get(b"identity", db=self._meta)
            known = txn.get(b"incarnations", db=self._meta)
            self._incarnations: dict[str, str] = (
                msgpack.unpackb(bytes(known), raw=False) if known else {}
            )
            self._first_contact_over = txn.get(b"first_contact_over", db=self._meta) is not None
            restored = txn.get(b"restored_from", db=self._meta)
            self._restored_from = bytes(restored).decode() if restored else ""
        self.synced_index = self.last_index
        # This data directory's incarnation: made once, with the journal, and never again. A
        # node whose disk was lost comes back under its old address with a new one, which is
        # how its peers tell it from the member that held the log (replication/incarnation.py).
        self.identity = bytes(identity).decode() if identity else secrets.token_hex(16)
        if not identity:
            self.sync(force=True)

    # -- helpers -------------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self._first + len(self._terms) - 1 if self._terms else 0

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``, or None if the log does not hold it."""
        with self._lock:
            position = index - self._first
            held = self._terms and 0 <= position < len(self._terms)
            return self._terms[position] if held else None

    def _read(self, positions: range) -> list[tuple[bytes, int, int]]:
        """Entries at ``positions``: those held from memory, the rest in one read txn (begun
        only if one is needed)."""
        out = []
        txn: lmdb.Transaction | None = None
        try:
            for position in positions:
                index = self._first + position
                command = self._pending.get(index)
                if command is None:
                    if txn is None:
                        txn = self._env.begin(db=self._entries, buffers=False)
                    value = txn.get(_key(index), db=self._entries)
                    if value is None:
                        raise KeyError(f"raft journal has no entry {index}")
                    command = bytes(value[8:])
                out.append((command, index, self._terms[position]))
        finally:
            if txn is not None:
                txn.abort()  # read-only: nothing to commit
        return out

    # -- pysyncobj's Journal interface ------------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        with self._lock:
            if not self._terms:
                self._first = idx
            elif idx != self.last_index + 1:
                raise ValueError(f"raft journal append of {idx} after {self.last_index}")
            self._terms.append(term)
            self._hold(idx, command)
            self._ops.append(("put", idx, term, command))

    def clear(self) -> None:
        with self._lock:
            self._terms.clear()
            self._pending.clear()
            self._held_bytes = 0
            self._ops.append(("clear",))

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        with self._lock:
            index = self._first + entryFrom
            del self._terms[entryFrom:]
            for stale in [i for i in self._pending if i >= index]:
                self._held_bytes -= len(self._pending.pop(stale))
            self._ops.append(("truncate_from", index))

    def deleteEntriesTo(self, entryTo: int) -> None:
        # pysyncobj trims after renaming its new dump into this directory without a sync:
        # make the rename durable before the entries it replaces go.
        try:
            sync_directory(self._path)
        except OSError as exc:
            with self._lock:
                raise self._failed(self._first + entryTo, exc) from exc
        with self._lock:
            index = self._first + entryTo
            del self._terms[:entryTo]
            for old in [i for i in self._pending if i < index]:
                self._held_bytes -= len(self._pending.pop(old))
            self._first = index
            self._ops.append(("trim_to", index))

    def __getitem__(self, item: int | slice) -> Any:
        with self._lock:
            if isinstance(item, slice):
                return self._read(range(*item.indices(len(self._terms))))
            if item < 0:
                item += len(self._terms)
            if not 0 <= item < len(self._terms):
                raise IndexError(item)
            return self._read(range(item, item + 1))[0]

    def __len__(self) -> int:
        return len(self._terms)

    def _destroy(self) -> None:
        if self._failure is None:  # after a failure nothing more is written
            self.sync()
        self._env.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # Called on every append_entries: kept in memory, persisted with the next sync.
        self._commit = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return self._commit

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        self._term, self._voted_for = term, votedForNodeId
        self.sync(force=True)

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> str | None:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        self.sync(force=True)

    def trim_before_dump(self, prev: tuple[bytes, int, int], last: tuple[bytes, int, int]) -> None:
        """Drop entries before ``prev`` when the journal holds the dump's two entries.

        pysyncobj, loading a dump at startup, clears the whole journal unless it *starts* with
        the dump's two entries; after a crash between writing a dump and trimming the journal
        it would otherwise throw away entries after the dump that were already acknowledged.
        """
        with self._lock:
            position = prev[1] - self._first
            if position <= 0 or position + 1 >= len(self._terms):
                return
            if self._read(range(position, position + 2)) != [prev, last]:
                return
        self.deleteEntriesTo(position)
        self.sync()

    # -- membership (ours, not pysyncobj's) ----------------------------------------------------

    def members(self) -> list[str]:
        """The cluster membership last seen by this node (empty for a node that never ran)."""
        return list(self._members)

    def set_members(self, members: list[str]) -> None:
        """Remember the membership, so a restarted node rejoins the cluster it was part of."""
        self._members = sorted(members)
        self.sync(force=True)

    def incarnations(self) -> dict[str, str]:
        """The incarnation this node last knew for each member address (itself included)."""
        return dict(self._incarnations)

    def set_incarnations(self, known: dict[str, str]) -> None:
        """Remember members' incarnations durably: a vote or acknowledgement is judged by them."""
        self._incarnations = dict(known)
        self.sync(force=True)

    @property
    def first_contact_over(self) -> bool:
        """Whether this node has heard of a member past its cluster's first election."""
        return self._first_contact_over

    def end_first_contact(self) -> None:
        """Remember durably that it has (replication/incarnation.py)."""
        if not self._first_contact_over:
            self._first_contact_over = True
            self.sync(force=True)

    @property
    def restored_from(self) -> str:
        """The digest of the backup this node's log was started from ("" if none)."""
        return self._restored_from

    def set_restored_from(self, digest: str) -> None:
        """Remember it durably: a member restored later asks whether the cluster it finds
        running was restored from the same backup (replication.proposer)."""
        self._restored_from = digest
        self.sync(force=True)

    # -- durability -----------------------------------------------------------------------------

    def sync(self, force: bool = False) -> None:
        """Make every change since the last sync durable in one LMDB transaction (one fsync).

        Raises StorageFailure when that fails, and at every call after that (see the module
        docstring): the changes stay pending, ``synced_index`` stays where the disk is.
        """
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if not self._ops and not force:
                return
            try:
                with self._env.begin(write=True) as txn:
                    for op in self._ops:
                        self._replay(txn, op)
                    txn.put(b"term", str(self._term).encode(), db=self._meta)
                    txn.put(b"voted_for", (self._voted_for or "").encode(), db=self._meta)
                    txn.put(b"commit", str(self._commit).encode(), db=self._meta)
                    if self._members:
                        txn.put(b"members", ",".join(self._members).encode(), db=self._meta)
                    txn.put(b"identity", self.identity.encode(), db=self._meta)
                    if self._incarnations:
                        txn.put(b"incarnations", msgpack.packb(self._incarnations), db=self._meta)
                    if self._first_contact_over:
                        txn.put(b"first_contact_over", b"1", db=self._meta)
                    if self._restored_from:
                        txn.put(b"restored_from", self._restored_from.encode(), db=self._meta)
            except (lmdb.Error, OSError) as exc:
                first = next((op[1] for op in self._ops if op[0] == "put"), self.last_index)
                raise self._failed(first, exc) from exc
            self._ops = []
            self._release()
            self.synced_index = self.last_index

    def _hold(self, index: int, command: bytes) -> None:
        """Keep ``command`` in memory (lock held); an entry re-added after a truncation
        replaces nothing, since the truncation dropped it."""
        self._pending[index] = command
        self._held_bytes += len(command)

    def _release(self) -> None:
        """After a sync (lock held): drop the oldest held commands, all now in LMDB, until
        what stays fits in HELD_BYTES."""
        while self._held_bytes > HELD_BYTES and self._pending:
            oldest = next(iter(self._pending))
            self._held_bytes -= len(self._pending.pop(oldest))

    def _failed(self, index: int, cause: BaseException) -> StorageFailure:
        """Remember the first failure (lock held): every later sync raises it again."""
        if self._failure is None:
            self._failure = StorageFailure("raft journal write", index, cause)
        return self._failure

    def _replay(self, txn: lmdb.Transaction, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "put":
            _, index, term, command = op
            txn.put(_key(index), term.to_bytes(8, "big") + command, db=self._entries)
            return
        cursor = txn.cursor(db=self._entries)
        if kind == "clear":
            keep_going = cursor.first()
        elif kind == "truncate_from":
            keep_going = cursor.set_range(_key(op[1]))
        else:  # trim_to: delete everything below op[1]
            keep_going = cursor.first()
            while keep_going and int.from_bytes(cursor.key(), "big") < op[1]:
                keep_going = cursor.delete()
            return
        while keep_going:
            keep_going = cursor.delete()
