"""View snapshots in the PostgreSQL database, and compaction of the log behind them.

``mesh_registry_snapshot(idx, record)``: ``record`` is exactly what a snapshot is in LMDB
(:func:`registry.store.snapshot_record`, checksum first), the view as of log index ``idx``.
Every replica applies the same log into the same view, so a snapshot is the same whoever
wrote it; the decider writes one every SNAPSHOT_EVERY entries. A replica starts from the
newest one and replays only the log after it.

The newest :data:`KEEP` snapshots are kept, and the log only after the oldest of them: a
replica lagging by less than SNAPSHOT_EVERY entries goes on with the log, one further behind
(or starting) installs the newest snapshot. The table never loses the entries after the newest
snapshot, so the log plus the snapshot always reach the head.
"""

from __future__ import annotations

import asyncpg

KEEP = 2
"""Snapshots kept (the log is kept from the oldest of them on)."""

PRUNE = f"""
WITH kept AS (SELECT idx FROM mesh_registry_snapshot ORDER BY idx DESC LIMIT {KEEP}),
     oldest AS (SELECT min(idx) AS idx, count(*) AS n FROM kept),
     snapshots AS (DELETE FROM mesh_registry_snapshot WHERE idx < (SELECT idx FROM oldest)),
     entries AS (
         DELETE FROM mesh_registry_log
         WHERE (SELECT n FROM oldest) = {KEEP} AND idx <= (SELECT idx FROM oldest)
     )
SELECT (SELECT idx FROM oldest)
"""
"""Drop snapshots older than the newest KEEP, and the log up to the oldest kept (only once
KEEP exist: the first snapshot compacts nothing)."""


async def newest(conn: asyncpg.Connection, timeout: float) -> tuple[int, bytes] | None:
    """The newest snapshot's index and record, or None."""
    row = await conn.fetchrow(
        "SELECT idx, record FROM mesh_registry_snapshot ORDER BY idx DESC LIMIT 1",
        timeout=timeout,
    )
    return None if row is None else (row["idx"], bytes(row["record"]))


async def newest_index(conn: asyncpg.Connection, timeout: float) -> int:
    return int(
        await conn.fetchval(
            "SELECT coalesce(max(idx), 0) FROM mesh_registry_snapshot", timeout=timeout
        )
    )


async def write(conn: asyncpg.Connection, index: int, record: bytes, timeout: float) -> None:
    """Store a snapshot at ``index`` and compact, in one transaction."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO mesh_registry_snapshot (idx, record) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            index,
            record,
            timeout=timeout,
        )
        await conn.execute(PRUNE, timeout=timeout)


class NotEmpty(Exception):
    """The database already holds a log: a restore would give it two histories."""


async def restore(conn: asyncpg.Connection, index: int, record: bytes, timeout: float) -> None:
    """Make an empty log start from a backup's snapshot at ``index``: the snapshot becomes
    the only one and the head moves to ``index``, so replicas install it and appends go on
    from ``index + 1``. Refuses (NotEmpty) a log that was ever written to."""
    async with conn.transaction():
        head = await conn.fetchval("SELECT idx FROM mesh_registry_head FOR UPDATE", timeout=timeout)
        snapshots = await conn.fetchval(
            "SELECT count(*) FROM mesh_registry_snapshot", timeout=timeout
        )
        if head or snapshots:
            raise NotEmpty(f"the database log is not empty (head {head})")
        await conn.execute(
            "INSERT INTO mesh_registry_snapshot (idx, record) VALUES ($1, $2)",
            index,
            record,
            timeout=timeout,
        )
        await conn.execute("UPDATE mesh_registry_head SET idx = $1", index, timeout=timeout)
        # the agents table may reflect a later index of the history this replaces
        await conn.execute("UPDATE mesh_registry_projection SET idx = 0", timeout=timeout)
