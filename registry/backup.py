"""Backup files: one view snapshot, self-describing and checksummed, and restoring one.

A backup is what a node's view holds at one applied index, in the same snapshot record the
node stores in LMDB (CRC32 + msgpack), so restoring it is exactly "start from a snapshot":

    MCP-MESH-REGISTRY-BACKUP 1\\n
    {"applied_index": N, "agents": k, "node": "...", "created": "...", "sha256": "...",
     "bytes": len(record)}\\n
    <snapshot record>

The SHA-256 covers the record and is checked before anything is restored, so a truncated or
altered file is refused instead of silently becoming a registry's state.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from registry.commit import view_from_snapshot
from registry.events import CorruptRecord
from registry.store import Store, decode_snapshot, sync_directory
from registry.view import View

MAGIC = b"MCP-MESH-REGISTRY-BACKUP 1\n"
LMDB_DIR = "lmdb"
"""Where a node keeps its store under DATA_DIR (see registry.node.Node.open)."""


class BackupError(Exception):
    """The file is not a usable backup, or the target cannot receive one."""


@dataclass(frozen=True)
class Backup:
    applied_index: int
    record: bytes
    header: dict[str, Any]

    def view(self) -> View:
        state = decode_snapshot(self.applied_index, self.record)
        return view_from_snapshot(self.applied_index, state, state["history_limit"])


def encode(applied_index: int, record: bytes, node: str, agents: int, created: str) -> bytes:
    header = {
        "applied_index": applied_index,
        "agents": agents,
        "node": node,
        "created": created,
        "sha256": hashlib.sha256(record).hexdigest(),
        "bytes": len(record),
    }
    return MAGIC + orjson.dumps(header) + b"\n" + record


def decode(data: bytes) -> Backup:
    """The backup in ``data``; BackupError saying what is wrong with it."""
    if not data.startswith(MAGIC):
        raise BackupError("not a registry backup (bad magic line)")
    line, newline, record = data[len(MAGIC) :].partition(b"\n")
    try:
        header: dict[str, Any] = orjson.loads(line) if newline else {}
        applied_index = int(header["applied_index"])
        expected = str(header["sha256"])
        size = int(header["bytes"])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        raise BackupError("unreadable backup header") from None
    if len(record) != size:
        raise BackupError(f"backup truncated or padded: {len(record)} bytes, header says {size}")
    if hashlib.sha256(record).hexdigest() != expected:
        raise BackupError("backup checksum mismatch (sha256)")
    try:
        decode_snapshot(applied_index, record)
    except CorruptRecord as exc:
        raise BackupError(str(exc)) from None
    return Backup(applied_index, record, header)


def write_file(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically and durably, plus ``path.sha256`` (sha256sum
    format, so ``sha256sum -c`` verifies the file); returns the file's digest."""
    digest = hashlib.sha256(data).hexdigest()
    for target, content in ((path, data), (Path(f"{path}.sha256"), f"{digest}  {path.name}\n")):
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as out:
            out.write(content if isinstance(content, bytes) else content.encode())
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)
    sync_directory(str(path.parent))
    return digest


def restore(backup: Backup, data_dir: Path) -> None:
    """Make ``data_dir`` a node's data directory starting from ``backup``.

    The directory must be empty (or absent): restoring over a node's own log would leave it
    with two histories. The snapshot becomes the store's only snapshot; a single node then
    continues its log after it, and a Raft node starts its log at the snapshot's index (see
    replication.proposer), which is why every member of a cluster is restored from the same file.
    """
    # lost+found is what a fresh ext4 volume holds at its root, not a node's data.
    if data_dir.exists() and any(p.name != "lost+found" for p in data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore only into an empty data directory")
    store = Store(str(data_dir / LMDB_DIR))
    try:
        store.put_snapshot_record(backup.applied_index, backup.record)
    finally:
        store.close()
